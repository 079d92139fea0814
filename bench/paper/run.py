"""Runs the case study: prepare each scheme once, then every (scheme, SNR, seed) point, then the report."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from semcom.burst import parse_mcs
from semcom.config import load_config
from semcom.errors import InvalidInput
from semcom.schema import Schema, SchemaRegistry
from txd.understanding.base import Understander

from .boxes import load_identity_attributes, load_mot_gt
from .config import PaperConfig
from .datasets import AnyDataset, BoxVideoDataset, CropDataset, VideoDataset
from .folds import TRAIN_COMMAND, FoldModels, find_fold_models
from .labels import load_crop_set, load_video_labels
from .links import Air, LinkSettings, channel_models
from .metrics import MemoEncoder, QueryScore, Receiver, score
from .queries import PaperQuery, generate_queries, load_queries
from .schemes import Received, Scheme, TraditionalSettings, Workbench, build_scheme, check_dataset
from .state import PointResult, RunState

log = logging.getLogger(__name__)


def _dataset(cfg: PaperConfig, schema: Schema, folds: FoldModels | None) -> AnyDataset:
    if cfg.crops is not None:
        allowed = None if folds is None else set(folds.weights)
        crops = load_crop_set(cfg.crops, schema, max_crops=cfg.max_crops, seed=cfg.seed, subsets=allowed)
        return CropDataset(crops)
    assert cfg.video is not None
    if not cfg.video.is_file():
        raise InvalidInput(f"video {cfg.video} does not exist")
    if cfg.gt is not None and cfg.attributes is not None:
        gt = load_mot_gt(cfg.gt)
        identities = load_identity_attributes(cfg.attributes, schema, gt)
        fps = _frame_rate(cfg.video)
        box = BoxVideoDataset(
            cfg.video, gt, identities, fps, cfg.gt_frame_offset, cfg.iou, cfg.partial_gt, cfg.clip_s
        )
        check_dataset(box)
        return box
    assert cfg.labels is not None
    labels = load_video_labels(cfg.labels, schema)
    if cfg.clip_s is not None:
        kept = tuple(t for t in labels.targets if t.start_s < cfg.clip_s)
        labels = type(labels)(labels.path, kept, labels.fields)
    dataset = VideoDataset(cfg.video, labels, cfg.tolerance_s, cfg.clip_s)
    check_dataset(dataset)
    return dataset


def _frame_rate(path: Path) -> float:
    """The video's nominal frame rate: the decoder's times are frame index / this rate."""
    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise InvalidInput(f"{path}: no video stream")
            stream = box.streams.video[0]
            return float(stream.average_rate or stream.guessed_rate or 25)
    except av.FFmpegError as err:
        raise InvalidInput(f"cannot open {path}: {err}") from err


def _folds(cfg: PaperConfig, model_kind: str, given: bool) -> tuple[FoldModels | None, str]:
    """The fold models a crop run needs and how the run relates to the model's training data."""
    if cfg.crops is None:
        return None, "out of sample: the attribute model never trained on this video"
    if given:
        return None, "understander given by the caller (its training data unknown to the bench)"
    if model_kind != "attributes":
        return None, f"out of sample: the {model_kind} understanding backend did not train on these crops"
    if not any(s in cfg.schemes for s in ("semantic", "semantic-learned", "semantic-text", "traditional")):
        return None, "labels only (no scheme runs the attribute model)"
    if cfg.in_sample:
        return None, "IN-SAMPLE: the configured attribute model trained on these crops (--in-sample)"
    folds = find_fold_models(cfg.fold_models)
    if not folds.weights:
        raise InvalidInput(
            f"no fold models in {cfg.fold_models}: the shipped attribute model trained on every PETA subset, "
            f"so scoring it on PETA crops is in-sample. Train the leave-one-subset-out folds with "
            f"`{TRAIN_COMMAND.format(root=cfg.fold_models)}` (about 10 min per fold on one core, cached "
            "there), or pass --in-sample to score the shipped model anyway (labelled in every output)"
        )
    return folds, folds.describe()


