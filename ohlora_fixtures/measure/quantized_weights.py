"""What a quantized base's weights take in memory, counted on the meta device (the plan's quantized weights).

bitsandbytes through transformers quantizes every Linear layer but the LM head: NF4 keeps two weights a byte
and a float32 absmax per block of 64 (double quantization: the absmax as one byte, with a float32 scale per
256 of them and a float32 offset); LLM.int8 one byte a weight and a float32 scale per output row. Everything
else (embeddings, LM head, norms) is cast to float32 by peft's prepare_model_for_kbit_training. While a
quantized layer runs, its weight is dequantized into the compute dtype: one layer's at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NF4_BLOCK = 64
NF4_DOUBLE_BLOCK = 256
FLOAT32 = 4
UNQUANTIZED_BYTES = FLOAT32  # prepare_model_for_kbit_training casts every unquantized float weight to float32


@dataclass(frozen=True)
class QuantizedWeights:
    """A quantized base's weight bytes, and the largest dequantized weight one layer needs while it runs."""

    stored_bytes: float
    dequantized_buffer_bytes: float
    quantized_params: int
    unquantized_params: int


def nf4_bytes(weights: int, double_quant: bool = False) -> float:
    """Bytes of `weights` NF4 values with their block constants."""
    blocks = -(-weights // NF4_BLOCK)
    constants = blocks + FLOAT32 * -(-blocks // NF4_DOUBLE_BLOCK) + FLOAT32 if double_quant else FLOAT32 * blocks
    return -(-weights // 2) + constants


def int8_bytes(rows: int, columns: int) -> float:
    """Bytes of an LLM.int8 weight of `rows` x `columns`: one byte each and a float32 scale per row."""
    return rows * columns + FLOAT32 * rows


def quantized_weights(
    model: torch.nn.Module, precision: str, compute_dtype: torch.dtype, double_quant: bool = False
) -> QuantizedWeights:
    """Counts of `model` (meta or real, full precision) as bitsandbytes would hold it in `precision`."""
    quantized = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head"
    ]
    quantized_ids = {id(module.weight) for module in quantized}
    stored, largest, quantized_count, rest = 0.0, 0, 0, 0
    seen: set[int] = set()
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue  # tied weights are held once
        seen.add(id(parameter))
        if id(parameter) in quantized_ids:
            rows, columns = parameter.shape
            quantized_count += parameter.numel()
            largest = max(largest, parameter.numel())
            stored += nf4_bytes(parameter.numel(), double_quant) if precision == "4bit" else int8_bytes(rows, columns)
        else:
            rest += parameter.numel()
            stored += parameter.numel() * UNQUANTIZED_BYTES
    element = torch.empty((), dtype=compute_dtype).element_size()
    return QuantizedWeights(stored, float(largest * element), quantized_count, rest)
