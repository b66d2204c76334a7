"""Peak memory of one benchmark: CUDA allocator peaks, NVML device samples, or CPU resident peak."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .percentiles import percentile

MIB = 1024 * 1024
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


@dataclass
class MemoryFigures:
    """What one measured region used, in MiB.

    `peak_mib` is the headline figure and `metric` says what it is. On CUDA it is
    torch's max allocated memory; on the CPU the process's peak resident set.
    `after_mib` is what was still held once the region ended: the figure the
    reference study reported, kept for comparison, not a peak.
    """

    metric: str
    peak_mib: float
    start_mib: float
    after_mib: float
    peak_increase_mib: float
    max_reserved_mib: float | None = None
    sampled_peak_mib: float | None = None
    sampler: str | None = None
    samples: int = 0
    sampled_mean_mib: float | None = None  # over the sampler's readings, beside its peak
    sampled_p99_mib: float | None = None

    def as_dict(self) -> dict[str, float | str | int | None]:
        """Plain values, for pytest-benchmark's extra_info."""
        return {key: round(value, 2) if isinstance(value, float) else value for key, value in asdict(self).items()}


class _Sampler(threading.Thread):
    """Polls a reading in the background and keeps every reading (at 5 ms, an hour is 720,000 floats)."""

    def __init__(self, read: Callable[[], float], interval_s: float) -> None:
        super().__init__(name="ohlora-memory-sampler", daemon=True)
        self._read = read
        self._interval_s = interval_s
        self._stop_event = threading.Event()
        self.readings = [read()]

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            self.readings.append(self._read())

    def finish(self) -> float:
        self._stop_event.set()
        self.join()
        self.readings.append(self._read())
        return self.peak

    @property
    def peak(self) -> float:
        return max(self.readings)

    @property
    def count(self) -> int:
        return len(self.readings)

    @property
    def mean(self) -> float:
        return sum(self.readings) / len(self.readings)

    @property
    def p99(self) -> float:
        return percentile(self.readings, 99)


def _status_kib(field: str) -> float:
    with open(_STATUS, encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise OSError(f"{field} not in {_STATUS}")


def _rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def _reset_high_water_mark() -> bool:
    """Reset the kernel's VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _nvml_reader(device: torch.device) -> Callable[[], float] | None:
    """Device-wide used memory from NVML, or None where NVML is not available."""
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            # NVML numbers GPUs physically; torch numbers the visible ones.
            index = int(visible.split(",")[index])
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
    except Exception:  # noqa: BLE001 - any NVML failure just means no device samples
        return None


class MemoryMeter:
    """Measures the peak memory of the code inside `with MemoryMeter(device) as meter:`.

    Peaks are reset on entry, so each benchmark sees only its own. After the
    block, `meter.figures` holds the result.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = device
        self.interval_s = interval_s
        self.figures: MemoryFigures | None = None
        self._sampler: _Sampler | None = None
        self._kernel_hwm = False
        self._start = 0.0

    def __enter__(self) -> "MemoryMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MIB
            read = _nvml_reader(self.device)
        else:
            self._kernel_hwm = _reset_high_water_mark()
            self._start = _rss_mib()
            # Without a resettable kernel high-water mark, sampling is the fallback.
            read = None if self._kernel_hwm else _rss_mib
        if read is not None:
            self._sampler = _Sampler(read, self.interval_s)
            self._sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        sampled = self._sampler.finish() if self._sampler else None
        samples = self._sampler.count if self._sampler else 0
        spread = {"sampled_mean_mib": self._sampler.mean, "sampled_p99_mib": self._sampler.p99} if self._sampler else {}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MIB
            self.figures = MemoryFigures(
                metric="cuda_max_allocated",
                peak_mib=peak,
                start_mib=self._start,
                after_mib=torch.cuda.memory_allocated(self.device) / MIB,
                peak_increase_mib=peak - self._start,
                max_reserved_mib=torch.cuda.max_memory_reserved(self.device) / MIB,
                sampled_peak_mib=sampled,
                sampler="nvml_device_used" if sampled is not None else None,
                samples=samples,
                **spread,
            )
        else:
            peak = _status_kib("VmHWM") / 1024 if self._kernel_hwm else float(sampled or 0.0)
            self.figures = MemoryFigures(
                metric="cpu_peak_rss" if self._kernel_hwm else "cpu_sampled_rss",
                peak_mib=peak,
                start_mib=self._start,
                after_mib=_rss_mib(),
                peak_increase_mib=peak - self._start,
                sampled_peak_mib=sampled,
                sampler="rss_poll" if sampled is not None else None,
                samples=samples,
                **spread,
            )


def release_cached_memory(device: torch.device) -> None:
    """Give cached allocator blocks back, so the next benchmark starts clean."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
