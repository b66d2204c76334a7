"""The results log's index: what each line holds, stored beside a long log and trusted only for the bytes it
hashed."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ohlora_fixtures.records import log_index, results
from ohlora_fixtures.records.log_index import LogIndex
from ohlora_fixtures.records.record import BenchmarkRecord, Status, comparable
from tests.records.test_record import schema1_records


def _records() -> list[BenchmarkRecord]:
    """Current-schema records of one run (the schema-1 fixture's, read and re-identified)."""
    return [replace(r, fingerprint=f"fp{i % 2}", finished=float(i)) for i, r in enumerate(schema1_records())]


def _log(tmp_path: Path, lines: list[str]) -> Path:
    log = tmp_path / "results.jsonl"
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return log


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every log is long enough to be indexed to disk; the list counts the lines parsed for the index."""
    monkeypatch.setattr(log_index, "STORE_FROM_BYTES", 0)
    parsed: list[int] = []
    real = log_index._entry
    def counted(raw: bytes, *a: int) -> log_index.Entry:
        if sys._getframe(1).f_code.co_name == "refresh":  # not the check of a line read for its record
            parsed.append(a[1])
        return real(raw, *a)

    monkeypatch.setattr(log_index, "_entry", counted)
    return parsed


def test_each_line_is_indexed_with_its_number_settings_and_head_and_broken_ones_are_warned_of_when_read(
    tmp_path: Path,
) -> None:
    records = _records()
    log = _log(tmp_path, [records[0].to_json(), "", '{"candidate": "x" "kind"}', "[1, 2]", records[1].to_json()])
    index = LogIndex(log)
    entries = list(index.lines())
    assert [e.number for e in entries] == [1, 3, 4, 5]  # the blank line 2 is counted, not kept
    good, broken, array, last = entries
    assert good.settings == comparable(records[0].run) and good.run_id == records[0].run.run_id
    assert good.fingerprint == "fp0" and good.head is not None and good.head.key == records[0].key
    assert broken.settings is None and array.settings is None and broken.head is None
    assert index.record(good) == records[0] and index.record(last) == records[1]
    with pytest.warns(results.UnreadableRecord, match=rf"{log}:3: skipped, not a valid record: not JSON"):
        assert index.record(broken) is None
    with pytest.warns(results.UnreadableRecord, match=rf"{log}:4: .*a JSON object, not list"):
        assert index.record(array) is None


def test_a_last_line_without_its_newline_is_read_each_time_and_never_stored(tmp_path: Path, stored: list[int]) -> None:
    records = _records()
    log = _log(tmp_path, [records[0].to_json()])
    with log.open("a", encoding="utf-8") as stream:
        stream.write(records[1].to_json()[:40])  # a kill mid-write
    index = LogIndex(log)
    assert len(index) == 1
    tail = list(index.lines())[-1]
    assert tail.number == 2 and tail.settings is None
    assert index.record(tail) is None  # a cut last line: skipped without a word (no warning is an error here)
    results.append(log, records[1])  # starts on a line of its own: the cut line is now an unreadable line 2
    index.refresh()
    entries = list(index.lines())
    assert len(index) == 3 and [e.number for e in entries] == [1, 2, 3] and entries[2].settings is not None


def test_a_stored_index_is_read_instead_of_the_lines_and_extended_by_the_lines_written_since(
    tmp_path: Path, stored: list[int]
) -> None:
    records = _records()
    log = _log(tmp_path, [r.to_json() for r in records[:3]])
    first = LogIndex(log)
    assert stored == [1, 2, 3] and first.stored_at.is_file()
    again = LogIndex(log)
    assert stored == [1, 2, 3]  # nothing parsed: the stored index holds
    assert list(again.lines()) == list(first.lines())
    results.append(log, records[3])
    grown = LogIndex(log)
    assert stored == [1, 2, 3, 4]  # only the new line
    assert [e.number for e in grown.lines()] == [1, 2, 3, 4]
    assert [r.finished for r in grown.newest_first("fp1")] == [3.0, 1.0]


@pytest.mark.parametrize("change", ["edit a byte", "cut the log", "replace the log", "edit the index", "other code"])
def test_a_stored_index_that_no_longer_matches_its_log_or_itself_is_built_anew(
    tmp_path: Path, stored: list[int], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    records = _records()
    log = _log(tmp_path, [r.to_json() for r in records[:3]])
    index = LogIndex(log)
    stored.clear()
    if change == "edit a byte":  # same size: only the hash can tell
        text = log.read_text(encoding="utf-8")
        log.write_text(text.replace('"fp1"', '"fp9"', 1), encoding="utf-8")
    elif change == "cut the log":
        log.write_text(records[0].to_json() + "\n", encoding="utf-8")
    elif change == "replace the log":
        log.write_text("".join(r.to_json() + "\n" for r in reversed(records[:3])), encoding="utf-8")
    elif change == "edit the index":
        header, body = index.stored_at.read_text(encoding="utf-8").splitlines()
        index.stored_at.write_text(header + "\n" + body.replace('"fp1"', '"fp9"') + "\n", encoding="utf-8")
        assert '"fp9"' in index.stored_at.read_text(encoding="utf-8")
    else:
        monkeypatch.setattr(log_index, "_code_digest", lambda: "another version")
    rebuilt = LogIndex(log)
    lines = [line for line in log.read_text(encoding="utf-8").splitlines()]
    assert stored == list(range(1, len(lines) + 1))
    assert [e.fingerprint for e in rebuilt.lines()] == [json.loads(line)["fingerprint"] for line in lines]


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(28, "No space left on device")])
def test_an_index_that_cannot_be_stored_costs_nothing_but_the_next_full_read(
    tmp_path: Path, stored: list[int], monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    def refuse(path: Path, write: object) -> None:  # a read-only folder (the tests may run as root) or full disk
        raise error

    monkeypatch.setattr(log_index, "replace_atomically", refuse)
    records = _records()
    log = _log(tmp_path, [r.to_json() for r in records[:2]])
    index = LogIndex(log)
    assert not index.stored_at.exists() and len(index) == 2
    assert [r.finished for r in index.newest_first("fp0")] == [0.0]
    LogIndex(log)
    assert stored == [1, 2, 1, 2]


def test_a_short_log_gets_no_index_file(tmp_path: Path) -> None:
    log = _log(tmp_path, [r.to_json() for r in _records()])
    assert len(LogIndex(log)) == len(_records())
    assert not LogIndex(log).stored_at.exists()
    assert not list(LogIndex(tmp_path / "none.jsonl").lines())  # a log not written yet


def test_newest_first_gives_only_ok_records_of_the_fingerprint_and_warns_of_unreadable_ones(tmp_path: Path) -> None:
    records = _records()
    ok = [replace(records[0], fingerprint="mine", status=Status.OK, finished=float(i)) for i in range(3)]
    failed = replace(records[0], fingerprint="mine", status=Status.FAILED, finished=9.0)
    bad = json.loads(ok[0].to_json())
    bad["status"] = "no such status"
    log = _log(tmp_path, [ok[0].to_json(), failed.to_json(), ok[1].to_json(), records[1].to_json(),
                          ok[2].to_json(), json.dumps(bad)])
    index = LogIndex(log)
    with pytest.warns(results.UnreadableRecord, match=rf"{log}:6: .*status"):
        assert [r.finished for r in index.newest_first("mine")] == [2.0, 1.0, 0.0]
    assert list(index.newest_first("none")) == []


@pytest.mark.parametrize("kind", ["FIFO", "/dev/zero"])
def test_an_index_file_that_is_not_a_regular_file_is_ignored_with_a_warning_and_replaced(
    tmp_path: Path, stored: list[int], kind: str
) -> None:
    from tests.records.test_storage import finishes

    records = _records()
    log = _log(tmp_path, [r.to_json() for r in records[:2]])
    index_file = tmp_path / ".results.jsonl.index"
    if kind == "FIFO":
        os.mkfifo(index_file)
    else:
        index_file.symlink_to("/dev/zero")
    with pytest.warns(UserWarning, match="is not a regular file.*the log index is ignored"):
        index = finishes(lambda: LogIndex(log))
    assert isinstance(index, LogIndex) and len(index) == 2 and stored == [1, 2]
    assert index_file.is_file() and not index_file.is_symlink()  # a whole index stored in its place


def _swap_offsets(index_file: Path, first: int, second: int) -> None:
    """The stored index with two lines' offsets swapped and its body hash made right again: a lie it cannot see."""
    header, body = index_file.read_text(encoding="utf-8").splitlines()
    stored = json.loads(body)
    offsets = log_index._decoded("q", stored["columns"]["offset"])
    offsets[first], offsets[second] = offsets[second], offsets[first]
    stored["columns"]["offset"] = log_index._encoded(offsets)
    body = json.dumps(stored, separators=(",", ":"), ensure_ascii=False)
    header = json.dumps({**json.loads(header), "body": hashlib.sha256(body.encode("utf-8")).hexdigest()})
    index_file.write_text(f"{header}\n{body}\n", encoding="utf-8")


def test_an_index_whose_offsets_lie_is_distrusted_and_the_newest_record_still_comes_first(
    tmp_path: Path, stored: list[int]
) -> None:
    records = _records()
    old, new = (replace(records[0], fingerprint="mine", status=Status.OK, finished=f) for f in (999.0, 2000.0))
    log = _log(tmp_path, [old.to_json(), records[1].to_json(), new.to_json()])
    LogIndex(log)
    _swap_offsets(log.with_name(".results.jsonl.index"), 0, 2)
    stored.clear()
    index = LogIndex(log)
    assert stored == []  # the lying index was loaded, not the log read
    with pytest.warns(UserWarning, match=r"\.results\.jsonl\.index: does not match line 3 of .*read whole again"):
        assert [r.finished for r in index.newest_first("mine")] == [2000.0, 999.0]
    assert stored == [1, 2, 3]  # read anew from the log
    assert [r.finished for r in LogIndex(log).newest_first("mine")] == [2000.0, 999.0]  # the index stored again


def test_a_line_that_is_not_what_its_entry_says_is_never_built(tmp_path: Path) -> None:
    records = _records()
    log = _log(tmp_path, [r.to_json() for r in records[:2]])
    index = LogIndex(log)
    first, second = list(index.lines())
    with pytest.warns(UserWarning, match="does not match line 2"), pytest.raises(log_index.IndexMismatch):
        index.record(second._replace(offset=first.offset))
    assert index.record(second).fingerprint == records[1].fingerprint
