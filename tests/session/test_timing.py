"""The timing protocol's order: what happens before each timed round, and where the meter starts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch

from ohlora_fixtures.measure import memory
from ohlora_fixtures.records.figures import MachineLoad
from ohlora_fixtures.session import timing
from ohlora_fixtures.session.progress import PLAIN, Progress
from ohlora_fixtures.session.remeasure import RemeasureBudget


class Pedantic:
    """pytest-benchmark's `pedantic` as far as `measure` uses it: each round, `setup()` and then the target."""

    stats = None

    def pedantic(self, target: Callable[..., Any], setup: Callable[[], tuple], rounds: int, **_: Any) -> None:
        for _ in range(rounds):
            args, kwargs = setup()
            target(*args, **kwargs)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    trim = memory.trim_host_memory

    def recorded_trim() -> bool:
        seen.append("trim")
        return trim()

    monkeypatch.setattr(memory, "trim_host_memory", recorded_trim)
    monkeypatch.setattr(memory, "_runtime_baseline", 0.0)  # taken, as a Study takes it before any benchmark
    return seen


def study(rounds: int, busy_retries: int = 0, budget: RemeasureBudget | None = None,
          lines: list[str] | None = None) -> Any:
    budget = budget or RemeasureBudget(0.5, decides=False)
    write = (lambda line, rewrite: lines.append(line)) if lines is not None else (lambda line, rewrite: None)
    return SimpleNamespace(
        settings=SimpleNamespace(rounds=rounds, busy_retries=busy_retries),
        device=torch.device("cpu"),
        dtype=torch.float32,
        peaks=SimpleNamespace(probe_tflops=None),  # no load probe
        remeasure=budget,
        progress=Progress(write=write, mode=PLAIN, clock=budget.clock),
    )


def test_each_round_warms_up_after_the_meter_has_trimmed_the_heap(events: list[str]) -> None:
    # The meter hands freed heap back to the system as it starts; between the warm-up and the clock it would undo
    # the allocator growth the warm-up pays, and the first timed step would pay it again (4-5 ms of a 16 ms step).
    layer = torch.nn.Linear(8, 8)

    def prepare() -> tuple:
        events.append("prepare")
        return (layer,)

    def warm(model: torch.nn.Module) -> None:
        events.append("warm")

    def region(model: torch.nn.Module) -> str:
        events.append("timed")
        return "value"

    rounds = timing.measure(study(rounds=2), Pedantic(), region, prepare, warm)

    assert events == ["prepare", "trim", "warm", "timed"] * 2
    assert [r.value for r in rounds.rounds] == ["value", "value"]


def test_the_profiled_pass_warms_up_as_a_round_does_outside_its_window(events: list[str]) -> None:
    layer = torch.nn.Linear(8, 8)

    def warm(model: torch.nn.Module, hook: Callable[..., None]) -> None:
        events.append("warm")
        model(torch.ones(64, 8))  # allocates; outside the window it is not the region's

    def region(model: torch.nn.Module, hook: Callable[..., None]) -> None:
        events.append("timed")
        model(torch.ones(1, 8))

    peak = timing.tensor_peak(study(rounds=1), region, lambda hook: (layer, hook), warm)

    assert events == ["warm", "timed"]
    assert peak is not None and peak.peak_increase_mib < 64 * 8 * 4 / 2**20  # the warm-up's (64, 8) is not in it


class Clock:
    """A fake monotonic clock that the timed region moves on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BusyWatch:
    """A LoadWatch whose every attempt ran while another process kept 1.5 of 2 cores busy."""

    def __init__(self, probe: Callable[[], float | None]) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def finish(self) -> MachineLoad:
        return MachineLoad(2, None, None, 1.5, None, None, None, busy=True,
                           why_busy="other processes used 1.5 of 2 cores")


def busy_benchmark(monkeypatch: pytest.MonkeyPatch, the_study: Any, clock: Clock, seconds: float = 10.0) -> tuple:
    """Measure a region that takes `seconds` of the fake clock on an always busy machine: (rounds, region calls)."""
    monkeypatch.setattr(timing, "LoadWatch", BusyWatch)
    calls = []

    def region() -> None:
        calls.append(clock.now)
        clock.now += seconds

    return timing.measure(the_study, Pedantic(), region, lambda: (), lambda: None), calls


def test_a_busy_stand_in_figure_is_kept_once_and_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, lines = Clock(), []
    budget = RemeasureBudget(0.5, decides=False, clock=clock)
    rounds, calls = busy_benchmark(monkeypatch, study(rounds=2, busy_retries=2, budget=budget, lines=lines), clock)

    assert len(calls) == 2  # one attempt of two rounds, not three
    assert rounds.load.busy and rounds.load.kept_busy == "stand-in" and rounds.load.attempts == 1
    assert budget.attempts == 0 and lines == []


def test_deciding_figures_are_measured_again_saying_why_until_the_retries_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, lines = Clock(), []
    budget = RemeasureBudget(1.0, decides=True, clock=clock)
    rounds, calls = busy_benchmark(monkeypatch, study(rounds=1, busy_retries=2, budget=budget, lines=lines), clock)

    assert len(calls) == 3 and budget.attempts == 2
    assert rounds.load.kept_busy == "retries" and rounds.load.attempts == 3
    assert lines == [
        "[ohlora] machine busy: other processes used 1.5 of 2 cores; measuring again, 1 of 2",
        "[ohlora] machine busy: other processes used 1.5 of 2 cores; measuring again, 2 of 2",
    ]


def test_past_the_share_no_more_re_measures_and_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, lines = Clock(), []
    budget = RemeasureBudget(0.5, decides=True, clock=clock)
    kept = []
    for _ in range(4):
        rounds, _calls = busy_benchmark(
            monkeypatch, study(rounds=1, busy_retries=5, budget=budget, lines=lines), clock
        )
        kept.append(rounds.load.kept_busy)
        assert budget.spent <= budget.share * (clock.now - budget.started)  # never past the share

    assert set(kept) == {"budget"}
    spent = [line for line in lines if "re-measuring has taken" in line]
    assert len(spent) == 1 and "--ohlora-remeasure-share 50%" in spent[0]


def test_no_budget_no_re_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    budget = RemeasureBudget(0.0, decides=True, clock=clock)
    rounds, calls = busy_benchmark(monkeypatch, study(rounds=1, busy_retries=2, budget=budget), clock)

    assert len(calls) == 1 and rounds.load.kept_busy == "budget" and budget.spent == 0
