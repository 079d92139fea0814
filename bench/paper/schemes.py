"""The compared systems: each turns the labelled input into the records rxd indexes at one channel draw."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.phy.learned import LearnedModel, load_model
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry
from txd.perception.keyframes import Keyframe, understanding_inputs
from txd.perception.pipeline import PerceptionConfig
from txd.understanding.base import Understander, Understanding

from .datasets import AnyDataset, BoxVideoDataset, CropDataset, VideoDataset
from .links import (
    Air,
    LinkSettings,
    Tally,
    send_bytes,
    send_bytes_sampled,
    send_learned_records,
    send_records,
)
from .media import EncodedVideo, Perceiver, content_digest, decode_robust, encode_h264, source_frames

log = logging.getLogger(__name__)

# Records carry wall-clock times (the codec's base is whole Unix seconds); the video starts here.
EPOCH_S = 1_767_225_600  # 2026-01-01 00:00:00 UTC
SCHEMES = ("semantic", "semantic-learned", "semantic-text", "oracle", "traditional", "traditional-oracle")
DEFAULT_SCHEMES = ("semantic", "semantic-learned", "semantic-text", "oracle", "traditional")


@dataclass(frozen=True)
class TraditionalSettings:
    """How the traditional system sends pixels: codec, bitrate and its fixed MCS."""

    mcs: Mcs
    pilot_symbols: int
    burst_bytes: int
    bitrate_kbps: int
    gop_s: float
    preset: str
    sampling: str  # "auto": block-error sampling on a memoryless (AWGN-only) channel; "full"; "sampled"
    probe_bursts: int


@dataclass
class Received:
    """What rxd holds after one scheme's transmission at one channel draw."""

    records: list[Record]
    tally: Tally
    records_sent: int
    note: str = ""
    sent: list[Record] = field(default_factory=list)  # what the transmitter sent (records schemes only)
    shows: Mapping[int, int | None] = field(default_factory=dict)  # record_id -> target shown, or None


@dataclass(frozen=True)
class RecordSet:
    """Records as one transmitter (or receiver) made them, and the target each one's keyframe shows."""

    records: list[Record]
    shows: dict[int, int | None]  # record_id -> index of the target shown; None: no labelled target


