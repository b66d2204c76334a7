"""Full-size figures without allocating a byte: exact parameter counts and estimated memory.

Parameter counts are exact: the candidate's model is built on the `meta`
device and peft attaches the real adapter to it. Memory beyond the weights is
an ESTIMATE from the formulas below, not a measurement.

Token widths are the dataset's: the selected training rows are tokenised
(`encode`, with the candidate's own tokenizer where its checkpoint is on this
machine, else the dataset tokenizer a random-weight run builds) and batched as
fine-tuning batches them (`step_batches`); the peak is the widest batch's.

Activations are counted, not fitted: a rank-1 adapter is attached to the
meta-device model in the plan's dtype and one training step's forward runs on
it; every tensor autograd saves for the backward pass is counted once by its
storage (`adapter_shape`), so each architecture's own structure decides (a
frozen Linear keeps nothing, a norm or an activation function its input,
attention its queries, keys, values and output, LoRA its dropped-out input and
A's output). A rank-r adapter's wider A outputs are added by structure
(`lora_activation_bytes`), and the loss's backward holds LOSS_GRADIENT_BUFFERS
vocabulary-wide float32 buffers beside them. Checked against CPU tensor peaks
measured at full size (docs/performance.md); on a GPU, fused kernels keep other
intermediates, so there it stays an estimate to check.

Each rank is also estimated with gradient checkpointing (each layer's input
kept, one layer recomputed), and after training (`finetune_after_mib`: what
`memory_allocated()` reads once the loop is done). gpu_fit.py sets a plan
against a named card of data/gpus.toml.
"""

from __future__ import annotations

import dataclasses
import tempfile
import unittest.mock
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from peft.tuners.lora import LoraLayer

from ohlora_fixtures.errors import DatasetError
from ohlora_fixtures.inputs import defaults
from ohlora_fixtures.inputs.dataset import ExperimentData
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.inputs.tokenizer import experiment_tokenizer
from ohlora_fixtures.measure import op_trace
from ohlora_fixtures.measure.devices import DTYPES
from ohlora_fixtures.measure.finetune import (
    Example,
    FinetuneSettings,
    encode,
    fresh_adapter,
    position_limit,
    step_batches,
)
from ohlora_fixtures.measure.models import build_config, meta_model, parameter_count
from ohlora_fixtures.measure.provenance import hub_snapshot
from ohlora_fixtures.measure.quantized_weights import quantized_weights
from ohlora_fixtures.measure.utilisation import kv_cache_bytes_per_token, matmul_weights, recurrent_state_bytes
from ohlora_fixtures.records.figures import MIB
from ohlora_fixtures.records.plans import CandidatePlan, RankPlan, TokenWidths
from ohlora_fixtures.words.display import aligned, display_name

ADAPTER_BYTES = 4  # peft keeps adapter weights in float32 even on a bf16 base
ADAM_STATES = 2

LOSS_GRADIENT_BUFFERS = 2
"""Vocabulary-wide float32 buffers the loss's backward holds at once beside what the forward saved: the
gradient of the log-probabilities and of the logits (cross-entropy's backward, then the LM head's)."""


def batch_widths(examples: Sequence[Example], settings: FinetuneSettings) -> list[int]:
    """Each optimizer step's padded width, with fine-tuning's own batching (shuffle, batch, pad to the longest)."""
    if not examples:
        return []
    return [int(batch["input_ids"].shape[1]) for batch in step_batches(examples, settings, 0, torch.device("cpu"))]


def own_tokenizer(candidate: Candidate) -> Any | None:
    """The candidate's own tokenizer from its registry path or the HF cache, offline, no remote code; else None."""
    local = candidate.path if candidate.path is not None else hub_snapshot(candidate.hub_id)
    if local is None:
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(local), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError):
        return None


