"""The user's cache folder, `$XDG_CACHE_HOME/ohlora-bench` (else `~/.cache/ohlora-bench`): JSON files later
sessions reuse. A cache that cannot be read or written is only a warning: its contents are taken again."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ohlora_fixtures.records.storage import read_regular, replace_atomically


def cache_file(name: str) -> Path:
    """The file `name` in the user's cache folder."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ohlora-bench" / name


def read_json(path: Path, what: str, otherwise: str) -> dict:
    """The cache's object, {} when absent; unreadable, a warning "PATH: WHAT not readable (...); OTHERWISE"."""
    try:
        data = json.loads(read_regular(path).decode("utf-8"))  # a FIFO or a device is not read: it would hang
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        warnings.warn(f"{path}: {what} not readable ({error}); {otherwise}", stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict, what: str, otherwise: str) -> None:
    """Atomically (a temporary in the same folder, then rename); failing, a warning "PATH: WHAT not written (...)"."""
    try:
        replace_atomically(path, lambda stream: json.dump(data, stream, indent=2, sort_keys=True))
    except OSError as error:
        warnings.warn(f"{path}: {what} not written ({error}); {otherwise}", stacklevel=3)