@dataclass
class Workbench:
    """Shared parts and per-run caches: the understander, perception, and every channel-independent result.

    `fold_understander`, when set, understands a crop of subset S with a model that did not train on S
    (crop sets only): the out-of-sample run.
    """

    dataset: AnyDataset
    schema: Schema
    registry: SchemaRegistry
    link: LinkSettings
    traditional: TraditionalSettings
    perception: PerceptionConfig
    make_understander: Callable[[], Understander]
    analysis_fps: float | None
    fold_understander: Callable[[str], Understander] | None = None
    sample: str = ""  # how the understanding relates to the scored input (out of sample, or why not)
    _understood: dict[bytes, Understanding] = field(default_factory=dict)
    _records: dict[str, RecordSet] = field(default_factory=dict)
    _keyframes: dict[bytes, list[Keyframe]] = field(default_factory=dict)
    _records_by_payload: dict[bytes, RecordSet] = field(default_factory=dict)
    _folds: dict[str, Understander] = field(default_factory=dict)

    @cached_property
    def understander(self) -> Understander:
        return self.make_understander()

    @cached_property
    def perceiver(self) -> Perceiver:
        return Perceiver(self.perception)

    @cached_property
    def keyframed_targets(self) -> set[int] | None:
        """The targets the source video's keyframes show (its perception, shared by every scheme); None
        for a crop set, where every crop is a keyframe."""
        if isinstance(self.dataset, CropDataset):
            return None
        shown = (self.dataset.keyframe_target(k.time_s, k.box) for k in self.video_keyframes(b"source"))
        return {t for t in shown if t is not None}

    def close_folds(self) -> None:
        """Stop the fold models' workers (the configured understander lives as long as the process)."""
        for model in self._folds.values():
            aclose = getattr(model, "aclose", None)  # the Understander protocol's, where a backend has it
            if aclose is not None:
                asyncio.run(aclose())
            elif (close := getattr(model, "close", None)) is not None:
                close()
        self._folds.clear()

    # -- understanding ------------------------------------------------------------------------------------
    def understand(
        self,
        crops: Sequence[NDArray[np.uint8]],
        subset: str | None = None,
        masks: Sequence[NDArray[np.bool_] | None] | None = None,
    ) -> list[Understanding]:
        """The configured understander (or the fold model that did not train on `subset`) on each crop
        (with its person mask, if any), remembered by crop and mask content and model."""
        model = self.understander
        if subset is not None and self.fold_understander is not None:
            if subset not in self._folds:
                self._folds[subset] = self.fold_understander(subset)
            model = self._folds[subset]
        salt = (subset or "").encode() if self.fold_understander is not None else b""
        given = list(masks) if masks is not None else [None] * len(crops)
        keys = [
            salt + content_digest(c) + (content_digest(m.view(np.uint8)) if m is not None else b"")
            for c, m in zip(crops, given, strict=True)
        ]
        todo = {k: (c, m) for k, c, m in zip(keys, crops, given, strict=True) if k not in self._understood}
        if todo:
            work = model.understand([c for c, _ in todo.values()], self.schema, [m for _, m in todo.values()])
            self._understood.update(zip(todo, asyncio.run(work), strict=True))
        return [self._understood[k] for k in keys]

    def understand_keyframes(self, keyframes: Sequence[Keyframe]) -> list[Understanding]:
        """Each emission as txd's analysis understands it: every kept view (its crop under the stream's white
        balance, with its mask), fused per track when there are several (perception.keyframes
        .views_per_track = 1 keeps the best view only: one crop per track)."""
        views = [view for kf in keyframes for view in kf.all_views]
        crops, masks = understanding_inputs(views)
        seen = iter(self.understand(crops, masks=masks))
        out = []
        for kf in keyframes:
            mine = [next(seen) for _ in kf.all_views]
            out.append(self.understander.fuse(mine, self.schema) if len(mine) > 1 else mine[0])
        return out

    def records_from_keyframes(self, keyframes: Sequence[Keyframe], *, oracle: bool) -> RecordSet:
        """Records as txd publishes them: per track, a record only when what is understood changes; each
        record remembers the target its keyframe shows (the dataset's matcher: time range or box IoU).

        Oracle: each keyframe takes the labels of the target it shows; keyframes showing none are dropped.
        """
        assert isinstance(self.dataset, VideoDataset | BoxVideoDataset)
        shown = [self.dataset.keyframe_target(k.time_s, k.box) for k in keyframes]
        kept: list[tuple[Keyframe, int | None]] = list(zip(keyframes, shown, strict=True))
        if oracle:
            labelled = [(k, t) for k, t in kept if t is not None]
            seen = [Understanding(self.dataset.targets[t].record_fields(self.schema)) for _, t in labelled]
            kept = list(labelled)
        else:
            seen = self.understand_keyframes([k for k, _ in kept])
        last: dict[int, dict[str, str]] = {}
        out = RecordSet([], {})
        for (kf, target), u in zip(kept, seen, strict=True):
            if last.get(kf.track_id) == u.fields:
                continue
            last[kf.track_id] = dict(u.fields)
            record = self._record(len(out.records) + 1, kf.track_id, EPOCH_S + kf.time_s, u)
            out.records.append(record)
            out.shows[record.record_id] = target
        return out

    def _record(self, record_id: int, track_id: int, time_s: float, seen: Understanding) -> Record:
        """A record as txd builds it: the fields and each field's confidence the understanding stated, for
        the fields whose schema carries confidence bits (person/2; person/1 answers are taken at their word,
        whichever way they travel)."""
        carried = {f.name for f in self.schema.fields if f.confidence_bits}
        return Record(
            schema_id=self.schema.id,
            stream_id="bench",
            track_id=track_id,
            record_id=record_id,
            time_s=time_s,
            location_id=0,
            fields=self.schema.normalise(seen.fields),
            confidence={k: v for k, v in seen.confidence.items() if k in carried},
        )

    # -- the transmitter's view of the source ---------------------------------------------------------------
    def source_records(self, *, oracle: bool) -> RecordSet:
        """What txd understands of the original input (computed once per understanding mode)."""
        key = "oracle" if oracle else "model"
        if key not in self._records:
            if not isinstance(self.dataset, CropDataset):
                keyframes = self.video_keyframes(b"source")
                self._records[key] = self.records_from_keyframes(keyframes, oracle=oracle)
            else:
                self._records[key] = self.crop_records(self.crop_images(), oracle=oracle)
        return self._records[key]

    def video_keyframes(self, key: bytes, data: bytes | None = None) -> list[Keyframe]:
        """Perception over the original video (key b"source") or a received TS stream (`data`)."""
        if key not in self._keyframes:
            assert isinstance(self.dataset, VideoDataset | BoxVideoDataset)
            fps = self.analysis_fps or 1e9
            if data is None:
                frames = source_frames(self.dataset.video, fps=self.analysis_fps, clip_s=self.dataset.clip_s)
            else:
                encoded = self.encoded_video
                frames = decode_robust(data, start_s=encoded.start_s, duration_s=encoded.duration_s, fps=fps)
            self._keyframes[key] = self.perceiver.run(frames)
        return self._keyframes[key]

    # -- crops --------------------------------------------------------------------------------------------
    def crop_images(self) -> list[NDArray[np.uint8] | None]:
        """The crops as the transmitter reads them (None for a file that does not decode)."""
        return [_decode_jpeg(b) for b in self.crop_files]

    @cached_property
    def crop_files(self) -> list[bytes]:
        assert isinstance(self.dataset, CropDataset)
        return [t.image.read_bytes() for t in self.dataset.targets if t.image is not None]

    def crop_records(self, images: Sequence[NDArray[np.uint8] | None], *, oracle: bool) -> RecordSet:
        """One record per decodable crop i (record id i + 1), from the model or from the labels; with fold
        models each crop is understood by the model that did not train on its subset."""
        assert isinstance(self.dataset, CropDataset)
        index = [i for i, image in enumerate(images) if image is not None]
        seen: dict[int, Understanding] = {}
        if oracle:
            seen = {i: Understanding(self.dataset.targets[i].record_fields(self.schema)) for i in index}
        else:
            subsets = self.dataset.crops.subsets
            for subset in dict.fromkeys(subsets[i] for i in index):
                part = [i for i in index if subsets[i] == subset]
                crops = [image for i in part if (image := images[i]) is not None]
                seen.update(zip(part, self.understand(crops, subset), strict=True))
        records = [self._record(i + 1, i % 4096, EPOCH_S + float(i), seen[i]) for i in index]
        return RecordSet(records, {i + 1: i for i in index})

    # -- the traditional payload --------------------------------------------------------------------------
    @cached_property
    def encoded_video(self) -> EncodedVideo:
        assert isinstance(self.dataset, VideoDataset | BoxVideoDataset)
        t = self.traditional
        return encode_h264(
            self.dataset.video,
            bitrate_kbps=t.bitrate_kbps,
            gop_s=t.gop_s,
            clip_s=self.dataset.clip_s,
            preset=t.preset,
        )

    @cached_property
    def traditional_payload(self) -> bytes:
        if not isinstance(self.dataset, CropDataset):
            return self.encoded_video.data
        return b"".join(self.crop_files)

    def traditional_records(self, payload: bytes, *, oracle: bool) -> RecordSet:
        """What the receiver perceives and understands of a received payload (cached by its hash)."""
        key = hashlib.blake2b(payload, digest_size=16).digest() + (b"o" if oracle else b"m")
        if key not in self._records_by_payload:
            if not isinstance(self.dataset, CropDataset):
                keyframes = self.video_keyframes(key[:-1], payload)
                records = self.records_from_keyframes(keyframes, oracle=oracle)
            else:
                records = self.crop_records(self._split_crops(payload), oracle=oracle)
            self._records_by_payload[key] = records
        return self._records_by_payload[key]

    def _split_crops(self, payload: bytes) -> list[NDArray[np.uint8] | None]:
        images: list[NDArray[np.uint8] | None] = []
        start = 0
        for sent in self.crop_files:
            part = payload[start : start + len(sent)]
            start += len(sent)
            images.append(_decode_jpeg(part))
        return images


