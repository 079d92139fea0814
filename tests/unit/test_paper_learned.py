"""The paper bench's learned-mode link: the same records as the digital link at high SNR, counted symbols."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.paper.config import PaperConfig
from bench.paper.links import Air, LinkSettings, channel_models, send_learned_records, send_records
from semcom.phy.learned import load_model
from semcom.phy.learned_link import learned_burst_symbols
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
LINK = LinkSettings(Mcs("qpsk", "ldpc_r12"), pilot_symbols=16, max_records_per_burst=32, ldpc_iterations=20)
MODEL = load_model("person-s2", PERSON)


def records(n: int) -> list[Record]:
    values = [("male", "white", "long"), ("female", "red", "short"), ("female", "black", "long")]
    out = []
    for i in range(n):
        gender, colour, sleeve = values[i % len(values)]
        fields = PERSON.normalise({"gender": gender, "upper_color": colour, "sleeve": sleeve})
        out.append(Record(PERSON.id, "bench", i, i + 1, 1_767_225_600 + i * 0.5, 0, fields))
    return out


def air(snr_db: float, channel: str = "awgn") -> Air:
    models = [{"kind": "rayleigh"}, {"kind": "awgn"}] if channel == "rayleigh" else [{"kind": "awgn"}]
    return Air(channel_models(models, snr_db), 1, ldpc_iterations=20)


def test_learned_link_delivers_the_digital_links_records_at_high_snr_and_counts_its_symbols() -> None:
    sent = records(40)
    got, tally = send_learned_records(sent, PERSON, REGISTRY, LINK, air(30), MODEL)
    digital, dtally = send_records(sent, PERSON, REGISTRY, LINK, air(30))
    strip = [(r.record_id, r.track_id, r.time_s, r.fields) for r in digital]
    assert [(r.record_id, r.track_id, r.time_s, r.fields) for r in got] == strip
    # Every known field carries the decoder's confidence (1 at 30 dB within 1e-6), unknown ones none.
    assert all(set(r.confidence) == {"gender", "upper_color", "sleeve"} for r in got)
    assert min(c for r in got for c in r.confidence.values()) > 1 - 1e-6
    assert (tally.bursts, tally.bursts_lost) == (dtally.bursts, 0) == (2, 0)
    burst = [learned_burst_symbols(n, PERSON, MODEL) for n in (32, 8)]
    assert tally.channel_symbols == sum(burst) < dtally.channel_symbols
    assert tally.learned_symbols == 40 * MODEL.symbols_per_record == 40 * 12
    assert tally.channel_bits == 2 * (tally.channel_symbols - tally.learned_symbols)  # QPSK header only


@pytest.mark.parametrize("channel", ["awgn", "rayleigh"])
def test_learned_link_loses_bursts_with_their_header(channel: str) -> None:
    got, tally = send_learned_records(records(40), PERSON, REGISTRY, LINK, air(-10, channel), MODEL)
    assert got == [] and tally.bursts_lost == tally.bursts == 2


def test_the_learned_model_option_is_checked() -> None:
    crops = {"crops": Path("/nonexistent")}
    with pytest.raises(ValueError, match="no learned phy model 'person-s9'; shipped: person-s1"):
        PaperConfig(learned_model="person-s9", **crops)
    assert PaperConfig(learned_model="person-s3", **crops).learned_model == "person-s3"
    assert "semantic-learned" in PaperConfig(**crops).schemes


def test_a_reception_scores_once_per_content() -> None:
    """Points whose received records (and targets shown) are the same reuse one scoring; any difference
    in a field, a confidence or a target shown is another reception."""
    from dataclasses import replace

    from bench.paper.links import Tally
    from bench.paper.run import _received_key
    from bench.paper.schemes import Received

    sent = records(3)
    shows: dict[int, int | None] = {1: 0, 2: 1, 3: None}
    key = _received_key(Received(sent, Tally(), 3, shows=shows))
    assert key == _received_key(Received(records(3), Tally(bursts=9), 3, shows=dict(shows)))
    changed = [
        [replace(sent[0], confidence={"gender": 0.9}), *sent[1:]],
        [replace(sent[0], fields={**sent[0].fields, "sleeve": "short"}), *sent[1:]],
        sent[:2],
    ]
    assert all(_received_key(Received(c, Tally(), 3, shows=shows)) != key for c in changed)
    assert _received_key(Received(sent, Tally(), 3, shows={**shows, 3: 2})) != key