def dataset_widths(
    candidate: Candidate, experiment: ExperimentData, settings: FinetuneSettings, fallback: Any
) -> TokenWidths:
    """The token widths of `candidate`'s fine-tuning batches on `experiment`'s training rows.

    Rows are cut to the model's positions as the runner cuts them; `fallback` is
    the dataset tokenizer, used when the candidate's own is not on this machine.
    """
    tokenizer, which = own_tokenizer(candidate), "own tokenizer"
    if tokenizer is None:
        tokenizer, which = fallback, "dataset tokenizer"
    limit = position_limit(build_config(candidate, "full"))
    examples = encode(tokenizer, candidate, experiment.train, limit)
    widths = batch_widths(examples, settings)
    if not widths:
        raise DatasetError(f"{experiment.source}: no training row has an answer; the plan needs one to size a batch")
    prompts = [len(tokenizer(candidate.prompt(pair.question)).input_ids) for pair in experiment.prompts]
    return TokenWidths(
        max(widths), sum(widths) / len(widths), len(widths), f"{Path(str(experiment.source)).name}, {which}",
        tokens=settings.epochs * sum(len(example.input_ids) for example in examples),
        prompt_tokens=sum(prompts) / len(prompts) if prompts else 0.0,
    )


def experiment_widths(
    candidates: Sequence[Candidate], experiment: ExperimentData, settings: FinetuneSettings,
    registered: Sequence[Candidate] = (), cache_dir: Path | None = None,
) -> dict[str, TokenWidths]:
    """Every candidate's widths; the dataset tokenizer is built once, as a run builds it: on the prompt
    templates of every `registered` candidate (default: `candidates`), cached in `cache_dir`, else a
    temporary folder."""
    templates = [c.prompt("") for c in (registered or candidates)]
    with tempfile.TemporaryDirectory(prefix="ohlora-plan-") as scratch:
        fallback = experiment_tokenizer(templates, experiment, cache_dir or Path(scratch))
        return {c.name: dataset_widths(c, experiment, settings, fallback) for c in candidates}


def fixed_widths(seq_len: int, source: str = "--seq-len", rows: int = 0, epochs: int = 1) -> TokenWidths:
    """Widths not read from a dataset (given by hand, or assumed): every row and prompt that long, `rows`
    training rows (0: the work is not known) seen `epochs` times."""
    return TokenWidths(seq_len, float(seq_len), 0, source, tokens=seq_len * rows * epochs, prompt_tokens=float(seq_len))


def checkpointed_bytes(config: Any, layers_bytes: float, batch_size: int, seq_len: int, dtype_bytes: int) -> float:
    """With gradient checkpointing, of `layers_bytes` (all layers' activations, adapters' included) only each
    layer's input stays for the backward pass, plus one layer's activations while it is recomputed."""
    inputs = config.num_hidden_layers * batch_size * seq_len * config.hidden_size * dtype_bytes
    return inputs + layers_bytes / config.num_hidden_layers


@dataclass(frozen=True)
class AdapterShape:
    """What one LoRA adapter adds per unit of rank and per token, from a rank-1 adapter on the meta device."""

    params_per_rank: int
    layers: int
    in_features: int
    """The LoRA layers' input widths, summed: what their A matrices read per token."""


def adapter_shape(adapted: torch.nn.Module) -> AdapterShape:
    """The shape of the rank-1 adapter attached to `adapted` (shapes only, nothing initialised).

    LoRA's A (r x in) and B (out x r) grow linearly with r, so one rank-1
    adapter gives every rank: attaching one per rank cost seconds of every report.
    """
    per_rank, _ = adapted.get_nb_trainable_parameters()
    layers = [m for m in adapted.modules() if isinstance(m, LoraLayer)]
    return AdapterShape(per_rank, len(layers), sum(int(m.in_features) for m in layers))


def rank1_counts(candidate: Candidate, batch_size: int, seq_len: int, dtype: str) -> tuple[AdapterShape, float]:
    """The rank-1 adapter's shape at full size and what one training step's forward saves for the backward pass,
    counted on the meta device with that adapter attached and the base frozen, as the run trains it (shapes
    only, nothing allocated).

    The saved tensors are autograd's own: every tensor the forward keeps (`saved_tensors_hooks`), each storage
    once, the weights left out (they are held anyway). So what a frozen base keeps is counted as it is, per
    architecture: a frozen Linear keeps nothing, a GELU or SiLU its input, attention its queries, keys, values
    and output, a norm its input; GPT-NeoX with LoRA on query_key_value alone, RWKV's time mixing and gated
    MLPs alike, with no fitted coefficient. Every layer of a model has the same adapter and keeps the same, so
    both are counted on the model's full shape with one layer and with two, and the full depth is the first
    plus the difference per further layer (a meta forward costs time per layer and token: RWKV's is a Python
    loop; attaching an adapter to every layer of the full model cost 0.1 to 0.6 s a candidate).
    """
    depth = build_config(candidate, "full").get_text_config().num_hidden_layers
    (shape1, saved1), (shape2, saved2) = (_counted(_shallow(candidate, n), candidate, batch_size, seq_len, dtype)
                                          for n in (1, 2))

    def deep(one: float, two: float) -> float:
        return one + (depth - 1) * (two - one)

    shape = AdapterShape(*(int(deep(a, b)) for a, b in zip(astuple(shape1), astuple(shape2))))
    return shape, deep(saved1, saved2)


