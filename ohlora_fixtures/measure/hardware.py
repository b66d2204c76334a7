"""The device's limits: peak matmul throughput and memory bandwidth.

A GPU found in the datasheet table gets the vendor's figures; any other device
(the CPU, an unlisted GPU, a dtype the table has no figure for) is measured
with a large matmul and a large copy. Both are upper bounds that utilisation
figures are divided by, so they are estimates, not limits a run can be expected
to reach.

A calibration read on a busy machine reads low, and MFU divided by it reads
high: so it is taken once per machine and settings (device name, dtype, torch's
threads, torch version), cached in `peaks.json` under the user's cache folder
(`$XDG_CACHE_HOME/ohlora-bench`, else `~/.cache/ohlora-bench`) and reused by
later sessions; `--ohlora-recalibrate` takes it again. The cache also keeps a
short probe's speed, the reference the load check (load.py) compares against.
A cached calibration the machine now beats (the probe faster than it by more
than STALE_BEAT, three times out of three) was taken on a busier machine: it is
taken again, with a warning, so that utilisation and the load check are not
measured against a low reference. A calibration taken while the load probe reads
busy is used for that session only, with a warning, and never cached; its
`taken` says so. Each record names the calibration it used.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ohlora_fixtures.inputs.usercache import cache_file, read_json, write_json
from ohlora_fixtures.measure.devices import describe, dtype_name, synchronize
from ohlora_fixtures.measure.machine_load import BUSY_PROBE, CpuTimes, machine_load
from ohlora_fixtures.measure.memory import release_cached_memory


@dataclass(frozen=True)
class Datasheet:
    """Vendor peaks of one GPU model: dense (no sparsity) TFLOP/s per dtype, memory GB/s (1e9 bytes/s).

    bf16/fp16 are tensor-core rates with FP32 accumulation (what torch's matmuls
    use); fp32 is the non-tensor rate, since torch leaves TF32 off for matmuls by
    default. None: the GPU has no such rate (bf16 before Ampere), so it is calibrated.
    """

    pattern: str  # searched, case-insensitively, in torch.cuda.get_device_name()
    bf16: float | None
    fp16: float | None
    fp32: float
    gbps: float


# Order matters: the first pattern found in the device name wins, so variants come before their family.
DATASHEETS: tuple[Datasheet, ...] = (
    Datasheet(r"H100.*NVL", 835.5, 835.5, 60.0, 3900),
    Datasheet(r"H100.*PCIe", 756.5, 756.5, 51.2, 2000),
    Datasheet(r"H100", 989.4, 989.4, 66.9, 3350),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    Datasheet(r"H200.*NVL", 835.5, 835.5, 60.0, 4800),
    Datasheet(r"H200", 989.4, 989.4, 66.9, 4800),
    Datasheet(r"A100.*80GB.*PCIe", 312.0, 312.0, 19.5, 1935),
    Datasheet(r"A100.*80GB", 312.0, 312.0, 19.5, 2039),
    Datasheet(r"A100", 312.0, 312.0, 19.5, 1555),  # 40 GB, SXM4 and PCIe
    Datasheet(r"\bL4\b", 121.0, 121.0, 30.3, 300),
    Datasheet(r"L40S", 362.05, 362.05, 91.6, 864),
    Datasheet(r"RTX 6000 Ada", 364.2, 364.2, 91.1, 960),
    Datasheet(r"RTX A6000", 154.8, 154.8, 38.7, 768),
    Datasheet(r"\bT4\b", None, 65.0, 8.1, 320),
    Datasheet(r"A10G", 70.0, 70.0, 31.2, 600),  # AWS G5's part; NVIDIA publishes no sheet, AWS's figures
    Datasheet(r"\bA10\b", 125.0, 125.0, 31.2, 600),
    Datasheet(r"RTX 3090", 71.0, 71.0, 35.6, 936),
    Datasheet(r"RTX 4090", 165.2, 165.2, 82.6, 1008),
    Datasheet(r"V100.*PCIe", None, 112.0, 14.0, 900),
    Datasheet(r"V100", None, 125.0, 15.7, 900),  # SXM2
    Datasheet(r"M6000", None, None, 7.0, 317),  # Maxwell: no tensor cores, no fast half precision
)


@dataclass(frozen=True)
class Peaks:
    """The figures utilisation is measured against, and where each came from ("datasheet" or "calibrated")."""

    device_name: str
    dtype: str
    tflops: float
    tflops_source: str
    gbps: float
    gbps_source: str
    probe_tflops: float | None = None  # the load probe's speed when calibrated (None: not calibrated)
    calibrated: str = ""  # when the calibrated figures were taken (they may come from an earlier session's cache)
    overhead_us: float | None = None
    """PyTorch's cost of one small operation here, calibrated (the time model's per-operation overhead)."""
    gemv_gbps: float | None = None
    """The bandwidth a matrix-vector product reaches here, calibrated: a decoded token's matmuls stream their
    weights this way, below a plain copy's rate on a CPU."""

    def as_dict(self) -> dict[str, str | float]:
        """Plain values, for pytest-benchmark's JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """Sizes of the calibration kernels: large enough to reach the peak, small enough to take well under a second."""

    matmul_size: int
    copy_mib: int
    budget_s: float = 0.25  # per kernel, after one untimed run
    max_repeats: int = 20

    @property
    def probe(self) -> "Calibration":
        """The load probe: the same matmul at half the size, a tenth of the budget (tens of milliseconds)."""
        return Calibration(self.matmul_size // 2, self.copy_mib, self.budget_s / 10, 10)


_SHEET_FIELD = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
CALIBRATION = {"cpu": Calibration(matmul_size=1024, copy_mib=128), "cuda": Calibration(matmul_size=8192, copy_mib=1024)}


def datasheet(device_name: str) -> Datasheet | None:
    """The table's entry for a GPU name, or None."""
    return next((sheet for sheet in DATASHEETS if re.search(sheet.pattern, device_name, re.IGNORECASE)), None)


