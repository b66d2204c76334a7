"""A plan against a named card (data/gpus.toml): does the run fit, at which batch, about how long (ESTIMATES).

The plan's tensors plus what the process holds beside them: the CUDA context and cuBLAS workspaces, stated
apart; the largest batch that fits is solved from the activations' linear growth in the batch's rows; the
card's time is step_time.py's per-operation model with the card's constants. Torch-free: the report's screening
reads it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ohlora_fixtures.inputs import gpus
from ohlora_fixtures.inputs.gpus import Gpu, GpuTable
from ohlora_fixtures.measure.step_time import answer_seconds, finetune_seconds, gpu_rates, step_seconds
from ohlora_fixtures.records.figures import DTYPE_BYTES
from ohlora_fixtures.records.plans import CandidatePlan, RankPlan
from ohlora_fixtures.words.display import aligned, display_name


@dataclass(frozen=True)
class GpuFit:
    """Whether one run fits one named card: the plan's tensors plus what the process holds beside them (ESTIMATE).

    `max_batch_size` is the largest fine-tuning batch whose peak fits at the
    run's widest row (the widest batch always holds it; a run with fewer rows
    cannot use it all); 0 when not even one row fits; None for inference (one
    prompt at a time).
    """

    gpu: str
    dtype: str
    dtype_reason: str
    memory_mib: float
    tensors_mib: float
    cuda_context_mib: float
    workspace_mib: float
    total_mib: float
    fits: bool
    tight: bool
    max_batch_size: int | None = None
    after_allocated_mib: float | None = None
    """Fine-tuning: what `torch.cuda.memory_allocated()` would read after the run (tensors and workspaces)."""
    checkpointed_tensors_mib: float | None = None
    fits_with_checkpointing: bool | None = None
    max_batch_size_with_checkpointing: int | None = None
    """The same three with gradient checkpointing (fine-tuning only)."""
    seconds_estimate: float | None = None
    """The whole fine-tuning (without checkpointing), or one answer: step_time.py's full-size time on the card;
    None where the run's steps or prompts are not known."""
    seconds_per_step_estimate: float | None = None
    """Fine-tuning: one optimizer step of the plan's batch at its mean width, on the card."""

    @property
    def only_with_checkpointing(self) -> bool:
        """Fits with gradient checkpointing and not without."""
        return bool(self.fits_with_checkpointing) and not self.fits

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return asdict(self)


def _check_card_dtype(plan: CandidatePlan) -> None:
    if DTYPE_BYTES[plan.dtype] != 2:
        raise ValueError(f"{plan.name}: a card's fit needs the plan at a 2-byte dtype (bf16 or fp16), not {plan.dtype}")


def _fit(gpu: Gpu, table: GpuTable, tensors: float, handles: int, **extra: Any) -> GpuFit:
    workspaces = gpu.workspace_mib(handles)
    total = tensors + table.cuda_context_mib + workspaces
    fits = total <= gpu.memory_mib
    return GpuFit(
        gpu.name,
        gpu.dtype,
        gpu.dtype_reason,
        gpu.memory_mib,
        tensors,
        table.cuda_context_mib,
        workspaces,
        total,
        fits,
        fits and total > gpu.memory_mib * (1 - table.tight_fraction),
        **extra,
    )


def finetune_fit(plan: CandidatePlan, rank: RankPlan, gpu: Gpu, table: GpuTable) -> GpuFit:
    """One rank's fine-tuning on `gpu`, at the card's dtype (bf16 and fp16 weigh the same: the plan's 2 bytes),
    without and with gradient checkpointing."""
    _check_card_dtype(plan)
    workspaces = gpu.workspace_mib(gpus.TRAINING_HANDLES)
    room = gpu.memory_mib - table.cuda_context_mib - workspaces

    def largest(peak: float, activations: float) -> int:
        # Activations grow with the batch's rows and nothing else does: the peak is fixed + rows x per-row.
        per_row = activations / plan.batch_size
        return max(0, math.floor((room - (peak - activations)) / per_row))

    checkpointed = rank.finetune_peak_checkpointed_mib
    rates = gpu_rates(gpu, table)
    per_step = step_seconds(rank, rates) if rank.step_ops else None
    seconds = finetune_seconds(plan, rank, rates) if per_step is not None and plan.steps else None
    return _fit(
        gpu,
        table,
        rank.finetune_peak_estimate_mib,
        gpus.TRAINING_HANDLES,
        max_batch_size=largest(rank.finetune_peak_estimate_mib, rank.activations_mib),
        after_allocated_mib=rank.finetune_after_mib + workspaces,
        checkpointed_tensors_mib=checkpointed,
        fits_with_checkpointing=checkpointed <= room,
        max_batch_size_with_checkpointing=largest(checkpointed, rank.checkpointed_activations_mib),
        seconds_estimate=seconds,
        seconds_per_step_estimate=per_step,
    )


