"""The figure dataclasses a record holds: memory, utilisation, machine load and answer quality.

Plain data with no behaviour beyond formatting, so the record (and anything that re-reads stored results)
needs none of the libraries that measure them; the measuring modules fill them in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MIB = 1024 * 1024
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
"""Bytes per value of each dtype a run may use (measure/devices.py maps the same names to torch's dtypes)."""

FINETUNE_ESTIMATE = (
    "estimate: model FLOPs (4 x frozen + 6 x adapter matmul weights) x tokens; attention scores left out"
)
DECODE_ESTIMATE = "estimate: bytes read per new token = matmul weights + KV cache of the context; activations left out"


@dataclass
class MemoryFigures:
    """What one measured region used, in MiB.

    `peak_mib` is the headline figure and `metric` says what it is: on CUDA
    torch's max allocated memory (`cuda_max_allocated`); on the CPU the model's
    tensors plus the peak of live tensor bytes allocated in the region, from the
    untimed profiled pass (`cpu_tensor_peak`). Records from before it headline the
    peak resident set above the runtime baseline (`cpu_peak_rss_above_runtime`).
    `start_mib` and `after_mib` are on the headline's scale: held when the region
    began and still held once it ended (the figure the reference study reported,
    kept for comparison, not a peak); `peak_increase_mib` is peak minus start.
    The fields from `absolute_peak_mib` on are None in records measured before
    they existed. On the CPU, from the timed rounds: `rss_peak_mib` is the peak
    resident set above the runtime baseline (`baseline_mib`), `absolute_peak_mib`
    the raw RSS peak (on CUDA the headline again), `trimmed` whether the C
    allocator's freed memory was given back before the region (None on CUDA) and
    `lifetime_peak_mib` the process's peak resident set since it started, as of
    the region's end (None where the kernel does not report it).
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
    absolute_peak_mib: float | None = None
    baseline_mib: float | None = None
    trimmed: bool | None = None
    lifetime_peak_mib: float | None = None
    rss_peak_mib: float | None = None

    def as_dict(self) -> dict[str, float | str | int | None]:
        """Plain values, for pytest-benchmark's extra_info."""
        return {key: round(value, 2) if isinstance(value, float) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class FinetuneUtilisation:
    """How close the timed fine-tuning came to the device's peak FLOP/s (an estimate, see FINETUNE_ESTIMATE)."""

    model_flops: int
    achieved_tflops: float
    peak_tflops: float
    mfu: float
    peak_source: str  # where peak_tflops comes from: datasheet or calibrated
    utilisation_estimate: str = FINETUNE_ESTIMATE
    calibration: str = ""  # when the calibrated peak was taken (hardware.py); empty for a datasheet peak
    time_model: dict[str, float] | None = None
    """The device figures measure/step_time.py reads (tflops, gbps, gemv_gbps, overhead_us); None before them."""


@dataclass(frozen=True)
class DecodeUtilisation:
    """How close the timed generation came to the device's peak bandwidth (an estimate, see DECODE_ESTIMATE)."""

    decode_bytes: int
    achieved_gbps: float
    peak_gbps: float
    bandwidth_utilisation: float
    peak_source: str  # where peak_gbps comes from: datasheet or calibrated
    utilisation_estimate: str = DECODE_ESTIMATE
    calibration: str = ""  # when the calibrated peak was taken (hardware.py); empty for a datasheet peak
    time_model: dict[str, float] | None = None
    """As FinetuneUtilisation's."""


@dataclass(frozen=True)
class MachineLoad:
    """The machine's load around one benchmark's timed rounds (see the module's doc for each reading)."""

    cores: int
    load_before: float | None  # 1-minute load average
    load_after: float | None
    other_cores: float | None  # mean cores other processes kept busy during the rounds; None without /proc/stat
    steal: float | None  # share of CPU time stolen by the hypervisor; None where the kernel does not report it
    probe_before: float | None  # short matmul speed over its calibrated speed (1.0: as quiet as calibration)
    probe_after: float | None
    busy: bool = False
    why_busy: str = ""
    attempts: int = 1  # times the rounds were measured: a busy attempt is measured again (--ohlora-busy-retries)
    # Why busy figures were kept without measuring again (session/remeasure.py): "stand-in" (its times decide
    # nothing), "budget" (the session's re-measure share was spent) or "retries" (--ohlora-busy-retries used up).
    kept_busy: str = ""


@dataclass(frozen=True)
class QualityFigures:
    """Automatic quality figures of one candidate's answers."""

    chrf: float | None
    """Corpus chrF (0..100) over answers that have a reference; None if none has."""
    n_scored: int
    """How many answers had a reference and went into chrF."""
    empty_share: float
    """Share of answers that are empty after strip()."""
    hangul_share: float
    """Share of Hangul among non-whitespace characters of all answers (0..1)."""
    repeated_ngram_share: float
    """Share of word 3-grams repeating an earlier one in the same answer (0..1)."""

    def as_dict(self) -> dict[str, float | int | None]:
        """The figures as a flat dict, e.g. for a results table row."""
        return asdict(self)
