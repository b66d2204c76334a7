"""Model FLOPs and decode bytes: the work utilisation.py divides by a device's peak (MFU and bandwidth share).

Model FLOPs are `finetune_flops` over the model's matmul weights and the
non-padding tokens of the run's batches; bytes per answer are `decode_bytes`
over the weights and KV cache. These are the textbook figures utilisation is
quoted in; the time a step takes is step_time.py's per-operation model, not these.
"""

from __future__ import annotations

from dataclasses import dataclass


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