def _received_key(received: Received) -> bytes:
    """A digest of everything `score` reads from one point's reception."""
    rows = [
        (r.schema_id, r.stream_id, r.record_id, r.track_id, r.time_s, r.location_id, r.fields, r.confidence)
        for r in received.records
    ]
    # dicts repr in insertion order: records built alike (the codec's schema order) repr alike
    text = repr((rows, sorted(received.shows.items())))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _point_seed(seed: int, snr_index: int, repeat: int) -> int:
    """An independent, reproducible channel seed per (run seed, SNR point, repeat)."""
    return int(np.random.SeedSequence([seed, snr_index, repeat]).generate_state(1)[0])


def build(
    cfg: PaperConfig, understander: Callable[[], Understander] | None = None
) -> tuple[Workbench, list[PaperQuery], Receiver]:
    """Load configs, data and queries; build the workbench and the receiver's models.

    `understander` replaces the backend txd's config names (a test or an experiment with another model).
    """
    from rxd.app import build_describer, build_query_parser
    from rxd.config import RxdConfig
    from rxd.retrieval.embed import Embedder
    from txd.config import TxdConfig
    from txd.perception.pipeline import PerceptionConfig
    from txd.understanding.attributes import AttributesConfig
    from txd.understanding.base import UNDERSTANDERS

    txd_cfg = load_config(TxdConfig, path=cfg.txd_config) if cfg.txd_config else TxdConfig()
    rxd_cfg = load_config(RxdConfig, path=cfg.rxd_config) if cfg.rxd_config else RxdConfig()
    for snr in cfg.snr_db:
        channel_models(cfg.channel, snr)
    registry = SchemaRegistry.builtin()
    schema = registry.get(txd_cfg.site.schema_id)
    understanding = txd_cfg.understanding
    folds, sample = _folds(cfg, understanding.kind, understander is not None)
    dataset = _dataset(cfg, schema, folds)
    semantic_mcs = parse_mcs(cfg.semantic_mcs or txd_cfg.link.mcs)
    traditional_mcs = parse_mcs(cfg.traditional_mcs)
    if semantic_mcs is None or traditional_mcs is None:
        raise InvalidInput("both links need a physical layer: txd's link.mcs is 'bytes'; pass --semantic-mcs")
    perception = txd_cfg.perception or PerceptionConfig()
    bench = Workbench(
        dataset=dataset,
        schema=schema,
        registry=registry,
        link=LinkSettings(
            semantic_mcs,
            txd_cfg.link.pilot_symbols,
            txd_cfg.link.max_records_per_burst,
            rxd_cfg.link.ldpc_iterations,
            cfg.learned_model,
        ),
        traditional=TraditionalSettings(
            traditional_mcs,
            txd_cfg.link.pilot_symbols,
            cfg.burst_bytes,
            cfg.video_bitrate_kbps,
            cfg.gop_s,
            cfg.x264_preset,
            cfg.sampling,
            cfg.probe_bursts,
        ),
        perception=perception,
        make_understander=understander or (lambda: UNDERSTANDERS.load(understanding.kind)(understanding)),
        analysis_fps=cfg.analysis_fps or perception.analysis_fps,
        fold_understander=None
        if folds is None or not isinstance(understanding, AttributesConfig)
        else partial(folds.understander, base=understanding),
        sample=sample,
    )
    if cfg.queries is not None:
        queries = load_queries(cfg.queries, schema)
    else:
        queries = generate_queries(
            dataset.targets,
            schema,
            max_combinations=cfg.max_combinations,
            seed=cfg.seed,
            observed=bench.keyframed_targets,
            max_pairs=cfg.max_pairs,
        )
    receiver = Receiver(
        describer=build_describer(rxd_cfg.generate),
        encoder=MemoEncoder(
            Embedder(rxd_cfg.embedder.model_path, batch_size=rxd_cfg.embedder.batch_size, threads=1)
        ),
        parser=build_query_parser(rxd_cfg.query.parser),
    )
    return bench, queries, receiver


