"""Calibration: a busy one is used for its session only, never cached, and says so."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ohlora_fixtures.measure import hardware


@pytest.fixture
def calibrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counted calibrations with fixed readings, a fresh cache folder and no session calibration yet."""
    taken: list[str] = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hardware, "_SESSION", {})
    for name, value in (("calibrate_tflops", 0.05), ("calibrate_gbps", 20.0), ("calibrate_overhead_us", 6.0),
                        ("calibrate_gemv_gbps", 12.0)):
        monkeypatch.setattr(hardware, name, lambda *a, _n=name, _v=value: taken.append(_n) or _v)
    return taken


def test_a_calibration_taken_while_busy_is_used_for_the_session_only_and_never_cached(
    calibrations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = SimpleNamespace(busy=True, why_busy="other processes used 1.0 of 2 cores")
    monkeypatch.setattr(hardware, "machine_load", lambda *a: busy)
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match="used for this session only and not written to"):
        peaks = hardware.device_peaks(cpu, torch.float32)
    assert not hardware.cache_path().exists()
    assert "this session only, not cached" in peaks.calibrated and peaks.overhead_us == 6.0
    taken = len(calibrations)
    # The same session reuses it (no second calibration, no second warning) ...
    assert hardware.device_peaks(cpu, torch.float32) == peaks and len(calibrations) == taken
    # ... and a quiet calibration later is cached as before.
    monkeypatch.setattr(hardware, "_SESSION", {})
    monkeypatch.setattr(hardware, "machine_load", lambda *a: SimpleNamespace(busy=False, why_busy=""))
    quiet = hardware.device_peaks(cpu, torch.float32)
    cached = json.loads(hardware.cache_path().read_text())[hardware.machine_key(cpu, torch.float32)]
    assert "not cached" not in quiet.calibrated and cached["gemv_gbps"] == 12.0 and cached["overhead_us"] == 6.0
