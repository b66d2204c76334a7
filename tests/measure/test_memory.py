"""The CPU's tensor headline: exact live-tensor accounting from the profiler's allocator events."""

from __future__ import annotations

import pytest
import torch

from ohlora_fixtures.measure import memory, torch_compat
from ohlora_fixtures.measure.memory import (
    TENSOR_METRIC,
    TensorPeak,
    TensorPeakMeter,
    needs_tensor_pass,
    tensor_mib,
    with_tensor_peak,
)
from ohlora_fixtures.records.figures import MIB, MemoryFigures

FOUR_MIB = 4 * MIB // 4  # float32 elements in 4 MiB


def test_tensor_peak_counts_live_tensors_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "WINDOW_SECONDS", 0.0)  # every window() call hands the records over
    model = torch.nn.Linear(256, 256)
    meter = TensorPeakMeter()
    with meter.measuring(model):
        first = torch.ones(FOUR_MIB)
        meter.window()  # a block allocated in one window and freed in a later one still counts
        second = torch.ones(FOUR_MIB)
        del first
        meter.window()
        kept = torch.ones(FOUR_MIB // 4)  # 1 MiB, allocated after the 4 MiB were freed
        del second
    peak = meter.peak
    assert peak is not None
    assert peak.held_mib == pytest.approx((256 * 256 + 256) * 4 / MIB)
    # Two 4 MiB tensors were alive together; the 1 MiB one came after one of them was freed.
    assert peak.peak_increase_mib == pytest.approx(8.0, abs=0.01)
    assert peak.net_mib == pytest.approx(1.0, abs=0.01)  # `kept` is still alive at the end
    assert peak.allocations >= 3
    assert kept.numel() == FOUR_MIB // 4


def test_the_same_work_reads_the_same_peak_every_time() -> None:
    # What the resident set cannot give (glibc's heaps moved a fine-tune's RSS increase by a third).
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.GELU(), torch.nn.Linear(512, 64))
    batch = torch.randn(32, 64)

    def step() -> None:
        model(batch).square().mean().backward()
        model.zero_grad(set_to_none=True)

    step()  # autograd's first-use buffers are runtime, not the region's
    peaks = []
    for _ in range(3):
        meter = TensorPeakMeter()
        with meter.measuring(model):
            step()
        assert meter.peak is not None
        peaks.append(meter.peak.peak_increase_mib)
    assert peaks[0] > 0 and peaks == [peaks[0]] * 3, peaks


def test_the_peak_is_kept_when_the_region_raises() -> None:
    meter = TensorPeakMeter()
    with pytest.raises(RuntimeError), meter.measuring(torch.nn.Linear(4, 4)):
        held = torch.ones(FOUR_MIB)
        raise RuntimeError("out of memory")
    assert meter.peak is not None and meter.peak.peak_increase_mib == pytest.approx(4.0, abs=0.01)
    assert held.numel() == FOUR_MIB
    with meter.measuring(torch.nn.Linear(4, 4)):  # the profiler was stopped: it starts again
        pass


def test_tied_weights_are_counted_once() -> None:
    embed = torch.nn.Embedding(1000, 64)
    head = torch.nn.Linear(64, 1000, bias=False)
    head.weight = embed.weight
    tied = torch.nn.ModuleDict({"embed": embed, "head": head})
    assert tensor_mib(tied) == pytest.approx(1000 * 64 * 4 / MIB)
    tied.register_buffer("scale", torch.ones(1000))
    assert tensor_mib(tied) == pytest.approx((1000 * 64 + 1000) * 4 / MIB)


def test_the_tensor_headline_keeps_the_resident_peak_beside_it() -> None:
    rss = MemoryFigures("cpu_peak_rss_above_runtime", 120.0, 100.0, 101.0, 20.0, absolute_peak_mib=550.0,
                        baseline_mib=430.0, trimmed=True, lifetime_peak_mib=600.0)
    figures = with_tensor_peak(rss, TensorPeak(held_mib=80.0, peak_increase_mib=12.5, net_mib=0.25, allocations=9))
    assert (figures.metric, figures.peak_mib, figures.start_mib, figures.after_mib, figures.peak_increase_mib) == (
        TENSOR_METRIC, 92.5, 80.0, 80.25, 12.5)
    assert (figures.rss_peak_mib, figures.absolute_peak_mib, figures.baseline_mib) == (120.0, 550.0, 430.0)


def test_only_devices_without_an_allocator_peak_get_the_profiled_pass() -> None:
    assert needs_tensor_pass(torch.device("cpu"))
    assert not needs_tensor_pass(torch.device("cuda", 0))


def test_windows_end_only_after_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    starts = []
    real_start = torch_compat.start_allocation_profile
    monkeypatch.setattr(torch_compat, "start_allocation_profile", lambda: (starts.append(1), real_start()))
    meter = TensorPeakMeter()
    with meter.measuring(torch.nn.Linear(4, 4)):
        for _ in range(100):  # a fast region's steps: one recording, not a hundred restarts
            meter.window()
    assert len(starts) == 1
    monkeypatch.setattr(memory, "WINDOW_SECONDS", 0.0)
    with meter.measuring(torch.nn.Linear(4, 4)):
        for _ in range(3):
            meter.window()
    assert len(starts) == 1 + 1 + 3
