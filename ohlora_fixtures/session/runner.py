"""The two benchmark bodies: prepare, time (timing.py), measure memory, record (outcome.py).

What is timed: for fine-tuning, the optimizer's creation and every training
step (forward, backward, AdamW step) until the device has finished, each step
also on its own (StepClock: CUDA events, no added synchronisation); for
inference, each prompt's `generate` call between device synchronisations, with
its time to first token noted inside it (FirstTokenClock). Not timed: loading
the model, tokenising, building batches, attaching the adapter, the warm-up
pass, the eval loss, saving the adapter to measure its size and writing files.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import pytest
import torch

from ohlora_fixtures.inputs.paths import child
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.judge.quality import read_grades, score_answers
from ohlora_fixtures.measure.finetune import (
    adapter_file_bytes,
    count_tokens,
    encode,
    eval_batches,
    eval_loss,
    fresh_adapter,
    peak_batches,
    position_limit,
    step_batches,
    train,
    warm_up,
)
from ohlora_fixtures.measure.inference import (
    EncodedPrompt,
    encode_prompts,
    generate_answers,
    latency_figures,
    peak_prompts,
)
from ohlora_fixtures.measure.inference import warm_up as warm_up_generation
from ohlora_fixtures.measure.memory import release_cached_memory
from ohlora_fixtures.measure.models import BaseModel
from ohlora_fixtures.measure.quantize import quiet_casts
from ohlora_fixtures.measure.utilisation import decode_figures, finetune_figures
from ohlora_fixtures.records.answers import Answer, write_answers
from ohlora_fixtures.records.percentiles import median, percentile
from ohlora_fixtures.records.record import Answers, BenchmarkRecord, FinetuneFigures, InferenceFigures, Kind
from ohlora_fixtures.session.outcome import new_record, recorded, resume_or_skip
from ohlora_fixtures.session.study import Study
from ohlora_fixtures.session.timing import measure, tensor_peak

Say = Callable[[str], None]
PROGRESS_EVERY_STEPS = 10
PROGRESS_EVERY_PROMPTS = 5


def progress_due(index: int, total: int, every: int) -> bool:
    """Whether item `index` (1-based) of `total` gets a progress line: every `every`th, and the last."""
    return index % every == 0 or index == total


def run_finetune(
    study: Study,
    benchmark: Any,
    candidate: Candidate,
    rank: int,
    node: pytest.Item,
    say: Say,
    quantization: str = "none",
) -> BenchmarkRecord:
    """Fine-tune a fresh rank-`rank` adapter on the candidate's clean base (its weights in `quantization`);
    time the training loop."""
    settings = study.finetune_settings(rank)
    record = new_record(study, Kind.FINETUNE, candidate, rank, node.nodeid, settings, quantization)
    study.progress.begin()
    resume_or_skip(study, record, candidate, say)
    with recorded(study, benchmark, record), quiet_casts():
        base = study.models.get(candidate, quantization)
        record.weights_revision = base.revision
        limit = position_limit(base.model.config)
        train_examples = encode(base.tokenizer, candidate, study.experiment.train, limit)
        pad_id = base.tokenizer.pad_token_id
        batches = step_batches(train_examples, settings, pad_id, study.device)
        valid_examples = encode(base.tokenizer, candidate, study.experiment.valid, limit)
        valid = eval_batches(valid_examples, settings.batch_size, pad_id, study.device)

        def on_step(step: int, loss: torch.Tensor) -> None:
            if progress_due(step, len(batches), PROGRESS_EVERY_STEPS):
                say(f"{candidate.name} r{rank}: step {step}/{len(batches)} loss {float(loss):.4f}")

        with contextlib.ExitStack() as adapter:
            attached: list[torch.nn.Module] = []  # the latest round's adapter

            def fresh_round(hook: Callable[..., None] | None = None, steps: Sequence[dict] = batches) -> tuple:
                """Untimed, before each round: the last round's adapter off, a fresh one on; the `steps` call
                `hook`, where given, instead of printing progress."""
                if attached:
                    adapter.close()
                    attached.clear()
                    release_cached_memory(study.device)  # its optimizer state and graph are not the next round's
                attached.append(adapter.enter_context(fresh_adapter(base.model, candidate, settings)))
                return attached[0], steps, settings.learning_rate, study.device, on_step if hook is None else hook

            def warm(model: torch.nn.Module, *_: Any) -> None:
                warm_up(model, batches[0])
                torch.manual_seed(settings.seed)  # dropout masks as if there had been no warm-up

            rounds = measure(study, benchmark, train, fresh_round, warm)
            measured = rounds.median
            model = attached[0]  # the last round's adapter is still attached: the figures below are of it
            trainable, total = model.get_nb_trainable_parameters()
            losses, tokens = measured.value.losses, count_tokens(batches)
            later_steps = measured.value.step_seconds[1:]  # the first also creates AdamW's state
            record.finetune = FinetuneFigures(
                steps=len(batches),
                losses=tuple(round(loss, 6) for loss in losses),
                final_loss=losses[-1],
                eval_loss=eval_loss(model, valid),
                eval_rows=len(valid_examples),
                trainable_params=trainable,
                total_params=total - trainable,
                tokens=tokens,
                tokens_per_second=tokens / measured.seconds,
                utilisation=_plausible(
                    study, "MFU", lambda: finetune_figures(model, tokens, measured.seconds, study.peaks)
                ),
                # Untimed, and while the adapter is still attached: what fine-tuning did to the answers.
                after_finetune=_answers_with_adapter(study, base, candidate, model, rank)
                if study.settings.eval_after_finetune
                else None,
                step_median_s=median(later_steps) if later_steps else None,
                step_p90_s=percentile(later_steps, 90) if later_steps else None,
                adapter_bytes=adapter_file_bytes(model),
            )
            # Last, as it replaces the adapter the figures above read: the steps that reach the peak, or all.
            steps = batches if study.settings.memory_pass == "full" else peak_batches(batches)
            rounds.with_tensor_peak(tensor_peak(study, train, lambda hook: fresh_round(hook, steps), warm)).fill(record)
        study.progress.end()
    return record


def _plausible(study: Study, what: str, figures: Callable[[], Any]) -> Any:
    """Utilisation figures against the device's peaks; where one reads above 100 % of a calibrated peak, the
    calibration is taken again and the figures recomputed against it."""
    computed = figures()
    share = getattr(computed, "mfu", None) or getattr(computed, "bandwidth_utilisation", 0.0)
    if share > 1.0 and study.calibrate_again(what, share):
        computed = figures()
    return computed


def _answers_with_adapter(
    study: Study, base: BaseModel, candidate: Candidate, model: torch.nn.Module, rank: int
) -> Answers:
    """The fine-tuned model answers the inference prompts; scored like the base model's answers."""
    prompts = encode_prompts(base.tokenizer, candidate, study.experiment.prompts, study.device)
    answers = generate_answers(model, base.tokenizer, prompts, study.generation_settings, study.device)
    return _scored_answers(study, base, candidate, answers, f".r{rank}")


