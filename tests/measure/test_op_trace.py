"""The time model's operation counts: exact FLOPs on tiny configs, launches counted, depth scaled exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.measure import op_trace
from ohlora_fixtures.measure.models import meta_model
from ohlora_fixtures.measure.utilisation import matmul_weights
from tests.conftest import TINY_ENTRY, write_registry

LAYERS, HEADS, HEAD_DIM = 3, 4, 64  # TINY_ENTRY's llama with one layer more: hidden 256 = 4 heads x 64


def tiny(tmp_path: Path) -> registry.Candidate:
    entry = {**TINY_ENTRY, "config": {**TINY_ENTRY["config"], "num_hidden_layers": LAYERS}}
    return registry.load_registry(write_registry(tmp_path / "registry.toml", entry))[0]


def flops(ops: op_trace.OpCounts) -> int:
    return sum(f * n for f, _, _, n in ops)


def launches(ops: op_trace.OpCounts) -> int:
    return sum(n for *_, n in ops)


def test_a_tiny_llamas_forward_flops_are_the_analytic_count(tmp_path: Path) -> None:
    candidate = tiny(tmp_path)
    counted = matmul_weights(meta_model(candidate))
    weights = counted.frozen + counted.adapter  # every Linear, the LM head included (nothing frozen here)
    prompt, context = 7, 11
    prefill, token = op_trace.decode_ops(candidate, prompt, context, "float32")
    # 2 FLOPs per weight and token; attention's two matmuls 4 x heads x queries x keys x head_dim per layer.
    assert flops(prefill) == 2 * prompt * weights + LAYERS * 4 * HEADS * prompt * prompt * HEAD_DIM
    assert flops(token) == 2 * weights + LAYERS * 4 * HEADS * 1 * (context + 1) * HEAD_DIM
    assert launches(token) > 0 and all(path in ("", "float32") for _, _, path, _ in token)


def test_the_depth_is_scaled_exactly_from_one_and_two_layers(tmp_path: Path) -> None:
    candidate = tiny(tmp_path)
    model = meta_model(candidate).eval()
    with torch.device("meta"), torch.no_grad(), op_trace._fused_attention(), op_trace._Tracer() as direct:
        model(input_ids=torch.zeros(1, 5, dtype=torch.long), use_cache=True)
    prefill, _ = op_trace.decode_ops(candidate, 5, 5, "float32")
    assert dict(((f, b, p), n) for f, b, p, n in prefill) == dict(direct.ops)


def test_a_training_step_counts_forward_backward_and_both_optimizer_paths(tmp_path: Path) -> None:
    candidate = tiny(tmp_path)
    step, single, foreach = op_trace.finetune_ops(candidate, 8, 2, 16, "bfloat16")
    prefill, _ = op_trace.decode_ops(candidate, 16, 16, "bfloat16")
    # Backward at least doubles the forward's matmul work; the adapter's matmuls run in float32 (peft keeps
    # its weights there), the base's in the run's bf16.
    assert flops(step) > 2 * 2 * flops(prefill) * 0.9
    assert {p for _, _, p, _ in step if p} == {"bfloat16", "float32"}
    # AdamW touches every adapter tensor: one tensor at a time it launches more operations than multi-tensor.
    assert launches(single) > launches(foreach) > 0 and flops(single) == 0
