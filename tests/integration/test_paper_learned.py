"""`semcom bench paper` with the learned scheme on a small PETA sample: its results have the digital
scheme's shape, it answers every query as the digital scheme does at 30 dB, and it costs fewer symbols."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.paper.metrics import ANSWERED, METRICS, RANKED
from semcom.cli import main
from semcom.data import data_dir
from txd.understanding.attributes import DEFAULT_WEIGHTS

PETA = data_dir() / "peta"

pytestmark = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(not (PETA / "peta_labels.csv").is_file(), reason=f"PETA not found at {PETA}"),
    pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"attribute weights not at {DEFAULT_WEIGHTS}"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """24 crops (seed 0) understood by the shipped model (in sample: the check is about the link), at 3
    and 30 dB on AWGN."""
    out = tmp_path_factory.mktemp("paper-learned")
    argv = ["bench", "paper", "--crops", str(PETA), "--max-crops", "24", "--in-sample", "--snr-db", "3,30"]
    argv += ["--schemes", "semantic,semantic-learned", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert "| semantic-learned | 24 records |" in (out / "results.md").read_text()
    return doc


def per_snr(doc: dict[str, Any], scheme: str, snr_db: float) -> dict[str, Any]:
    return next(p for p in doc["schemes"][scheme]["per_snr"] if p["snr_db"] == snr_db)


def test_the_learned_scheme_reports_what_the_digital_one_does(run: dict[str, Any]) -> None:
    digital, learned = run["schemes"]["semantic"], run["schemes"]["semantic-learned"]
    assert set(learned) == set(digital)
    assert set(learned["overall"]) == set(digital["overall"]) >= {*METRICS, ANSWERED, *RANKED}
    assert [p["snr_db"] for p in learned["per_snr"]] == [3.0, 30.0]
    assert learned["records_sent"] == digital["records_sent"] == 24
    assert learned["sent"] == digital["sent"]  # the same records go on the air
    bits, dbits = learned["bits"], digital["bits"]
    assert bits["bursts"] == dbits["bursts"] and 0 < bits["learned_symbols"] < bits["channel_symbols"]
    assert bits["channel_symbols"] < dbits["channel_symbols"]  # 48 symbols per record against 54
    vs = run["targets"]["learned_vs_digital"]
    assert vs["semantic-learned"]["symbols_per_record"] < vs["semantic"]["symbols_per_record"]


def test_at_30_db_the_learned_scheme_answers_as_the_digital_one(run: dict[str, Any]) -> None:
    learned, digital = per_snr(run, "semantic-learned", 30.0), per_snr(run, "semantic", 30.0)
    assert learned["records_received"] == digital["records_received"] == [24]
    keys = ("query_id", "retrieved", "correct", "found", "precision", "recall")
    assert [[{k: q[k] for k in keys} for q in p] for p in learned["per_query"]] == [
        [{k: q[k] for k in keys} for q in p] for p in digital["per_query"]
    ]
    for metric in ("precision", "average_precision", "precision_at_5"):
        assert learned[metric]["mean"] == pytest.approx(digital[metric]["mean"], abs=1e-9)
