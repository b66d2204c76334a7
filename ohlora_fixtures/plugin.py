"""The pytest plugin: options, fixtures and hooks. Each hook only delegates.

Heavy imports (torch, transformers) wait until pytest_configure, so that the
offline switch is set before huggingface_hub reads it.
"""

from __future__ import annotations

import gc
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable

import pytest

from . import settings as options
from .errors import UsageError
from .selection import ini_keys

if TYPE_CHECKING:
    from .record import BenchmarkRecord
    from .registry import Candidate
    from .report import SessionReport
    from .study import Study

STUDY = pytest.StashKey["Study"]()
REPORT = pytest.StashKey["SessionReport | str"]()  # the files written, or why none were
KIND_ORDER = {"test_finetune": 0, "test_inference": 1}


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser.getgroup("ohlora", "ohlora-bench: which base model to fine-tune with LoRA").addoption)
    for key, help in ini_keys().items():
        parser.addini(key, help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped where torch sees none")
    config.addinivalue_line("markers", "slow: takes minutes; CI skips it (-m 'not slow')")
    # setup.cfg turns autosave on for `pytest benchmarks`; runs without benchmarks need no notice of it.
    warnings.filterwarnings("ignore", message="Not saving anything, no benchmarks have been run")
    try:
        settings = options.from_pytest(config)
        if not settings.allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from .study import Study

        worker = getattr(config, "workerinput", None)  # only on a pytest-xdist worker
        with warnings.catch_warnings(record=True) as caught:  # start-up notices belong in pytest's warnings summary
            warnings.simplefilter("always")
            study = Study.from_settings(settings, int(worker["workerid"].removeprefix("gw")) if worker else None)
        for notice in caught:
            config.issue_config_time_warning(notice.message, stacklevel=2)
        if worker is not None:
            # The controller's run id: its report gathers the records of this run from the shared log.
            study.run_id = worker["ohlora_run_id"]
        config.stash[STUDY] = study
        if worker is None:
            config.pluginmanager.register(ResumedRecords(study), "ohlora-resumed-records")
        # torch, transformers and peft are loaded now: ~400k objects that live as long as the process.
        # Out of the collector's sight, each later collection (between models, at exit, and the automatic
        # ones inside timed regions) takes microseconds instead of 0.2 s.
        gc.collect()
        gc.freeze()
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(trylast=True)  # after pytest's own exit-time collections, which the freeze keeps quick
def pytest_unconfigure(config: pytest.Config) -> None:
    # Whatever outlives this session (an in-process pytester run) is collectable again.
    gc.unfreeze()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    study = metafunc.config.stash[STUDY]
    if "ohlora_candidate" in metafunc.fixturenames:
        metafunc.parametrize("ohlora_candidate", study.candidates, ids=[c.name for c in study.candidates])
    if "lora_rank" in metafunc.fixturenames:
        metafunc.parametrize("lora_rank", study.settings.ranks, ids=[f"r{rank}" for rank in study.settings.ranks])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: every worker files its records under the controller's run id."""
    node.workerinput["ohlora_run_id"] = node.config.stash[STUDY].run_id


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist, on the controller: under `-n N` (--dist load or loadgroup) each candidate's
    benchmarks go to one worker together, so its base model is built once in the whole run."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from .scaleout import CandidateScheduling

    return CandidateScheduling(config, log, [candidate.name for candidate in config.stash[STUDY].candidates])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A candidate's benchmarks run together, so its base model is built once.
    order = {candidate.name: index for index, candidate in enumerate(config.stash[STUDY].candidates)}

    def key(item: pytest.Item) -> tuple[int, int]:
        params = getattr(item, "callspec", None)
        candidate = params.params.get("ohlora_candidate") if params else None
        if candidate is None:
            return (-1, 0)
        return (order[candidate.name], KIND_ORDER.get(getattr(item, "originalname", ""), 2))

    items.sort(key=key)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (marker gpu); none is visible here")


@pytest.fixture(scope="session")
def ohlora_study(pytestconfig: pytest.Config) -> "Study":
    """The session's settings, candidates, data and base-model cache."""
    return pytestconfig.stash[STUDY]


@pytest.fixture
def ohlora_say(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Writes a progress line to the terminal, past pytest's output capture."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    terminal = pytestconfig.pluginmanager.getplugin("terminalreporter")

    def say(line: str) -> None:
        if terminal is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"  [ohlora] {line}")

    return say


@pytest.fixture
def ohlora_finetune(ohlora_study: "Study", benchmark: Any, ohlora_say: Callable[[str], None], request: pytest.FixtureRequest) -> Callable[["Candidate", int], "BenchmarkRecord"]:
    """Runs the fine-tuning benchmark of one (candidate, rank) and returns its record."""
    from .runner import run_finetune

    return lambda candidate, rank: run_finetune(ohlora_study, benchmark, candidate, rank, request.node, ohlora_say)


@pytest.fixture
def ohlora_inference(ohlora_study: "Study", benchmark: Any, ohlora_say: Callable[[str], None], request: pytest.FixtureRequest) -> Callable[["Candidate"], "BenchmarkRecord"]:
    """Runs the inference benchmark of one candidate and returns its record."""
    from .runner import run_inference

    return lambda candidate: run_inference(ohlora_study, benchmark, candidate, request.node, ohlora_say)


class ResumedRecords:
    """On pytest-xdist's controller: a worker's resumed records join the controller's report.

    A resumed benchmark writes nothing to the log under this run's id, and the
    controller reads the log by run id; so each worker sends its resumed record
    in the test report's user_properties (runner.RESUMED) and this picks it up.
    """

    def __init__(self, study: "Study") -> None:
        self.study = study

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .record import BenchmarkRecord, RecordError
        from .runner import RESUMED

        for key, value in report.user_properties:
            if key != RESUMED:
                continue
            try:
                record = BenchmarkRecord.from_json(value)
            except RecordError as error:
                warnings.warn(f"{report.nodeid}: resumed record not readable, left out of the report: {error}",
                              stacklevel=2)
                continue
            # Without xdist the runner already holds it; each test phase's report carries it again.
            if not any(own.key == record.key and own.finished == record.finished for own in self.study.records):
                self.study.records.append(record)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    study = config.stash.get(STUDY, None)
    if study is not None:
        from .record import plain

        output_json["ohlora"] = {
            **plain(study.describe()), "model_loads": dict(study.load_counts), "peaks": study.peaks.as_dict(),
        }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    study = config.stash.get(STUDY, None)
    # An xdist worker leaves the report to the controller, which reads every worker's records from the log.
    if study is None or hasattr(config, "workerinput"):
        return
    from .report import render_session

    try:
        report = render_session(study, config.getini)
    except UsageError as error:
        config.stash[REPORT] = f"report not written: {error}"
        return
    except OSError as error:
        # A full disk, a read-only folder: the measurements are in results.jsonl and the previous report
        # is untouched (render writes through a staging folder); say so and keep the summary.
        config.stash[REPORT] = (
            f"report not written: {error.strerror or error} ({error.filename or study.settings.report_dir}); "
            f"every finished measurement is in {study.settings.results_path}; free space and run "
            f"`python -m ohlora_fixtures report {study.settings.results_path}`"
        )
        return
    if report is not None:
        config.stash[REPORT] = report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    study = config.stash.get(STUDY, None)
    report = config.stash.get(REPORT, None)
    if study is None or not (study.records or report):
        return
    from .summary import summary_lines

    terminalreporter.section("ohlora-bench")
    if study.records:
        for line in summary_lines(study):
            terminalreporter.write_line(line)
    if isinstance(report, str):
        terminalreporter.write_line(report, yellow=True)
    elif report is not None:
        for line in report.lines():
            terminalreporter.write_line(line)