def _decode_jpeg(data: bytes) -> NDArray[np.uint8] | None:
    """A JPEG as BGR pixels, or None when it does not decode (or is too small to read)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 4:
        return None
    return np.asarray(image, dtype=np.uint8)


class Scheme(Protocol):
    """One compared system: `prepare` does the channel-independent work, `run` one channel draw."""

    name: str

    def prepare(self, bench: Workbench) -> None: ...
    def run(self, bench: Workbench, air: Air) -> Received: ...


@dataclass
class SemanticScheme:
    """txd's records (model or oracle understanding) through the semantic link: bit-packed or text entries."""

    name: str
    oracle: bool = False
    text: bool = False

    def prepare(self, bench: Workbench) -> None:
        bench.source_records(oracle=self.oracle)

    def run(self, bench: Workbench, air: Air) -> Received:
        sent = bench.source_records(oracle=self.oracle)
        got, tally = send_records(sent.records, bench.schema, bench.registry, bench.link, air, text=self.text)
        return Received(got, tally, len(sent.records), sent=sent.records, shows=sent.shows)


@dataclass
class LearnedScheme:
    """The semantic scheme's records in the learned mode (the paper's channel adaptation module): headers
    digital on the semantic link's MCS, field values through the trained model `link.learned_model`."""

    name: str
    _model: LearnedModel | None = None

    def prepare(self, bench: Workbench) -> None:
        self._model = load_model(bench.link.learned_model, bench.schema)
        bench.source_records(oracle=False)

    def run(self, bench: Workbench, air: Air) -> Received:
        if self._model is None:
            self.prepare(bench)
        assert self._model is not None
        sent = bench.source_records(oracle=False)
        got, tally = send_learned_records(
            sent.records, bench.schema, bench.registry, bench.link, air, self._model
        )
        return Received(got, tally, len(sent.records), sent=sent.records, shows=sent.shows)


