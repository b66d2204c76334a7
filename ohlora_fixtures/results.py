"""The results log: one JSON line per benchmark, on disk the moment it is measured."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record and force it to disk before returning.

    A lock keeps lines whole when several pytest-xdist workers share the file;
    fsync means a killed run loses only the benchmark still in flight.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # default=str: a field of an unexpected type is kept as text rather than losing the whole record.
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode("utf-8")
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


def read(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole record in the file; a line cut short by a kill is skipped."""
    if not path.is_file():
        return
    # A line cut inside a multi-byte character must not stop the lines after it from being read.
    with path.open(encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def completed(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The last successful record with this settings fingerprint, for --ohlora-resume."""
    found = None
    for record in read(path):
        if record.get("fingerprint") == fingerprint and record.get("status") == "ok":
            found = record
    return found


def new_run_id() -> str:
    """A fresh run id: start time plus a random suffix, so that runs started in the same second differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
