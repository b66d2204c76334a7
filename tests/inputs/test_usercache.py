"""inputs/usercache.py: the user cache's JSON files (peaks.json) and the report's plans.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ohlora_fixtures.inputs.usercache import read_json, write_json
from tests.records.test_storage import finishes


def test_a_fifo_in_place_of_a_cache_file_is_ignored_with_a_line_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "peaks.json"
    os.mkfifo(path)
    with pytest.warns(UserWarning, match=rf"{path}: peaks cache not readable \(.*is not a regular file \(a FIFO\)\)"):
        assert finishes(lambda: read_json(path, "peaks cache", "calibrating again")) == {}
    write_json(path, {"a": 1}, "peaks cache", "calibrating next time")
    assert path.is_file() and read_json(path, "peaks cache", "calibrating again") == {"a": 1}


def test_an_absent_cache_is_empty_without_a_warning(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    assert read_json(tmp_path / "plans.json", "stored plans", "planning again") == {}
    assert not recwarn.list
