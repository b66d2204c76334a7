"""Issue 18: the eleven cases an adversarial user still broke, each reproduced, plus two leftovers (staging
folders left by killed renders, the profiler's USDT lines). Faults are injected (a monkeypatch, a test-only
conftest or `-p` plugin); the product has no fault flag and no test needs root.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# The study's stack is imported before a pytester in-process run: pytester restores sys.modules, and torch
# cannot be imported a second time.
import ohlora_fixtures.session.study  # noqa: F401
from ohlora_fixtures import report
from ohlora_fixtures.errors import BenchmarkError, UsageError
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.measure import hardware
from ohlora_fixtures.measure.models import build_random, load_pretrained
from ohlora_fixtures.records import results
from ohlora_fixtures.records.log_index import LogIndex
from ohlora_fixtures.records.record import BenchmarkRecord, RecordError, Status
from ohlora_fixtures.records.storage import disk_full
from ohlora_fixtures.report.stored import Merged, Stored
from tests.conftest import REPO, SESSION_MODELS, SESSION_RANKS, TINY_ENTRY, TINY_RUN, GridRun, write_registry
from tests.e2e.test_failures import a_record
from tests.report.test_render import finetune, full_run, jsonl

# report.render is also the name of the function the package exports: reach the module itself.
render_module = importlib.import_module("ohlora_fixtures.report.render")

# --- 1, 2: every number of a record is range-checked, on read and on write --------------------------------


def _line(record: BenchmarkRecord, path: str, value: object) -> str:
    """The record's JSON line with the field at `path` ("memory.peak_mib") set to `value`."""
    data = json.loads(record.to_json())
    *parents, name = path.split(".")
    target = data
    for parent in parents:
        target = target[parent]
    target[name] = value
    return json.dumps(data)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("rank", 10**400, r"rank: an integer of 401 digits is out of range \[1, 65536\]"),
    ("rank", 0, r"rank: 0 is out of range \[1, 65536\]"),
    ("finetune.total_params", 10**30, r"finetune.total_params: an integer of 31 digits is out of range"),
    ("finetune.tokens", -1, r"finetune.tokens: -1 is out of range \[0, "),
    ("seconds", -5.0, r"seconds: -5 is out of range \[0, 1e\+07\]"),
    ("memory.peak_mib", -1e308, r"memory.peak_mib: -1e\+308 is out of range \[0, "),
    ("memory.peak_mib", 1e308, r"memory.peak_mib: 1e\+308 is out of range \[0, "),
    ("round_seconds", [1.5, -0.1], r"round_seconds\[1\]: -0.1 is out of range"),
    ("finetune.tokens_per_second", -200.0, r"finetune.tokens_per_second: -200 is out of range"),
    ("run.ranks", [16, 10**400], r"run.ranks\[1\]: an integer of 401 digits"),
])
def test_a_number_out_of_its_fields_range_is_refused_naming_the_field(path: str, value: object, message: str) -> None:
    record = finetune("polyglot-ko-1.3b", 16)
    record.round_seconds, record.round_peak_mib = (1.5, 1.6), (416.0, 416.0)
    with pytest.raises(RecordError, match=message):
        BenchmarkRecord.from_json(_line(record, path, value))


def test_an_integer_too_long_to_convert_is_refused_not_raised() -> None:
    line = _line(finetune("polyglot-ko-1.3b", 16), "rank", 0).replace('"rank": 0', '"rank": ' + "9" * 5000)
    with pytest.raises(RecordError, match="out of range"):
        BenchmarkRecord.from_json(line)


def test_negative_figures_are_refused_on_write_like_nan() -> None:
    record = finetune("polyglot-ko-1.3b", 16, seconds=-5.0)
    with pytest.raises(RecordError, match=r"seconds: -5 is out of range"):
        record.to_json()
    record = finetune("polyglot-ko-1.3b", 16)
    record.memory = replace(record.memory, peak_mib=-1e308)
    with pytest.raises(RecordError, match=r"memory.peak_mib"):
        record.to_json()
    # Differences from the runtime baseline may be negative: start, after, increase.
    record.memory = replace(record.memory, peak_mib=10.0, start_mib=-3.0, after_mib=-2.0, peak_increase_mib=-1.0)
    assert BenchmarkRecord.from_json(record.to_json()) == record


