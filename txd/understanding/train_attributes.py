"""Train the CPU person-attribute model on PETA: cache the frozen bottom once, fine-tune the top and heads."""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from txd.understanding import attributes as attr

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

SUBSETS = ("3DPeS", "CAVIAR4REID", "CUHK", "MIT", "PRID", "SARC3D", "VIPeR", "i-LID")
# person/1 field -> PETA labels column; "mid" lower length, sleeve "none" and empty cells are not labelled.
PETA_COLUMNS = {
    "gender": "gender",
    "upper_color": "upper_colors",
    "sleeve": "sleeve",
    "lower_color": "lower_colors",
    "lower_length": "lower_length",
    "shoe_color": "footwear_colors",
}
_CACHE_VERSION = "v3"
# Cached views per crop: plain, flipped+jittered, then re-framed (shifted, rescaled) with a colour cast.
VIEWS = 3
_OUTLIERS = 600
# Subsets are capped per epoch so that CUHK (42 % of the crops) does not dominate what "a camera" looks like.
_PER_SUBSET_CAP = 1200


@dataclass(frozen=True)
class Labels:
    """PETA rows: image paths, subsets and per head an N x classes multi-hot target (all zero: unlabelled)."""

    images: list[str]
    subsets: NDArray[np.str_]
    targets: dict[str, NDArray[np.float32]]


@dataclass(frozen=True)
class Cache:
    """Frozen-bottom activations and colour histograms of each crop in VIEWS views (view 0: plain)."""

    mid: NDArray[np.float16]  # VIEWS x N x C x h x w
    hist: NDArray[np.float32]  # VIEWS x N x HIST_DIM
    outlier_mid: NDArray[np.float16]  # M x C x h x w: uninformative synthetic inputs
    outlier_hist: NDArray[np.float32]


def read_labels(root: Path) -> Labels:
    images: list[str] = []
    subsets: list[str] = []
    rows: dict[str, list[NDArray[np.float32]]] = {name: [] for name in attr.HEADS}
    with (root / "peta_labels.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            images.append(row["image"])
            subsets.append(row["subset"])
            for head, column in PETA_COLUMNS.items():
                vocab = attr.HEADS[head]
                target = np.zeros(len(vocab), np.float32)
                for value in row[column].split("|"):
                    if value in vocab:
                        target[vocab.index(value)] = 1.0
                rows[head].append(target)
    return Labels(images, np.array(subsets), {k: np.stack(v) for k, v in rows.items()})


def _jitter(img: NDArray[np.uint8], rng: np.random.Generator, cast: float = 0.05) -> NDArray[np.uint8]:
    """Brightness, contrast, saturation and per-channel gain (colour cast) changes: what differs between
    cameras. `cast` is the largest relative per-channel gain change."""
    x: NDArray[np.float32] = img.astype(np.float32)
    x = x * np.float32(rng.uniform(0.85, 1.15)) * rng.uniform(1 - cast, 1 + cast, size=3).astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.85, 1.15) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(0.85, 1.15) + grey
    out: NDArray[np.uint8] = np.clip(x, 0, 255).astype(np.uint8)
    return out


