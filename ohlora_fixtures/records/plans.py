"""The full-size plan's figures: exact parameter counts and estimated memory, per candidate and LoRA rank.

measure/plan.py computes them on meta-device models; the report reads them, stored beside the results
(report/plan_store.py), so that re-rendering stored results builds no model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

OpCounts = tuple[tuple[int, int, str, int], ...]
"""Operations of one step as (FLOPs, bytes read and written, the dtype the FLOPs run in, how many), each kind of
operation once: measure/op_trace.py counts them, measure/step_time.py turns them into seconds on a device."""


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
    step_ops: OpCounts = ()
    """One step's forward and backward at the plan's batch and mean width; then AdamW's step one tensor at a
    time (`optimizer_ops`, torch's default on the CPU) or multi-tensor (`optimizer_foreach_ops`, on a GPU)."""
    optimizer_ops: OpCounts = ()
    optimizer_foreach_ops: OpCounts = ()


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
    steps: int = 0
    """Optimizer steps of the whole fine-tuning (0: not known)."""
    prefill_ops: OpCounts = ()
    decode_ops: OpCounts = ()
    """One answer's prompt, and one new token's forward at the answer's mean context (measure/op_trace.py)."""
    quantization: str = "none"
    """The base's precision: none (`dtype`), 8bit or 4bit (bitsandbytes), which `weights_mib` holds."""

    @property
    def label(self) -> str:
        """The candidate's name, with its base's precision where quantized (e.g. "llama1B 4bit")."""
        return self.name if self.quantization == "none" else f"{self.name} {self.quantization}"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and reports."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CandidatePlan":
        """The plan `as_dict` gave (TypeError or KeyError when the stored shape is not this code's)."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise KeyError(f"stored plan fields differ: {sorted(set(data) ^ names)}")
        def ops(rows: Any) -> OpCounts:
            return tuple((int(f), int(b), str(p), int(n)) for f, b, p, n in rows)

        def rank(plain: Mapping[str, Any]) -> RankPlan:
            return RankPlan(**{**plain, **{k: ops(plain[k]) for k in _RANK_OPS}})

        return cls(**{**data, "ranks": tuple(rank(r) for r in data["ranks"]),
                      **{k: ops(data[k]) for k in ("prefill_ops", "decode_ops")}})


_RANK_OPS = ("step_ops", "optimizer_ops", "optimizer_foreach_ops")
