"""The results log: one JSON line per benchmark record, on disk the moment it is measured."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from ohlora_fixtures.records.record import BenchmarkRecord, RecordError, parse_json

T = TypeVar("T")

# The user_properties key under which a pytest-xdist worker sends each of its records (measured or resumed)
# to the controller, for its summary and report.
RECORD_PROPERTY = "ohlora_record"


class UnreadableRecord(UserWarning):
    """A line of a results log that is not a valid record; it is skipped and the rest are read."""


def append(path: Path, record: BenchmarkRecord) -> None:
    """Append one record and force it to disk before returning; on a write error (a full disk) the file is
    cut back to what it was, so that no partial line is left, and the OSError is raised naming the log.

    Written through the file descriptor, unbuffered: a full disk first takes part of a line (a short write)
    and only then fails, and a buffered stream would try to flush that rest again on truncating or closing.
    A lock keeps lines whole when several pytest-xdist workers share the file; fsync means a killed run loses
    only the benchmark still in flight.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (record.to_json() + "\n").encode("utf-8")
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        size = os.lseek(handle, 0, os.SEEK_END)
        # A line cut short (a crash mid-write) must not swallow this record into it.
        if size > 0 and os.pread(handle, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[os.write(handle, rest):]
            os.fsync(handle)
        except OSError as error:
            with contextlib.suppress(OSError):  # truncating needs no free space
                os.ftruncate(handle, size)
                os.fsync(handle)
            raise OSError(error.errno, error.strerror, error.filename or str(path)) from error
    finally:
        os.close(handle)  # the lock goes with it


def read(path: Path, warned: set[str] | None = None) -> Iterator[BenchmarkRecord]:
    """Every valid record in the file, old (flat) or current schema, read one line at a time.

    A last line cut short (no newline at its end: a kill mid-write) is skipped
    silently; any other unreadable line, a broken line in the middle included,
    is skipped with an UnreadableRecord warning naming the file, the line and
    what is wrong. `warned` holds the warnings already given (a session reads
    the log for its resumes and again for its report): each is given once.
    """
    for _, record in read_sorted(path, lambda data: True, warned):
        yield record


def read_sorted(
    path: Path, sort: Callable[[Mapping[str, Any]], T | None], warned: set[str] | None = None
) -> Iterator[tuple[T, BenchmarkRecord]]:
    """(sort(object), record) for each line `sort` gives a value other than None, as `read` would give it.

    `sort` sees each line's parsed JSON object before the record is built; a line it gives None is neither
    built nor checked. A session's report of a long log so builds only its own run's and its settings'
    records: building and checking is nine tenths of reading a line.
    """
    for number, line in _lines(path):
        try:
            data = parse_json(line)
            if not isinstance(data, Mapping):
                BenchmarkRecord.from_json(line)  # raises, naming what the line holds instead of an object
            value = sort(data)
            if value is not None:
                yield value, BenchmarkRecord.from_json(data)
        except RecordError as error:
            _skipped(path, number, line, error, warned)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line."""
    if not path.is_file():
        return
    # A line cut inside a multi-byte character must not stop the lines after it from being read.
    with path.open(encoding="utf-8", errors="replace", newline="\n") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield number, line


def _skipped(path: Path, number: int, line: str, error: RecordError, warned: set[str] | None) -> None:
    """Warn of an unreadable line (once per `warned`), unless it is a last line cut short by a kill."""
    if not line.endswith("\n") and str(error).startswith("not JSON"):
        return  # the last line, cut mid-write: append() starts the next record on a line of its own
    message = f"{path}:{number}: skipped, not a valid record: {error}"
    if warned is None or message not in warned:
        warnings.warn(UnreadableRecord(message), stacklevel=3)
    if warned is not None:
        warned.add(message)


# How a record's fingerprint is written (to_json: sorted keys, json's default separators); a line written
# otherwise (an older writer, an editor) is parsed instead. Inside a JSON string the quotes would be escaped,
# and `data_fingerprint` has no quote before `fingerprint`, so only the record's own key matches.
_FINGERPRINT = re.compile(r'"fingerprint": "([^"\\]*)"')


class ResumeIndex:
    """Where each fingerprint's records are in a results log: built once per session in one streaming pass
    that parses no record (100k lines: a second, not minutes), read back only for the fingerprints asked.
    """

    def __init__(self, path: Path, warned: set[str] | None = None) -> None:
        self.path, self.warned = path, warned
        self.offsets: dict[str, list[int]] = {}
        if not path.is_file():
            return
        with path.open("rb") as stream:
            offset = 0
            for raw in stream:
                key = self._fingerprint(raw)
                if key is not None:
                    self.offsets.setdefault(key, []).append(offset)
                offset += len(raw)

    @staticmethod
    def _fingerprint(raw: bytes) -> str | None:
        text = raw.decode("utf-8", errors="replace")
        found = _FINGERPRINT.search(text)
        if found:
            return found.group(1)
        try:
            data = json.loads(text)
        except ValueError:
            return None  # not a record at all: the report's read names it
        value = data.get("fingerprint") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def newest_first(self, fingerprint: str) -> Iterator[BenchmarkRecord]:
        """The successful records with this fingerprint, newest first, each read only when asked for: a resume
        wants the newest of the same weights, usually the first, not the thousands an old log may hold.
        Unreadable ones are warned of, as by `read`."""
        offsets = self.offsets.get(fingerprint)
        if not offsets:  # also where the log does not exist yet
            return
        with self.path.open("rb") as stream:
            for offset in reversed(offsets):
                stream.seek(offset)
                line = stream.readline().decode("utf-8", errors="replace")
                try:
                    record = BenchmarkRecord.from_json(line)
                except RecordError as error:
                    _skipped(self.path, self._line_number(offset), line, error, self.warned)
                    continue
                if record.fingerprint == fingerprint and record.ok:
                    yield record

    def _line_number(self, offset: int) -> int:
        with self.path.open("rb") as stream:
            return stream.read(offset).count(b"\n") + 1


def new_run_id() -> str:
    """A fresh run id: start time plus a random suffix, so that runs started in the same second differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
