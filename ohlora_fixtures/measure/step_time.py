"""Seconds of a step on a named device, from its operations (op_trace.py) and a few device constants (ESTIMATES).

    seconds = sum over operations of max(FLOPs / achievable FLOP/s of the op's dtype path,
                                         bytes / achievable bandwidth)
              + operations x the per-operation overhead

Every operation is either compute- or memory-bound, whichever takes longer (a
roofline); on top of that PyTorch's eager mode pays a fixed CPU-side cost per
operation (Python, the dispatcher, autograd, the kernel launch), which for the
small batches of LoRA fine-tuning and for one-token decoding is a large share.

A card's constants are data/gpus.toml's, each with its source: the datasheet's
rate for the dtype path (a T4 has no bf16 tensor cores, so a bf16 matmul there
runs at the rate published for that path), the share of it large matmuls reach,
the share of the datasheet bandwidth a copy reaches, and the overhead per
operation. The CPU's are this machine's calibration (hardware.py): a large
matmul's rate, a large copy's bandwidth (a matrix-vector product's for a
memory-bound matmul) and a small operation's cost, all measured. No constant
is fitted to a candidate or to a published run: the checks in
docs/performance.md stay out of sample. Torch-free: the report reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ohlora_fixtures.inputs.gpus import Gpu, GpuTable
from ohlora_fixtures.records.plans import CandidatePlan, OpCounts, RankPlan

THIS_CPU = "this CPU"


@dataclass(frozen=True)
class DeviceRates:
    """What one device achieves: matmul TFLOP/s per dtype path, bandwidth GB/s, seconds per operation."""

    device: str
    """How the device is named beside every figure: a card's name, or THIS_CPU."""
    tflops: Mapping[str, float]
    gbps: float
    overhead_s: float
    foreach: bool
    """Whether AdamW takes its multi-tensor path (torch's default for parameters on a GPU, not on the CPU)."""
    matmul_gbps: float | None = None
    """The bandwidth a memory-bound matmul (a decoded token's) reaches, where measured apart (None: `gbps`)."""
    bytes_scale: float = 1.0
    """Bytes the device moves per byte the operations were counted in: 2 where a plan counted at 2 bytes a
    value is run on this CPU in float32 (the adapter's float32 tensors are then over-counted, a small share)."""

    def rate(self, path: str) -> float:
        """Achievable FLOP/s of matmuls in dtype `path` (the slowest known rate for a dtype the device lacks)."""
        return self.tflops.get(path, min(self.tflops.values())) * 1e12


def seconds(ops: OpCounts, rates: DeviceRates) -> float:
    """The time of the operations `ops` on the device of `rates`."""
    bandwidth = rates.gbps * 1e9 / rates.bytes_scale
    streaming = (rates.matmul_gbps or rates.gbps) * 1e9 / rates.bytes_scale
    total = 0.0
    for flops, nbytes, path, count in ops:
        busy = max(flops / rates.rate(path), nbytes / streaming) if flops else nbytes / bandwidth
        total += count * (busy + rates.overhead_s)
    return total


def gpu_rates(gpu: Gpu, table: GpuTable, run_dtype: str | None = None) -> DeviceRates:
    """A card's achievable rates, running its half-precision matmuls in `run_dtype` (default: the card's dtype,
    gpus.py; the study ran bf16 on a T4): a plan's 2-byte operations are all taken to run in it."""
    efficiency = gpu.matmul_efficiency or table.matmul_efficiency
    dtype = run_dtype or gpu.dtype
    # A measured emulated-bf16 rate is already what a run reaches: no share of it is taken again.
    emulated = dtype == "bfloat16" and not gpu.bf16_native and gpu.bf16_emulated_tflops
    half = gpu.bf16_emulated_tflops if emulated else gpu.matmul_tflops(dtype) * efficiency
    return DeviceRates(
        gpu.name,
        {"bfloat16": half, "float16": half, "float32": gpu.fp32_tflops * efficiency},
        gpu.gbps * (gpu.bandwidth_efficiency or table.bandwidth_efficiency),
        table.overhead_us * 1e-6,
        foreach=True,
    )


def cpu_rates(
    tflops: float, gbps: float, overhead_us: float, gemv_gbps: float | None = None, bytes_scale: float = 1.0
) -> DeviceRates:
    """This machine's calibrated rates (every dtype at the calibrated one: the calibration is of the run's)."""
    return DeviceRates(THIS_CPU, {"float32": tflops}, gbps, overhead_us * 1e-6, foreach=False, matmul_gbps=gemv_gbps,
                       bytes_scale=bytes_scale)


def step_seconds(rank: RankPlan, rates: DeviceRates) -> float:
    """One optimizer step of the plan's batch at its mean width: forward, backward and AdamW."""
    return seconds(rank.step_ops, rates) + seconds(
        rank.optimizer_foreach_ops if rates.foreach else rank.optimizer_ops, rates
    )


def finetune_seconds(plan: CandidatePlan, rank: RankPlan, rates: DeviceRates, steps: int | None = None) -> float:
    """The whole fine-tuning: `steps` (default: the plan's) optimizer steps."""
    return step_seconds(rank, rates) * (plan.steps if steps is None else steps)


def answer_seconds(plan: CandidatePlan, rates: DeviceRates, new_tokens: int | None = None) -> float:
    """One answer: the prompt's prefill, then `new_tokens` (default: the plan's) tokens decoded one at a time,
    each at the mean context."""
    tokens = plan.max_new_tokens if new_tokens is None else new_tokens
    return seconds(plan.prefill_ops, rates) + tokens * seconds(plan.decode_ops, rates)
