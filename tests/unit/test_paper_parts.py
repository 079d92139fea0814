"""Parts of the paper benchmark: label files, config errors, query phrasing, record link, block sampling."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bench.paper.cli import add_arguments, config_from_args, main
from bench.paper.config import PaperConfig
from bench.paper.labels import Target, load_video_labels
from bench.paper.links import Air, LinkSettings, channel_models, send_bytes, send_bytes_sampled, send_records
from bench.paper.queries import generate_queries, load_queries, phrase
from bench.paper.schemes import Workbench
from rxd.retrieval.parse import parse_query, slot_sets
from semcom.codec import frame_bits
from semcom.errors import InvalidInput
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import SchemaRegistry
from txd.understanding.base import Understanding

PERSON = SchemaRegistry.builtin().get("person/1")
HEADER = "person,start_s,end_s,gender,upper_color,sleeve,lower_color,lower_length,shoe_color,notes\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_video_labels_read_comments_multi_values_and_extra_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# provisional\n" + HEADER + "1,6.2,19.5,female,grey|white,long,grey,long,black,cardigan\n"
        "2,22.9,44.4,male,black,,black,long,,\n",
    )
    labels = load_video_labels(path, PERSON)
    first, second = labels.targets
    assert first.labels["upper_color"] == ("grey", "white")
    assert first.satisfies({"upper_color": "white", "gender": "female"})
    assert not second.satisfies({"sleeve": "long"})  # empty cell: not labelled, never satisfied
    assert second.record_fields(PERSON)["sleeve"] == "unknown"
    assert labels.target_at(20.0, tolerance_s=1.0) == 0  # 19.5 + 1 s tolerance
    assert labels.target_at(21.0, tolerance_s=1.0) is None
    assert labels.target_at(21.0, tolerance_s=2.0) == 0  # in both widened ranges: the nearer range wins
    assert labels.target_at(22.0, tolerance_s=2.0) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("person,start_s,gender\n1,0,male\n", "missing column(s) end_s"),
        ("person,start_s,end_s,notes\n1,0,1,x\n", "any of the person/1 fields"),
        (HEADER + "1,0,1,male,mauve,long,black,long,black,\n", "'mauve' is not in the person/1 vocabulary"),
        (HEADER + "1,5,1,male,black,long,black,long,black,\n", "empty or negative"),
        (HEADER + "1,a,1,male,black,long,black,long,black,\n", "must be numbers"),
        ("# only a comment\n", "no header row"),
        (HEADER, "no labelled person rows"),
    ],
)
def test_bad_label_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_video_labels(write(tmp_path, text), PERSON)


def parse(argv: list[str]) -> PaperConfig:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--crops", "x", "--schemes", "semantic,morse"], "unknown scheme"),
        (["--crops", "x", "--snr-db", ""], "--snr-db"),
        (["--crops", "x", "--snr-db", "3,abc"], "--snr-db"),
        (["--crops", "x", "--channel", "{"], "--channel is not JSON"),
        (["--crops", "x", "--traditional-mcs", "qam16/turbo"], "unknown modulation/coding"),
        (["--video", "v.mp4"], "--video needs --labels"),
        (["--crops", "x", "--video", "v", "--labels", "l"], r"either --video with --labels \(or --gt"),
        ([], r"either --video with --labels \(or --gt and --attributes\), or --crops"),
        (["--video", "v", "--labels", "l", "--gt", "g", "--attributes", "a"], "not both"),
        (["--video", "v", "--gt", "g"], "--gt and --attributes go together"),
        (["--video", "v", "--labels", "l", "--partial-gt"], "--partial-gt applies to box-level"),
        (["--crops", "x", "--iou", "1.5"], "--iou"),
    ],
)
def test_bad_options_give_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse(argv)


def test_main_reports_bad_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = write(tmp_path, "person,start_s,gender\n1,0,male\n")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    rc = main(
        ["--video", str(video), "--labels", str(labels), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    assert rc == 2
    assert "missing column(s) end_s" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_channel_needs_an_awgn_to_sweep() -> None:
    assert channel_models([{"kind": "rayleigh"}, {"kind": "awgn"}], 9.0)[1]["snr_db"] == 9.0
    with pytest.raises(InvalidInput, match="no 'awgn' model"):
        channel_models([{"kind": "rayleigh"}], 9.0)
    with pytest.raises(InvalidInput, match="models\\[0\\]"):
        channel_models([{"kind": "awgn", "bogus": 1}], 9.0)


def targets() -> list[Target]:
    return [
        Target("1", {"gender": ("male",), "upper_color": ("white",), "sleeve": ("long",),
                     "lower_color": ("black",), "shoe_color": ("black",)}),
        Target("2", {"gender": ("female",), "upper_color": ("grey",), "lower_length": ("short",)}),
        Target("3", {"gender": ("female",)}),  # one known attribute: no combination query
    ]  # fmt: skip


def test_queries_cover_values_and_combinations_and_parse_back() -> None:
    queries = generate_queries(targets(), PERSON, max_combinations=10, seed=1)
    singles = [q.slots for q in queries if q.kind == "single"]
    combos = [q.slots for q in queries if q.kind == "combination"]
    assert {"gender": "female"} in singles and {"lower_length": "short"} in singles
    assert len(singles) == 8  # male, female, white, grey, long sleeves, black pants, short pants, black shoes
    assert len(combos) == 2
    for q in queries:
        assert parse_query(q.text, PERSON).slots == slot_sets(q.slots), q.text
    assert len(generate_queries(targets(), PERSON, max_combinations=1, seed=1)) == 9
    # Two-attribute queries only when asked for; the rest of the set stays the same.
    with_pairs = generate_queries(targets(), PERSON, max_combinations=10, seed=1, max_pairs=100)
    pairs = [q.slots for q in with_pairs if q.kind == "pair"]
    assert all(len(p) == 2 for p in pairs) and len(pairs) == len({tuple(p.items()) for p in pairs}) > 0
    for combo in combos:  # every pair of a target's main values is asked
        assert all(dict([a, b]) in pairs for a, b in itertools.combinations(combo.items(), 2))
    assert [q.slots for q in with_pairs if q.kind != "pair"] == [q.slots for q in queries]
    assert len([q for q in generate_queries(targets(), PERSON, max_combinations=10, seed=1, max_pairs=3)
                if q.kind == "pair"]) == 3  # fmt: skip
    for q in with_pairs:
        assert parse_query(q.text, PERSON).slots == slot_sets(q.slots), q.text


def test_queries_ask_for_main_values_of_observed_targets_only() -> None:
    people = [
        Target("1", {"gender": ("male",), "upper_color": ("red", "blue")}),  # red first: blue is second
        Target("2", {"gender": ("female",), "upper_color": ("green",)}),
    ]
    asked = generate_queries(people, PERSON, max_combinations=10, seed=1)
    singles = [q.slots for q in asked if q.kind == "single"]
    assert {"upper_color": "red"} in singles and {"upper_color": "blue"} not in singles
    seen_one = generate_queries(people, PERSON, max_combinations=10, seed=1, observed={0})
    assert [q.slots for q in seen_one] == [
        {"gender": "male"},
        {"upper_color": "red"},
        {"gender": "male", "upper_color": "red"},
    ]
    assert generate_queries(people, PERSON, max_combinations=10, seed=1, observed=set()) == []


def test_phrase_reads_like_the_paper() -> None:
    slots = {"gender": "male", "upper_color": "white", "sleeve": "long", "lower_color": "black",
             "shoe_color": "black"}  # fmt: skip
    text = phrase(slots, random.Random(0))
    assert text.startswith("the man wearing a white long-sleeved ")
    assert parse_query(text, PERSON).slots == slot_sets(slots)


def records(n: int) -> list[Record]:
    fields = PERSON.normalise({"gender": "male", "upper_color": "white", "sleeve": "long"})
    return [Record(PERSON.id, "bench", i, i + 1, 1_767_225_600 + i * 0.5, 0, fields) for i in range(n)]


LINK = LinkSettings(Mcs("qpsk", "ldpc_r12"), pilot_symbols=16, max_records_per_burst=32, ldpc_iterations=20)


def air(snr_db: float) -> Air:
    return Air(channel_models([{"kind": "awgn"}], snr_db), 1, ldpc_iterations=20)


def test_record_link_counts_bits_from_the_bursts_and_text_costs_more() -> None:
    registry = SchemaRegistry.builtin()
    sent = records(40)
    got, tally = send_records(sent, PERSON, registry, LINK, air(30))
    assert [(r.record_id, r.fields, r.time_s) for r in got] == [
        (r.record_id, r.fields, r.time_s) for r in sent
    ]
    assert tally.bursts == 2  # 32 + 8 records, as txd frames them
    assert tally.info_bits == frame_bits(32, PERSON) + frame_bits(8, PERSON)
    assert tally.channel_bits == 2 * tally.channel_symbols  # QPSK, pilots included
    assert tally.channel_symbols == 2 * 16 + tally.info_bits  # rate 1/2 at 2 bits per symbol, 16 pilots each
    _, text = send_records(sent, PERSON, registry, LINK, air(30), text=True)
    assert text.info_bits > 6 * tally.info_bits
    lost, low = send_records(sent, PERSON, registry, LINK, air(-10))
    assert lost == [] and low.bursts_lost == 2


def test_block_sampling_matches_the_full_chain() -> None:
    """At 6.5 dB (16-QAM, rate 1/2: about a third of the codewords fail) the sampled and the full simulation
    give the same block error rate and bit error rate within 5 binomial standard deviations (seeded)."""
    mcs = Mcs("qam16", "ldpc_r12")
    data = np.random.default_rng(5).integers(0, 256, 12032 * 12 + 300, dtype=np.uint8).tobytes()
    models = channel_models([{"kind": "awgn"}], 6.5)
    full, t_full = send_bytes(
        data, Air(models, 1, ldpc_iterations=20), mcs=mcs, pilot_symbols=16, burst_bytes=12032
    )
    probe = Air(models, 2, ldpc_iterations=20)
    sampled, t_samp = send_bytes_sampled(
        data, probe, mcs=mcs, pilot_symbols=16, burst_bytes=12032, probe_bursts=8, rng=probe.rng
    )
    counts = ("info_bits", "channel_bits", "channel_symbols", "blocks", "bursts")
    assert [getattr(t_full, c) for c in counts] == [getattr(t_samp, c) for c in counts]
    p = t_full.blocks_failed / t_full.blocks
    assert 0.05 < p < 0.95
    sigma = np.sqrt(p * (1 - p) / t_full.blocks) * np.sqrt(2)
    assert abs(t_samp.blocks_failed / t_samp.blocks - p) < 5 * sigma
    sent = np.frombuffer(data, np.uint8)
    ber = [np.unpackbits(np.frombuffer(x, np.uint8) ^ sent).mean() for x in (full, sampled)]
    assert ber[1] == pytest.approx(ber[0], rel=0.3)


def test_saved_query_sets_load_back_and_bad_ones_are_named(tmp_path: Path) -> None:
    queries = generate_queries(targets(), PERSON, max_combinations=10, seed=1)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"queries": [q.to_dict() for q in queries]}))
    assert load_queries(path, PERSON) == queries
    path.write_text(json.dumps([{"slots": {"upper_color": "White"}}]))
    (only,) = load_queries(path, PERSON)
    assert only.slots == {"upper_color": "white"} and parse_query(only.text, PERSON).slots == slot_sets(
        only.slots
    )
    for bad, message in (
        ([{"slots": {"hat": "red"}}], "query 0: schema 'person/1' has no field 'hat'"),
        ([{"text": "a man"}], "query 0: needs 'slots'"),
        ([], "non-empty JSON list"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(InvalidInput, match=message):
            load_queries(path, PERSON)


def test_bench_records_carry_stated_confidences_where_the_schema_has_bits() -> None:
    """As txd builds them: person/2 records keep the understanding's confidences (ranked answers are
    measured on them), person/1 records none (hard answers), whichever way they travel."""
    seen = Understanding({"gender": "male", "upper_color": "red"}, {"gender": 0.9, "upper_color": 0.6})
    for schema_id, expected in (("person/1", {}), ("person/2", {"gender": 0.9, "upper_color": 0.6})):
        bench = object.__new__(Workbench)  # only the schema is needed to build a record
        bench.schema = SchemaRegistry.builtin().get(schema_id)
        record = bench._record(1, 7, 12.5, seen)
        assert record.confidence == expected and record.fields["upper_color"] == "red"
