"""CPU out-of-memory is recorded as such and freed before the next figure; Ctrl-C in a timed region keeps
every finished timing, pytest-benchmark's JSON included (issue 11 items 3 and 11).

Faults are injected by test-only hooks around `ohlora_fixtures.session.runner.train`; the product has no fault flag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The study's stack is imported before a pytester in-process run: pytester restores sys.modules, and torch
# cannot be imported a second time.
import ohlora_fixtures.session.study  # noqa: F401
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import Status
from tests.conftest import REPO, TINY_RUN, run_grid

# What torch 2.x on Linux raises when the C allocator refuses (c10/core/impl/alloc_cpu.cpp).
LINUX_CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 429496729600 bytes. Error code 12 (Cannot allocate memory)"
)
HELD_MIB = 400

# Rank 4's training step takes HELD_MIB of real memory, notes the process's RSS, then fails as torch does.
OOM_CONFTEST = f'''
import pytest
import torch

import ohlora_fixtures.session.runner as runner


def _rss_mib():
    with open("/proc/self/status") as status:
        return next(float(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


@pytest.fixture(autouse=True)
def fail_rank_4(monkeypatch):
    real_train = runner.train

    def train(model, batches, learning_rate, device, on_step=None):
        if model.peft_config["default"].r != 4:
            return real_train(model, batches, learning_rate, device, on_step)
        step_memory = torch.ones({HELD_MIB} * 2**20 // 4)  # what the failed step had allocated
        with open("rss_at_failure", "w") as out:
            out.write(str(_rss_mib()))
        raise RuntimeError({LINUX_CPU_OOM!r})

    monkeypatch.setattr(runner, "train", train)
'''


def test_cpu_allocator_oom_is_recorded_as_oom_and_freed_before_the_next_benchmark(
    bench_pytester: pytest.Pytester,
) -> None:
    bench_pytester.makeconftest(OOM_CONFTEST)
    result = bench_pytester.runpytest_inprocess(
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-ranks",
        "4,8",
        "--ohlora-report-dir",
        "report",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=2, failed=1)
    records = {r.rank or 0: r for r in results.read(bench_pytester.path / "report" / "results.jsonl")}
    assert records[4].status is Status.OOM and records[4].error == f"RuntimeError: {LINUX_CPU_OOM}"
    result.stdout.fnmatch_lines(["*out of memory (FinguAI-Chat-v1, rank 4, *): RuntimeError: *DefaultCPUAllocator*"])
    assert "Traceback" not in result.stdout.str().split("short test summary")[0].split("FAILURES")[-1]
    # The next benchmark starts without the failed step's memory, so its figure is its own.
    rss_at_failure = float((bench_pytester.path / "rss_at_failure").read_text())
    assert records[8].status is Status.OK
    assert records[8].memory.absolute_peak_mib < rss_at_failure - 0.5 * HELD_MIB


# Test-only `-p` plugin: the N-th `train` call (inside the timed region) raises KeyboardInterrupt, as Ctrl-C does.
CTRL_C_PLUGIN = """
import os

import ohlora_fixtures.session.runner as runner

_real_train = runner.train
_calls = 0


def _train(*args, **kwargs):
    global _calls
    _calls += 1
    if _calls == int(os.environ["OHLORA_CTRL_C_AT_TRAIN"]):
        raise KeyboardInterrupt
    return _real_train(*args, **kwargs)


runner.train = _train
"""


# On the CPU each benchmark calls `train` once more, first: the untimed tensor-memory pass.
@pytest.mark.parametrize(
    ("rounds", "ctrl_c_at_train"),
    [
        ("1", "4"),  # r16 finishes; Ctrl-C in r32's only round: no round timed (pytest-benchmark's min() of nothing)
        ("2", "6"),  # r16's two rounds finish; Ctrl-C in r32's second round: one round timed, half a measurement
    ],
)
def test_ctrl_c_in_a_timed_round_keeps_pytest_benchmarks_json_and_the_summary(
    tmp_path: Path, rounds: str, ctrl_c_at_train: str
) -> None:
    (tmp_path / "ctrl_c_plugin.py").write_text(CTRL_C_PLUGIN, encoding="utf-8")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", str(REPO))])
    completed = run_grid(
        tmp_path,
        "-p",
        "ctrl_c_plugin",
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-ranks",
        "16,32",
        "--ohlora-rounds",
        rounds,
        "--benchmark-json",
        str(tmp_path / "bench.json"),
        env={"PYTHONPATH": path, "OHLORA_CTRL_C_AT_TRAIN": ctrl_c_at_train},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "min() arg is an empty sequence" not in output and "Traceback" not in output
    records = {r.rank: r for r in results.read(tmp_path / "ohlora" / "results.jsonl")}
    assert records[16].status is Status.OK and records[32].status is Status.INTERRUPTED
    saved = json.loads((tmp_path / "bench.json").read_text())
    # The finished benchmark's timings are saved; the interrupted one's single round is not passed off as a result.
    assert [(b["name"], b["stats"]["rounds"]) for b in saved["benchmarks"]] == [
        ("test_finetune[FinguAI-Chat-v1-r16]", int(rounds))
    ]
    assert "KeyboardInterrupt" in output
    assert "interrupted: every benchmark that finished is kept" in output
    assert "report: " in output  # the report of what finished is written