def cache_path() -> Path:
    """The peaks cache: `$XDG_CACHE_HOME/ohlora-bench/peaks.json`, else under `~/.cache`."""
    return cache_file("peaks.json")


def machine_key(device: torch.device, dtype: torch.dtype) -> str:
    """What a calibration depends on: the device's name, the dtype, torch's threads and version."""
    threads = torch.get_num_threads()
    return f"{describe(device)} | {device.type} | {dtype_name(dtype)} | {threads} threads | torch {torch.__version__}"


STALE_BEAT = 1.10
STALE_PROBES = 3


def device_peaks(device: torch.device, dtype: torch.dtype, recalibrate: bool = False) -> Peaks:
    """The datasheet's figures for a listed GPU, else calibrated ones (always on the CPU), from the cache
    when this machine and settings were calibrated before (unless `recalibrate`)."""
    name = describe(device)
    sheet = datasheet(name) if device.type == "cuda" else None
    tflops = getattr(sheet, _SHEET_FIELD[dtype], None)
    gbps = sheet.gbps if sheet else None
    calibrated = _calibrated(
        device, dtype, recalibrate, need=("tflops",) * (tflops is None) + ("gbps",) * (gbps is None)
    )
    return Peaks(
        name,
        dtype_name(dtype),
        float(tflops if tflops is not None else calibrated["tflops"]),
        "datasheet" if tflops is not None else "calibrated",
        float(gbps if gbps is not None else calibrated["gbps"]),
        "datasheet" if gbps is not None else "calibrated",
        float(calibrated["probe_tflops"]),
        str(calibrated["taken"]),
        float(calibrated["overhead_us"]),
        float(calibrated["gemv_gbps"]),
    )


