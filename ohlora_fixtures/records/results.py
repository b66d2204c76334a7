"""The results log: one JSON line per benchmark record, on disk the moment it is measured."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator

from ohlora_fixtures.records.record import BenchmarkRecord, RecordError

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
    for number, line in _lines(path):
        try:
            yield BenchmarkRecord.from_json(line)
        except RecordError as error:
            skipped(path, number, line, error, warned)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line."""
    if not path.is_file():
        return
    # A line cut inside a multi-byte character must not stop the lines after it from being read.
    with path.open(encoding="utf-8", errors="replace", newline="\n") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield number, line


def skipped(path: Path, number: int, line: str, error: RecordError, warned: set[str] | None) -> None:
    """Warn of an unreadable line (once per `warned`), unless it is a last line cut short by a kill."""
    if not line.endswith("\n") and str(error).startswith("not JSON"):
        return  # the last line, cut mid-write: append() starts the next record on a line of its own
    message = f"{path}:{number}: skipped, not a valid record: {error}"
    if warned is None or message not in warned:
        warnings.warn(UnreadableRecord(message), stacklevel=3)
    if warned is not None:
        warned.add(message)


def new_run_id() -> str:
    """A fresh run id: start time plus a random suffix, so that runs started in the same second differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