def test_a_forged_record_neither_crashes_nor_ranks_in_the_report(tmp_path: Path) -> None:
    records = full_run(tmp_path)
    log = jsonl(tmp_path / "results.jsonl", records)
    with log.open("a", encoding="utf-8") as stream:  # the newest, fastest fine-tune; a rank past every bound
        stream.write(_line(finetune("TinyKo-v5-a", 16, finished=50.0), "seconds", -5.0) + "\n")
        stream.write(_line(finetune("TinyKo-v5-a", 16, finished=51.0), "rank", 10**400) + "\n")
    out = tmp_path / "out"
    with pytest.warns(results.UnreadableRecord) as caught:
        assert report.main([str(log), "--out", str(out)]) == 0
    found = sorted(str(w.message) for w in caught if issubclass(w.category, results.UnreadableRecord))
    assert len(found) == 2
    assert f"{log}:{len(records) + 1}: skipped, not a valid record: seconds: -5 is out of range" in found[0]
    assert f"{log}:{len(records) + 2}: skipped, not a valid record: rank: an integer of 401 digits" in found[1]
    assert "-5.00" not in (out / "leaderboard.md").read_text(encoding="utf-8")


def test_rank_option_has_the_bounds_records_are_checked_against() -> None:
    from ohlora_fixtures.inputs import options as settings

    with pytest.raises(UsageError, match="positive integers up to 65536"):
        settings.parse({"ranks": "16,100000"})


# --- 3: only a cut last line is silent --------------------------------------------------------------------


def test_a_broken_line_in_the_middle_warns_with_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "results.jsonl"
    results.append(log, a_record("older"))
    newest = a_record("newest").to_json().replace('"candidate":', '"candidate"', 1)  # one missing colon
    with log.open("a", encoding="utf-8") as stream:
        stream.write(newest + "\n")
    results.append(log, a_record("other"))
    with pytest.warns(
        results.UnreadableRecord, match=rf"{re.escape(str(log))}:2: skipped, not a valid record: not JSON"
    ):
        assert [record.id for record in results.read(log)] == ["older", "other"]


