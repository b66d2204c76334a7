"""The results log: one JSON line per benchmark record, on disk the moment it is measured."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator

from .record import BenchmarkRecord, RecordError


# The user_properties key under which a pytest-xdist worker sends a resumed record to the controller.
RESUMED_PROPERTY = "ohlora_resumed"


class UnreadableRecord(UserWarning):
    """A line of a results log that is not a valid record; it is skipped and the rest are read."""


def append(path: Path, record: BenchmarkRecord) -> None:
    """Append one record and force it to disk before returning.

    A lock keeps lines whole when several pytest-xdist workers share the file;
    fsync means a killed run loses only the benchmark still in flight.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (record.to_json() + "\n").encode("utf-8")
    with path.open("a+b") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            # A line cut short (disk full, a crash mid-write) must not swallow this record into it.
            if stream.seek(0, os.SEEK_END) > 0:
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    line = b"\n" + line
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def read(path: Path, warned: set[str] | None = None) -> Iterator[BenchmarkRecord]:
    """Every valid record in the file, old (flat) or current schema.

    A line cut short by a kill is skipped silently (it is expected: the last
    line of a killed run); any other unreadable line is skipped with an
    UnreadableRecord warning naming the file, the line and what is wrong.
    `warned` holds the warnings already given (a session reads the log for
    every resumed benchmark and again for its report): each is given once.
    """
    if not path.is_file():
        return
    # A line cut inside a multi-byte character must not stop the lines after it from being read.
    with path.open(encoding="utf-8", errors="replace") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield BenchmarkRecord.from_json(line)
            except RecordError as error:
                if str(error).startswith("not JSON"):
                    continue  # cut short mid-write: append() starts the next record on a line of its own
                message = f"{path}:{number}: skipped, not a valid record: {error}"
                if warned is None or message not in warned:
                    warnings.warn(UnreadableRecord(message), stacklevel=2)
                if warned is not None:
                    warned.add(message)


def completed(path: Path, fingerprint: str, warned: set[str] | None = None) -> list[BenchmarkRecord]:
    """Every successful record with this settings fingerprint, oldest first, for --ohlora-resume (`warned`: see read)."""
    return [record for record in read(path, warned) if record.fingerprint == fingerprint and record.ok]


def new_run_id() -> str:
    """A fresh run id: start time plus a random suffix, so that runs started in the same second differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
