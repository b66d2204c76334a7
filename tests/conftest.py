"""Fixtures shared by the plugin's tests."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
# The smallest grid that still runs every code path: seconds, not minutes.
TINY_SETTINGS = (
    "--ohlora-epochs", "1", "--ohlora-train-rows", "4", "--ohlora-batch-size", "2",
    "--ohlora-valid-rows", "2", "--ohlora-prompts", "2", "--ohlora-max-new-tokens", "4",
    # Measured once whatever the machine's load: tests count rounds and calls, and a busy test machine is common.
    "--ohlora-busy-retries", "0",
)
TINY_RUN = ("--ohlora-ranks", "16", *TINY_SETTINGS)


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


def run_grid_inprocess(pytester: pytest.Pytester, directory: Path, *args: str, **kwargs: object) -> pytest.RunResult:
    """`run_grid` inside this process (pytester's in-process run): the same benchmarks, test ids and files,
    without a new interpreter's start-up (torch alone takes seconds to import). For runs that need no
    process of their own; `kwargs` go to `runpytest_inprocess` (`plugins=`, `no_reraise_ctrlc=`)."""
    return pytester.runpytest_inprocess(
        str(REPO / "benchmarks"), "-p", "no:cacheprovider", "--benchmark-storage", f"file://{directory / 'storage'}",
        "--ohlora-report-dir", str(directory / "ohlora"), *args, **kwargs,
    )


# The session's one shared grid run (fixture `tiny_grid`): two candidates of different architectures at two
# ranks, three timed rounds (cheap at this size: the untimed memory pass runs once either way) and the
# fine-tunes' answers. It serves every test that only reads a grid's outputs.
SESSION_MODELS = ("FinguAI-Chat-v1", "TinyKo-v5-a")
SESSION_RANKS = (8, 16)
SESSION_RUN = (
    "--ohlora-ranks", ",".join(map(str, SESSION_RANKS)), *TINY_SETTINGS, "--ohlora-models", ",".join(SESSION_MODELS),
    "--ohlora-rounds", "3", "--ohlora-eval-after-finetune",
)
# Every benchmark of that run as (kind, candidate, rank).
SESSION_BENCHMARKS = frozenset(
    (kind, name, rank) for name in SESSION_MODELS
    for kind, rank in [*(("finetune", rank) for rank in SESSION_RANKS), ("inference", None)]
)


@dataclass(frozen=True)
class GridRun:
    """A finished grid run: its folder (report in ohlora/, pytest-benchmark's storage in storage/, its JSON
    in run.json) and terminal output. Shared by the session: read it, or `copy_to` a folder of your own."""

    directory: Path
    stdout: str
    stderr: str

    @property
    def report_dir(self) -> Path:
        return self.directory / "ohlora"

    @property
    def log(self) -> Path:
        return self.report_dir / "results.jsonl"

    @property
    def json(self) -> Path:
        return self.directory / "run.json"

    def copy_to(self, directory: Path) -> Path:
        """The run's files copied into `directory` (which may exist), for a test that adds to them."""
        shutil.copytree(self.directory, directory, dirs_exist_ok=True)
        return directory


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """torch on one thread, here and in every grid the tests start (OMP_NUM_THREADS is inherited). The tests'
    tiny models gain nothing from a second thread, and on shared cores OpenMP threads that wait for each other
    spin: a loaded 2-core machine ran the session's grid in 35 s of CPU time with two threads, 7 s with one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def torch_modules_before_pytester(request: pytest.FixtureRequest) -> None:
    """pytester's in-process runs restore sys.modules when they end, so a module first imported inside one is
    imported again by the next; torch._dynamo (AdamW's first step imports it) registers an operator library
    that torch refuses to register twice (bitsandbytes too: a Study imports it where installed). Imported here,
    before any pytester snapshot, they stay."""
    if "pytester" in request.fixturenames:
        import torch._dynamo  # noqa: F401

        from ohlora_fixtures.measure.quantize import guard_hub_kernels

        guard_hub_kernels(allow_remote_code=False)


@pytest.fixture(scope="session", autouse=True)
def peaks_cache(tmp_path_factory: pytest.TempPathFactory):
    """The peaks cache (hardware.cache_path) in a folder of this test session, not the user's: subprocesses
    inherit it, and every test after the first reuses its calibration as a user's later sessions would."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder / "ohlora-bench" / "peaks.json"


@pytest.fixture(autouse=True, scope="session")
def not_an_xdist_worker() -> Iterator[None]:
    """Under `pytest tests -n 2` each worker has PYTEST_XDIST_WORKER set; the pytest sessions a test starts
    (in-process or in a subprocess) would inherit it, and pytest-benchmark would then save no JSON, as a
    worker does. The sessions under test are not workers: the variables are hidden while tests run."""
    hidden = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("PYTEST_XDIST_")}
    yield
    os.environ.update(hidden)


# The session grids; the tests that read one run on one worker under `make test`'s `-n 2 --dist loadgroup`.
SHARED_GRIDS = ("tiny_grid", "xdist_grid")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test that reads a session grid joins that grid's xdist group: spread over two workers, the second
    to ask would wait, idle, for the first's run to finish (`shared_grid`'s lock)."""
    for item in items:
        grid = next((name for name in SHARED_GRIDS if name in getattr(item, "fixturenames", ())), None)
        if grid is not None:
            item.add_marker(pytest.mark.xdist_group(grid))


def shared_grid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str,
                *args: str) -> GridRun:
    """`run_grid` of `args` once per test session, under `pytest -n 2` too: the first pytest-xdist worker to
    ask runs it, holding a lock in the folder the workers' temporary folders share; the others wait for it
    and read its outcome. A session-scoped fixture alone runs once per worker."""
    root = _shared_folder(request, tmp_path_factory)
    directory, outcome = root / name, root / f"{name}.json"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.is_file():
            directory.mkdir()
            result = run_grid(directory, *args)
            outcome.write_text(json.dumps([result.returncode, result.stdout, result.stderr]), encoding="utf-8")
    returncode, stdout, stderr = json.loads(outcome.read_text(encoding="utf-8"))
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
    return GridRun(directory, stdout, stderr)


def _shared_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder; under pytest-xdist the one that holds every worker's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


@pytest.fixture(scope="session")
def tiny_grid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, peaks_cache: Path) -> GridRun:
    """SESSION_RUN, run once per test session in a process of its own, autosaved as pytest-benchmark's
    run 0001 and written to run.json; its memory budget is ample, so it also shows the budget gate letting
    a run through."""
    directory = _shared_folder(request, tmp_path_factory) / "tiny-grid"
    return shared_grid(request, tmp_path_factory, "tiny-grid", *SESSION_RUN, "--ohlora-vram-budget-mb", "65536",
                       "--benchmark-autosave", f"--benchmark-json={directory / 'run.json'}")


# The session's one grid run on two pytest-xdist workers (fixture `xdist_grid`): SESSION_RUN's candidates and
# ranks at one round, less the second candidate's lower rank, so that pytest-xdist's own scheduler would split
# the first candidate (see test_performance), listed with -v.
XDIST_RUN = (
    "--ohlora-ranks", ",".join(map(str, SESSION_RANKS)), *TINY_SETTINGS, "--ohlora-models", ",".join(SESSION_MODELS),
    "-k", f"not {SESSION_MODELS[1]}-r{SESSION_RANKS[0]}", "-n", "2", "-v", "-p", "no:randomly",
)


@pytest.fixture(scope="session")
def xdist_grid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, peaks_cache: Path) -> GridRun:
    """XDIST_RUN, once per test session: read it, or `copy_to` a folder of your own."""
    return shared_grid(request, tmp_path_factory, "xdist-grid", *XDIST_RUN)


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
