"""How files a user keeps are written: whole or not at all, and what a full disk says.

A report, an answers CSV or a cache file is written through a temporary in its own folder
and renamed into place (`replace_atomically`); a write that fails for want of space is told
in one line (`disk_full`). A file the plugin reads is read only where it is a regular file
(`not_a_file`, `open_regular`): a FIFO would hang the reader, a device feed it without end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file ("not found", "is a directory", "is not a regular file
    (a FIFO)"...), or None when it is a regular file. Only stats the path: a FIFO is never opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    return _not_regular(mode)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"is not a regular file ({kind})"


class NotRegularFile(OSError):
    """A file the plugin reads that is not a regular file: its str is "PATH is not a regular file (a FIFO)"."""

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


def open_regular(path: Path) -> IO[bytes]:
    """`path` opened for reading in binary, only where it is a regular file, else NotRegularFile (an OSError).

    Opened without blocking and checked on the open file itself, so that a FIFO put there between a check
    and the open is refused too, never waited on; FileNotFoundError where there is none."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        problem = _not_regular(os.fstat(handle).st_mode)
        if problem:
            raise NotRegularFile(errno.EINVAL, problem, str(path))
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def read_regular(path: Path) -> bytes:
    """The bytes of `path`, a regular file (`open_regular`)."""
    with open_regular(path) as stream:
        return stream.read()


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
