"""Fixtures shared by the plugin's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
# The smallest grid that still runs every code path: seconds, not minutes.
TINY_RUN = (
    "--ohlora-ranks", "16", "--ohlora-epochs", "1", "--ohlora-train-rows", "4", "--ohlora-batch-size", "2",
    "--ohlora-valid-rows", "2", "--ohlora-prompts", "2", "--ohlora-max-new-tokens", "4",
)


@pytest.fixture
def run_benchmarks(tmp_path: Path):
    """Runs `pytest benchmarks` of this repo in a subprocess, writing only under tmp_path.

    Returns the CompletedProcess; the report dir is tmp_path/"ohlora" and
    pytest-benchmark's storage tmp_path/"storage".
    """

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider",
            "--benchmark-storage", f"file://{tmp_path / 'storage'}",
            "--ohlora-report-dir", str(tmp_path / "ohlora"), *args,
        ]
        return subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )

    return run
