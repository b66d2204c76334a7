"""How close a benchmark came to the hardware's limit: estimated model FLOPs and decode memory traffic.

Fine-tuning is compute-bound, so it gets model FLOPs utilisation (MFU): the
FLOPs the training steps must do, over the timed seconds, over the peak. Decoding
one token at a time is memory-bound, so inference gets bandwidth utilisation:
the bytes each new token must read, over the generate time, over the peak
bandwidth. Both count only the matmuls and the KV cache, the terms that dominate;
see docs/performance.md for the derivation and what is left out.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from transformers.pytorch_utils import Conv1D

from ohlora_fixtures.measure.estimate import MatmulWeights, decode_bytes, finetune_flops
from ohlora_fixtures.measure.hardware import Peaks
from ohlora_fixtures.records.figures import DecodeUtilisation, FinetuneUtilisation

# Layers whose weight is multiplied with every token (Conv1D is GPT-2's transposed Linear).
# Embeddings are left out: looking up a row is not a matmul.
_MATMUL_LAYERS = (torch.nn.Linear, Conv1D)


def matmul_weights(model: torch.nn.Module) -> MatmulWeights:
    """Counted from the model's layers, so adapters, tying and GQA are as built; a PEFT model's
    LoRA layers wrap a frozen base Linear and hold their A and B matrices as Linear layers too."""
    frozen = adapter = size = 0
    for module in model.modules():
        if isinstance(module, _MATMUL_LAYERS):
            weight = module.weight
            size += weight.numel() * weight.element_size()
            if weight.requires_grad:
                adapter += weight.numel()
            else:
                frozen += weight.numel()
    return MatmulWeights(frozen, adapter, size)


def kv_cache_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token of context adds to the cache (the one home of this formula).

    0 for recurrent models (RWKV, no attention heads): they keep no per-token
    cache, only a fixed state (`recurrent_state_bytes`) whatever the context length.
    """
    config = config.get_text_config()
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        return 0
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize


def recurrent_state_bytes(config: Any, batch_size: int = 1) -> float:
    """An RWKV model's fixed recurrent state (5 float32 vectors of hidden size per layer); 0 for attention models."""
    config = config.get_text_config()
    if getattr(config, "num_attention_heads", None):
        return 0.0
    return 5 * config.num_hidden_layers * config.hidden_size * batch_size * 4.0


def finetune_figures(model: torch.nn.Module, tokens: int, seconds: float, peaks: Peaks) -> FinetuneUtilisation:
    """A fine-tuning record's utilisation figures."""
    flops = finetune_flops(matmul_weights(model), tokens)
    achieved = flops / seconds / 1e12
    return FinetuneUtilisation(flops, achieved, peaks.tflops, achieved / peaks.tflops, peaks.tflops_source,
                               calibration=peaks.calibrated if peaks.tflops_source == "calibrated" else "",
                               time_model=time_model(peaks))


def decode_figures(
    model: torch.nn.Module, generations: Iterable[tuple[int, int]], seconds: float, peaks: Peaks,
) -> DecodeUtilisation:
    """An inference record's utilisation figures; `generations` are (prompt tokens, new tokens) pairs."""
    weight_bytes = matmul_weights(model).bytes
    kv_bytes = kv_cache_bytes_per_token(model.config, model.dtype)
    read = sum(decode_bytes(weight_bytes, kv_bytes, prompt, new) for prompt, new in generations)
    achieved = read / seconds / 1e9
    return DecodeUtilisation(read, achieved, peaks.gbps, achieved / peaks.gbps, peaks.gbps_source,
                             calibration=peaks.calibrated if peaks.gbps_source == "calibrated" else "",
                             time_model=time_model(peaks))


def time_model(peaks: Peaks) -> dict[str, float] | None:
    """What the time model (step_time.py) reads of the device that measured; None where a figure is missing."""
    figures = {"tflops": peaks.tflops, "gbps": peaks.gbps, "gemv_gbps": peaks.gemv_gbps,
               "overhead_us": peaks.overhead_us}
    return None if any(value is None for value in figures.values()) else figures  # type: ignore[return-value]
