"""The pytest plugin: options, fixtures and hooks. Each hook only delegates.

Invisible until asked for: a session that passes no `--ohlora-*` option and
collects no test using the ohlora fixtures imports nothing heavy, reads no
file and sets nothing. The Study (settings, registry, dataset; torch with it)
is built at start-up when an option is given, else on first need while
collecting; either way every bad option, registry entry or dataset row stops
the run with exit code 4 before any model loads. The offline switch is set just
before, so that huggingface_hub reads it.
"""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import options
from ohlora_fixtures.inputs.paths import check_writable_folder
from ohlora_fixtures.inputs.policy import ini_keys, resolve_weights
from ohlora_fixtures.records.storage import disk_full
from ohlora_fixtures.session import signals

if TYPE_CHECKING:
    from ohlora_fixtures.inputs.registry import Candidate
    from ohlora_fixtures.records.record import BenchmarkRecord
    from ohlora_fixtures.session.study import Study

STUDY = pytest.StashKey["Study"]()
STUDY_ERROR = pytest.StashKey[str]()  # why the Study could not be built while collecting; raised after it
RUN_ID = pytest.StashKey[str]()
WORKERS_USED_OHLORA = pytest.StashKey[bool]()  # pytest-xdist controller: a worker built a Study
REPORT = pytest.StashKey["SessionReport | str"]()  # the files written, or why none were
BENCHMARK_NOT_SAVED = pytest.StashKey[str]()  # why pytest-benchmark's save failed at the session's end
KIND_ORDER = {"test_finetune": 0, "test_inference": 1}
WORKER_RECORDS = "ohlora-worker-records"
# A test that asks for any of these is an ohlora benchmark: it needs the Study.
STUDY_FIXTURES = frozenset(
    {"ohlora_study", "ohlora_candidate", "lora_rank", "ohlora_quantization", "ohlora_finetune", "ohlora_inference"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser.getgroup("ohlora", "ohlora-bench: which base model to fine-tune with LoRA").addoption)
    for key, help in ini_keys().items():
        parser.addini(key, help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped where torch sees none")
    config.addinivalue_line("markers", "slow: takes minutes; CI skips it (-m 'not slow')")
    config.pluginmanager.register(WorkerRecords(config), WORKER_RECORDS)
    _refuse_missing_extras(config)
    if _options_given(config):
        try:
            _study(config)
        except UsageError as error:
            raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(trylast=True)  # after pytest's own exit-time collections, which the freeze keeps quick
def pytest_unconfigure(config: pytest.Config) -> None:
    if STUDY in config.stash:
        # Whatever outlives this session (an in-process pytester run) is collectable again.
        gc.unfreeze()


# pytest-benchmark options that need an extra of this package, the module they import, and the extra.
NEEDS_EXTRA = {"benchmark_histogram": ("--benchmark-histogram", "pygal", "histogram")}


def _refuse_missing_extras(config: pytest.Config) -> None:
    """An option whose extra is not installed stops the run before anything is measured, in one line (else
    pytest-benchmark measures everything, then fails on the import)."""
    import importlib.util

    for dest, (flag, module, extra) in NEEDS_EXTRA.items():
        if config.getoption(dest, None) and importlib.util.find_spec(module) is None:
            raise pytest.UsageError(f"{flag} draws with {module}, which is not installed: "
                                    f"pip install 'ohlora-bench[{extra}]', or leave {flag} out")


def _options_given(config: pytest.Config) -> bool:
    """Whether any `--ohlora-*` option was passed (command line or addopts)."""
    return any(config.getoption(option.flag) not in (None, False) for option in options.OPTIONS)


def _run_id(config: pytest.Config) -> str:
    """This run's id; an xdist worker takes its controller's, so the report finds every worker's records."""
    if RUN_ID not in config.stash:
        # Imported here: the results log's record types pull in torch, which an unrelated suite must not pay for.
        from ohlora_fixtures.records.results import new_run_id

        worker = getattr(config, "workerinput", None)
        config.stash[RUN_ID] = worker["ohlora_run_id"] if worker else new_run_id()
    return config.stash[RUN_ID]


def _study(config: pytest.Config) -> "Study":
    """The session's Study, built on first need; a bad option, registry or dataset is a UsageError."""
    if STUDY in config.stash:
        return config.stash[STUDY]
    if not config.pluginmanager.has_plugin("benchmark"):
        raise UsageError(
            "ohlora benchmarks are measured by pytest-benchmark, which -p no:benchmark switched off; "
            "drop that option (--benchmark-disable runs them once, untimed)"
        )
    settings = options.from_pytest(config)
    resolve_weights(config.getini, settings.ranking_weights)  # refused now, not after every benchmark has run
    _check_benchmark_storage(config)
    if not settings.allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ohlora_fixtures.session.study import Study

    worker = getattr(config, "workerinput", None)  # only on a pytest-xdist worker
    with warnings.catch_warnings(record=True) as caught:  # start-up notices belong in pytest's warnings summary
        warnings.simplefilter("always")
        study = Study.from_settings(settings, int(worker["workerid"].removeprefix("gw")) if worker else None)
    for notice in caught:
        config.issue_config_time_warning(notice.message, stacklevel=2)
    study.run_id = _run_id(config)
    study.progress.write = _progress_writer(config)
    # A baseline comparison is a decision the times make: busy ones are measured again (remeasure.py).
    study.remeasure.decides |= bool(config.getoption("benchmark_compare", None))
    config.stash[STUDY] = study
    signals.interrupt_on_termination(config.add_cleanup)
    # torch, transformers and peft are loaded now: ~400k objects that live as long as the process.
    # Out of the collector's sight, each later collection (between models, at exit, and the automatic
    # ones inside timed regions) takes microseconds instead of 0.2 s.
    gc.collect()
    gc.freeze()
    return study


def _progress_writer(config: pytest.Config) -> Callable[[str, bool], None]:
    """Writes a progress line past pytest's output capture: as a line, or (`rewrite`) over the last progress
    line where that is still the terminal's current line."""
    ours = object()  # the terminal reporter's current-line mark while our updating line is on screen

    def write(line: str, rewrite: bool) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        terminal = config.pluginmanager.getplugin("terminalreporter")
        if terminal is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            if not rewrite:
                terminal.write_line(f"  {line}")
                return
            if terminal.currentfspath is not ours:
                terminal.ensure_newline()
            terminal.rewrite(f"  {line}", erase=True)
            terminal.flush()
            terminal.currentfspath = ours  # truthy: pytest's next line starts on a line of its own

    return write


def _check_benchmark_storage(config: pytest.Config) -> None:
    """Refuse at start-up a pytest-benchmark storage folder its save (--benchmark-autosave or --benchmark-save)
    could not write at the end, after every benchmark has run."""
    saves = config.getoption("benchmark_autosave", False) or config.getoption("benchmark_save", None)
    if not saves or config.getoption("benchmark_disable", False):
        return
    storage = str(config.getoption("benchmark_storage", "") or "")
    if "://" not in storage or storage.startswith("file://"):
        check_writable_folder(Path(storage.removeprefix("file://")), "--benchmark-storage")


def pytest_sessionstart(session: pytest.Session) -> None:
    _keep_report_past_saving(session.config)


def _keep_report_past_saving(config: pytest.Config) -> None:
    """pytest-benchmark saves its JSON first thing at the session's end, in a hook wrapper that runs before
    this plugin's: an error there (storage gone read-only, a full disk) would end the session with no ohlora
    report and no summary. In a session with ohlora benchmarks the error becomes one line of the summary
    (and exit status 3, as pytest gives an internal error); elsewhere it is raised as before."""
    benchmarks = getattr(config, "_benchmarksession", None)
    if benchmarks is None or not hasattr(benchmarks, "handle_saving"):
        return
    save = benchmarks.handle_saving

    def saving() -> None:
        try:
            save()
        except Exception as error:  # noqa: BLE001 - whatever it is, the ohlora report must still be written
            if STUDY not in config.stash and not config.stash.get(WORKERS_USED_OHLORA, False):
                raise
            where = getattr(error, "filename", None) or config.getoption("benchmark_storage", "")
            reason = disk_full(error) or f"{getattr(error, 'strerror', None) or error} ({where})"
            config.stash[BENCHMARK_NOT_SAVED] = f"pytest-benchmark's JSON not saved: {reason}"

    benchmarks.handle_saving = saving


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if STUDY_FIXTURES.isdisjoint(metafunc.fixturenames) or STUDY_ERROR in metafunc.config.stash:
        return
    try:
        study = _study(metafunc.config)
    except UsageError as error:
        # Raised once collection is done: one ERROR line and exit code 4, not a collection error per module.
        metafunc.config.stash[STUDY_ERROR] = str(error)
        return
    if "ohlora_candidate" in metafunc.fixturenames:
        # By name, so that pytest-benchmark stores a readable param; the fixture turns it into the Candidate.
        names = [candidate.name for candidate in study.candidates]
        metafunc.parametrize("ohlora_candidate", names, ids=names, indirect=True)
    if "lora_rank" in metafunc.fixturenames:
        metafunc.parametrize("lora_rank", study.settings.ranks, ids=[f"r{rank}" for rank in study.settings.ranks])
    quantization = study.settings.quantization
    # Only a grid that asks for a quantized base gains the axis: the default's ids (and so its records'
    # ids and fingerprints) stay as they were before it.
    if "ohlora_quantization" in metafunc.fixturenames and quantization != ("none",):
        metafunc.parametrize("ohlora_quantization", quantization, ids=list(quantization), indirect=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: every worker files its records under the controller's run id."""
    node.workerinput["ohlora_run_id"] = _run_id(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist, on the controller: note whether a worker ran ohlora benchmarks, for the report."""
    if getattr(node, "workeroutput", {}).get("ohlora"):
        node.config.stash[WORKERS_USED_OHLORA] = True


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist, on the controller: under `-n N` (--dist load or loadgroup) each candidate's
    benchmarks go to one worker together, so its base model is built once in the whole run."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from ohlora_fixtures.session.scaleout import CandidateScheduling

    return CandidateScheduling(config, log, lambda: _candidate_names(config))


def _candidate_names(config: pytest.Config) -> list[str]:
    # The controller collects nothing, so it reads the names from the registry itself.
    from ohlora_fixtures.inputs.registry import load_registry

    if STUDY in config.stash:
        return [candidate.name for candidate in config.stash[STUDY].candidates]
    return [candidate.name for candidate in load_registry(options.from_pytest(config).candidates)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STUDY_ERROR in config.stash:
        raise pytest.UsageError(config.stash[STUDY_ERROR])
    if STUDY not in config.stash:
        return
    from ohlora_fixtures.session.progress import progress_mode

    progress = config.stash[STUDY].progress
    progress.total = sum(1 for item in items if not STUDY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())))
    terminal = config.pluginmanager.getplugin("terminalreporter")
    progress.mode = progress_mode(config.get_verbosity(), bool(getattr(terminal, "isatty", False)), os.environ)
    # A candidate's benchmarks run together, so its base model is built once ...
    order = {candidate.name: index for index, candidate in enumerate(config.stash[STUDY].candidates)}

    precisions = {precision: index for index, precision in enumerate(config.stash[STUDY].settings.quantization)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        params = getattr(item, "callspec", None)
        name = params.params.get("ohlora_candidate") if params else None
        if name not in order:
            return (-1, 0, 0)
        # ... and in each precision together, so each quantized base is made once too.
        precision = precisions.get(params.params.get("ohlora_quantization", "none"), 0)
        return (order[name], precision, KIND_ORDER.get(getattr(item, "originalname", ""), 2))

    items.sort(key=key)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (marker gpu); none is visible here")


@pytest.fixture(scope="session")
def ohlora_study(pytestconfig: pytest.Config) -> "Study":
    """The session's settings, candidates, data and base-model cache."""
    return _study(pytestconfig)


@pytest.fixture
def ohlora_candidate(request: pytest.FixtureRequest, ohlora_study: "Study") -> "Candidate":
    """The candidate a benchmark measures; parametrized with the names of the selected candidates."""
    return next(candidate for candidate in ohlora_study.candidates if candidate.name == request.param)


@pytest.fixture
def ohlora_say(ohlora_study: "Study") -> Callable[[str], None]:
    """Writes a progress line to the terminal, past pytest's output capture (session/progress.py says how)."""
    return ohlora_study.progress.say


@pytest.fixture
def ohlora_quantization(request: pytest.FixtureRequest, ohlora_study: "Study") -> str:
    """The base weights' precision a benchmark measures: none, 8bit or 4bit (--ohlora-quantization); a precision
    bitsandbytes or the device cannot run is skipped with the reason."""
    precision = getattr(request, "param", "none")
    from ohlora_fixtures.measure.quantize import unavailable

    reason = unavailable(precision, ohlora_study.device)
    if reason:
        pytest.skip(reason)
    return precision


@pytest.fixture
def ohlora_finetune(
    ohlora_study: "Study",
    benchmark: Any,
    ohlora_say: Callable[[str], None],
    ohlora_quantization: str,
    request: pytest.FixtureRequest,
) -> Callable[["Candidate", int], "BenchmarkRecord"]:
    """Runs the fine-tuning benchmark of one (candidate, rank, precision) and returns its record."""
    from ohlora_fixtures.session.runner import run_finetune

    quantized = "" if ohlora_quantization == "none" else f"-{ohlora_quantization}"

    def finetune(candidate: "Candidate", rank: int) -> dict:
        # pytest-benchmark compares like with like: one table per rank and precision
        benchmark.group = f"finetune-r{rank}{quantized}"
        return run_finetune(ohlora_study, benchmark, candidate, rank, request.node, ohlora_say, ohlora_quantization)

    return finetune


@pytest.fixture
def ohlora_inference(
    ohlora_study: "Study",
    benchmark: Any,
    ohlora_say: Callable[[str], None],
    ohlora_quantization: str,
    request: pytest.FixtureRequest,
) -> Callable[["Candidate"], "BenchmarkRecord"]:
    """Runs the inference benchmark of one candidate (in one precision) and returns its record."""
    from ohlora_fixtures.session.runner import run_inference

    def inference(candidate: "Candidate") -> dict:
        benchmark.group = "inference" if ohlora_quantization == "none" else f"inference-{ohlora_quantization}"
        return run_inference(ohlora_study, benchmark, candidate, request.node, ohlora_say, ohlora_quantization)

    return inference


class WorkerRecords:
    """A pytest-xdist worker's records, sent to the controller in the test reports, for its summary and report.

    The controller measures nothing itself, and a resumed benchmark writes
    nothing to the log under this run's id: so a worker puts each record its
    Study gains (measured or resumed) in the test's user_properties
    (results.RECORD_PROPERTY), and the controller adds them to its Study before
    rendering and summing up. Costs nothing to a suite without ohlora
    benchmarks: no import until a Study or a property is there.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.lines: list[tuple[str, str]] = []
        self.sent = 0  # on a worker: how many of the Study's records went out

    @pytest.hookimpl(tryfirst=True)  # before pytest's own makes the report from the item's user_properties
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> None:
        study = self.config.stash.get(STUDY, None)
        if study is None or not hasattr(self.config, "workerinput") or len(study.records.measured) == self.sent:
            return
        from ohlora_fixtures.records.results import RECORD_PROPERTY

        item.user_properties += [(RECORD_PROPERTY, record.to_json()) for record in study.records.measured[self.sent :]]
        self.sent = len(study.records.measured)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.user_properties and not hasattr(self.config, "workerinput"):
            from ohlora_fixtures.records.results import RECORD_PROPERTY

            self.lines += [(report.nodeid, value) for key, value in report.user_properties if key == RECORD_PROPERTY]

    def add_to(self, study: "Study") -> None:
        """The workers' records into `study.records.measured`, each once (every test phase's report carries
        it again)."""
        from ohlora_fixtures.records.record import BenchmarkRecord, RecordError

        for nodeid, line in self.lines:
            try:
                record = BenchmarkRecord.from_json(line)
            except RecordError as error:
                warnings.warn(
                    f"{nodeid}: a worker's record not readable, left out of the report: {error}", stacklevel=2
                )
                continue
            if not any(own.key == record.key and own.finished == record.finished for own in study.records.measured):
                study.records.measured.append(record)


@pytest.hookimpl(optionalhook=True)  # pytest-benchmark's hook: absent under -p no:benchmark
def pytest_benchmark_compare_machine_info(
    config: pytest.Config, benchmarksession: Any, machine_info: dict, compared_benchmark: dict
) -> None:
    """--benchmark-compare: a baseline whose figures were measured on a busy machine is named in a warning."""
    from ohlora_fixtures.session.baseline import baseline_warning

    line = baseline_warning(compared_benchmark, str(getattr(benchmarksession, "storage", "")))
    if line is not None:
        benchmarksession.logger.warning(line)


@pytest.hookimpl(optionalhook=True)  # pytest-benchmark's hook: absent under -p no:benchmark
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    study = config.stash.get(STUDY, None)
    if study is not None:
        from ohlora_fixtures.measure.memory import lifetime_peak_mib, runtime_baseline_mib
        from ohlora_fixtures.records.record import plain

        for bench in output_json.get("benchmarks", ()):
            params = bench.get("params") or {}
            if "ohlora_candidate" in params and "lora_rank" not in params:
                # Inference measures the base model, no adapter: rank null, so that
                # `pytest-benchmark compare --group-by=param:lora_rank` can file it.
                bench["params"] = {**params, "lora_rank": None}
        output_json["ohlora"] = {
            **plain(study.describe()),
            "model_loads": dict(study.models.load_counts),
            "peaks": study.peaks.as_dict(),
            # Per-benchmark peaks reset the kernel's high-water mark; this is the session's own, kept across resets.
            "runtime_baseline_mib": round(runtime_baseline_mib(), 2),
            "lifetime_peak_mib": lifetime_peak_mib(),
        }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    yield
    signals.finish_before_termination(session.config.add_cleanup)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if signals.noted() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    if BENCHMARK_NOT_SAVED in config.stash and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    study = config.stash.get(STUDY, None)
    # An xdist worker leaves the report to the controller, which reads every worker's records from the log.
    if hasattr(config, "workerinput"):
        if study is not None:
            config.workeroutput["ohlora"] = True
        return
    if study is None and config.stash.get(WORKERS_USED_OHLORA, False):
        try:
            study = _study(config)
        except UsageError as error:
            config.stash[REPORT] = f"report not written: {error}"
            return
    if study is None:
        return
    from ohlora_fixtures.report import render_session

    config.pluginmanager.get_plugin(WORKER_RECORDS).add_to(study)
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
    if study is None or not (study.records.measured or report):
        return
    from ohlora_fixtures.session.summary import summary_lines

    terminalreporter.section("ohlora-bench")
    if study.records.measured:
        # The answer first (the merged leaderboard's verdict), then this session's benchmarks, as in the report.
        for line in summary_lines(study, getattr(report, "answer", ())):
            terminalreporter.write_line(line)
    if BENCHMARK_NOT_SAVED in config.stash:
        terminalreporter.write_line(config.stash[BENCHMARK_NOT_SAVED], red=True)
    if isinstance(report, str):
        terminalreporter.write_line(report, yellow=True)
    elif report is not None:
        for line in report.lines():
            terminalreporter.write_line(line)