@dataclass
class TraditionalScheme:
    """Pixels over the air (H.264 video or JPEG crops, fixed MCS, no ARQ); the receiver runs perception and
    understanding on whatever decodes."""

    name: str
    oracle: bool = False

    def prepare(self, bench: Workbench) -> None:
        payload = bench.traditional_payload
        bench.traditional_records(payload, oracle=self.oracle)

    def run(self, bench: Workbench, air: Air) -> Received:
        sent = bench.traditional_payload
        with _quiet_decoders():
            got, tally = _send(sent, air, bench.traditional)
            clean = bench.traditional_records(sent, oracle=self.oracle)
            n = len(clean.records)
            if got == sent:
                return Received(clean.records, tally, n, "intact", shows=clean.shows)
            if tally.blocks and tally.blocks_failed == tally.blocks:
                return Received([], tally, n, "every block failed")
            out = bench.traditional_records(got, oracle=self.oracle)
        note = f"{tally.blocks_failed}/{tally.blocks} blocks failed"
        return Received(out.records, tally, n, note, shows=out.shows)


def _send(data: bytes, air: Air, t: TraditionalSettings) -> tuple[bytes, Tally]:
    if t.sampling == "sampled" or (t.sampling == "auto" and air.memoryless):
        return send_bytes_sampled(
            data,
            air,
            mcs=t.mcs,
            pilot_symbols=t.pilot_symbols,
            burst_bytes=t.burst_bytes,
            probe_bursts=t.probe_bursts,
            rng=air.rng,
        )
    return send_bytes(data, air, mcs=t.mcs, pilot_symbols=t.pilot_symbols, burst_bytes=t.burst_bytes)


class _quiet_decoders:
    """Silence libav's and libjpeg's per-packet complaints while a corrupted stream is decoded (libjpeg
    writes straight to file descriptor 2, so the descriptor itself is pointed at /dev/null meanwhile)."""

    def __enter__(self) -> None:
        self.level = av.logging.get_level()
        av.logging.set_level(av.logging.PANIC)
        sys.stderr.flush()
        self.saved = os.dup(2)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        av.logging.set_level(self.level)


def build_scheme(name: str) -> Scheme:
    """The scheme called `name`; InvalidInput listing the known ones otherwise."""
    schemes: dict[str, Scheme] = {
        "semantic": SemanticScheme("semantic"),
        "semantic-learned": LearnedScheme("semantic-learned"),
        "semantic-text": SemanticScheme("semantic-text", text=True),
        "oracle": SemanticScheme("oracle", oracle=True),
        "traditional": TraditionalScheme("traditional"),
        "traditional-oracle": TraditionalScheme("traditional-oracle", oracle=True),
    }
    scheme = schemes.get(name)
    if scheme is None:
        raise InvalidInput(f"unknown scheme {name!r}; known: {', '.join(SCHEMES)}")
    return scheme


def check_dataset(dataset: AnyDataset) -> None:
    if not dataset.targets:
        raise InvalidInput("no labelled targets in the input (after clipping)")
