"""Stored runs in: the records of results.jsonl logs and pytest-benchmark JSON files, merged per benchmark."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.records import results
from ohlora_fixtures.records.log_index import Entry, LogIndex
from ohlora_fixtures.records.record import BenchmarkRecord, MergeHead, RecordError, Status
from ohlora_fixtures.records.results import UnreadableRecord
from ohlora_fixtures.records.storage import not_a_file


@dataclass(frozen=True)
class Stored:
    """One benchmark record and the file (or session) it came from."""

    record: BenchmarkRecord
    source: str

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What identifies a benchmark across runs: candidate, kind, rank."""
        return self.record.key


def _looks_like_record(value: Any) -> bool:
    # pytest-benchmark JSON may hold other plugins' benchmarks: only ours carry a candidate and a kind.
    return isinstance(value, dict) and "candidate" in value and "kind" in value


def read_stored(path: Path) -> list[Stored]:
    """The records of a results.jsonl log or of a pytest-benchmark JSON file (its `extra_info`).

    A record that does not parse is skipped with an UnreadableRecord warning naming the file and where.
    """
    return list(iter_stored(path))


def iter_stored(path: Path) -> Iterator[Stored]:
    """`read_stored`, one record at a time (a results.jsonl log is read as it is merged, never held whole)."""
    problem = not_a_file(path)
    if problem:
        problem = "is a directory, expected a results file" if path.is_dir() else problem
        raise UsageError(f"{path}: {problem}; give pytest-benchmark JSON files or results.jsonl logs")
    if path.suffix == ".jsonl":
        yield from (Stored(record, str(path)) for record in results.read(path))
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a JSON file: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise UsageError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    found, ours = [], 0
    for index, benchmark in enumerate(document["benchmarks"]):
        extra = benchmark.get("extra_info") if isinstance(benchmark, dict) else None
        if not _looks_like_record(extra):
            continue
        ours += 1
        try:
            found.append(Stored(BenchmarkRecord.from_json(extra), str(path)))
        except RecordError as error:
            name = benchmark.get("name", f"#{index}")
            warnings.warn(UnreadableRecord(f"{path}: benchmark {name}: skipped, not a valid record: {error}"),
                          stacklevel=3)
    if document["benchmarks"] and not ours:
        raise UsageError(f"{path}: its benchmarks carry no ohlora records; was it written by ohlora-bench?")
    yield from found


def _measured(status: Status) -> bool:
    # ok, oom and failed are outcomes of a measurement; skipped, interrupted and running measured nothing.
    return status not in (Status.SKIPPED, Status.INTERRUPTED, Status.RUNNING)


@dataclass(frozen=True)
class Deferred:
    """A record of a log merged by its `MergeHead` alone: read and built only if it is kept (in a long log
    most are replaced by later runs', and reading, building and checking is what a record costs)."""

    index: LogIndex
    entry: Entry
    source: str


class NotARecord(Exception):
    """A deferred record that was kept is not valid: read the log again, building every record."""


class Merged:
    """The latest measurement of each benchmark, folded in one record at a time (so a 100k-line log is never
    held whole), with how many were replaced and which runs were read. See `merge` for the rules."""

    def __init__(self, stored: Iterable[Stored] = ()) -> None:
        self._kept: dict[tuple[str, str, int | None], tuple[MergeHead, Stored | Deferred]] = {}
        self.replaced = 0
        self.run_ids: set[str] = set()
        for item in stored:
            self.add(item)

    def add(self, item: Stored) -> None:
        """Fold in one more record, later than every one before it in the input's order."""
        record = item.record
        self._fold(MergeHead(item.key, record.finished, record.status, record.run.run_id), item)

    def add_deferred(self, head: MergeHead, item: Deferred) -> None:
        """`add` a record not yet built, by its head; `kept` builds it if it is kept."""
        self._fold(head, item)

    def _fold(self, head: MergeHead, item: Stored | Deferred) -> None:
        self.run_ids.add(head.run_id)
        earlier = self._kept.get(head.key)
        if earlier is not None:
            before = earlier[0]
            if before.finished == head.finished:
                return
            self.replaced += 1
            if _measured(before.status) != _measured(head.status):
                if _measured(before.status):
                    return  # a measurement stands against a later skip
            elif (before.finished or 0) > (head.finished or 0):
                return
        self._kept[head.key] = (head, item)

    @property
    def kept(self) -> dict[tuple[str, str, int | None], Stored]:
        """The record kept for each benchmark; NotARecord where a deferred one kept is not a valid record."""
        self.build_deferred()
        return {key: item for key, (_, item) in self._kept.items()}

    def build_deferred(self) -> None:
        """Build the deferred records kept; NotARecord where one is not a valid record."""
        for key, (head, item) in self._kept.items():
            if isinstance(item, Deferred):
                try:
                    record = BenchmarkRecord.from_json(item.index.text(item.entry))
                    self._kept[key] = (head, Stored(record, item.source))
                except RecordError as error:
                    raise NotARecord(f"{item.source}: {error}") from None


def merge(stored: Iterable[Stored]) -> tuple[list[Stored], int]:
    """The latest measurement of each benchmark (by `finished`; later input wins a tie), and how many were replaced.

    A record that measured nothing (skipped, e.g. weights not on this machine;
    interrupted) never replaces a measurement, whatever its date: it only fills
    a benchmark nothing else measured. The same record seen twice (the
    session's copy and the log's) is not a replacement.
    """
    merged = Merged(stored)
    return list(merged.kept.values()), merged.replaced