def _shallow(candidate: Candidate, layers: int) -> torch.nn.Module:
    config = dict(candidate.config, num_hidden_layers=layers)
    config.pop("layer_types", None)  # rebuilt for the depth where a family lists its layers (gemma2)
    return meta_model(dataclasses.replace(candidate, config=config), "full")


def _counted(
    model: torch.nn.Module, candidate: Candidate, batch_size: int, seq_len: int, dtype: str
) -> tuple[AdapterShape, float]:
    with torch.device("meta"), fresh_adapter(model.to(DTYPES[dtype]), candidate, FinetuneSettings(rank=1)) as adapted:
        return adapter_shape(adapted), _saved_by_step(adapted, batch_size, seq_len)


def _saved_by_step(adapted: torch.nn.Module, batch_size: int, seq_len: int) -> float:
    held = {p.untyped_storage()._cdata for p in adapted.parameters()}
    held |= {b.untyped_storage()._cdata for b in adapted.buffers()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in held:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    adapted.train()
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        unittest.mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _fused_attention),
        op_trace.without_padding_check(),
    ):
        adapted(input_ids=ids, labels=ids)
    return float(sum(saved.values()))


def _fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attn_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
    # On the meta device scaled_dot_product_attention falls back to its math path, which saves the s x s
    # scores; the kernels a run uses (flash on the CPU, flash or memory-efficient on a GPU) keep only these.
    return _FusedAttention.apply(query, key, value, attn_mask)


