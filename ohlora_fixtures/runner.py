"""Runs one fine-tuning or inference benchmark: prepare, time, measure memory, record.

What is timed: for fine-tuning, the optimizer's creation and every training
step (forward, backward, AdamW step) until the device has finished; for
inference, each prompt's `generate` call between device synchronisations.
Not timed: loading the model, tokenising, building batches, attaching the
adapter, the warm-up pass, the eval loss and writing files.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import pytest
import torch

from . import results
from .devices import synchronize
from .finetune import (
    count_tokens,
    encode,
    eval_batches,
    eval_loss,
    fresh_adapter,
    step_batches,
    train,
    warm_up,
)
from .inference import encode_prompts, generate_answers, write_answers
from .inference import warm_up as warm_up_generation
from .memory import MemoryMeter, release_cached_memory
from .models import WeightsNotFound
from .quality import read_grades, score_answers
from .registry import Candidate
from .study import Study

Say = Callable[[str], None]
PROGRESS_EVERY_STEPS = 10
PROGRESS_EVERY_PROMPTS = 5


class _Timed:
    """Wraps the timed function so its own clock reading is kept beside pytest-benchmark's."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        value = self.function(*args, **kwargs)
        self.seconds = time.perf_counter() - started
        return value


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    # CPU allocations that fail inside torch raise RuntimeError with this text.
    return isinstance(error, RuntimeError) and "not enough memory" in str(error).lower()