def _reframe(img: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """A detector's box is never the annotator's: cut up to 10 % off each side (3 % top and bottom, so the
    body regions stay where the colour heads look), mirror half the time, cast a colour."""
    h, w = img.shape[:2]
    top, bottom = (int(h * rng.uniform(0, 0.03)) for _ in range(2))
    left, right = (int(w * rng.uniform(0, 0.10)) for _ in range(2))
    out = img[top : h - bottom, left : w - right]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return _jitter(attr.resize(np.ascontiguousarray(out)), rng, cast=0.15)


def _views(img: NDArray[np.uint8], rng: np.random.Generator) -> list[NDArray[np.uint8]]:
    plain = attr.resize(img)
    return [plain, _jitter(plain[:, ::-1], rng)] + [_reframe(img, rng) for _ in range(VIEWS - 2)]


def _outlier(rng: np.random.Generator) -> NDArray[np.uint8]:
    """A crop with no person: flat colour, noise or a smooth gradient (outlier exposure, for abstention)."""
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    img = np.broadcast_to(base, (attr.INPUT_H, attr.INPUT_W, 3)).copy()
    kind = rng.integers(4)
    if kind == 1:
        img += rng.normal(0, rng.uniform(3, 40), size=img.shape)
    elif kind == 2:
        ramp = np.linspace(-1, 1, attr.INPUT_H, dtype=np.float32)[:, None, None]
        img += ramp * rng.uniform(-80, 80, size=3)
    elif kind == 3:
        small = rng.uniform(0, 255, size=(4, 2, 3)).astype(np.float32)
        import cv2

        img = np.asarray(cv2.resize(small, (attr.INPUT_W, attr.INPUT_H), interpolation=cv2.INTER_CUBIC))
    return np.clip(img, 0, 255).astype(np.uint8)


def _bottom(
    net: nn.ModuleDict, crops: list[NDArray[np.uint8]]
) -> tuple[NDArray[np.float16], NDArray[np.float32]]:
    import torch

    prepared = [attr.prepare(c) for c in crops]
    with torch.inference_mode():
        mid = net["bottom"](torch.from_numpy(np.stack([p[0] for p in prepared])))
    return mid.numpy().astype(np.float16), np.stack([p[1] for p in prepared])


def build_cache(root: Path, labels: Labels, cache_dir: Path, seed: int) -> Cache:
    """Run the frozen bottom over every crop once (about 3 min per view on one core) and keep it on disk."""
    import cv2

    key = hashlib.sha256(
        f"{_CACHE_VERSION}{VIEWS}{attr.SPLIT}{attr.INPUT_H}{seed}{len(labels.images)}".encode()
    )
    path = cache_dir / f"attributes_{key.hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return Cache(z["mid"], z["hist"], z["outlier_mid"], z["outlier_hist"])
    # eval(): batch-norm must use its ImageNet running statistics, exactly as at inference.
    net = attr.build_net().eval()
    rng = np.random.default_rng(seed)
    mids: list[list[NDArray[np.float16]]] = [[] for _ in range(VIEWS)]
    hists: list[list[NDArray[np.float32]]] = [[] for _ in range(VIEWS)]
    step = 64
    for start in tqdm(
        range(0, len(labels.images), step), desc="frozen bottom", unit="batch", file=sys.stderr
    ):
        views = []
        for name in labels.images[start : start + step]:
            img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(root / name)
            views.append(_views(np.asarray(img, np.uint8), rng))
        for view in range(VIEWS):
            mid, hist = _bottom(net, [v[view] for v in views])
            mids[view].append(mid)
            hists[view].append(hist)
    outlier_mid, outlier_hist = _bottom(net, [_outlier(rng) for _ in range(_OUTLIERS)])
    cache = Cache(
        np.stack([np.concatenate(m) for m in mids]),
        np.stack([np.concatenate(h) for h in hists]),
        outlier_mid,
        outlier_hist,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mid=cache.mid, hist=cache.hist, outlier_mid=outlier_mid, outlier_hist=outlier_hist)
    tmp.replace(path)
    return cache


def _any_listed_ce(logits: torch.Tensor, target: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """-log P(any listed class): a "black|white" crop is answered correctly by black or by white, so the
    model may put its mass on whichever it sees best. Logit-adjusted so the raw logits target balanced
    accuracy (Menon et al. 2021); rows without a label are skipped."""
    import torch

    labelled = target.sum(dim=1) > 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    logp = torch.log_softmax(logits[labelled] + log_prior, dim=1)
    listed = logp.masked_fill(target[labelled] <= 0, float("-inf"))
    return -torch.logsumexp(listed, dim=1).mean()


def _epoch_indices(
    train_idx: NDArray[np.int64], subsets: NDArray[np.str_], rng: np.random.Generator
) -> NDArray[np.int64]:
    parts = []
    for name in np.unique(subsets[train_idx]):
        members = train_idx[subsets[train_idx] == name]
        parts.append(rng.permutation(members)[:_PER_SUBSET_CAP])
    return rng.permutation(np.concatenate(parts))


def train(
    labels: Labels,
    cache: Cache,
    train_idx: NDArray[np.int64],
    *,
    seed: int,
    epochs: int = 6,
    batch: int = 128,
) -> nn.ModuleDict:
    """Fine-tune blocks SPLIT (7) to 17, the last conv and the heads on the cached bottom activations."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    net = attr.build_net()
    priors = {}
    for head, target in labels.targets.items():
        t = target[train_idx]
        t = t[t.sum(axis=1) > 0]
        freq = (t / t.sum(axis=1, keepdims=True)).sum(axis=0) + 1.0
        priors[head] = torch.from_numpy(np.log(freq / freq.sum()).astype(np.float32))
        attr.log_priors(net)[head].data.copy_(priors[head])
    pretrained = [p for n, p in net.named_parameters() if n.startswith("top.")]
    fresh = [p for n, p in net.named_parameters() if n.startswith(("region.", "heads."))]
    opt = torch.optim.AdamW(
        [{"params": pretrained, "lr": 3e-4}, {"params": fresh, "lr": 2e-3}], weight_decay=1e-3
    )
    steps_per_epoch = -(-len(_epoch_indices(train_idx, labels.subsets, rng)) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[3e-4, 2e-3], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    targets = {k: torch.from_numpy(v) for k, v in labels.targets.items()}
    net.train()
    net["bottom"].eval()
    for epoch in range(epochs):
        order = _epoch_indices(train_idx, labels.subsets, rng)
        bar = tqdm(range(0, len(order), batch), desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr)
        for start in bar:
            idx = order[start : start + batch]
            view = rng.integers(VIEWS, size=len(idx))
            mid = torch.from_numpy(cache.mid[view, idx].astype(np.float32))
            hist = torch.from_numpy(cache.hist[view, idx])
            out_idx = rng.integers(len(cache.outlier_mid), size=max(len(idx) // 16, 1))
            mid = torch.cat([mid, torch.from_numpy(cache.outlier_mid[out_idx].astype(np.float32))])
            hist = torch.cat([hist, torch.from_numpy(cache.outlier_hist[out_idx])])
            logits = attr.forward_top(net, mid, hist)
            n = len(idx)
            loss = sum(
                (_any_listed_ce(v[:n], targets[k][idx], priors[k]) for k, v in logits.items()),
                torch.zeros(()),
            )
            # Outlier exposure: no person in view -> uniform class probabilities -> the field abstains.
            flat = sum((-torch.log_softmax(v[n:], dim=1).mean() for v in logits.values()), torch.zeros(()))
            total = loss + 0.5 * flat
            opt.zero_grad()
            total.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return net.eval()


def predict_cached(
    net: nn.ModuleDict, cache: Cache, idx: NDArray[np.int64]
) -> dict[str, NDArray[np.float32]]:
    """Balanced logits of the plain view of crops `idx` (the same computation as inference)."""
    import torch

    out: dict[str, list[NDArray[np.float32]]] = {k: [] for k in attr.HEADS}
    with torch.inference_mode():
        for start in range(0, len(idx), 256):
            sel = idx[start : start + 256]
            mid = torch.from_numpy(cache.mid[0, sel].astype(np.float32))
            logits = attr.forward_top(net, mid, torch.from_numpy(cache.hist[0, sel]))
            for k, v in logits.items():
                out[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def save_weights(net: nn.ModuleDict, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in attr.trainable_state(net).items()}, path
    )


def run(data: Path, out: Path, *, holdout: str | None, seed: int, epochs: int, cache_dir: Path) -> Path:
    """Train (on all subsets, or all but `holdout`) and save weights to `out`; in holdout mode also save
    the held-out crops' balanced logits, the training log-priors and the targets beside it (suffix
    .predictions.npz)."""
    import torch

    torch.set_num_threads(1)
    labels = read_labels(data)
    cache = build_cache(data, labels, cache_dir, seed=0)
    everything = np.arange(len(labels.images))
    if holdout is not None and holdout not in SUBSETS:
        raise SystemExit(f"--holdout must be one of {', '.join(SUBSETS)}")
    train_idx = everything if holdout is None else everything[labels.subsets != holdout]
    net = train(labels, cache, train_idx, seed=seed, epochs=epochs)
    save_weights(net, out)
    if holdout is not None:
        test_idx = everything[labels.subsets == holdout]
        logits = predict_cached(net, cache, test_idx)
        arrays = {f"logit_{k}": v for k, v in logits.items()}
        arrays.update({f"prior_{k}": attr.log_priors(net)[k].detach().numpy() for k in logits})
        arrays.update({f"target_{k}": v[test_idx] for k, v in labels.targets.items()})
        np.savez(out.with_suffix(".predictions.npz"), **arrays)  # type: ignore[arg-type]
        for head, p in logits.items():
            t = labels.targets[head][test_idx]
            ok = t[np.arange(len(t)), p.argmax(axis=1)] > 0
            log.info("%s on %s: accuracy %.3f", head, holdout, float(ok[t.sum(axis=1) > 0].mean()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/peta"), help="PETA folder")
    parser.add_argument("--out", type=Path, default=attr.DEFAULT_WEIGHTS, help="weights file to write")
    parser.add_argument("--holdout", choices=SUBSETS, help="leave this subset out and evaluate on it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache"), help="frozen-bottom activations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(
        args.data,
        args.out,
        holdout=args.holdout,
        seed=args.seed,
        epochs=args.epochs,
        cache_dir=args.cache_dir,
    )


if __name__ == "__main__":
    main()
