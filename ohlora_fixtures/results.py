"""The results log: one JSON line per benchmark, on disk the moment it is measured."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record and force it to disk before returning.

    A lock keeps lines whole when several pytest-xdist workers share the file;
    fsync means a killed run loses only the benchmark still in flight.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def read(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole record in the file; a line cut short by a kill is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as stream:
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
