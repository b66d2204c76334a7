"""records/storage.py: a file the plugin reads itself is read only where it is a regular file."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from ohlora_fixtures.records.storage import NotRegularFile, not_a_file, open_regular, read_regular

T = TypeVar("T")


def finishes(call: Callable[[], T], seconds: float = 10) -> T:
    """`call()`'s value, failing the test (not hanging it) where it has not returned within `seconds`."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: it waits on the file")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def _dev_zero(tmp_path: Path) -> Path:
    (tmp_path / "zero").symlink_to("/dev/zero")
    return tmp_path / "zero"


@pytest.mark.parametrize("make, kind", [(_fifo, "a FIFO"), (_dev_zero, "a character device")], ids=["fifo", "zero"])
def test_a_special_file_is_refused_at_once_and_named(tmp_path: Path, make, kind: str) -> None:
    path = make(tmp_path)
    assert not_a_file(path) == f"is not a regular file ({kind})"
    with pytest.raises(NotRegularFile) as raised:
        finishes(lambda: read_regular(path))
    assert str(raised.value) == f"{path} is not a regular file ({kind})"
    assert isinstance(raised.value, OSError)  # callers' `except OSError` still catch it


def test_a_regular_file_is_read_whole_and_blocking(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_bytes(b"{}\n" * 3)
    assert read_regular(path) == b"{}\n" * 3
    with open_regular(path) as stream:
        assert os.get_blocking(stream.fileno())


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    assert not_a_file(tmp_path / "none") == "not found"
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "none")
