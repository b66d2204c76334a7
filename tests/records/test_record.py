"""The typed record: one JSON shape in and out, checked types, and schema-1 files still render the same report."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from ohlora_fixtures import report
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import SCHEMA_VERSION, BenchmarkRecord, RecordError, Status, from_flat

SCHEMA1 = Path(__file__).parents[1] / "fixtures" / "schema1"
# Lines of the rendered report that depend on when and where it was rendered, not on the records.
RENDER_TIME = re.compile(r"^(Rendered )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+( from|에 실행)")


def schema1_records() -> list[BenchmarkRecord]:
    return list(results.read(SCHEMA1 / "results.jsonl"))


def test_schema1_lines_load_and_round_trip_through_the_current_schema() -> None:
    records = schema1_records()
    assert [(r.candidate, r.kind.value, r.rank, r.status) for r in records] == [
        ("polyglot-ko-1.3b", "finetune", 4, Status.OK), ("polyglot-ko-1.3b", "inference", None, Status.OK),
        ("llama1B", "finetune", 4, Status.OK), ("llama1B", "inference", None, Status.OK),
    ]
    for record in records:
        line = record.to_json()
        assert json.loads(line)["schema"] == SCHEMA_VERSION
        assert BenchmarkRecord.from_json(line) == record
    old = [json.loads(line) for line in (SCHEMA1 / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    # The flat view (pytest-benchmark's extra_info) is the schema-1 shape, key for key and value for value;
    # figures added since (e.g. the latency anatomy) are there too, empty, as schema 1 did not hold them,
    # and the run's round count, answer-length floor, gradient checkpointing and base precision (one round,
    # none, off and full precision, as every schema-1 run had).
    flat = [r.flat() for r in records]
    assert [view["run"].pop("quantization") for view in flat] == ["none"] * len(flat)
    assert [view["run"].pop("rounds") for view in flat] == [1] * len(flat)
    assert [view["run"].pop("min_new_tokens") for view in flat] == [0] * len(flat)
    assert [view["run"].pop("gradient_checkpointing") for view in flat] == [False] * len(flat)
    added: list = []
    assert [_keys_of(view, before, added) for view, before in zip(flat, old)] == old
    assert added and all(value in (None, "") for value in added)


def _keys_of(new: dict, before: dict, added: list) -> dict:
    """`new` cut to the keys of `before` (nested dicts too); the values of the other keys go to `added`."""
    added += [value for key, value in new.items() if key not in before]
    return {key: _keys_of(new[key], value, added) if isinstance(value, dict) and isinstance(new[key], dict)
            else new[key] for key, value in before.items() if key in new}


def test_schema1_extra_info_of_pytest_benchmark_json_loads_as_the_same_records() -> None:
    from_json_file = [stored.record for stored in report.read_stored(SCHEMA1 / "benchmark.json")]
    assert from_json_file == schema1_records()


def test_from_json_names_the_field_and_the_bad_value() -> None:
    good = json.loads(schema1_records()[0].to_json())
    cases = [
        (("rank",), "four", r"^rank: 'four' is not an integer$"),
        (("status",), "done", r"^status: 'done' is not one of"),
        (("memory", "peak_mib"), "big", r"^memory\.peak_mib: 'big' is not a number$"),
        (("finetune", "losses"), [7.0, "x"], r"^finetune\.losses\[1\]: 'x' is not a number$"),
        (("run", "greedy"), 1, r"^run\.greedy: 1 is not a bool$"),
    ]
    for path, value, message in cases:
        bad = json.loads(json.dumps(good))
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(RecordError, match=message):
            BenchmarkRecord.from_json(bad)
    with pytest.raises(RecordError, match=r"^fingerprint: missing$"):
        BenchmarkRecord.from_json({k: v for k, v in good.items() if k != "fingerprint"})
    with pytest.raises(RecordError, match="schema: 99"):
        BenchmarkRecord.from_json({**good, "schema": 99})


def test_non_finite_figures_are_refused_both_ways() -> None:
    record = schema1_records()[0]
    line = record.to_json().replace('"final_loss": ', '"final_loss": NaN, "x": ', 1)
    with pytest.raises(RecordError, match="NaN"):
        BenchmarkRecord.from_json(line)
    with pytest.raises(RecordError, match=r"finetune\.final_loss: inf"):
        BenchmarkRecord.from_json({**json.loads(record.to_json()),
                                   "finetune": {**json.loads(record.to_json())["finetune"], "final_loss": math.inf}})
    broken = dataclasses.replace(record, finetune=dataclasses.replace(record.finetune, final_loss=math.nan))
    with pytest.raises(RecordError, match=r"finetune\.final_loss: nan"):
        broken.to_json()


def test_flat_view_reads_back_to_the_same_record() -> None:
    for record in schema1_records():
        assert from_flat(record.flat()) == record


def _tables(markdown: str) -> list[str]:
    return [block for block in markdown.split("\n\n") if block.startswith("|")]


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_schema1_files_render_every_table_as_the_previous_code_did(tmp_path: Path, lang: str) -> None:
    # Rendered from these same files by the code before the typed record (see tests/fixtures/schema1); since
    # issue 12 with the Pareto view added and, in Korean, every sentence translated and the study's table.
    stored = tmp_path / "tests" / "fixtures" / "schema1"
    shutil.copytree(SCHEMA1, stored)
    out = tmp_path / "out"
    files = [str(Path("tests/fixtures/schema1") / name) for name in ("results.jsonl", "benchmark.json")]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # the runs table names the files as given
        assert report.main([*files, "--out", str(out), "--lang", lang, "--compare-study"]) == 0

    # Every table and line it rendered is rendered the same, in the same order; tables and lines added
    # since (figures schema 1 did not hold) may stand between them.
    expected = (SCHEMA1 / f"leaderboard.{lang}.md").read_text(encoding="utf-8")
    rendered = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert _in_order(_tables(expected), _tables(rendered))
    assert len(_tables(expected)) >= 8
    strip = lambda text: [line for line in text.splitlines() if not RENDER_TIME.match(line)]  # noqa: E731
    assert _in_order(strip(expected), strip(rendered))
    if lang == "en":
        # The same columns with the same values; columns added since are empty for these records, but for
        # the run's round count (1), answer-length floor (0: none), gradient checkpointing (off) and base
        # precision (none: full).
        before = list(csv.DictReader(io.StringIO((SCHEMA1 / "results.en.csv").read_text(encoding="utf-8"))))
        now = list(csv.DictReader(io.StringIO((out / "results.csv").read_text(encoding="utf-8"))))
        assert [row.pop("run.rounds") for row in now] == ["1"] * len(now)
        assert [row.pop("run.min_new_tokens") for row in now] == ["0"] * len(now)
        assert [row.pop("run.gradient_checkpointing") for row in now] == ["False"] * len(now)
        assert [row.pop("run.quantization") for row in now] == ["none"] * len(now)
        assert [row.pop("marks") for row in now] == ["stand-in"] * len(now)  # random weights, tiny scale
        # Which device timed `seconds`, and each stand-in's full-size estimate on this CPU (the time model's).
        assert {row.pop("seconds_device") for row in now} == {before[0]["run.device_name"] or "cpu"}
        assert {row.pop("full_size_estimate_device") for row in now} == {"this CPU"}
        assert all(float(row.pop("full_size_seconds_estimate")) > 0 for row in now)
        assert [{key: row[key] for key in before[0]} for row in now] == before
        assert all(value == "" for row in now for key, value in row.items() if key not in before[0])


def _in_order(wanted: list[str], found: list[str]) -> bool:
    """Whether `wanted` appear in `found` in the same order (others may stand between them)."""
    remaining = iter(found)
    return all(any(item == candidate for candidate in remaining) for item in wanted)


def test_a_quantized_base_is_its_own_run_and_full_precision_keeps_the_old_identity() -> None:
    from ohlora_fixtures.records.record import comparable, comparable_json, run_identity

    for record in schema1_records():
        raw = json.loads(record.to_json())["run"]
        raw.pop("quantization")  # as a record from before the axis holds it
        # Full precision names no precision: every fingerprint and comparison of earlier records holds.
        assert "quantization" not in run_identity(record.run)
        assert comparable_json(raw) == comparable(record.run)
        four, eight = (dataclasses.replace(record.run, quantization=q) for q in ("4bit", "8bit"))
        assert run_identity(four)["quantization"] == "4bit"
        assert len({comparable(record.run), comparable(four), comparable(eight)}) == 3
        assert "4bit base" in four.label and "base" not in record.run.label.replace("weights", "")


def test_comparable_json_is_comparable_of_the_built_run_and_none_where_it_is_not_valid() -> None:
    from ohlora_fixtures.records.record import comparable, comparable_json

    for record in schema1_records():  # older runs: fields added since take their defaults when built
        raw = json.loads(record.to_json())["run"]
        assert comparable_json(raw) == comparable(record.run)
        # What `comparable` leaves out does not matter, not even its type; a setting does.
        assert comparable_json({**raw, "run_id": "other", "date": 0, "ranks": "x"}) == comparable(record.run)
        assert comparable_json({**raw, "batch_size": raw["batch_size"] + 1}) != comparable(record.run)
        assert comparable_json({**raw, "batch_size": -1}) is None
        assert comparable_json({**raw, "epochs": float("nan")}) is None
    assert comparable_json("a run") is None


def test_read_warns_of_each_unreadable_line_by_its_number_and_reads_the_rest(tmp_path: Path) -> None:
    records = schema1_records()
    log = tmp_path / "results.jsonl"
    lines = [r.to_json() for r in records]
    lines.insert(2, lines[2].replace('"seconds": ', '"seconds": -'))  # a record that is not valid
    lines.insert(1, '{"candidate": "x" "kind"}')  # no JSON
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(results.UnreadableRecord) as said:
        assert list(results.read(log)) == records
    assert [str(w.message).split(": ")[0] for w in said] == [f"{log}:2", f"{log}:4"]
    assert "seconds" in str(said[1].message)
