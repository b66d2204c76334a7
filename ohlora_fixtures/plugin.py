"""The pytest plugin: options, fixtures and hooks. Each hook only delegates.

Heavy imports (torch, transformers) wait until pytest_configure, so that the
offline switch is set before huggingface_hub reads it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import pytest

from . import settings as options
from .errors import UsageError

if TYPE_CHECKING:
    from .registry import Candidate
    from .study import Study

STUDY = pytest.StashKey["Study"]()
KIND_ORDER = {"test_finetune": 0, "test_inference": 1}


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser.getgroup("ohlora", "ohlora-bench: which base model to fine-tune with LoRA").addoption)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped where torch sees none")
    config.addinivalue_line("markers", "slow: takes minutes; CI skips it (-m 'not slow')")
    try:
        settings = options.from_pytest(config)
        if not settings.allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from .study import Study

        config.stash[STUDY] = Study.from_settings(settings)
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    study = metafunc.config.stash[STUDY]
    if "ohlora_candidate" in metafunc.fixturenames:
        metafunc.parametrize("ohlora_candidate", study.candidates, ids=[c.name for c in study.candidates])
    if "lora_rank" in metafunc.fixturenames:
        metafunc.parametrize("lora_rank", study.settings.ranks, ids=[f"r{rank}" for rank in study.settings.ranks])


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
def ohlora_finetune(ohlora_study: "Study", benchmark: Any, ohlora_say: Callable[[str], None], request: pytest.FixtureRequest) -> Callable[["Candidate", int], dict]:
    """Runs the fine-tuning benchmark of one (candidate, rank) and returns its record."""
    from .runner import run_finetune

    return lambda candidate, rank: run_finetune(ohlora_study, benchmark, candidate, rank, request.node.nodeid, ohlora_say)


@pytest.fixture
def ohlora_inference(ohlora_study: "Study", benchmark: Any, ohlora_say: Callable[[str], None], request: pytest.FixtureRequest) -> Callable[["Candidate"], dict]:
    """Runs the inference benchmark of one candidate and returns its record."""
    from .runner import run_inference

    return lambda candidate: run_inference(ohlora_study, benchmark, candidate, request.node.nodeid, ohlora_say)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    study = config.stash.get(STUDY, None)
    if study is not None:
        output_json["ohlora"] = {**study.describe(), "model_loads": dict(study.load_counts)}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    study = config.stash.get(STUDY, None)
    if study is None or not study.records:
        return
    from .summary import summary_lines

    terminalreporter.section("ohlora-bench")
    for line in summary_lines(study):
        terminalreporter.write_line(line)
