"""Fixtures shared by the plugin's tests."""

from __future__ import annotations

import json
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
    # Measured once whatever the machine's load: tests count rounds and calls, and a busy test machine is common.
    "--ohlora-busy-retries", "0",
)


def run_grid(
    directory: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs `pytest benchmarks` of this repo in a subprocess, writing only under `directory`:
    the report dir is directory/"ohlora" and pytest-benchmark's storage directory/"storage"."""
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider",
        "--benchmark-storage", f"file://{directory / 'storage'}",
        "--ohlora-report-dir", str(directory / "ohlora"), *args,
    ]
    return subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@pytest.fixture(scope="session", autouse=True)
def peaks_cache(tmp_path_factory: pytest.TempPathFactory):
    """The peaks cache (hardware.cache_path) in a folder of this test session, not the user's: subprocesses
    inherit it, and every test after the first reuses its calibration as a user's later sessions would."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder / "ohlora-bench" / "peaks.json"


@pytest.fixture
def run_benchmarks(tmp_path: Path):
    """`run_grid` in this test's tmp_path; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_grid(tmp_path, *args, timeout=timeout, env=env)

    return run


# Reliability tests (test_options, test_failures, test_weights): a small registry and the real grid in pytester.

TINY_ENTRY: dict = {
    "name": "tiny-llama",
    "hub_id": "ohlora-test/tiny-llama",
    "params_label": "0.001 B",
    "license": "mit",
    "korean": "none",
    "model_type": "llama",
    "architecture": "LlamaForCausalLM",
    "target_modules": ["q_proj", "v_proj"],
    "config": {"vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 512},
}


def write_registry(path: Path, *entries: dict) -> Path:
    """A registry TOML file, one [[candidate]] table per entry; an entry's `config` becomes its sub-table."""
    lines = []
    for entry in entries:
        lines.append("[[candidate]]")
        lines += [f"{key} = {_toml(value)}" for key, value in entry.items() if key != "config"]
        if "config" in entry:
            lines.append("[candidate.config]")
            lines += [f"{key} = {_toml(value)}" for key, value in entry["config"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)  # JSON strings and numbers are valid TOML


@pytest.fixture
def bench_pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding copies of the two benchmark files, to run the real grid in-process."""
    for name in ("test_finetune", "test_inference"):
        pytester.makepyfile(**{name: (REPO / "benchmarks" / f"{name}.py").read_text(encoding="utf-8")})
    return pytester