def run_paper(
    cfg: PaperConfig,
    *,
    progress: bool = True,
    command: str = "",
    understander: Callable[[], Understander] | None = None,
) -> RunState:
    """The whole benchmark; returns the state the report is written from."""
    started = time.perf_counter()
    bench, queries, receiver = build(cfg, understander)
    try:
        return _run(cfg, bench, queries, receiver, progress=progress, command=command, started=started)
    finally:
        receiver.parser.close()
        bench.close_folds()


def _run(
    cfg: PaperConfig,
    bench: Workbench,
    queries: list[PaperQuery],
    receiver: Receiver,
    *,
    progress: bool,
    command: str,
    started: float,
) -> RunState:
    state = RunState(cfg, bench.schema, bench.dataset, queries, command=command, sample=bench.sample)
    schemes: list[Scheme] = [build_scheme(name) for name in cfg.schemes]
    for scheme in tqdm(schemes, desc="prepare", unit="scheme", disable=not progress):
        t0 = time.perf_counter()
        scheme.prepare(bench)
        state.prepare_s[scheme.name] = time.perf_counter() - t0
    scored: dict[bytes, list[QueryScore]] = {}
    grid = [(s, i, snr, r) for s in schemes for i, snr in enumerate(cfg.snr_db) for r in range(cfg.seeds)]
    bar = tqdm(grid, desc="points", unit="point", disable=not progress)
    for scheme, index, snr, repeat in bar:
        bar.set_postfix_str(f"{scheme.name} {snr:g} dB")
        t0 = time.perf_counter()
        air = Air(
            channel_models(cfg.channel, snr),
            _point_seed(cfg.seed, index, repeat),
            ldpc_iterations=bench.link.ldpc_iterations,
        )
        received = scheme.run(bench, air)
        # The same received records (ids, fields, confidences, targets shown) score the same: every point
        # above a link's cliff, and a scheme whose records equal another's, reuse the first scoring.
        key = _received_key(received)
        if key not in scored:
            scored[key] = score(
                received.records,
                received.shows,
                queries,
                bench.dataset.targets,
                registry=bench.registry,
                schema=bench.schema,
                receiver=receiver,
                top_k=cfg.top_k,
                match=cfg.match,
                partial=bench.dataset.partial,
            )
        scores = scored[key]
        state.points.append(PointResult(scheme.name, snr, repeat, received, scores, time.perf_counter() - t0))
    link, trad = bench.link, bench.traditional
    state.extra["links"] = {
        "semantic": f"{link.mcs}, {link.pilot_symbols} pilots, at most {link.max_records_per_burst} records "
        f"per frame, {link.ldpc_iterations} LDPC iterations, no retransmission",
        "traditional": f"{trad.mcs}, {trad.pilot_symbols} pilots, {trad.burst_bytes} bytes per burst, "
        f"{link.ldpc_iterations} LDPC iterations, no retransmission, sampling {trad.sampling} "
        f"({trad.probe_bursts} probe bursts)",
    }
    if "semantic-learned" in cfg.schemes:
        state.extra["links"]["semantic-learned"] = (
            f"headers as the semantic link's, field values through learned/{link.learned_model}; a burst "
            "is delivered when its header's CRC holds, no retransmission"
        )
    state.wall_s = time.perf_counter() - started
    state.load = os.getloadavg()
    if "perceiver" in bench.__dict__:  # cached_property: present once perception ran
        perceiver = bench.perceiver
        keyframed = bench.keyframed_targets or set()
        state.extra["perception"] = {
            "frames_analysed": perceiver.frames_analysed,
            "detector_calls": perceiver.detector.calls,
            # queries are about these; the others satisfy queries too and count against recall
            "targets_keyframed": len(keyframed),
            "targets_never_keyframed": [
                t.key for i, t in enumerate(bench.dataset.targets) if i not in keyframed
            ],
        }
    if "encoded_video" in bench.__dict__:
        enc = bench.encoded_video
        state.extra["h264"] = {
            "frames": enc.frames,
            "fps": enc.fps,
            "duration_s": enc.duration_s,
            "ts_bytes": len(enc.data),
            "bitrate_kbps": enc.bitrate_kbps,
            "gop_frames": enc.gop_frames,
        }
    return state
