"""Peak memory of one benchmark: CUDA allocator peaks, NVML device samples, CPU tensor and resident peaks.

On CUDA the headline is torch's allocator peak (`max_memory_allocated`): the
live tensors, read in the timed round itself.

On the CPU the resident set is no such measure. glibc keeps freed blocks and
grows its heaps as fragmentation dictates, so the same 20 training steps read a
peak RSS increase of 151 to 250 MiB over identical runs while the live tensors
peak at 76 MiB every time; and code pages, kernel caches and per-shape buffers
that an earlier benchmark touched stay resident (about 10 to 17 MiB after a
full-size TinyKo fine-tune). So the CPU headline counts tensors as CUDA does:
the bytes of the model handed to the region (parameters and buffers, each
storage once) plus the peak of live tensor bytes allocated inside it, which
torch's CPU allocator reports to the profiler when memory profiling is on
(`TensorPeakMeter`). Recording costs about as long as the work, so this runs
in one extra untimed pass of the same region; the timed rounds run bare.

The resident figures are kept beside it, from the timed rounds
(`MemoryMeter`): the peak RSS above the *runtime baseline* (the process's RSS
once Python, torch and the libraries are loaded and started, before any model
is built, taken once per process), the raw RSS peak, and the process's lifetime
peak, read before each reset of the kernel's high-water mark because the reset
hides it from outside tools. Before each region the C allocator's freed memory
is given back (glibc `malloc_trim(0)`), so what an earlier benchmark freed is
neither counted in the region's start nor hides its increase.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ohlora_fixtures.measure import torch_compat
from ohlora_fixtures.records.figures import MIB, MemoryFigures
from ohlora_fixtures.records.percentiles import percentile

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


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


def _read_lifetime_peak_mib() -> float | None:
    """The kernel's VmHWM, or None where /proc does not give it."""
    try:
        return _status_kib("VmHWM") / 1024
    except OSError:
        return None


_lifetime_peak: float | None = None


def lifetime_peak_mib() -> float | None:
    """The process's peak resident set since it started, counting peaks hidden by earlier resets."""
    global _lifetime_peak
    current = _read_lifetime_peak_mib()
    if current is not None:
        _lifetime_peak = current if _lifetime_peak is None else max(_lifetime_peak, current)
    return _lifetime_peak


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def trim_host_memory() -> bool:
    """Collect garbage and give the C allocator's freed memory back to the system; False where it cannot."""
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


_runtime_baseline: float | None = None


def _start_runtime() -> None:
    """One small forward, backward and optimizer step on a throwaway layer.

    The first backward starts torch's autograd threads and its math libraries'
    per-thread buffers (about 80 MiB here, kept for the process's life, and not
    given back by malloc_trim): runtime, not the first benchmark's memory.
    """
    layer = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.randn(4, 8, 64)).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        layer(torch.randn(1, 64))


def runtime_baseline_mib() -> float:
    """The process's RSS with the runtime loaded and started and no model built; taken on first call and kept.

    The Study takes it before it builds the first model; called first from a
    MemoryMeter, it is whatever the process held then.
    """
    global _runtime_baseline
    if _runtime_baseline is None:
        _start_runtime()
        trim_host_memory()
        _runtime_baseline = _rss_mib()
    return _runtime_baseline


def _reset_high_water_mark() -> bool:
    """Reset the kernel's VmHWM to the current RSS (Linux >= 4.0); False where not allowed.

    The lifetime peak is read first, so the reset does not lose it.
    """
    lifetime_peak_mib()
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

    Peaks are reset on entry, so each benchmark sees only its own; on the CPU
    freed host memory is given back first, so the start is what is really held.
    After the block, `meter.figures` holds the result.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = device
        self.interval_s = interval_s
        self.figures: MemoryFigures | None = None
        self._sampler: _Sampler | None = None
        self._kernel_hwm = False
        self._trimmed: bool | None = None
        self._baseline = 0.0
        self._start = 0.0

    def __enter__(self) -> "MemoryMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MIB
            read = _nvml_reader(self.device)
        else:
            self._baseline = runtime_baseline_mib()
            self._trimmed = trim_host_memory()
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            metric, peak = "cuda_max_allocated", torch.cuda.max_memory_allocated(self.device) / MIB
            after = torch.cuda.memory_allocated(self.device) / MIB
            reserved, sampler = torch.cuda.max_memory_reserved(self.device) / MIB, "nvml_device_used"
        else:
            metric = "cpu_peak_rss_above_runtime" if self._kernel_hwm else "cpu_sampled_rss_above_runtime"
            peak = _status_kib("VmHWM") / 1024 if self._kernel_hwm else float(sampled or 0.0)
            after, reserved, sampler = _rss_mib(), None, "rss_poll"
        # One set of fields for both devices: the CPU's are shifted down by the runtime baseline.
        base = self._baseline  # 0.0 on CUDA
        self.figures = MemoryFigures(
            metric=metric,
            peak_mib=peak - base,
            start_mib=self._start - base,
            after_mib=after - base,
            peak_increase_mib=peak - self._start,
            max_reserved_mib=reserved,
            sampled_peak_mib=sampled - base if sampled is not None else None,
            sampler=sampler if sampled is not None else None,
            samples=samples,
            sampled_mean_mib=self._sampler.mean - base if self._sampler else None,
            sampled_p99_mib=self._sampler.p99 - base if self._sampler else None,
            absolute_peak_mib=peak,
            baseline_mib=base,
            trimmed=self._trimmed,
            lifetime_peak_mib=lifetime_peak_mib(),
        )