@contextlib.contextmanager
def recorded(study: Study, benchmark: Any, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Fills in `record`'s outcome, whatever happens, and writes it to disk at once.

    An out-of-memory error or any other failure is recorded with its message
    and fails only this benchmark; memory is freed for the next one.
    """
    failure = None
    try:
        yield record
        record["status"] = "ok"
    except WeightsNotFound as error:
        record.update(status="skipped", error=str(error))
        failure = ("skip", str(error))
    except pytest.skip.Exception as error:
        record.update(status="skipped", error=str(error))
        raise
    except Exception as error:  # noqa: BLE001 - every failure is recorded, then reported
        status = "oom" if _is_out_of_memory(error) else "failed"
        record.update(status=status, error=f"{type(error).__name__}: {error}".strip())
        failure = ("oom" if status == "oom" else "fail", record["error"])
        if status != "oom":
            raise
    finally:
        _store(study, benchmark, record)
    # Out of the except block, so the traceback no longer pins the failed step's tensors.
    if failure is not None:
        release_cached_memory(study.device)
        kind, message = failure
        if kind == "skip":
            pytest.skip(message)
        pytest.fail(f"out of memory ({_settings_summary(record)}): {message}", pytrace=False)
    budget = study.settings.vram_budget_mb
    if record.get("peak_mib") is not None and record["peak_mib"] > budget:
        pytest.fail(
            f"peak memory {record['peak_mib']:.0f} MiB ({record['memory_metric']}) exceeds "
            f"--ohlora-vram-budget-mb {budget:.0f}",
            pytrace=False,
        )


def _settings_summary(record: dict[str, Any]) -> str:
    run = record["run"]
    rank = f", rank {record['rank']}" if record.get("rank") else ""
    return f"{record['candidate']}{rank}, {run['scale']} {run['weights']} weights, {run['dtype']} on {run['device']}"


def _store(study: Study, benchmark: Any, record: dict[str, Any]) -> None:
    record["finished"] = time.time()
    record["over_budget"] = bool(record.get("peak_mib") and record["peak_mib"] > study.settings.vram_budget_mb)
    results.append(study.settings.results_path, record)
    study.records.append(record)
    benchmark.extra_info.update(record)


def new_record(study: Study, kind: str, candidate: Candidate, rank: int | None, nodeid: str, detail: Any) -> dict[str, Any]:
    """A record's identity and context; the measurement fills in the rest."""
    return {
        "id": nodeid,
        "kind": kind,
        "candidate": candidate.name,
        "rank": rank,
        "approximate": candidate.approximate,
        "fingerprint": study.fingerprint(kind, candidate, detail),
        "run": study.describe(),
        "status": "running",
        "error": None,
    }


def _resume_or_none(study: Study, record: dict[str, Any]) -> None:
    if not study.settings.resume:
        return
    earlier = results.completed(study.settings.results_path, record["fingerprint"])
    if earlier is not None:
        study.records.append(earlier)
        pytest.skip(f"already measured with identical settings in {study.settings.results_path} (--ohlora-resume)")


def run_finetune(study: Study, benchmark: Any, candidate: Candidate, rank: int, nodeid: str, say: Say) -> dict[str, Any]:
    """Fine-tune a fresh rank-`rank` adapter on the candidate's clean base; time the training loop."""
    settings = study.finetune_settings(rank)
    record = new_record(study, "finetune", candidate, rank, nodeid, settings)
    _resume_or_none(study, record)
    with recorded(study, benchmark, record):
        base = study.base_model(candidate)
        train_examples = encode(base.tokenizer, candidate, study.experiment.train)
        pad_id = base.tokenizer.pad_token_id
        batches = step_batches(train_examples, settings, pad_id, study.device)
        valid_examples = encode(base.tokenizer, candidate, study.experiment.valid)
        valid = eval_batches(valid_examples, settings.batch_size, pad_id, study.device)
        with fresh_adapter(base.model, candidate, settings) as model:
            trainable, total = model.get_nb_trainable_parameters()
            warm_up(model, batches[0])
            torch.manual_seed(settings.seed)  # dropout masks as if there had been no warm-up
            synchronize(study.device)

            def on_step(step: int, loss: torch.Tensor) -> None:
                if step % PROGRESS_EVERY_STEPS == 0 or step == len(batches):
                    say(f"{candidate.name} r{rank}: step {step}/{len(batches)} loss {float(loss):.4f}")

            timed = _Timed(train)
            with MemoryMeter(study.device) as meter:
                losses = benchmark.pedantic(
                    timed, args=(model, batches, settings.learning_rate, study.device, on_step),
                    rounds=1, iterations=1, warmup_rounds=0,
                )
            tokens = count_tokens(batches)
            record.update(
                seconds=timed.seconds,
                steps=len(batches),
                losses=[round(loss, 6) for loss in losses],
                final_loss=losses[-1],
                eval_loss=eval_loss(model, valid),
                eval_rows=len(valid_examples),
                trainable_params=trainable,
                total_params=total - trainable,
                tokens=tokens,
                tokens_per_second=tokens / timed.seconds,
                **_memory_fields(meter),
            )
    return record


def run_inference(study: Study, benchmark: Any, candidate: Candidate, nodeid: str, say: Say) -> dict[str, Any]:
    """The untuned base answers every prompt; time the generation."""
    generation = study.generation_settings
    record = new_record(study, "inference", candidate, None, nodeid, generation)
    _resume_or_none(study, record)
    with recorded(study, benchmark, record):
        base = study.base_model(candidate)
        prompts = encode_prompts(base.tokenizer, candidate, study.experiment.prompts, study.device)
        warm_up_generation(base.model, prompts[0], base.tokenizer.pad_token_id)

        def on_prompt(index: int, answer: Any) -> None:
            if index % PROGRESS_EVERY_PROMPTS == 0 or index == len(prompts):
                say(f"{candidate.name} inference: prompt {index}/{len(prompts)} ({answer.new_tokens} new tokens)")

        timed = _Timed(generate_answers)
        with MemoryMeter(study.device) as meter:
            answers = benchmark.pedantic(
                timed, args=(base.model, base.tokenizer, prompts, generation, study.device, on_prompt),
                rounds=1, iterations=1, warmup_rounds=0,
            )
        answers_csv = study.settings.report_dir / "answers" / f"{candidate.name}.{base.weights}-{base.scale}.csv"
        write_answers(answers_csv, answers)
        new_tokens = sum(answer.new_tokens for answer in answers)
        generate_seconds = sum(answer.seconds for answer in answers)
        grade, graded = read_grades(answers_csv)
        record.update(
            seconds=timed.seconds,
            prompts=len(answers),
            mean_seconds_per_prompt=generate_seconds / len(answers),
            new_tokens=new_tokens,
            max_new_tokens_seen=max(answer.new_tokens for answer in answers),
            prompt_tokens=sum(answer.prompt_tokens for answer in answers),
            tokens_per_second=new_tokens / generate_seconds,
            total_params=base.total_params,
            answers_csv=str(answers_csv),
            quality=score_answers([a.answer for a in answers], [a.reference or None for a in answers]).as_dict(),
            human_grade=grade,
            human_graded=graded,
            **_memory_fields(meter),
        )
    return record


def _memory_fields(meter: MemoryMeter) -> dict[str, Any]:
    figures = meter.figures.as_dict()
    figures["memory_metric"] = figures.pop("metric")
    return figures