def test_a_cut_last_line_is_silent_and_a_cut_line_before_others_is_not(tmp_path: Path) -> None:
    log = tmp_path / "results.jsonl"
    results.append(log, a_record("first"))
    cut = a_record("cut").to_json()
    with log.open("a", encoding="utf-8") as stream:
        stream.write(cut[: len(cut) // 2])  # a kill mid-write: no newline
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [record.id for record in results.read(log)] == ["first"]
    results.append(log, a_record("second"))  # starts on a line of its own; the cut one is now in the middle
    with pytest.warns(results.UnreadableRecord, match=rf"{re.escape(str(log))}:2: .*not JSON"):
        assert [record.id for record in results.read(log)] == ["first", "second"]


# --- 5: a full disk: the log is written whole or not at all, one line per benchmark -----------------------


def test_a_full_disk_leaves_no_partial_line_and_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a full disk does to a write: the first call takes part of the line (a short write), the next fails.
    log = tmp_path / "results.jsonl"
    results.append(log, a_record("first"))
    before = log.read_bytes()
    real_write, calls = os.write, []

    def short_then_full(handle: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(handle, bytes(data[: len(data) // 2]))

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError) as raised:
        results.append(log, a_record("second"))
    monkeypatch.undo()
    assert len(calls) == 2 and log.read_bytes() == before  # nothing of the failed record is left
    assert disk_full(raised.value) == f"no space left on {_mount(log)} writing {log}"
    results.append(log, a_record("third"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [record.id for record in results.read(log)] == ["first", "third"]


def _failure_lines(output: str) -> list[str]:
    """What pytest's FAILURES section says of the failed tests, less its headings."""
    # The section ends at the next "=" heading, or at pytest-benchmark's tables ("-" rules) where no warnings
    # summary comes between.
    section = re.split(r"\n[=-]", output.split("= FAILURES =", 1)[1], maxsplit=1)[0]
    return [line for line in section.splitlines() if line and not line.startswith(("_", "="))]


def _mount(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path):
        path = path.parent
    return path


# Test-only conftest: the report folder's disk is full. Every answers CSV and every fsync of the log fail
# with ENOSPC, and so does pytest-benchmark's save at the end.
FULL_DISK_CONFTEST = """
import errno
import os

import pytest

import ohlora_fixtures.measure.inference as inference
import ohlora_fixtures.session.runner as runner
from pytest_benchmark.storage.file import FileStorage


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", os.path.abspath("report/results.jsonl"))


@pytest.fixture(autouse=True)
def full_disk(monkeypatch):
    def answers(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "write_answers", answers)
    monkeypatch.setattr(os, "fsync", _full)


# The save runs at the session's end, after every fixture's teardown: patched for the session, and put back
# after it (this session runs inside the test process).
_save = FileStorage.save


def pytest_configure(config):
    FileStorage.save = lambda self, output_json, save: _full()


def pytest_unconfigure(config):
    FileStorage.save = _save
"""


def test_a_full_disk_fails_each_benchmark_with_one_line_and_the_session_ends_with_the_summary(
    bench_pytester: pytest.Pytester,
) -> None:
    bench_pytester.makeconftest(FULL_DISK_CONFTEST)
    result = bench_pytester.runpytest_inprocess(
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-report-dir",
        "report",
        "-p",
        "no:randomly",
        "--benchmark-autosave",
        "--benchmark-storage",
        "storage",
    )
    output = result.stdout.str()
    result.assert_outcomes(failed=2)
    assert "Traceback" not in output and "OSError" not in output, output
    log = bench_pytester.path / "report" / "results.jsonl"
    mount = _mount(log)
    assert _failure_lines(output) == [  # the fine-tune's record, the
        f"no space left on {mount} writing {log}",  # inference's answers (its first write)
        f"no space left on {mount} writing {bench_pytester.path / 'report' / 'answers'}"
        "/FinguAI-Chat-v1.random-tiny.csv",
    ], output
    assert not log.exists() or log.read_bytes() == b""
    summary = output.split("= ohlora-bench =", 1)[1]
    assert re.search(r"FinguAI-Chat-v1\s+finetune r16\s+ok", summary) and re.search(r"inference\s+failed", summary)
    assert "pytest-benchmark's JSON not saved: no space left on" in summary


# --- 4: a read-only benchmark storage ---------------------------------------------------------------------


def test_a_storage_folder_that_cannot_be_written_is_a_usage_error_at_start_up(bench_pytester: pytest.Pytester) -> None:
    # /proc refuses new files even to root, as a read-only mount does.
    result = bench_pytester.runpytest_inprocess(
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-report-dir",
        "report",
        "--benchmark-autosave",
        "--benchmark-storage",
        "file:///proc/ohlora-storage",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "--benchmark-storage: /proc/ohlora-storage cannot be written: creating a file in /proc fails"
        in result.stderr.str()
    )
    assert not (bench_pytester.path / "report" / "results.jsonl").exists()  # nothing ran


# --- 6: SIGTERM is Ctrl-C: tests/e2e/test_failures.py, with Ctrl-C -------------------------------------


# --- 7: the log is read once a session for resuming --------------------------------------------------------


def test_the_log_index_is_built_once_a_session_for_its_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e.test_failures import _study

    study = _study(tmp_path, resume=True)
    log = study.settings.results_path
    for i in range(2):
        results.append(log, replace(a_record(f"ok{i}", status=Status.OK, finished=float(i)), fingerprint="mine"))
    built = []
    real_init = LogIndex.__init__
    monkeypatch.setattr(LogIndex, "__init__", lambda self, *a: built.append(a) or real_init(self, *a))
    assert [r.id for r in study.records.log_index.newest_first("mine")] == ["ok1", "ok0"]
    assert list(study.records.log_index.newest_first("other")) == []
    assert len(built) == 1


def test_the_report_folds_the_log_as_it_reads_it(tmp_path: Path) -> None:
    """A long log is merged record by record, never held whole: what is kept is one record per benchmark."""
    records = [finetune("polyglot-ko-1.3b", 16, finished=float(i)) for i in range(50)]
    merged = Merged(Stored(r, "log") for r in records)
    assert [item.record.finished for item in merged.kept.values()] == [49.0]
    assert merged.replaced == 49 and merged.run_ids == {"run-a"}


# --- 8: absurd cached peaks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tflops", [1e-300, 1e9])
def test_an_implausible_cached_calibration_is_discarded_and_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tflops: float
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu = torch.device("cpu")
    # Read as quiet whatever runs beside the suite: a busy calibration is never cached (tests/measure/test_hardware.py).
    monkeypatch.setattr(hardware, "machine_load", lambda *a: SimpleNamespace(busy=False, why_busy=""))
    monkeypatch.setattr(hardware, "_SESSION", {})
    monkeypatch.setattr(hardware, "calibrate_tflops", lambda *a: 0.5)
    monkeypatch.setattr(hardware, "calibrate_gbps", lambda *a: 20.0)
    cache = tmp_path / "ohlora-bench" / "peaks.json"
    cache.parent.mkdir()
    key = hardware.machine_key(cpu, torch.float32)
    cache.write_text(json.dumps({key: {"tflops": tflops, "gbps": 20.0, "probe_tflops": 0.4, "overhead_us": 5.0,
                                       "gemv_gbps": 10.0, "taken": "then"}}))

    with pytest.warns(
        UserWarning,
        match=rf"peaks.json: cached calibration for cpu discarded, tflops = {re.escape(f'{tflops:.3g}')} "
        r"\(expected 0.001 to 200\) is not plausible",
    ):
        peaks = hardware.device_peaks(cpu, torch.float32)
    assert peaks.tflops == 0.5 and json.loads(cache.read_text())[key]["tflops"] == 0.5


# --- 9: pytest-xdist's controller sums up every benchmark ------------------------------------------------


def test_with_two_workers_the_summary_shows_every_benchmark(xdist_grid: GridRun) -> None:
    summary = (xdist_grid.stdout + xdist_grid.stderr).split("= ohlora-bench =", 1)[1]
    first, second = SESSION_MODELS
    low, high = SESSION_RANKS
    for candidate, benchmark in [(first, f"finetune r{low}"), *((name, f"finetune r{high}") for name in SESSION_MODELS),
                                 *((name, "inference") for name in SESSION_MODELS)]:
        assert len(re.findall(rf"{re.escape(candidate)}\S*( \(approx\.\))?\s+{benchmark}\s+ok\b", summary)) == 1, (
            summary
        )
    assert not re.search(rf"{re.escape(second)}\S*( \(approx\.\))?\s+finetune r{low}\b", summary), summary


# --- 10: report --ini with a missing file --------------------------------------------------------------------


def test_report_ini_naming_a_missing_file_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = jsonl(tmp_path / "results.jsonl", full_run(tmp_path))
    with pytest.raises(UsageError, match=rf"--ini {re.escape(str(tmp_path / 'nope.cfg'))}: not found"):
        report.main([str(log), "--out", str(tmp_path / "out"), "--ini", str(tmp_path / "nope.cfg")])
    # Without --ini a missing setup.cfg is no error, and --ini '' reads none.
    monkeypatch.chdir(tmp_path)
    assert report.main([str(log), "--out", str(tmp_path / "out")]) == 0
    assert report.main([str(log), "--out", str(tmp_path / "out"), "--ini", ""]) == 0


# --- 11: a pickle torch refuses, with --ohlora-allow-pickle ------------------------------------------------


@pytest.fixture
def refused_pickle(tmp_path: Path) -> Path:
    """A tiny checkpoint whose pytorch_model.bin holds an object besides tensors (torch's weights-only
    unpickler refuses it; nothing in it runs)."""
    from safetensors.torch import load_file

    from ohlora_fixtures.inputs.dataset import load_experiment
    from ohlora_fixtures.inputs.options import DEFAULT_DATASET
    from ohlora_fixtures.inputs.tokenizer import dataset_tokenizer

    candidate = load_registry(write_registry(tmp_path / "tiny.toml", TINY_ENTRY))[0]
    experiment = load_experiment(DEFAULT_DATASET)
    pairs = (*experiment.train, *experiment.valid, *experiment.prompts)
    texts = [candidate.prompt("")] + [p.question for p in pairs] + [p.answer or "" for p in pairs]
    tokenizer = dataset_tokenizer(texts, tmp_path / "tokenizer")
    base = build_random(candidate, tokenizer, scale="tiny", seed=0, device=torch.device("cpu"), dtype=torch.float32)
    directory = tmp_path / "checkpoint"
    base.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    weights = dict(load_file(directory / "model.safetensors"))
    torch.save({**weights, "extra": argparse.Namespace(note="not a tensor")}, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    return directory


def test_a_refused_pickle_is_one_line(refused_pickle: Path, tmp_path: Path) -> None:
    candidate = load_registry(write_registry(tmp_path / "entry.toml", {**TINY_ENTRY, "path": str(refused_pickle)}))[0]
    with pytest.raises(BenchmarkError) as raised:
        load_pretrained(
            candidate,
            device=torch.device("cpu"),
            dtype=torch.float32,
            allow_download=False,
            trust_remote_code=False,
            allow_pickle=True,
        )
    message = str(raised.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith(
        f"tiny-llama: torch refuses the pickle weights in {refused_pickle} "
        "(Unsupported global: GLOBAL argparse.Namespace)"
    )


def test_with_allow_pickle_a_refused_pickle_fails_each_benchmark_with_one_reason_line(
    refused_pickle: Path, bench_pytester: pytest.Pytester
) -> None:
    registry = write_registry(bench_pytester.path / "entry.toml", {**TINY_ENTRY, "path": str(refused_pickle)})
    result = bench_pytester.runpytest_inprocess(
        "--ohlora-candidates",
        str(registry),
        "--ohlora-weights",
        "pretrained",
        "--ohlora-allow-pickle",
        *TINY_RUN,
        "--ohlora-report-dir",
        "report",
        "-p",
        "no:randomly",
    )
    output = result.stdout.str()
    result.assert_outcomes(failed=2)
    assert "Traceback" not in output and "UnpicklingError" not in output and "WeightsUnpickler" not in output
    failures = _failure_lines(output)
    assert len(failures) == 2 and all(
        line.startswith("tiny-llama: torch refuses the pickle weights") for line in failures
    ), output
    records = list(results.read(bench_pytester.path / "report" / "results.jsonl"))
    assert [r.status for r in records] == [Status.FAILED, Status.FAILED]
    assert all(r.error.startswith("tiny-llama: torch refuses the pickle weights") for r in records)


# --- extras: staging folders, the profiler's USDT lines ---------------------------------------------------


def test_a_staging_folder_a_killed_render_left_is_removed_by_the_next_render(tmp_path: Path) -> None:
    log = jsonl(tmp_path / "results.jsonl", full_run(tmp_path))
    out = tmp_path / "out"
    assert report.main([str(log), "--out", str(out)]) == 0
    for number in range(3):  # what killed renders leave: a staging folder, its lock held by no one
        left = out / f"{render_module.STAGING_PREFIX}killed{number}"
        left.mkdir()
        (left / render_module.STAGING_LOCK).touch()
        (left / "results.csv").write_text("half", encoding="utf-8")
    busy = out / f"{render_module.STAGING_PREFIX}busy"  # a render still running in another process
    busy.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"handle = os.open({str(busy / render_module.STAGING_LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
                "fcntl.flock(handle, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert report.main([str(log), "--out", str(out)]) == 0
        assert [p.name for p in out.iterdir() if p.name.startswith(render_module.STAGING_PREFIX)] == [busy.name]
    finally:
        holder.kill()
        holder.wait()
    shutil.rmtree(busy)


def test_the_tensor_meter_keeps_the_profilers_usdt_lines_out_of_the_output(tmp_path: Path) -> None:
    script = (
        "import torch\n"
        "from ohlora_fixtures.measure.memory import TensorPeakMeter\n"
        "meter, layer = TensorPeakMeter(), torch.nn.Linear(8, 8)\n"
        "with meter.measuring(layer):\n"
        "    layer(torch.randn(4, 8))\n"
        "print(meter.peak.allocations > 0)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "KINETO_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "True"
    assert "USDT" not in completed.stderr and "profiler_start" not in completed.stderr, completed.stderr
