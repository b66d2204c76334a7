"""A failure, an out-of-memory error, Ctrl-C, SIGTERM or a kill loses nothing that was measured, and the run
goes on (or ends with everything finished kept).

Faults are injected by the test-only plugin tests/e2e/faults.py (`-p tests.e2e.faults`, steered by the
OHLORA_FAULTS variable), which wraps `ohlora_fixtures.session.runner.train`; the product has no fault flag.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import torch

import ohlora_fixtures
import ohlora_fixtures.session.study as study_module
from ohlora_fixtures.inputs import options as settings
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import BenchmarkRecord, Kind, RunDescription, Status
from ohlora_fixtures.session.study import Study
from tests.conftest import REPO, TINY_ENTRY, TINY_RUN, run_grid, write_registry
from tests.e2e.faults import faults

# What torch 2.x on Linux raises when the C allocator refuses (c10/core/impl/alloc_cpu.cpp).
LINUX_CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 429496729600 bytes. Error code 12 (Cannot allocate memory)"
)
HELD_MIB = 400


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread: on shared cores, spinning OpenMP threads only cost time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_with_faults(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, grid_ranks: str, **spec: object
) -> tuple[pytest.RunResult, list[dict]]:
    """Run the grid of one small candidate at `grid_ranks` in-process with the faults `spec` asks (see
    tests/e2e/faults.py); the result and the records."""
    for name, value in faults(**spec).items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_inprocess(
        "-p",
        "tests.e2e.faults",
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-ranks",
        grid_ranks,
        "--ohlora-report-dir",
        "report",
        "-p",
        "no:randomly",
        no_reraise_ctrlc=True,
    )
    return result, list(results.read(pytester.path / "report" / "results.jsonl"))


def by_benchmark(records: list[BenchmarkRecord]) -> dict[str, BenchmarkRecord]:
    """Records keyed `r<rank>` or `inference`; each benchmark must have exactly one."""
    keyed = {f"r{record.rank}" if record.rank else record.kind.value: record for record in records}
    assert len(keyed) == len(records)
    return keyed


@pytest.mark.usefixtures("one_thread")
def test_oom_and_errors_are_recorded_and_the_run_goes_on(
    bench_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = {
        4: ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
        8: ("MemoryError", ""),
        16: (
            "RuntimeError",
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 1073741824 bytes.",
        ),
        24: ("RuntimeError", LINUX_CPU_OOM),  # and the step held HELD_MIB of real memory when it failed
        32: ("ValueError", "injected fault"),
    }
    result, records = run_with_faults(bench_pytester, monkeypatch, "4,8,16,24,32,64", ranks=failures,
                                      hold_rank=24, hold_mib=HELD_MIB, released="released.jsonl")

    result.assert_outcomes(passed=2, failed=5)
    recorded = by_benchmark(records)
    assert {name: record.status for name, record in recorded.items()} == {
        "r4": "oom",
        "r8": "oom",
        "r16": "oom",
        "r24": "oom",
        "r32": "failed",
        "r64": "ok",
        "inference": "ok",
    }
    assert recorded["r4"].error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert recorded["r8"].error == "MemoryError"
    assert recorded["r24"].error == f"RuntimeError: {LINUX_CPU_OOM}"
    assert recorded["r32"].error == "ValueError: injected fault"
    # An OOM record carries the settings that caused it.
    assert recorded["r4"].rank == 4 and recorded["r4"].run.epochs == 1 and recorded["r4"].run.dtype == "float32"
    result.stdout.fnmatch_lines(
        [
            "*out of memory (FinguAI-Chat-v1, rank 4, tiny random weights, float32 on cpu): "
            "OutOfMemoryError: CUDA out of memory*",
            "*out of memory (FinguAI-Chat-v1, rank 24, *): RuntimeError: *DefaultCPUAllocator*",
            "*ValueError: injected fault*",
        ]
    )
    assert "Traceback" not in result.stdout.str().split("short test summary")[0].split("FAILURES")[-1]
    # When the cache is emptied after each OOM, the failed step's optimizer and loss graph are gone
    # and the adapter is off the base, so the next rank starts clean ...
    released = [json.loads(line) for line in (bench_pytester.path / "released.jsonl").read_text().splitlines()]
    assert released == [{"optimizer": False, "loss": False, "adapter": False}] * 4
    # ... and without the failed step's memory, so the next figure is its own.
    rss_at_failure = float((bench_pytester.path / "rss_at_failure").read_text())
    assert recorded["r64"].memory.absolute_peak_mib < rss_at_failure - 0.5 * HELD_MIB


# On the CPU each benchmark calls `train` once more, first: the untimed tensor-memory pass.
@pytest.mark.parametrize(
    ("action", "rounds", "at_train"),
    [
        ("interrupt", "1", 4),  # r16 finishes; Ctrl-C in r32's only round: no round timed (min() of nothing)
        ("interrupt", "2", 6),  # r16's two rounds finish; Ctrl-C in r32's second round: half a measurement
        ("sigterm", "1", 4),  # what CI runners and `timeout` send: the same as Ctrl-C
    ],
)
def test_ctrl_c_or_sigterm_in_a_timed_round_keeps_every_finished_timing_the_json_and_the_report(
    tmp_path: Path, action: str, rounds: str, at_train: int
) -> None:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    completed = run_grid(
        tmp_path,
        "-p",
        "tests.e2e.faults",
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-ranks",
        "16,32",
        "--ohlora-rounds",
        rounds,
        "--benchmark-json",
        str(tmp_path / "bench.json"),
        env={"PYTHONPATH": path, "OMP_NUM_THREADS": "1", **faults(call=at_train, action=action)},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "min() arg is an empty sequence" not in output and "Traceback" not in output
    records = {r.rank: r for r in results.read(tmp_path / "ohlora" / "results.jsonl")}
    assert records[16].status is Status.OK and records[32].status is Status.INTERRUPTED
    assert None not in records  # the inference benchmark after them did not run
    saved = json.loads((tmp_path / "bench.json").read_text())
    # The finished benchmark's timings are saved; the interrupted one's single round is not passed off as a result.
    assert [(b["name"], b["stats"]["rounds"]) for b in saved["benchmarks"]] == [
        ("test_finetune[FinguAI-Chat-v1-r16]", int(rounds))
    ]
    assert ("terminated by signal SIGTERM" if action == "sigterm" else "KeyboardInterrupt") in output
    assert "interrupted: every benchmark that finished is kept" in output
    assert "report: " in output and (tmp_path / "ohlora" / "leaderboard.md").is_file()


def test_killed_run_loses_nothing_and_resume_completes_the_grid(tmp_path: Path) -> None:
    """SIGKILL in the middle of the 4th benchmark; --ohlora-resume then runs only the 3 left."""
    marker = tmp_path / "hanging"
    report = tmp_path / "ohlora"
    log = report / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benchmarks"),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-p",
        "tests.e2e.faults",
        "-rs",
        "--benchmark-storage",
        f"file://{tmp_path / 'storage'}",
        "--ohlora-report-dir",
        str(report),
        "--ohlora-models",
        "FinguAI-Chat-v1,TinyKo-v5-a",
        *TINY_RUN,
        "--ohlora-ranks",
        "16,32",
    ]
    # One thread each: this machine's other processes make OpenMP threads spin, which only costs time.
    # The checkout on the path, for the fault plugin (the caller's PYTHONPATH after it).
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}

    # Order: FinguAI r16, r32, inference, then TinyKo r16 hangs: the 5th train call, as on the CPU each
    # fine-tune calls it twice (the untimed tensor-memory pass, then the timed round).
    hang = faults(call=5, action="hang", marker=str(marker))
    first_output = tmp_path / "first.log"
    with first_output.open("wb") as stream:
        first = subprocess.Popen(command, cwd=tmp_path, env={**env, **hang}, stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), first_output.read_text(encoding="utf-8", errors="replace")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL

    before = log.read_bytes()
    assert before.endswith(b"\n")
    kept = [BenchmarkRecord.from_json(line) for line in before.decode("utf-8").splitlines()]
    assert [(record.candidate, record.kind, record.status) for record in kept] == [
        ("FinguAI-Chat-v1", "finetune", "ok"),
        ("FinguAI-Chat-v1", "finetune", "ok"),
        ("FinguAI-Chat-v1", "inference", "ok"),
    ]

    with log.open("ab") as stream:  # a line that is no record: the log is read for 3 resumes and the report
        stream.write(b'{"schema": 2, "run": "oops"}\n')
    before = log.read_bytes()
    second = subprocess.run(
        [*command, "--ohlora-resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    # The killed run's torn line; and, where other processes kept this machine busy, the calibration's warning
    # (a busy calibration is never cached, so the resumed session calibrates, and warns, again).
    summary = re.search(r"\b3 passed, 3 skipped, (\d+) warnings?\b", output)
    busy = "calibrated while the machine was busy" in output
    assert summary and int(summary.group(1)) == 1 + busy, output
    assert re.search(r"SKIPPED \[3\] .*already measured with identical settings", output), output
    assert output.count("UnreadableRecord: ") == 1 and f"{log}:4: skipped, not a valid record" in output, output

    after = log.read_bytes()
    assert after.startswith(before)  # earlier lines untouched
    with pytest.warns(results.UnreadableRecord):
        records = list(results.read(log))
    assert len(records) == 6
    assert Counter(record.id for record in records if record.ok) == {record.id: 1 for record in records}
    # The resumed benchmarks are in this session's summary beside the new ones.
    summary = output.split("= ohlora-bench =", 1)[1]
    for candidate in ("FinguAI-Chat-v1", "TinyKo-v5-a"):
        for benchmark in ("finetune r16", "finetune r32", "inference"):
            assert re.search(rf"{re.escape(candidate)}\S*( \(approx\.\))?\s+{benchmark}\s+ok\b", summary), summary


def test_append_keeps_every_whole_record_after_a_line_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "results.jsonl"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))

    results.append(log, a_record("first", error="안녕하세요"))
    cut = a_record("cut", error="안녕하세요").to_json().encode("utf-8")
    with log.open("ab") as stream:
        stream.write(cut[: cut.index("녕".encode("utf-8")) + 1])  # ends inside a multi-byte character
    results.append(log, a_record("second"))

    # The cut line is no longer the last: it is named (only a cut last line, a kill mid-write, is silent).
    with pytest.warns(
        results.UnreadableRecord, match=rf"{re.escape(str(log))}:2: skipped, not a valid record: not JSON"
    ):
        assert [record.id for record in results.read(log)] == ["first", "second"]
        assert list(results.read(log))[0].error == "안녕하세요"
    assert len(synced) == 2


def a_record(record_id: str, **fields: object) -> BenchmarkRecord:
    run = RunDescription(
        run_id="r",
        date="d",
        device="cpu",
        device_name="CPU",
        dtype="float32",
        weights="random",
        scale="tiny",
        dataset="x.csv",
        preset="default",
        data_fingerprint="f",
        train_rows=1,
        valid_rows=1,
        prompts=1,
        batch_size=1,
        epochs=1,
        learning_rate=1e-3,
        lora_alpha=16,
        lora_dropout=0.0,
        ranks=(4,),
        max_new_tokens=4,
        greedy=True,
        seed=1,
        vram_budget_mb=1.0,
    )
    return BenchmarkRecord(record_id, Kind.FINETUNE, "llama1B", 4, False, "fp", run, **fields)


def test_a_line_that_is_not_a_valid_record_is_skipped_with_a_warning_naming_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "results.jsonl"
    results.append(log, a_record("first"))
    bad = json.loads(a_record("bad").to_json())
    bad["rank"] = "four"
    with log.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(bad) + "\n")
    results.append(log, a_record("third"))

    with pytest.warns(results.UnreadableRecord, match=rf"{re.escape(str(log))}:2: .*rank: 'four' is not an integer"):
        assert [record.id for record in results.read(log)] == ["first", "third"]


def _study(tmp_path: Path, **options: str) -> Study:
    raw = {"models": "FinguAI-Chat-v1", "report_dir": str(tmp_path / "report"), **options}
    return Study.from_settings(settings.parse(raw))


def _fingerprints(study: Study) -> tuple[str, str]:
    candidate = study.candidates[0]
    return (
        study.fingerprint("finetune", candidate, study.finetune_settings(16)),
        study.fingerprint("inference", candidate, study.generation_settings),
    )


def test_fingerprint_ignores_when_and_where_but_not_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    reference = _fingerprints(_study(tmp_path))
    # Another session (run id, date), report dir, spelling of the dataset path and rank grid: same benchmark.
    for options in (
        {"report_dir": str(tmp_path / "elsewhere")},
        {"dataset": "data/persona_qa.csv"},
        {"dataset": str(REPO / "data" / "persona_qa.csv")},
        {"ranks": "8,16,128"},
        {"preset": "default"},
    ):
        assert _fingerprints(_study(tmp_path, **options)) == reference, options
    # Any setting that changes what is measured: a different benchmark.
    for options in (
        {"epochs": "2"},
        {"seed": "7"},
        {"lr": "1e-3"},
        {"batch_size": "2"},
        {"train_rows": "10"},
        {"lora_alpha": "32"},
        {"scale": "full"},
        {"dtype": "bfloat16"},
    ):
        assert _fingerprints(_study(tmp_path, **options))[0] != reference[0], options
    assert _fingerprints(_study(tmp_path, max_new_tokens="8"))[1] != reference[1]
    # A floor on answer length changes what the inference benchmark times, and is part of the run described.
    at_least = _study(tmp_path, min_new_tokens="8")
    assert _fingerprints(at_least)[1] != reference[1]
    assert at_least.describe().min_new_tokens == at_least.generation_settings.min_new_tokens == 8


def test_fingerprint_tracks_the_dataset_tokenizer_a_new_candidates_template_changes(tmp_path: Path) -> None:
    # Issue 11 item 1: the shared tokenizer is trained on the selected candidates' prompt templates, so
    # adding a candidate with its own template changes llama's vocabulary: its stored figures are stale.
    alone = write_registry(tmp_path / "alone.toml", TINY_ENTRY)
    other = {**TINY_ENTRY, "name": "tiny-chat", "prompt_template": "<|user|> {question} <|assistant|> 대답: "}
    both = write_registry(tmp_path / "both.toml", TINY_ENTRY, other)
    first = _study(tmp_path, models="tiny-llama", candidates=str(alone))
    second = _study(tmp_path, models="tiny-llama,tiny-chat", candidates=str(both))
    assert first.tokenizer_digest != second.tokenizer_digest
    assert _fingerprints(first)[0] != _fingerprints(second)[0]
    assert _fingerprints(first) == _fingerprints(_study(tmp_path, models="tiny-llama", candidates=str(alone)))
    # Selecting fewer of the registry's candidates keeps the vocabulary: a partial run measures the same thing.
    partial = _study(tmp_path, models="tiny-llama", candidates=str(both))
    assert partial.tokenizer_digest == second.tokenizer_digest
    assert _fingerprints(partial) == _fingerprints(second)


def test_fingerprint_tracks_the_measuring_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _fingerprints(_study(tmp_path))
    assert study_module.code_version().startswith(ohlora_fixtures.__version__ + "+")
    monkeypatch.setattr(study_module, "code_version", lambda: "0.1.0+edited")
    assert _fingerprints(_study(tmp_path)) != reference
