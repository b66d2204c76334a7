"""Named GPUs a user may rent or buy (data/gpus.toml): memory, native bf16, datasheet peaks.

Only the memory matters to the fit; the peaks are the vendors' figures,
upper bounds no run reaches. What a process holds on a card beyond its
tensors is stated apart, never folded into a tensor estimate: the CUDA context
(assumed, the data file says from where) and torch's cuBLAS workspaces, which
the caching allocator holds and `torch.cuda.memory_allocated()` counts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs.resources import GPUS, bundled
from ohlora_fixtures.records.figures import MIB

# torch's default cuBLAS workspace per (handle, stream), CublasHandlePool.cpp's parseChosenWorkspaceSize:
# ":4096:2:16:8" (4096 KiB x 2 + 16 KiB x 8) before Hopper, 4096 KiB x 8 from compute capability 9.
CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_WORKSPACE_BYTES_HOPPER = 4096 * 1024 * 8
# Training calls cuBLAS from two threads, the forward's and autograd's backward, each with its own handle
# and so its own workspace; generation only from one.
TRAINING_HANDLES = 2
INFERENCE_HANDLES = 1


@dataclass(frozen=True)
class Gpu:
    """One card of data/gpus.toml."""

    name: str
    label: str
    memory_gb: float
    compute_capability: str
    bf16_native: bool
    fp16_tflops: float | None
    bf16_tflops: float | None
    fp32_tflops: float
    gbps: float
    source: str
    aliases: tuple[str, ...] = ()
    bf16_emulated_tflops: float | None = None
    """Where bf16 is not native: the bf16 matmul rate a published benchmark measured, already achieved (None:
    the fp32 rate at the table's matmul share)."""
    matmul_efficiency: float | None = None
    bandwidth_efficiency: float | None = None
    """The card's own achievable shares, where measured (None: the table's assumptions)."""

    @property
    def memory_mib(self) -> float:
        """The datasheet's memory in MiB (GPU memory sizes are binary: 16 GB = 16384 MiB)."""
        return self.memory_gb * 1024

    @property
    def dtype(self) -> str:
        """The weights dtype to run in: bf16 where native, else fp16 (same 2 bytes a weight)."""
        return "bfloat16" if self.bf16_native else "float16"

    @property
    def tflops(self) -> float:
        """The datasheet's dense rate in `dtype` (the fp32 rate where half precision has no fast one)."""
        return self.bf16_tflops if self.bf16_native and self.bf16_tflops else self.fp16_tflops or self.fp32_tflops

    @property
    def dtype_reason(self) -> str:
        """Why `dtype`, in a few words."""
        if self.bf16_native:
            return "native bf16 (fp16's range without loss scaling)"
        if self.fp16_tflops is None:
            return (
                "no native bf16 and no fast half-precision rate: fp16 halves the memory, "
                "computes at best at the fp32 rate"
            )
        return "no native bf16 (torch would emulate it, slower): fp16 tensor cores"

    def matmul_tflops(self, dtype: str) -> float:
        """The datasheet's (or, for emulated bf16, the measured) matmul rate of `dtype` on this card."""
        if dtype == "bfloat16":
            # Without bf16 tensor cores a bf16 matmul runs on the fp32 ALUs at best.
            return self.bf16_tflops if self.bf16_native and self.bf16_tflops else self.fp32_tflops
        if dtype == "float16":
            return self.fp16_tflops or self.fp32_tflops
        return self.fp32_tflops

    def workspace_mib(self, handles: int) -> float:
        """torch's default cuBLAS workspaces for `handles` handles on this card."""
        major = int(self.compute_capability.split(".")[0])
        each = CUBLAS_WORKSPACE_BYTES_HOPPER if major >= 9 else CUBLAS_WORKSPACE_BYTES
        return handles * each / MIB


@dataclass(frozen=True)
class GpuTable:
    """data/gpus.toml: the cards and the assumptions every fit states."""

    gpus: tuple[Gpu, ...]
    cuda_context_mib: float
    cuda_context_source: str
    tight_fraction: float
    source: Path
    matmul_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    overhead_us: float = 0.0
    """The time model's assumptions (step_time.py): shares of the datasheet's matmul rate and bandwidth that
    large kernels reach, and PyTorch's CPU-side cost per eager operation; data/gpus.toml names their sources."""

    @property
    def names(self) -> list[str]:
        """Every card's name, as --gpu accepts it."""
        return [gpu.name for gpu in self.gpus]

    def select(self, names: Sequence[str], option: str = "--gpu") -> list[Gpu]:
        """The cards named (case-insensitive, aliases too), in the order given; an unknown name is a UsageError
        listing the known ones."""
        index = {key.lower(): gpu for gpu in self.gpus for key in (gpu.name, *gpu.aliases)}
        unknown = [name for name in names if name.lower() not in index]
        if unknown:
            raise UsageError(
                f"{option}: unknown GPU {', '.join(map(repr, unknown))}; known: {', '.join(self.names)} "
                f"(add a card to {self.source.name})"
            )
        chosen = [index[name.lower()] for name in names]
        return list(dict.fromkeys(chosen))


_FIELDS = {
    "name": str,
    "label": str,
    "memory_gb": (int, float),
    "compute_capability": str,
    "bf16_native": bool,
    "fp32_tflops": (int, float),
    "gbps": (int, float),
    "source": str,
}


def _gpu(row: Any, where: str) -> Gpu:
    if not isinstance(row, dict):
        raise UsageError(f"{where}: a [[gpu]] entry must be a table")
    for field, kind in _FIELDS.items():
        value = row.get(field)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise UsageError(f"{where}: field {field!r} is missing or not a {getattr(kind, '__name__', 'number')}")
    for field in ("fp16_tflops", "bf16_tflops", "bf16_emulated_tflops"):
        if field in row and (
            isinstance(row[field], bool) or not isinstance(row[field], (int, float)) or row[field] <= 0
        ):
            raise UsageError(f"{where}: {field!r} must be a positive number or left out")
    for field in ("matmul_efficiency", "bandwidth_efficiency"):
        if field in row and not (isinstance(row[field], (int, float)) and 0 < row[field] <= 1):
            raise UsageError(f"{where}: {field!r} must be a share between 0 and 1 or left out")
    if row["bf16_native"] != ("bf16_tflops" in row):
        raise UsageError(f"{where}: give bf16_tflops exactly when bf16_native is true")
    return Gpu(
        row["name"],
        row["label"],
        float(row["memory_gb"]),
        row["compute_capability"],
        row["bf16_native"],
        row.get("fp16_tflops"),
        row.get("bf16_tflops"),
        float(row["fp32_tflops"]),
        float(row["gbps"]),
        row["source"],
        tuple(row.get("aliases", ())),
        row.get("bf16_emulated_tflops"),
        row.get("matmul_efficiency"),
        row.get("bandwidth_efficiency"),
    )


def load_gpus(path: Path | None = None) -> GpuTable:
    """The card table (default: the bundled data/gpus.toml); a malformed entry is a UsageError naming it."""
    path = path or bundled(GPUS)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"{path}: cannot read the GPU table ({error})") from None
    rows = document.get("gpu", [])
    gpus = tuple(_gpu(row, f"{path.name} [[gpu]] #{number}") for number, row in enumerate(rows, start=1))
    assumptions = document.get("assumptions", {})
    return GpuTable(
        gpus,
        float(assumptions.get("cuda_context_mib", 0)),
        str(assumptions.get("cuda_context_source", "")),
        float(assumptions.get("tight_fraction", 0)),
        path,
        float(assumptions.get("matmul_efficiency", 1.0)),
        float(assumptions.get("bandwidth_efficiency", 1.0)),
        float(assumptions.get("overhead_us", 0.0)),
    )