def _calibrated(device: torch.device, dtype: torch.dtype, recalibrate: bool, need: tuple[str, ...]) -> dict:
    """This machine's calibrated figures (`need`, and always the load probe): cached, or measured now and cached.
    A GPU with a datasheet entry only needs the probe."""
    path, key = cache_path(), machine_key(device, dtype)
    cache = read_json(path, "peaks cache", "calibrating again")
    entry = cache.get(key)
    need = ("probe_tflops", "overhead_us", "gemv_gbps", *need)
    if not recalibrate and key in _SESSION:
        return _SESSION[key]
    cached = not recalibrate and _valid(entry, need, device.type, path)
    if cached and _beaten(device, dtype, entry["probe_tflops"]):
        warnings.warn(
            f"the cached calibration of {entry.get('taken', 'an earlier session')} was taken on a busier machine: "
            f"the load probe now beats it by more than {STALE_BEAT - 1:.0%} {STALE_PROBES} times out of "
            f"{STALE_PROBES}; calibrating again",
            stacklevel=3,
        )
        recalibrate = True
    if recalibrate or not _valid(entry, need, device.type, path):
        sizes = CALIBRATION[device.type]
        before = CpuTimes.now()
        entry = {
            "probe_tflops": calibrate_tflops(device, dtype, sizes.probe),
            "overhead_us": calibrate_overhead_us(device, sizes),
            "gemv_gbps": calibrate_gemv_gbps(device, dtype, sizes),
            "taken": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        if "tflops" in need:
            entry["tflops"] = calibrate_tflops(device, dtype, sizes)
        if "gbps" in need:
            entry["gbps"] = calibrate_gbps(device, sizes)
        release_cached_memory(device)  # the calibration's buffers are not the first benchmark's memory
        load = machine_load(before, CpuTimes.now(), None, None)
        if load.busy:
            # Read low, it would scale every later session's estimates: this session's only, never cached.
            entry["taken"] += f" (busy: {load.why_busy}; this session only, not cached)"
            warnings.warn(
                f"peak FLOP/s and bandwidth calibrated while the machine was busy ({load.why_busy}): they read low "
                f"and MFU reads high; they are used for this session only and not written to {path}; the next "
                "session calibrates again",
                stacklevel=3,
            )
            _SESSION[key] = entry
            return entry
        cache[key] = entry
        write_json(path, cache, "peaks cache", "the next session calibrates again")
    return entry


_SESSION: dict[str, dict] = {}
"""Calibrations taken on a busy machine in this process: used here, never written to the user cache."""


def _beaten(device: torch.device, dtype: torch.dtype, cached_probe: float) -> bool:
    """Whether this machine now runs the load probe faster than the cached reference, every time of a few."""
    probe = CALIBRATION[device.type].probe
    return all(calibrate_tflops(device, dtype, probe) > STALE_BEAT * cached_probe for _ in range(STALE_PROBES))


# What a calibration can read on each kind of device (TFLOP/s, GB/s): a cached figure outside is corrupt
# (a hand edit, another tool) or was taken while the machine stood still, and every utilisation divided by
# it would be absurd (1e-300 TFLOP/s gave an MFU of 3e296). The CPU's ceiling is far above any server's
# matmul rate and memory bandwidth; the GPU's above any accelerator's datasheet.
PLAUSIBLE: dict[str, dict[str, tuple[float, float]]] = {
    "cpu": {"tflops": (1e-3, 200.0), "probe_tflops": (1e-3, 200.0), "gbps": (0.1, 5000.0),
            "overhead_us": (0.01, 1e4), "gemv_gbps": (0.1, 5000.0)},
    "cuda": {"tflops": (0.1, 1e4), "probe_tflops": (0.1, 1e4), "gbps": (10.0, 1e5), "overhead_us": (0.01, 1e4),
             "gemv_gbps": (10.0, 1e5)},
}


def _valid(entry: object, numbers: tuple[str, ...], device_type: str, path: Path) -> bool:
    """Whether a cached entry holds every one of `numbers`, each plausible for the device; a figure out of
    bounds is named in a warning (the entry is then calibrated again)."""
    if not isinstance(entry, dict) or not all(
        isinstance(entry.get(n), (int, float)) and not isinstance(entry.get(n), bool) for n in numbers
    ):
        return False
    bounds = PLAUSIBLE.get(device_type, PLAUSIBLE["cuda"])
    wrong = [
        f"{n} = {entry[n]:.3g} (expected {bounds[n][0]:g} to {bounds[n][1]:g})"
        for n in numbers
        if not bounds[n][0] <= entry[n] <= bounds[n][1]
    ]
    if wrong:
        warnings.warn(
            f"{path}: cached calibration for {device_type} discarded, {', '.join(wrong)} is not "
            "plausible for this device; calibrating again",
            stacklevel=4,
        )
    return not wrong


PROBE_TRIES = 3
PROBE_PAUSE_S = 0.05


def probe_fraction(device: torch.device, dtype: torch.dtype, peaks: Peaks) -> float | None:
    """The load probe's speed now over its calibrated speed (load.py); None where there is no reference.

    A probe that reads below load.BUSY_PROBE is repeated, PROBE_PAUSE_S apart,
    up to PROBE_TRIES probes in all, and the best counts: right after a
    benchmark a single probe of a few milliseconds can be caught by a stall of
    its own (the thread pool waking, a frequency step) that says nothing of other
    processes; a machine that is really shared stays slow across all of them.
    """
    if not peaks.probe_tflops:
        return None
    best = 0.0
    for attempt in range(PROBE_TRIES):
        if attempt:
            time.sleep(PROBE_PAUSE_S)
        best = max(best, calibrate_tflops(device, dtype, CALIBRATION[device.type].probe) / peaks.probe_tflops)
        if best >= BUSY_PROBE:
            break
    return best


def _best_seconds(run: Callable[[], object], device: torch.device, sizes: Calibration) -> float:
    """Fastest of several timed runs after an untimed one: the peak is the best case, not the typical one."""
    run()
    synchronize(device)
    best, spent, repeats = float("inf"), 0.0, 0
    while repeats < sizes.max_repeats and (repeats < 3 or spent < sizes.budget_s):
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds = time.perf_counter() - started
        best, spent, repeats = min(best, seconds), spent + seconds, repeats + 1
    return best


def calibrate_tflops(device: torch.device, dtype: torch.dtype, sizes: Calibration) -> float:
    """Dense matmul throughput in the run's dtype, TFLOP/s."""
    n = sizes.matmul_size
    # Its own generator: the load probe runs after a round's seed is set and before its timed steps, and the
    # global one would shift the dropout masks by how many probes the machine's load asked for.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    product = torch.empty_like(a)  # written in place: the allocator's state (trimmed heaps, page faults) is not timed
    seconds = _best_seconds(lambda: torch.mm(a, b, out=product), device, sizes)
    return 2 * n**3 / seconds / 1e12


def calibrate_overhead_us(device: torch.device, sizes: Calibration) -> float:
    """PyTorch's cost of one small operation as a model issues it, microseconds: a tiny stack of Linear,
    LayerNorm and GELU modules (8 wide: no work to speak of) through forward and backward, over the operations it
    dispatches. So Python's module calls, the dispatcher, autograd's bookkeeping and the launch are all in it,
    as they are in a training step's operations; no candidate's model is involved."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            Count.ops += 0 if func.is_view else 1
            return func(*args, **(kwargs or {}))

    layers = [layer for _ in range(8) for layer in (torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.GELU())]
    model = torch.nn.Sequential(*layers).to(device)
    x = torch.ones(2, 8, device=device)

    def run() -> None:
        model(x).sum().backward()

    with Count():
        run()
    return _best_seconds(run, device, sizes) / Count.ops * 1e6


def calibrate_gemv_gbps(device: torch.device, dtype: torch.dtype, sizes: Calibration) -> float:
    """Matrix-vector bandwidth in the run's dtype, GB/s: a weight matrix of the copy's size read once per product."""
    columns = 4096
    rows = max(1, sizes.copy_mib * 2**20 // (columns * dtype.itemsize))
    generator = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(rows, columns, device=device, generator=generator).to(dtype)
    vector = torch.randn(columns, 1, device=device, generator=generator).to(dtype)
    product = torch.empty(rows, 1, device=device, dtype=dtype)
    seconds = _best_seconds(lambda: torch.mm(weight, vector, out=product), device, sizes)
    return weight.numel() * weight.element_size() / seconds / 1e9


def calibrate_gbps(device: torch.device, sizes: Calibration) -> float:
    """Copy bandwidth, GB/s: bytes read plus bytes written, as STREAM counts a copy."""
    source = torch.empty(sizes.copy_mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    seconds = _best_seconds(lambda: target.copy_(source), device, sizes)
    return 2 * source.numel() / seconds / 1e9
