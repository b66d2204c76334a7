"""The timing protocol's order: what happens before each timed round, and where the meter starts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch

from ohlora_fixtures.measure import memory
from ohlora_fixtures.session import timing


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


def study(rounds: int) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(rounds=rounds, busy_retries=0),
        device=torch.device("cpu"),
        dtype=torch.float32,
        peaks=SimpleNamespace(probe_tflops=None),  # no load probe
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
