"""Full-size time, estimated: what a candidate's real model would take for the run's work on a given device.

A tiny stand-in's seconds are mostly Python and dispatch overhead of toy
shapes: they say nothing about which real model is faster. So where a run's
figures are of stand-ins, the verdict reads these estimates instead (the one
home of the formula; docs/performance.md derives it):

    fine-tuning seconds = model FLOPs of the run's tokens / (peak FLOP/s x FINETUNE_EFFICIENCY)
    seconds per answer  = bytes read per answer / (peak bytes/s x DECODE_EFFICIENCY)

Model FLOPs are `finetune_flops` over the full-size model's matmul
weights (from the plan's meta build) and the non-padding tokens the run's
batches held; bytes per answer are `decode_bytes` over the full-size
weights and KV cache at the run's mean prompt and answer lengths. The peak is
the measuring device's (calibrated on the CPU, the datasheet's on a listed GPU),
so the estimate is of the full-size model on the machine that measured. The
efficiencies are measured utilisations of full-size models on this project's CPU,
stated below; they scale every candidate alike, so they never change a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

from ohlora_fixtures.records.plans import CandidatePlan


@dataclass(frozen=True)
class MatmulWeights:
    """Weights of the model's matmuls: those training leaves frozen (the base, LM head included) and the adapter's."""

    frozen: int
    adapter: int
    bytes: int


def finetune_flops(weights: MatmulWeights, tokens: int) -> int:
    """Model FLOPs of LoRA training over `tokens` tokens (non-padding: padding is lost work, not model work).

    Per token, a matmul with W weights costs 2W FLOPs forward. Backward needs the
    gradient with respect to each matmul's input (another 2W) to reach the adapters
    below it, and the gradient with respect to the weight (2W more) only where the
    weight trains: the adapter. So 4 x frozen + 6 x adapter, against full
    fine-tuning's 6 x all weights.
    """
    return (4 * weights.frozen + 6 * weights.adapter) * tokens


def decode_bytes(weight_bytes: int, kv_bytes_per_token: int, prompt_tokens: int, new_tokens: int) -> int:
    """Bytes one generation must read: each new token reads every matmul weight once, plus the KV cache of
    everything before it (the prompt and the tokens generated so far; the first token's pass is the prefill)."""
    context_read = new_tokens * prompt_tokens + new_tokens * (new_tokens - 1) // 2
    return new_tokens * weight_bytes + kv_bytes_per_token * context_read


FINETUNE_EFFICIENCY = 0.19
"""MFU a full-size model reached in fine-tuning here: TinyKo-v5-a, r16, CPU float32, 5 runs of 3 rounds each
on a quiet 2-core machine read 0.183-0.211 (median 0.189; 2026-12-02)."""
DECODE_EFFICIENCY = 0.49
"""Share of the calibrated copy bandwidth a full-size model's decoding reached here: FinguAI-Chat-v1 (0.5 B, the
size of the smaller candidates), 5 answers of 80 new tokens, CPU float32, quiet 2-core machine, read 0.489 of
22.7 GB/s (2026-12-03; TinyKo-v5-a, 0.1 B, whose per-token Python overhead weighs more, read 0.259)."""


@dataclass(frozen=True)
class TimeEstimate:
    """An estimated full-size time, with the work and the device figure it came from."""

    seconds: float
    work: float  # FLOPs (fine-tuning) or bytes (an answer)
    peak: float  # the device's TFLOP/s or GB/s the estimate divides by
    efficiency: float


def finetune_time(plan: CandidatePlan, trainable_params: int, tokens: int, peak_tflops: float) -> TimeEstimate:
    """Fine-tuning `tokens` non-padding tokens with `trainable_params` adapter weights (LoRA's A and B are
    matmuls) on the full-size base of `plan`, at `peak_tflops` x FINETUNE_EFFICIENCY."""
    flops = finetune_flops(MatmulWeights(plan.matmul_params, trainable_params, 0), tokens)
    return TimeEstimate(flops / (peak_tflops * 1e12 * FINETUNE_EFFICIENCY), flops, peak_tflops, FINETUNE_EFFICIENCY)


def answer_time(
    plan: CandidatePlan, prompt_tokens: float, new_tokens: float, dtype_bytes: int, peak_gbps: float
) -> TimeEstimate:
    """One answer of `new_tokens` after a `prompt_tokens` prompt (means over the run's answers) from the
    full-size model of `plan` in `dtype_bytes` per value, at `peak_gbps` x DECODE_EFFICIENCY."""
    read = decode_bytes(
        plan.matmul_params * dtype_bytes,
        plan.kv_values_per_token * dtype_bytes,
        round(prompt_tokens),
        round(new_tokens),
    )
    return TimeEstimate(read / (peak_gbps * 1e9 * DECODE_EFFICIENCY), read, peak_gbps, DECODE_EFFICIENCY)