TENSOR_METRIC = "cpu_tensor_peak"
WINDOW_SECONDS = 2.0
"""How long the tensor meter records before it sums and drops the profiler's records (at full size on a 2-core
CPU the records of one answer took a few hundred MiB)."""


def needs_tensor_pass(device: torch.device) -> bool:
    """Whether the device's headline comes from an untimed profiled pass: every device but CUDA, whose
    allocator keeps its own peak."""
    return device.type != "cuda"


def tensor_mib(module: torch.nn.Module) -> float:
    """The module's parameters and buffers in MiB, each storage once (tied weights share one)."""
    storages = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        storage = tensor.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values()) / MIB


@dataclass(frozen=True)
class TensorPeak:
    """Live tensor bytes of one region on the CPU, in MiB: handed in, peak above that, and left at its end."""

    held_mib: float
    peak_increase_mib: float
    net_mib: float
    allocations: int


class TensorPeakMeter:
    """The peak of live CPU tensor bytes in a region, read from the allocator's reports to the profiler.

    With memory profiling on, torch's CPU allocator reports every allocation
    and its free to the profiler; summed in time order they give the live
    bytes allocated since the region began, whose maximum is the region's
    increase. A block allocated before the region and freed inside it is not
    reported (the allocator never learnt its size), so the figure can only err
    high. The profiler records no operator (torch_compat.py), but every
    allocation and free is a record of its own, which builds up over a long
    region (when it also recorded operators, 11 GiB for 25 full-size
    answers), so the records are handed over at a `window()` call (the
    region calls it after every step or answer, in place of a progress line)
    once `WINDOW_SECONDS` have passed since the last: they
    are summed and dropped, and the profiler starts again, while nothing else
    runs. (A window per call cost a tenth of a second each: 4 minutes over the
    tiny default grid.) Use:

        meter = TensorPeakMeter()
        with meter.measuring(model):  # `model`: what the region is handed
            region(..., on_progress=meter.window)
        meter.peak
    """

    def __init__(self) -> None:
        self.peak: TensorPeak | None = None
        self._live = self._highest = self._allocations = 0
        self._since = 0.0

    @contextlib.contextmanager
    def measuring(self, model: torch.nn.Module) -> Iterator["TensorPeakMeter"]:
        """Profile the block's allocations; `peak` is set when it ends, also when it raises."""
        held = tensor_mib(model)
        self._live = self._highest = self._allocations = 0
        self._start()
        try:
            yield self
        finally:
            self._absorb()
            self.peak = TensorPeak(held, self._highest / MIB, self._live / MIB, self._allocations)

    def window(self, *_: object) -> None:
        """End the recording window and start the next, if it has lasted WINDOW_SECONDS (arguments are ignored)."""
        if time.perf_counter() - self._since < WINDOW_SECONDS:
            return
        self._absorb()
        self._start()

    def _start(self) -> None:
        torch_compat.start_allocation_profile()
        self._since = time.perf_counter()

    def _absorb(self) -> None:
        collecting = gc.isenabled()
        gc.disable()  # a collection now could free a region tensor while nothing records it
        try:
            for size in torch_compat.stop_allocation_profile():
                self._live += size
                self._highest = max(self._highest, self._live)
                self._allocations += size > 0
        finally:
            if collecting:
                gc.enable()


def with_tensor_peak(figures: MemoryFigures, tensors: TensorPeak) -> MemoryFigures:
    """A timed round's CPU figures with the headline from the profiled pass; its resident peak kept beside."""
    return dataclasses.replace(
        figures,
        metric=TENSOR_METRIC,
        peak_mib=round(tensors.held_mib + tensors.peak_increase_mib, 2),
        start_mib=round(tensors.held_mib, 2),
        after_mib=round(tensors.held_mib + tensors.net_mib, 2),
        peak_increase_mib=round(tensors.peak_increase_mib, 2),
        rss_peak_mib=figures.peak_mib,
    )


def release_cached_memory(device: torch.device) -> None:
    """Give cached allocator blocks and freed host memory back, so the next benchmark starts clean."""
    trim_host_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
