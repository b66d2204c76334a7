"""Where names become paths: a safe slug, and the folders a run writes to, checked before it starts.

A candidate name comes from a registry file someone else may have written; it
reaches the file system only through `slug`, and `child` refuses any result
that would land outside its folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ohlora_fixtures.errors import UsageError

# The characters a registry name may use (see registry.NAME_RULE); anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_SLUG = 64


def slug(name: str) -> str:
    """`name` as one safe file-name component: ASCII letters, digits, `.`, `-`, `_`; never empty,
    never starting with a dot (no `..`, no hidden file), at most MAX_SLUG characters."""
    text = _UNSAFE.sub("_", name).lstrip(".")[:MAX_SLUG]
    return text or "_"


def child(folder: Path, name: str, suffix: str = "") -> Path:
    """The file `slug(name) + suffix` directly inside `folder`; refuses anything that escapes it."""
    path = folder / (slug(name) + suffix)
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"{name!r} does not name a file inside {folder}")
    return path


def check_report_dir(path: Path, results_path: Path, option: str = "--ohlora-report-dir") -> None:
    """Refuse, at start-up, a report folder or results log that cannot be written.

    Results are first written after the first benchmark: too late to find
    out then.
    """
    check_writable_folder(path, option)
    if results_path.is_dir() or (results_path.exists() and not results_path.is_file()):
        raise UsageError(f"{option}: {results_path} is not a regular file; the results log must be one; move it away")
    if results_path.exists():
        try:
            # Opening for append changes nothing, and fails where appending a record would.
            with results_path.open("a", encoding="utf-8"):
                pass
        except OSError as error:
            raise UsageError(
                f"{option}: {results_path} cannot be appended to ({error.strerror or error}); "
                f"make it writable or choose another {option}"
            ) from None


def check_writable_folder(path: Path, option: str) -> None:
    """Refuse, at start-up, a folder (`option`'s value) that cannot be created or written.

    Writability is tried by creating and removing a file, because os.access
    trusts permission bits (root passes it for /proc, a read-only mount or a
    full disk).
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option}: {path} exists and is not a directory")
    nearest = next(parent for parent in (path.absolute(), *path.absolute().parents) if parent.exists())
    if not nearest.is_dir():
        raise UsageError(f"{option}: {path} cannot be created: {nearest} is a file, not a directory")
    try:
        handle, temporary = tempfile.mkstemp(dir=nearest, prefix=".ohlora-write-check.")
        os.close(handle)
        os.unlink(temporary)
    except OSError as error:
        raise UsageError(
            f"{option}: {path} cannot be written: creating a file in {nearest} fails ({error.strerror or error})"
        ) from None
