"""The full-size plan's figures: exact parameter counts and estimated memory, per candidate and LoRA rank.

measure/plan.py computes them on meta-device models; the report reads them, stored beside the results
(report/plan_store.py), so that re-rendering stored results builds no model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class TokenWidths:
    """The padded widths of the fine-tuning batches: the widest sets the peak."""

    widest: int
    mean: float
    batches: int
    source: str
    """Where the widths came from, e.g. "data.csv, dataset tokenizer" or "--seq-len"."""
    tokens: int = 0
    """Non-padding tokens of every step's batch together: the fine-tuning's work (0: not known)."""
    prompt_tokens: float = 0.0
    """The inference prompts' mean length in tokens (0: not known)."""


@dataclass(frozen=True)
class RankPlan:
    """One LoRA rank: exact trainable parameters and the estimated fine-tuning peak.

    `adapter_training_mib` is the adapter's weights, gradients and AdamW moments;
    `finetune_increase_estimate_mib` what training adds above the base with the
    adapter attached (as `MemoryFigures.peak_increase_mib` measures it); the peak
    adds the base's and the adapter's weights. `finetune_after_mib` is what is
    still allocated once training is over and the optimizer still held (the
    study's `memory_allocated()` reading): weights, adapter and AdamW's moments;
    the gradients are gone (`zero_grad(set_to_none=True)`, torch's default since 2.0).
    """

    rank: int
    trainable_params: int
    adapter_training_mib: float
    activations_mib: float
    finetune_increase_estimate_mib: float
    finetune_peak_estimate_mib: float
    finetune_after_mib: float
    checkpointed_activations_mib: float
    """The activations with gradient checkpointing: every layer's input, one layer recomputed, the logits."""
    finetune_peak_checkpointed_mib: float


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
    mean_seq_len: float = 0.0
    width_source: str = "--seq-len"
    train_tokens: int = 0
    """Non-padding tokens of the whole fine-tuning (every epoch): the work a time estimate divides."""
    mean_prompt_tokens: float = 0.0
    matmul_params: int = 0
    """The base's matmul weights (Linear layers, LM head included; embeddings are looked up, not multiplied):
    the work per token that estimate.py turns into full-size seconds."""
    kv_values_per_token: int = 0
    """Keys and values one token of context adds to the cache, as a count of values (0 for RWKV)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and reports."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CandidatePlan":
        """The plan `as_dict` gave (TypeError or KeyError when the stored shape is not this code's)."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise KeyError(f"stored plan fields differ: {sorted(set(data) ^ names)}")
        return cls(**{**data, "ranks": tuple(RankPlan(**rank) for rank in data["ranks"])})