def _scored_answers(
    study: Study, base: BaseModel, candidate: Candidate, answers: list[Answer], tag: str = ""
) -> Answers:
    """Write the answers CSV (grades already given are kept) and score it: automatic figures and human grade."""
    quantized = "" if base.precision == "none" else f".{base.precision}"
    answers_csv = child(
        study.settings.report_dir / "answers", f"{candidate.name}.{base.weights}-{base.scale}{tag}{quantized}", ".csv"
    )
    write_answers(answers_csv, answers)
    grade, graded = read_grades(answers_csv)
    quality = score_answers([a.answer for a in answers], [a.reference or None for a in answers])
    return Answers(str(answers_csv), quality, grade, graded)


def run_inference(
    study: Study, benchmark: Any, candidate: Candidate, node: pytest.Item, say: Say, quantization: str = "none"
) -> BenchmarkRecord:
    """The untuned base (its weights in `quantization`) answers every prompt; time the generation."""
    generation = study.generation_settings
    record = new_record(study, Kind.INFERENCE, candidate, None, node.nodeid, generation, quantization)
    study.progress.begin()
    resume_or_skip(study, record, candidate, say)
    with recorded(study, benchmark, record), quiet_casts():
        base = study.models.get(candidate, quantization)
        record.weights_revision = base.revision
        prompts = encode_prompts(base.tokenizer, candidate, study.experiment.prompts, study.device)

        def on_prompt(index: int, answer: Any) -> None:
            if progress_due(index, len(prompts), PROGRESS_EVERY_PROMPTS):
                say(f"{candidate.name} inference: prompt {index}/{len(prompts)} ({answer.new_tokens} new tokens)")

        def arguments(hook: Callable[..., None] | None = None, asked: Sequence[EncodedPrompt] = prompts) -> tuple:
            return base.model, base.tokenizer, asked, generation, study.device, on_prompt if hook is None else hook

        def warm(model: torch.nn.Module, *_: Any) -> None:
            warm_up_generation(model, prompts[0], base.tokenizer.pad_token_id)

        rounds = measure(study, benchmark, generate_answers, arguments, warm)
        answers = rounds.median.value
        # After the rounds, which tell which prompts reach the peak (each answer is seeded on its own).
        chosen = prompts if study.settings.memory_pass == "full" else [prompts[i] for i in peak_prompts(answers)]
        tensors = tensor_peak(study, generate_answers, lambda hook: arguments(hook, chosen), warm)
        rounds.with_tensor_peak(tensors).fill(record)
        scored = _scored_answers(study, base, candidate, answers)
        new_tokens = sum(answer.new_tokens for answer in answers)
        generate_seconds = sum(answer.seconds for answer in answers)
        record.inference = InferenceFigures(
            prompts=len(answers),
            mean_seconds_per_prompt=generate_seconds / len(answers),
            new_tokens=new_tokens,
            max_new_tokens_seen=max(answer.new_tokens for answer in answers),
            prompt_tokens=sum(answer.prompt_tokens for answer in answers),
            tokens_per_second=new_tokens / generate_seconds,
            total_params=base.total_params,
            answers=scored,
            utilisation=_plausible(
                study,
                "decode bandwidth use",
                lambda: decode_figures(
                    base.model, [(a.prompt_tokens, a.new_tokens) for a in answers], generate_seconds, study.peaks
                ),
            ),
            **latency_figures(answers),
        )
        study.progress.end()
    return record
