"""How files a user keeps are written: whole or not at all, and what a full disk says.

A report, an answers CSV or a cache file is written through a temporary in its own folder
and renamed into place (`replace_atomically`); a write that fails for want of space is told
in one line (`disk_full`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def replace_atomically(
    path: Path, write: Callable[[IO[str]], None], *, encoding: str = "utf-8", newline: str | None = None
) -> None:
    """Write `path` through a unique temporary in the same folder, fsync it, then rename it over `path`.

    A reader sees the old file or the new one, never half of one, and two
    processes writing the same path at once both succeed (the last rename wins).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding=encoding, newline=newline) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if error.filename is None:  # a failed write or fsync names no file: the one the user keeps is named
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    # mkstemp creates 0600; a kept file gets the permissions an ordinary open() would give it.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_full(error: BaseException) -> str | None:
    """For a write that failed because its disk is full (or the user's quota spent): "no space left on
    MOUNT writing FILE", the one line a user needs; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    if not error.filename:
        return f"no space left on the device: {error.strerror or error}"
    written = Path(os.fsdecode(error.filename)).absolute()
    mount = written
    while not os.path.ismount(mount) and mount.parent != mount:
        mount = mount.parent
    return f"no space left on {mount} writing {written}"
