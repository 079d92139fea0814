"""`semcom bench paper` end to end on real data: a short clip of the intel video and a small PETA sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from semcom.cli import main
from semcom.data import data_dir
from txd.understanding.attributes import DEFAULT_WEIGHTS

DATA = data_dir()
VIDEO = DATA / "videos" / "intel_one_by_one_person_detection.mp4"
LABELS = DATA / "gt" / "intel_one_by_one" / "provisional_labels.csv"
PETA = DATA / "peta"
CAMPUS = DATA / "gt" / "TUD-Campus"
# The attribute model's weights ship with the package; without them only the label-driven schemes run.
MODEL = DEFAULT_WEIGHTS.is_file()

pytestmark = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(not VIDEO.is_file(), reason=f"intel video not found at {VIDEO} (set SEMCOM_DATA_DIR)"),
]


def point(doc: dict[str, Any], scheme: str, snr_db: float) -> dict[str, Any]:
    return next(p for p in doc["schemes"][scheme]["per_snr"] if p["snr_db"] == snr_db)


def check_files(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert "| SNR dB |" in md and "## Overhead" in md
    for png in ("accuracy_vs_snr.png", "overhead.png", "precision_recall.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return doc


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first 14 s (person 1), analysed at 2.5 frames/s to keep the test short, at 3 and 30 dB."""
    out = tmp_path_factory.mktemp("paper-clip")
    schemes = "oracle,semantic,semantic-text,traditional" if MODEL else "oracle,traditional-oracle"
    argv = ["bench", "paper", "--video", str(VIDEO), "--labels", str(LABELS), "--clip-s", "14"]
    argv += ["--analysis-fps", "2.5", "--snr-db", "3,30", "--schemes", schemes, "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    return check_files(out)


def test_traditional_has_its_cliff(clip_run: dict[str, Any]) -> None:
    name = "traditional" if MODEL else "traditional-oracle"
    low, high = point(clip_run, name, 3.0), point(clip_run, name, 30.0)
    assert low["records_received"] == [0]
    assert low["precision"]["mean"] == 0.0 and low["recall"]["mean"] == 0.0
    # Bit-identical stream at 30 dB: the receiver's result is the clean video's.
    assert high["notes"] == ["intact"]
    assert high["records_received"] == [clip_run["schemes"][name]["records_sent"]] != [0]


def test_oracle_is_exact_and_bits_are_counted_from_messages(clip_run: dict[str, Any]) -> None:
    high = point(clip_run, "oracle", 30.0)
    assert high["precision"]["mean"] == 1.0 and high["recall"]["mean"] == 1.0
    oracle_bits = clip_run["schemes"]["oracle"]["bits"]
    video_bits = clip_run["schemes"]["traditional" if MODEL else "traditional-oracle"]["bits"]
    assert 0 < oracle_bits["info_bits"] < oracle_bits["channel_bits"]
    assert oracle_bits["info_bits"] * 1000 < video_bits["info_bits"]
    assert video_bits["airtime_s"] == pytest.approx(video_bits["channel_symbols"] / 1e6)
    assert clip_run["queries"] and all(q["text"] for q in clip_run["queries"])


@pytest.mark.skipif(not MODEL, reason=f"attribute weights not found at {DEFAULT_WEIGHTS}")
def test_semantic_and_text_carry_the_same_records(clip_run: dict[str, Any]) -> None:
    semantic, text = clip_run["schemes"]["semantic"], clip_run["schemes"]["semantic-text"]
    assert semantic["records_sent"] == text["records_sent"] > 0
    assert (
        point(clip_run, "semantic", 30.0)["precision"] == point(clip_run, "semantic-text", 30.0)["precision"]
    )
    assert semantic["bits"]["info_bits"] < text["bits"]["info_bits"]


@pytest.mark.skipif(not (PETA / "peta_labels.csv").is_file(), reason=f"PETA not found at {PETA}")
def test_crop_set(tmp_path: Path) -> None:
    argv = ["bench", "paper", "--crops", str(PETA), "--max-crops", "40", "--snr-db", "3,30"]
    argv += ["--schemes", "oracle,traditional-oracle", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    doc = check_files(tmp_path)
    assert doc["input"]["targets"] == 40
    assert point(doc, "oracle", 30.0)["precision"]["mean"] == 1.0
    assert point(doc, "traditional-oracle", 3.0)["records_received"] == [0]
    assert point(doc, "traditional-oracle", 30.0)["records_received"] == [40]


def test_bad_input_is_refused_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "paper", "--video", str(VIDEO), "--labels", str(LABELS), "--out", str(tmp_path / "o")]
    assert main([*argv, "--schemes", "semantic,smoke-signals"]) == 2
    assert "unknown scheme(s) smoke-signals" in capsys.readouterr().err
    assert main([*argv, "--snr-db", ""]) == 2
    assert "--snr-db" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_block_sampling_agrees_with_the_full_simulation_on_a_clip() -> None:
    """The traditional link on the 14 s clip's H.264 stream, once fully simulated and once by block-error
    sampling: the same outcome at 3 dB (nothing) and 30 dB (intact), and block error rates within 5 binomial
    standard deviations at 6.5 dB, near the cliff (seed 0)."""
    from dataclasses import replace

    from bench.paper.config import PaperConfig
    from bench.paper.links import Air, channel_models
    from bench.paper.run import build
    from bench.paper.schemes import TraditionalScheme

    # One analysed frame per second: the check is about the link; perception only has to run.
    cfg = PaperConfig(
        video=VIDEO, labels=LABELS, clip_s=14, analysis_fps=1.0, schemes=("traditional-oracle",)
    )
    bench, _, _ = build(cfg)
    scheme = TraditionalScheme("traditional-oracle", oracle=True)
    outcomes = {}
    for mode in ("full", "sampled"):
        bench.traditional = replace(bench.traditional, sampling=mode)
        for snr in (3.0, 6.5, 30.0):
            air = Air(channel_models([{"kind": "awgn"}], snr), 7, ldpc_iterations=20)
            outcomes[mode, snr] = scheme.run(bench, air)
    for mode in ("full", "sampled"):
        assert outcomes[mode, 3.0].records == [] and outcomes[mode, 3.0].note == "every block failed"
        assert outcomes[mode, 30.0].note == "intact" and outcomes[mode, 30.0].records
    full, sampled = outcomes["full", 6.5].tally, outcomes["sampled", 6.5].tally
    assert full.blocks == sampled.blocks and full.channel_bits == sampled.channel_bits
    p = full.blocks_failed / full.blocks
    assert 0.02 < p < 0.98
    assert abs(sampled.blocks_failed / sampled.blocks - p) < 5 * (2 * p * (1 - p) / full.blocks) ** 0.5


@pytest.mark.skipif(not (CAMPUS / "attributes.csv").is_file(), reason=f"TUD-Campus labels not at {CAMPUS}")
def test_a_crowded_sequence_is_scored_by_boxes(tmp_path: Path) -> None:
    """TUD-Campus (8 people, several in view at once) against its MOT boxes: every record the oracle
    retrieves shows a person who satisfies the query, and the ranked metrics sit beside precision."""
    video = DATA / "videos" / "tud_campus.mp4"
    argv = ["bench", "paper", "--video", str(video), "--gt", str(CAMPUS / "gt.txt")]
    argv += ["--attributes", str(CAMPUS / "attributes.csv"), "--schemes", "oracle", "--snr-db", "30"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    doc = check_files(tmp_path)
    assert doc["input"]["kind"] == "video-boxes" and doc["input"]["targets"] == 8
    overall = doc["schemes"]["oracle"]["overall"]
    assert overall["precision_answered"]["mean"] == 1.0
    for key in ("precision", "precision_at_1", "precision_at_5", "precision_at_10", "average_precision"):
        assert set(overall[key]) == {"mean", "std"}
    assert point(doc, "oracle", 30.0)["records_showing_nobody"] == [0]  # the oracle drops them


@pytest.mark.skipif(not MODEL, reason=f"attribute weights not found at {DEFAULT_WEIGHTS}")
@pytest.mark.skipif(not (PETA / "peta_labels.csv").is_file(), reason=f"PETA not found at {PETA}")
def test_an_in_sample_crop_run_says_so_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "paper", "--crops", str(PETA), "--max-crops", "30", "--snr-db", "30", "--schemes"]
    argv += [
        "semantic",
        "--fold-models",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(argv) == 2  # no fold models: refused
    assert "--in-sample" in capsys.readouterr().err
    assert main([*argv, "--in-sample"]) == 0
    doc = check_files(tmp_path / "o")
    assert doc["sample"].startswith("IN-SAMPLE")
    assert "IN-SAMPLE" in (tmp_path / "o" / "results.md").read_text()
    assert "IN-SAMPLE" in capsys.readouterr().out
    assert set(doc["attribute_accuracy"]) >= {"gender", "mean"}
