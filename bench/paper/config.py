"""Options of the paper benchmark (`semcom bench paper`), validated once before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from semcom.burst import parse_mcs
from semcom.config import Frozen
from semcom.errors import InvalidInput
from semcom.phy.learned import load_model_any
from semcom.schema import SchemaRegistry

from .schemes import DEFAULT_SCHEMES, SCHEMES

PAPER_SNR_DB = tuple(float(s) for s in range(3, 31, 3))


class PaperConfig(Frozen):
    """One run of the case study: input, schemes, SNR sweep, channel, the traditional system's settings."""

    video: Path | None = Field(None, description="labelled video file (with `labels`)")
    labels: Path | None = Field(None, description="CSV person,start_s,end_s,<schema fields> for `video`")
    gt: Path | None = Field(
        None, description="MOTChallenge gt.txt of `video` (with `attributes`): box-level truth"
    )
    attributes: Path | None = Field(
        None,
        description="CSV id,<schema fields> labelling every gt identity (with `gt`; a|b, empty = unknown)",
    )
    partial_gt: bool = Field(
        False, description="the gt covers only some people: records matching nobody leave precision"
    )
    iou: float = Field(0.5, gt=0, le=1, description="IoU a keyframe box needs with a gt box to show it")
    gt_frame_offset: int = Field(
        1, description="gt frame number of the video's first frame (MOTChallenge numbers frames from 1)"
    )
    crops: Path | None = Field(None, description="labelled crop set in the PETA layout (peta_labels.csv)")
    fold_models: Path = Field(
        Path("var/attributes_loso"),
        description="leave-one-subset-out attribute models <subset>.pt (python -m bench.attributes_loso)",
    )
    in_sample: bool = Field(
        False,
        description="score crops with the configured model even though it trained on them (labelled so)",
    )
    out: Path = Field(Path("var/bench/paper"), description="run directory for results.json/.md/.png")
    schemes: tuple[str, ...] = Field(DEFAULT_SCHEMES, min_length=1, description="schemes to compare")
    snr_db: tuple[float, ...] = Field(PAPER_SNR_DB, min_length=1, description="Es/N0 points, dB")
    channel: tuple[dict[str, Any], ...] = Field(
        ({"kind": "awgn"},),
        min_length=1,
        description="channel-sim models in order; every 'awgn' gets the swept snr_db",
    )
    seeds: int = Field(1, ge=1, le=100, description="channel draws per SNR point")
    seed: int = Field(0, ge=0, description="seed of every random choice (sampling, queries, noise)")
    top_k: int = Field(1000, ge=1, le=1000, description="hits asked of the engine per query")
    match: Literal["exact", "compatible"] = Field(
        "exact",
        description="which hits count as retrieved: 'exact' (every queried slot matches) or 'compatible' "
        "(no queried slot contradicted: a field the transmitter reported unknown does not exclude a hit)",
    )
    max_combinations: int = Field(40, ge=0, description="full-combination queries at most (seeded sample)")
    max_pairs: int = Field(
        0,
        ge=0,
        description="two-attribute queries at most (seeded sample of value pairs targets carry); 0: none",
    )
    queries: Path | None = Field(
        None, description="a saved query set (JSON list, or a results.json) instead of generating one"
    )
    tolerance_s: float = Field(1.0, ge=0, description="a labelled time range is widened by this much")
    min_positives: int = Field(
        5, ge=1, description="queries with fewer satisfying targets get their ranked metrics reported apart"
    )
    clip_s: float | None = Field(None, gt=0, description="use only the first clip_s seconds of the video")
    max_crops: int = Field(2000, ge=1, description="crops sampled from the crop set (seeded)")
    analysis_fps: float | None = Field(
        None, gt=0, description="frames analysed per second of video; null: txd's configured rate"
    )
    semantic_mcs: str | None = Field(None, description="MCS of the semantic link; null: txd's link.mcs")
    learned_model: str = Field(
        "person-s2",
        description="the semantic-learned scheme's model: a shipped name (semcom/phy/weights/) or a JSON "
        "file; its headers go on the semantic link's MCS",
    )
    traditional_mcs: str = Field("qam16/ldpc_r12", description="MCS of the traditional link (the paper's)")
    burst_bytes: int = Field(12032, ge=16, description="bytes of the traditional stream per burst")
    sampling: Literal["auto", "full", "sampled"] = Field(
        "auto",
        description="traditional link: 'full' sends every burst through the chain; 'sampled' draws each "
        "codeword's outcome from probe bursts through the chain (valid on a memoryless channel); 'auto': "
        "sampled when the channel is AWGN only",
    )
    probe_bursts: int = Field(32, ge=1, description="probe bursts per channel draw when sampling")
    video_bitrate_kbps: int = Field(500, ge=16, description="H.264 average bitrate of the traditional video")
    gop_s: float = Field(2.0, gt=0, description="seconds between H.264 IDR frames")
    x264_preset: str = Field("veryfast", description="libx264 speed preset")
    symbol_rate: float = Field(1e6, gt=0, description="channel symbols per second, for airtime")
    txd_config: Path | None = Field(None, description="txd TOML: perception, understanding, link")
    rxd_config: Path | None = Field(None, description="rxd TOML: generating agent, embedder, decoder")

    @field_validator("schemes")
    @classmethod
    def _known_schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in SCHEMES]
        if unknown:
            raise ValueError(f"unknown scheme(s) {', '.join(unknown)}; known: {', '.join(SCHEMES)}")
        if len(set(value)) != len(value):
            raise ValueError("a scheme is listed twice")
        return value

    @field_validator("traditional_mcs", "semantic_mcs")
    @classmethod
    def _known_mcs(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if parse_mcs(value) is None:
                    raise ValueError("the benchmark needs a physical layer, not 'bytes'")
            except InvalidInput as err:
                raise ValueError(str(err)) from err
        return value

    @field_validator("learned_model")
    @classmethod
    def _learned_model_named(cls, value: str) -> str:
        try:
            load_model_any(value, SchemaRegistry.builtin())
        except InvalidInput as err:
            raise ValueError(str(err)) from err
        return value

    @model_validator(mode="after")
    def _one_input(self) -> PaperConfig:
        boxes = self.gt is not None or self.attributes is not None
        video = self.video is not None or self.labels is not None or boxes
        if video == (self.crops is not None):
            raise ValueError("give either --video with --labels (or --gt and --attributes), or --crops")
        if boxes and (self.gt is None or self.attributes is None):
            raise ValueError("--gt and --attributes go together")
        if video and (self.video is None or (self.labels is None) == (self.gt is None)):
            raise ValueError(
                "--video needs --labels (time ranges) or --gt with --attributes (boxes), not both"
            )
        if self.partial_gt and not boxes:
            raise ValueError("--partial-gt applies to box-level ground truth (--gt)")
        return self

    def describe_input(self) -> str:
        if self.crops is not None:
            return f"crops {self.crops}"
        if self.gt is not None:
            partial = ", partial gt" if self.partial_gt else ""
            return (
                f"video {self.video}, boxes {self.gt} (IoU >= {self.iou:g}{partial}), "
                f"identities {self.attributes}"
            )
        return f"video {self.video}, labels {self.labels}"
