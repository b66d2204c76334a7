"""The CI gate's baseline: a stored run with busy figures is named in a warning."""

from __future__ import annotations

from types import SimpleNamespace

from ohlora_fixtures import plugin
from ohlora_fixtures.session.baseline import baseline_warning, busy_in_baseline


def stored(*busy: bool) -> dict:
    return {"benchmarks": [
        {"name": f"test_finetune[m{i}-r16]", "fullname": f"benchmarks/test_finetune.py::test_finetune[m{i}-r16]",
         "extra_info": {"load": {"busy": flag, "why_busy": "other processes used 1.5 of 2 cores" if flag else ""}}}
        for i, flag in enumerate(busy)
    ] + [{"name": "test_other", "extra_info": {}}]}  # not an ohlora benchmark: no load at all


def test_busy_figures_of_the_baseline_are_named_with_why() -> None:
    assert busy_in_baseline(stored(False, True)) == ["test_finetune[m1-r16] (other processes used 1.5 of 2 cores)"]
    line = baseline_warning(stored(True, True), "/ci/.benchmarks")
    assert line is not None and "/ci/.benchmarks: 2 benchmark(s) were measured on a busy machine" in line
    assert "test_finetune[m0-r16]" in line and "test_finetune[m1-r16]" in line


def test_a_quiet_baseline_warns_nothing() -> None:
    assert baseline_warning(stored(False, False), "x") is None
    assert baseline_warning({"benchmarks": []}, "x") is None


def test_the_compare_hook_warns_through_pytest_benchmarks_logger() -> None:
    warned: list[str] = []
    session = SimpleNamespace(storage="/ci/.benchmarks", logger=SimpleNamespace(warning=warned.append))
    plugin.pytest_benchmark_compare_machine_info(None, session, {}, stored(True))
    plugin.pytest_benchmark_compare_machine_info(None, session, {}, stored(False))
    assert len(warned) == 1 and "test_finetune[m0-r16]" in warned[0]