class _FusedAttention(torch.autograd.Function):
    """What a fused attention kernel saves for its backward: queries, keys, values, output, the row-wise
    log-sum-exp and the mask when there is one. For counting on the meta device only: it has no backward."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp, *([] if mask is None else [mask]))
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        raise NotImplementedError("counting only")


def lora_activation_bytes(shape: AdapterShape, rank: int, batch_size: int, seq_len: int) -> float:
    """What the adapters keep for their backward pass, exactly by structure, in the adapters' float32.

    Each LoRA layer keeps its input after dropout for A's gradient and the
    dropout mask (one byte an element; the study's dropout is above 0), and A's
    r-wide output for B's.
    """
    return batch_size * seq_len * (shape.in_features * (ADAPTER_BYTES + 1) + shape.layers * rank * ADAPTER_BYTES)


def plan_candidate(
    candidate: Candidate,
    ranks: Sequence[int] = defaults.RANKS,
    dtype: str = defaults.PLAN_DTYPE,
    batch_size: int = defaults.BATCH_SIZE,
    widths: TokenWidths | None = None,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    quantization: str = "none",
) -> CandidatePlan:
    """Exact counts and estimated peaks of one candidate at full size; `widths` default to PLAN_SEQ_LEN tokens;
    `quantization` (8bit, 4bit) holds the base's Linear weights as bitsandbytes does (measure/quantized_weights.py)."""
    widths = widths or fixed_widths(defaults.PLAN_SEQ_LEN)
    seq_len = widths.widest
    dtype_bytes = DTYPES[dtype].itemsize
    model = meta_model(candidate, "full")
    config = model.config
    total = parameter_count(model)
    weights = total * dtype_bytes
    # A quantized base: its stored bytes, and one layer's weight dequantized while it runs (on every peak).
    dequantized = 0.0
    if quantization != "none":
        held = quantized_weights(model, quantization, DTYPES[dtype])
        weights, dequantized = held.stored_bytes, held.dequantized_buffer_bytes
    shape, saved_rank1 = rank1_counts(candidate, batch_size, seq_len, dtype)
    loss_gradients = LOSS_GRADIENT_BUFFERS * batch_size * seq_len * config.get_text_config().vocab_size * 4.0
    # The time model's operations: a step at the mean padded width (the run's steps average it), an answer's
    # prompt and a token at the answer's mean context.
    mean_width = max(1, round(widths.mean))
    prompt = max(1, round(widths.prompt_tokens or seq_len))
    prefill_ops, decode_ops = op_trace.decode_ops(candidate, prompt, prompt + max_new_tokens // 2, dtype)
    rank_plans = []
    for rank in ranks:
        step_ops, optimizer_ops, optimizer_foreach_ops = op_trace.finetune_ops(
            candidate, rank, batch_size, mean_width, dtype
        )
        trainable = shape.params_per_rank * rank
        adapter_weights = trainable * ADAPTER_BYTES
        # The rank-1 count plus the wider A outputs a rank-r adapter keeps.
        saved = saved_rank1 + lora_activation_bytes(shape, rank, batch_size, seq_len) - lora_activation_bytes(
            shape, 1, batch_size, seq_len
        )
        activations = saved + loss_gradients + dequantized
        checkpointed = checkpointed_bytes(config, saved, batch_size, seq_len, dtype_bytes) + loss_gradients
        checkpointed += dequantized
        # The increase is what training adds to a base with the adapter attached: its gradients and
        # AdamW's two moments, and the activations; the adapter's weights are held before training starts.
        training_state = adapter_weights * (1 + ADAM_STATES)
        increase = training_state + activations
        rank_plans.append(
            RankPlan(
                rank,
                trainable,
                adapter_weights * (2 + ADAM_STATES) / MIB,
                activations / MIB,
                increase / MIB,
                (weights + adapter_weights + increase) / MIB,
                (weights + training_state) / MIB,
                checkpointed / MIB,
                (weights + adapter_weights + training_state + checkpointed) / MIB,
                step_ops,
                optimizer_ops,
                optimizer_foreach_ops,
            )
        )
    # One sequence of prompt and answer; RWKV has no per-token cache, only its fixed recurrent state.
    kv_cache = kv_cache_bytes_per_token(config, DTYPES[dtype]) * (seq_len + max_new_tokens) + recurrent_state_bytes(
        config
    )
    matmuls = matmul_weights(model)  # a meta base model: every weight counts, trainable or not
    return CandidatePlan(
        name=candidate.name,
        total_params=total,
        approximate=candidate.approximate,
        dtype=dtype,
        weights_mib=weights / MIB,
        ranks=tuple(rank_plans),
        kv_cache_mib=kv_cache / MIB,
        inference_peak_estimate_mib=(weights + kv_cache + config.vocab_size * 4.0 + dequantized) / MIB,
        batch_size=batch_size,
        seq_len=seq_len,
        max_new_tokens=max_new_tokens,
        mean_seq_len=widths.mean,
        width_source=widths.source,
        train_tokens=widths.tokens,
        mean_prompt_tokens=widths.prompt_tokens,
        matmul_params=matmuls.frozen + matmuls.adapter,
        kv_values_per_token=kv_cache_bytes_per_token(config, torch.uint8),
        # Widths given by hand know the tokens, not the batches: as many full batches as the tokens fill.
        steps=widths.batches or -(-widths.tokens // (seq_len * batch_size)),
        prefill_ops=prefill_ops,
        decode_ops=decode_ops,
        quantization=quantization,
    )


def describe_widths(plan: CandidatePlan) -> str:
    """E.g. "widest batch 87 tokens (mean 61; data.csv, dataset tokenizer)"."""
    if plan.mean_seq_len == plan.seq_len and "tokenizer" not in plan.width_source:
        return f"{plan.seq_len} tokens per row ({plan.width_source})"
    return f"widest batch {plan.seq_len} tokens (mean {plan.mean_seq_len:.0f}; {plan.width_source})"


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
            [display_name(plan.label, plan.approximate), f"{plan.total_params:,}", f"{plan.weights_mib:,.0f}"]
            + [f"{rank.trainable_params:,}" for rank in plan.ranks]
            + [f"{rank.finetune_peak_estimate_mib:,.0f}" for rank in plan.ranks]
            + [f"{plan.inference_peak_estimate_mib:,.0f}"]
        )
    lines = aligned(rows, right=True)
    first = plans[0]
    lines.append(
        f"Parameter counts are exact (meta-device build). Memory beyond the weights is an ESTIMATE: "
        f"batch {first.batch_size}, {first.max_new_tokens} new tokens, activations calibrated on CPU float32 "
        "peaks; CUDA context and allocator overhead not included."
    )
    lines += [f"  {display_name(plan.label, plan.approximate)}: {describe_widths(plan)}" for plan in plans]
    return "\n".join(lines)