def inference_fit(plan: CandidatePlan, gpu: Gpu, table: GpuTable) -> GpuFit:
    """Generating one answer at a time on `gpu`."""
    _check_card_dtype(plan)
    seconds = answer_seconds(plan, gpu_rates(gpu, table)) if plan.decode_ops else None
    return _fit(gpu, table, plan.inference_peak_estimate_mib, gpus.INFERENCE_HANDLES, seconds_estimate=seconds)


def fits_as_dict(
    plan: CandidatePlan, cards: Sequence[Gpu], table: GpuTable, on_cards: CandidatePlan | None = None
) -> dict[str, Any]:
    """`plan.as_dict()` with each rank's and the inference's fit per card under "gpus" (each with its time
    estimates: `finetune_seconds_estimate`, `seconds_per_step_estimate`, `seconds_per_answer_estimate`);
    `on_cards` is the same plan at a 2-byte dtype when `plan` is not. The operation counts the times come from
    are left out: they are the plan's inputs to the time model, not figures to read."""
    on_cards = on_cards or plan
    plain = plan.as_dict()
    for key in ("prefill_ops", "decode_ops"):
        plain.pop(key)
    answers = {gpu.name: inference_fit(on_cards, gpu, table) for gpu in cards}
    for rank, card_rank in zip(plain["ranks"], on_cards.ranks):
        for key in ("step_ops", "optimizer_ops", "optimizer_foreach_ops"):
            rank.pop(key)
        rank["gpus"] = {}
        for gpu in cards:
            fit = finetune_fit(on_cards, card_rank, gpu, table)
            rank["gpus"][gpu.name] = fit.as_dict() | {
                "finetune_seconds_estimate": fit.seconds_estimate,
                "seconds_per_step_estimate": fit.seconds_per_step_estimate,
                "seconds_per_answer_estimate": answers[gpu.name].seconds_estimate,
            }
    plain["inference_gpus"] = {name: fit.as_dict() for name, fit in answers.items()}
    return plain


def describe_fit(fit: GpuFit, batch_size: int) -> str:
    """One table cell, e.g. "fits (max batch 37; 160 with grad. ckpt.)", "only with gradient checkpointing (...)"."""
    if fit.max_batch_size is None:
        return (
            ("fits, tight" if fit.tight else "fits")
            if fit.fits
            else f"no: {fit.total_mib:,.0f} of {fit.memory_mib:,.0f} MiB"
        )
    largest = f"max batch {fit.max_batch_size}" if fit.max_batch_size else "not even batch 1"
    with_checkpointing = f"{fit.max_batch_size_with_checkpointing} with grad. ckpt."
    if fit.fits:
        return f"fits{', tight' if fit.tight else ''} ({largest}; {with_checkpointing})"
    if fit.only_with_checkpointing:
        return f"only with gradient checkpointing (max batch {with_checkpointing})"
    return (
        f"no at batch {batch_size}: {fit.total_mib:,.0f} of {fit.memory_mib:,.0f} MiB ({largest}; {with_checkpointing})"
    )


