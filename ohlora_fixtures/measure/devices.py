"""Device and dtype choice, and the clock synchronisation CUDA timings need."""

from __future__ import annotations

import time

import torch

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.records.figures import DTYPE_BYTES

DTYPES = {name: getattr(torch, name) for name in DTYPE_BYTES}


def resolve_device(name: str, worker: int | None = None) -> torch.device:
    """`auto` picks the first CUDA GPU when there is one, else the CPU.

    A pytest-xdist worker (`worker` = N of gwN) given auto or cuda gets GPU N
    modulo the GPUs visible, so `-n <GPUs>` runs one benchmark per GPU.
    """
    if name in ("auto", "cuda") and worker is not None and torch.cuda.is_available():
        return torch.device("cuda", worker % torch.cuda.device_count())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--ohlora-device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--ohlora-device: {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--ohlora-device {name}: no CUDA GPU is visible to torch; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--ohlora-device {name}: only {torch.cuda.device_count()} GPU(s) visible; use cuda:0.."
                f"cuda:{torch.cuda.device_count() - 1}"
            )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it (as the study ran), else float32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise UsageError(f"--ohlora-dtype: {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`."""
    return str(dtype).removeprefix("torch.")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Times consecutive steps of a loop without adding a host synchronisation to any of them.

    `mark()` after each step. On CUDA each mark records an event in the stream,
    so the intervals are the device's own time between the ends of successive
    steps, read only by `seconds()` once the loop has synchronised; elsewhere
    a mark reads perf_counter (the CPU has done the work when the call returns).
    """

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._marks: list = []
        self.mark()

    def mark(self) -> None:
        """The end of one step (and the start of the next)."""
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self._device))
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Each step's duration, in order; on CUDA this waits for the last recorded event."""
        if self._cuda:
            self._marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self._marks, self._marks[1:])]
        return [b - a for a, b in zip(self._marks, self._marks[1:])]


def describe(device: torch.device) -> str:
    """A human name for the device: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"CPU: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU ({torch.get_num_threads()} threads)"
