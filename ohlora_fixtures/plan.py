"""Full-size figures without allocating a byte: exact parameter counts and estimated memory.

Parameter counts are exact: the candidate's model is built on the `meta`
device and peft attaches the real adapter to it. Memory beyond the weights is
an ESTIMATE from the formulas below, not a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from . import defaults
from .devices import DTYPES
from .finetune import FinetuneSettings, fresh_adapter
from .memory import MIB
from .models import meta_model, parameter_count
from .registry import Candidate
from .text import aligned, display_name
from .utilisation import kv_cache_bytes_per_token, recurrent_state_bytes

ADAPTER_BYTES = 4  # peft keeps adapter weights in float32 even on a bf16 base
ADAM_STATES = 2


@dataclass(frozen=True)
class RankPlan:
    """One LoRA rank: exact trainable parameters and the estimated fine-tuning peak."""

    rank: int
    trainable_params: int
    adapter_training_mib: float
    activations_mib: float
    finetune_peak_estimate_mib: float


@dataclass(frozen=True)
class CandidatePlan:
    """A candidate at full size: exact counts, weight memory, estimated peaks."""

    name: str
    total_params: int
    approximate: bool
    dtype: str
    weights_mib: float
    ranks: tuple[RankPlan, ...]
    kv_cache_mib: float
    inference_peak_estimate_mib: float
    batch_size: int
    seq_len: int
    max_new_tokens: int

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and reports."""
        return asdict(self)


def activation_bytes(config: Any, batch_size: int, seq_len: int, dtype_bytes: int) -> float:
    """Activations kept for the backward pass, for one batch.

    Per transformer layer s·b·h·(34 + 5·a·s/h) bytes at 16 bits (Korthikanti et
    al., 2022, no recomputation), scaled to the dtype; the attention-score term
    is left out for attention-free models (RWKV). The logits add b·s·V·(dtype
    + 4 + 4) bytes: the logits, their float32 copy for the loss and its gradient.
    Gradients flow back through the frozen base to reach every adapter, so
    nearly all of these are kept.
    """
    hidden = config.hidden_size
    heads = getattr(config, "num_attention_heads", 0) or 0
    per_layer = seq_len * batch_size * hidden * (34 + 5 * heads * seq_len / hidden)
    layers = per_layer * config.num_hidden_layers * dtype_bytes / 2
    logits = batch_size * seq_len * config.vocab_size * (dtype_bytes + 8)
    return layers + logits


def plan_candidate(
    candidate: Candidate,
    ranks: Sequence[int] = defaults.RANKS,
    dtype: str = defaults.PLAN_DTYPE,
    batch_size: int = defaults.BATCH_SIZE,
    seq_len: int = defaults.PLAN_SEQ_LEN,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
) -> CandidatePlan:
    """Exact counts and estimated peaks of one candidate at full size."""
    dtype_bytes = DTYPES[dtype].itemsize
    model = meta_model(candidate, "full")
    config = model.config
    total = parameter_count(model)
    weights = total * dtype_bytes
    activations = activation_bytes(config, batch_size, seq_len, dtype_bytes)
    # On the meta device peft's new layers are shapes only, not initialised weights. LoRA's A (r x in)
    # and B (out x r) grow linearly with r, so one rank-1 adapter gives every rank: attaching one per
    # rank cost seconds of every report.
    with torch.device("meta"), fresh_adapter(model, candidate, FinetuneSettings(rank=1)) as adapted:
        per_rank, _ = adapted.get_nb_trainable_parameters()
    rank_plans = []
    for rank in ranks:
        trainable = per_rank * rank
        # weights, gradients and AdamW's two moments of the adapter
        adapter = trainable * ADAPTER_BYTES * (2 + ADAM_STATES)
        rank_plans.append(
            RankPlan(rank, trainable, adapter / MIB, activations / MIB, (weights + adapter + activations) / MIB)
        )
    # One sequence of prompt and answer; RWKV has no per-token cache, only its fixed recurrent state.
    kv_cache = kv_cache_bytes_per_token(config, DTYPES[dtype]) * (seq_len + max_new_tokens) + recurrent_state_bytes(config)
    logits = config.vocab_size * 4.0
    return CandidatePlan(
        name=candidate.name,
        total_params=total,
        approximate=candidate.approximate,
        dtype=dtype,
        weights_mib=weights / MIB,
        ranks=tuple(rank_plans),
        kv_cache_mib=kv_cache / MIB,
        inference_peak_estimate_mib=(weights + kv_cache + logits) / MIB,
        batch_size=batch_size,
        seq_len=seq_len,
        max_new_tokens=max_new_tokens,
    )


def format_plans(plans: Sequence[CandidatePlan]) -> str:
    """A plain-text table of the plans, labelled as estimates."""
    if not plans:
        return "no candidates"
    ranks = [rank.rank for rank in plans[0].ranks]
    header = ["candidate", "params", f"weights MiB ({plans[0].dtype})"]
    header += [f"trainable r{r}" for r in ranks] + [f"FT peak r{r} MiB (est.)" for r in ranks]
    header += ["inference peak MiB (est.)"]
    rows = [header]
    for plan in plans:
        rows.append(
            [display_name(plan.name, plan.approximate), f"{plan.total_params:,}", f"{plan.weights_mib:,.0f}"]
            + [f"{rank.trainable_params:,}" for rank in plan.ranks]
            + [f"{rank.finetune_peak_estimate_mib:,.0f}" for rank in plan.ranks]
            + [f"{plan.inference_peak_estimate_mib:,.0f}"]
        )
    lines = aligned(rows, right=True)
    first = plans[0]
    lines.append(
        f"Parameter counts are exact (meta-device build). Memory beyond the weights is an ESTIMATE: "
        f"batch {first.batch_size}, {first.seq_len} tokens per row, {first.max_new_tokens} new tokens; "
        "CUDA context and allocator overhead not included."
    )
    return "\n".join(lines)