def format_fits(plans: Sequence[CandidatePlan], cards: Sequence[Gpu], table: GpuTable) -> str:
    """Per candidate and rank, and for inference: the tensors (ESTIMATE) and the fit on each card."""
    for plan in plans:
        _check_card_dtype(plan)
    header = ["candidate", "run", "tensors MiB (est.)"] + [f"{gpu.name} ({gpu.memory_mib:,.0f} MiB)" for gpu in cards]
    rows = [header]
    for plan in plans:
        name = display_name(plan.label, plan.approximate)
        for rank in plan.ranks:
            rows.append(
                [name, f"FT r{rank.rank}", f"{rank.finetune_peak_estimate_mib:,.0f}"]
                + [describe_fit(finetune_fit(plan, rank, gpu, table), plan.batch_size) for gpu in cards]
            )
        rows.append(
            [name, "inference", f"{plan.inference_peak_estimate_mib:,.0f}"]
            + [describe_fit(inference_fit(plan, gpu, table), plan.batch_size) for gpu in cards]
        )
    lines = ["Fit on named GPUs (ESTIMATES, from data/gpus.toml):"] + aligned(rows, right=False)
    first = plans[0] if plans else None
    if first is not None:
        lines.append(
            f"On the card = tensors (the plan's peak, batch {first.batch_size}, widest row {first.seq_len} tokens) "
            f"+ CUDA context {table.cuda_context_mib:,.0f} MiB ({table.cuda_context_source}) "
            "+ torch's cuBLAS workspaces "
            f'(fine-tuning {gpus.TRAINING_HANDLES} handles, inference {gpus.INFERENCE_HANDLES}). "max batch" is the '
            f"largest fine-tuning batch whose estimate fits at that width, without and with gradient checkpointing "
            f'(each layer\'s input kept, the rest recomputed: less memory, more time); "tight": within '
            f"{table.tight_fraction:.0%} of the card's memory (ECC, the driver and fragmentation take some)."
        )
    for gpu in cards:
        lines.append(
            f"  {gpu.name}: {gpu.label}; run in {gpu.dtype}: {gpu.dtype_reason}; cuBLAS workspaces "
            f"{gpu.workspace_mib(gpus.TRAINING_HANDLES):.1f} MiB fine-tuning, "
            f"{gpu.workspace_mib(gpus.INFERENCE_HANDLES):.1f} "
            f"MiB inference ({gpu.source})"
        )
    lines += ["", format_times(plans, cards, table)]
    return "\n".join(lines)


def format_times(plans: Sequence[CandidatePlan], cards: Sequence[Gpu], table: GpuTable) -> str:
    """Per candidate and rank the fine-tuning's seconds, and the seconds per answer, on each card (ESTIMATES)."""

    def seconds(value: float | None) -> str:
        if value is None:
            return "-"
        return f"~{value:.3g} s" if value < 10 else f"~{value:,.1f} s"

    rows = [["candidate", "run"] + [f"{gpu.name} (est.)" for gpu in cards]]
    for plan in plans:
        name = display_name(plan.label, plan.approximate)
        for rank in plan.ranks:
            fits = [finetune_fit(plan, rank, gpu, table) for gpu in cards]
            rows.append([name, f"FT r{rank.rank}, {plan.steps} steps"] + [seconds(f.seconds_estimate) for f in fits])
            rows.append([name, f"FT r{rank.rank}, one step"] + [seconds(f.seconds_per_step_estimate) for f in fits])
        answers = [inference_fit(plan, gpu, table).seconds_estimate for gpu in cards]
        rows.append([name, "one answer"] + [seconds(value) for value in answers])
    first = plans[0]
    note = (
        f"Time on named GPUs: ESTIMATES (measure/step_time.py): every operation of one training step (batch "
        f"{first.batch_size}, mean width {first.mean_seq_len:.0f} tokens, first candidate) and of one decoded token, "
        "counted on the meta device, each taking the longer of its FLOPs over the card's matmul rate for its dtype "
        f"x {table.matmul_efficiency:.2f} and its bytes over the bandwidth x {table.bandwidth_efficiency:.2f}, plus "
        f"{table.overhead_us:g} us of PyTorch's per-operation overhead (data/gpus.toml names each constant's source). "
        f"One answer: a {first.mean_prompt_tokens:.0f}-token prompt, then {first.max_new_tokens} new tokens. Without "
        "gradient checkpointing; a trainer's own work (logging, evaluation, saving) is not included."
    )
    lines = [note] + aligned(rows, right=False)
    lines += [f"  {gpu.name}: matmuls at {gpu_rates(gpu, table).tflops[gpu.dtype]:,.1f} TFLOP/s in {gpu.dtype}, "
              f"{gpu_rates(gpu, table).gbps:,.0f} GB/s (achievable, est.)" for gpu in cards]
    return "\n".join(lines)
