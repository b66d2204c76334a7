"""Runs one fine-tuning or inference benchmark: prepare, time, measure memory, record.

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
import dataclasses
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import pytest
import torch

from ohlora_fixtures.records import results
from ohlora_fixtures.measure.devices import synchronize
from ohlora_fixtures.errors import BenchmarkError
from ohlora_fixtures.measure.finetune import (
    adapter_file_bytes,
    peak_batches,
    count_tokens,
    encode,
    eval_batches,
    eval_loss,
    fresh_adapter,
    position_limit,
    step_batches,
    train,
    warm_up,
)
from ohlora_fixtures.measure.inference import EncodedPrompt, encode_prompts, generate_answers, latency_figures, peak_prompts
from ohlora_fixtures.records.answers import Answer, write_answers
from ohlora_fixtures.measure.inference import warm_up as warm_up_generation
from ohlora_fixtures.measure.hardware import probe_fraction
from ohlora_fixtures.measure.machine_load import LoadWatch
from ohlora_fixtures.records.figures import MachineLoad
from ohlora_fixtures.measure.memory import MemoryMeter, TensorPeak, TensorPeakMeter, needs_tensor_pass, release_cached_memory, with_tensor_peak
from ohlora_fixtures.records.figures import MemoryFigures
from ohlora_fixtures.inputs.paths import child
from ohlora_fixtures.records.storage import disk_full
from ohlora_fixtures.records.percentiles import median, percentile
from ohlora_fixtures.measure.models import BaseModel, WeightsUnavailable
from ohlora_fixtures.judge.quality import read_grades, score_answers
from ohlora_fixtures.records.record import Answers, BenchmarkRecord, FinetuneFigures, InferenceFigures, Kind, Status
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.session.study import Study
from ohlora_fixtures.measure.utilisation import decode_figures, finetune_figures

Say = Callable[[str], None]
PROGRESS_EVERY_STEPS = 10
PROGRESS_EVERY_PROMPTS = 5


@dataclass(frozen=True)
class Measured:
    """What one timed round returned, how long it took by its own clock, and the memory it used."""

    value: Any
    seconds: float
    memory: MemoryFigures


@dataclass(frozen=True)
class Rounds:
    """Every timed round of one benchmark, and the machine's load around them."""

    rounds: tuple[Measured, ...]
    load: MachineLoad

    @property
    def median(self) -> Measured:
        """The median round by time (the lower middle one for an even count): the record's figures come from it,
        so that time, tokens per second, MFU and the answers all belong to one round."""
        return sorted(self.rounds, key=lambda r: r.seconds)[(len(self.rounds) - 1) // 2]

    @property
    def peak_memory(self) -> MemoryFigures:
        """The highest round's memory: what must fit is the worst round."""
        return max((r.memory for r in self.rounds), key=lambda m: m.peak_mib)

    def with_tensor_peak(self, tensors: TensorPeak | None) -> "Rounds":
        """The rounds with the profiled pass's tensor peak as every round's headline (None: as they are)."""
        if tensors is None:
            return self
        return Rounds(tuple(dataclasses.replace(r, memory=with_tensor_peak(r.memory, tensors)) for r in self.rounds),
                      self.load)

    def fill(self, record: BenchmarkRecord) -> Measured:
        """Put the rounds' time, memory and load into `record`; returns the median round."""
        median = self.median
        record.seconds, record.memory, record.load = median.seconds, self.peak_memory, self.load
        record.round_seconds = tuple(r.seconds for r in self.rounds)
        record.round_peak_mib = tuple(round(r.memory.peak_mib, 2) for r in self.rounds)
        return median


class _Settled(BaseException):
    """Raised from pytest-benchmark's setup to end `pedantic` once an attempt's rounds are kept. A BaseException,
    so that pytest-benchmark does not mark the benchmark as failed (it does so for any Exception)."""


def measure(study: Study, benchmark: Any, function: Callable[..., Any], prepare: Callable[..., tuple]) -> Rounds:
    """Run `function(*prepare())` for --ohlora-rounds timed rounds of pytest-benchmark, each inside a MemoryMeter;
    while the machine was busy during an attempt's rounds, measure them again, up to --ohlora-busy-retries times.

    `prepare` runs before each round, untimed (pytest-benchmark's `setup`): a
    fresh adapter and its warm-up. The meter starts after it and stops before
    the next, so each round's memory is its own. The kept attempt is the first
    quiet one, else the last; pytest-benchmark's statistics keep its rounds only
    (for `--benchmark-compare-fail`), and the record keeps each round's own
    perf_counter reading and how many attempts there were. Memory figures are
    rounded to 0.01 MiB, as they are stored.
    """
    per_attempt = study.settings.rounds
    attempts_allowed = 1 + study.settings.busy_retries
    done: list[Measured] = []
    loads: list[MachineLoad] = []
    meter: MemoryMeter | None = None
    finished: tuple[Any, float] | None = None  # the round just timed: its value and seconds

    def probe() -> float | None:
        return probe_fraction(study.device, study.dtype, study.peaks)

    watch = LoadWatch(probe)

    def end_round() -> None:
        # Outside the timed region: at the next round's setup, or once pedantic has returned.
        nonlocal meter, finished
        if meter is not None:
            meter.__exit__(None, None, None)
            if finished is not None:
                done.append(Measured(finished[0], finished[1], MemoryFigures(**meter.figures.as_dict())))
        meter, finished = None, None

    def setup() -> tuple[tuple, dict]:
        nonlocal meter, watch
        end_round()
        if done and len(done) % per_attempt == 0:  # an attempt has ended: keep it, or measure again
            loads.append(watch.finish())
            if not loads[-1].busy or len(loads) == attempts_allowed:
                raise _Settled
            watch = LoadWatch(probe)
        args = prepare()
        if not watch.started:
            watch.start()  # after the first warm-up: the load of the rounds, not of loading the model
        synchronize(study.device)
        meter = MemoryMeter(study.device).__enter__()
        return args, {}

    def timed(*args: Any) -> Any:
        nonlocal finished
        started = time.perf_counter()
        value = function(*args)
        finished = value, time.perf_counter() - started
        return value

    try:
        benchmark.pedantic(timed, setup=setup, rounds=per_attempt * attempts_allowed, iterations=1, warmup_rounds=0)
    except _Settled:
        pass
    finally:
        end_round()  # the last round, or the sampler of one that raised
    if len(loads) * per_attempt < len(done):  # the last attempt ran its rounds to the end of pedantic's
        loads.append(watch.finish())
    kept = done[-per_attempt:]
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        del stats.data[:-per_attempt]  # pytest-benchmark's own timings of the kept attempt only
    return Rounds(tuple(kept), dataclasses.replace(loads[-1], attempts=len(loads)))


def tensor_peak(study: Study, function: Callable[..., Any], prepare: Callable[..., tuple]) -> TensorPeak | None:
    """The CPU's memory headline (None on a device with an allocator peak): one untimed run of the region under
    a TensorPeakMeter, which takes the progress callback's place, `prepare(hook)` giving its arguments; the
    region's own result is dropped."""
    if not needs_tensor_pass(study.device):
        return None
    meter = TensorPeakMeter()
    args = prepare(meter.window)
    with meter.measuring(args[0]):
        function(*args)
    del args
    assert meter.peak is not None
    return meter.peak


def progress_due(index: int, total: int, every: int) -> bool:
    """Whether item `index` (1-based) of `total` gets a progress line: every `every`th, and the last."""
    return index % every == 0 or index == total


# What torch's allocators say when an allocation fails with a plain RuntimeError: the CPU allocator on Linux
# ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."), on Windows ("not enough memory"),
# and the MPS, XPU and older CUDA builds ("... out of memory").
_OUT_OF_MEMORY_TEXT = ("can't allocate memory", "not enough memory", "out of memory")


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OUT_OF_MEMORY_TEXT)


@contextlib.contextmanager
def recorded(study: Study, benchmark: Any, record: BenchmarkRecord) -> Iterator[BenchmarkRecord]:
    """Fills in `record`'s outcome, whatever happens, and writes it to disk at once.

    Weights that cannot be used skip the benchmark with the reason. Running out
    of memory fails it with the settings that caused it, after freeing what the
    failed step held; a BenchmarkError or a full disk fails it with one line;
    any other error fails it with its traceback. Either way only this
    benchmark fails and the run goes on.
    """
    try:
        yield record
        record.status = Status.OK
    except WeightsUnavailable as error:
        record.status, record.error = Status.SKIPPED, str(error)
    except (BenchmarkError, OSError) as error:
        record.status, record.error = Status.FAILED, str(error) if isinstance(error, BenchmarkError) else disk_full(error)
        if record.error is None:
            record.error = f"{type(error).__name__}: {error}"
            raise
    except pytest.skip.Exception as error:
        record.status, record.error = Status.SKIPPED, str(error)
        raise
    except KeyboardInterrupt:
        record.status, record.error = Status.INTERRUPTED, "interrupted before the benchmark finished"
        # pytest-benchmark's own mark for a benchmark whose rounds did not finish (it sets it on any other
        # error): left out of its JSON, whose statistics would otherwise end the session on an empty round list.
        benchmark.has_error = True
        raise
    except Exception as error:  # noqa: BLE001 - every failure is recorded, then reported
        record.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if not _is_out_of_memory(error):
            record.status = Status.FAILED
            raise
        record.status = Status.OOM
        # The failed step's tensors (activations, gradients, optimizer state, the adapter) live in the
        # traceback's frames: clear them and drop the traceback, so that release_cached_memory below
        # frees them before the next benchmark's memory is measured.
        traceback.clear_frames(error.__traceback__)
        error.__traceback__ = None
    finally:
        unstored = _store(study, benchmark, record)
    if record.status in (Status.SKIPPED, Status.OOM):
        release_cached_memory(study.device)
    if record.status is Status.FAILED or unstored:
        _fail(record.error if record.status is Status.FAILED else unstored)
    if record.status is Status.SKIPPED:
        pytest.skip(record.error)
    if record.status is Status.OOM:
        _fail(f"out of memory ({_settings_summary(record)}): {record.error}")
    if record.over_budget:
        pytest.fail(
            f"peak memory {record.peak_mib:.0f} MiB ({record.memory.metric}) exceeds "
            f"--ohlora-vram-budget-mb {study.settings.vram_budget_mb:.0f}",
            pytrace=False,
        )


def _fail(line: str) -> None:
    """Fail the benchmark with `line` alone: not the exception it replaces (pytest would print both)."""
    raise pytest.fail.Exception(line, pytrace=False) from None


def _settings_summary(record: BenchmarkRecord) -> str:
    run = record.run
    rank = f", rank {record.rank}" if record.rank else ""
    return f"{record.candidate}{rank}, {run.scale} {run.weights} weights, {run.dtype} on {run.device}"


def _store(study: Study, benchmark: Any, record: BenchmarkRecord) -> str | None:
    """Write the record to the log, the session and pytest-benchmark; on a full disk the log is left whole
    and the one line saying so is returned (the record still reaches the summary and pytest-benchmark)."""
    record.finished = time.time()
    record.over_budget = bool(record.peak_mib and record.peak_mib > study.settings.vram_budget_mb)
    unstored = None
    try:
        results.append(study.settings.results_path, record)
    except OSError as error:
        unstored = disk_full(error)
        if unstored is None:
            raise
    study.records.measured.append(record)
    benchmark.extra_info.update(record.flat())
    return unstored


def new_record(study: Study, kind: Kind, candidate: Candidate, rank: int | None, nodeid: str, detail: Any) -> BenchmarkRecord:
    """A record's identity and context; the measurement fills in the rest."""
    return BenchmarkRecord(
        id=nodeid, kind=kind, candidate=candidate.name, rank=rank, approximate=candidate.approximate,
        fingerprint=study.fingerprint(kind.value, candidate, detail), run=study.describe(),
    )


def _resume_or_none(study: Study, record: BenchmarkRecord, candidate: Candidate, say: Say) -> None:
    """With --ohlora-resume, skip the benchmark when the log holds a successful record of it with the same
    fingerprint and of the same weights as the candidate's now (a new hub snapshot or a changed checkpoint is
    measured again, with a line saying why)."""
    if not study.settings.resume:
        return
    path = study.settings.results_path
    stored = study.records.resume_index.completed(record.fingerprint)
    if not stored:
        return
    weights = study.weights_revision(candidate)
    same = [earlier for earlier in stored if earlier.weights_revision == weights and not weights.endswith("@unknown")]
    if not same:
        what = f"{candidate.name} r{record.rank}" if record.rank else f"{candidate.name} inference"
        say(f"{what}: measured again, not resumed: {path} has it for weights "
            f"{stored[-1].weights_revision or '(not recorded)'}, the weights now are {weights}")
        return
    study.records.measured.append(same[-1])  # under pytest-xdist, sent to the controller like a measured one (plugin.WorkerRecords)
    pytest.skip(f"already measured with identical settings and weights in {path} (--ohlora-resume)")


def run_finetune(study: Study, benchmark: Any, candidate: Candidate, rank: int, node: pytest.Item, say: Say) -> BenchmarkRecord:
    """Fine-tune a fresh rank-`rank` adapter on the candidate's clean base; time the training loop."""
    settings = study.finetune_settings(rank)
    record = new_record(study, Kind.FINETUNE, candidate, rank, node.nodeid, settings)
    _resume_or_none(study, record, candidate, say)
    with recorded(study, benchmark, record):
        base = study.models.get(candidate)
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
                """Untimed, before each round: the last round's adapter off, a fresh one on, warmed up; the
                `steps` call `hook`, where given, instead of printing progress."""
                if attached:
                    adapter.close()
                    attached.clear()
                    release_cached_memory(study.device)  # its optimizer state and graph are not the next round's
                attached.append(adapter.enter_context(fresh_adapter(base.model, candidate, settings)))
                warm_up(attached[0], batches[0])
                torch.manual_seed(settings.seed)  # dropout masks as if there had been no warm-up
                return attached[0], steps, settings.learning_rate, study.device, on_step if hook is None else hook

            rounds = measure(study, benchmark, train, fresh_round)
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
                utilisation=_plausible(study, "MFU", lambda: finetune_figures(model, tokens, measured.seconds, study.peaks)),
                # Untimed, and while the adapter is still attached: what fine-tuning did to the answers.
                after_finetune=_answers_with_adapter(study, base, candidate, model, rank)
                if study.settings.eval_after_finetune else None,
                step_median_s=median(later_steps) if later_steps else None,
                step_p90_s=percentile(later_steps, 90) if later_steps else None,
                adapter_bytes=adapter_file_bytes(model),
            )
            # Last, as it replaces the adapter the figures above read: the steps that reach the peak, or all.
            steps = batches if study.settings.memory_pass == "full" else peak_batches(batches)
            rounds.with_tensor_peak(tensor_peak(study, train, lambda hook: fresh_round(hook, steps))).fill(record)
    return record


def _plausible(study: Study, what: str, figures: Callable[[], Any]) -> Any:
    """Utilisation figures against the device's peaks; where one reads above 100 % of a calibrated peak, the
    calibration is taken again and the figures recomputed against it."""
    computed = figures()
    share = getattr(computed, "mfu", None) or getattr(computed, "bandwidth_utilisation", 0.0)
    if share > 1.0 and study.calibrate_again(what, share):
        computed = figures()
    return computed


def _answers_with_adapter(study: Study, base: BaseModel, candidate: Candidate, model: torch.nn.Module, rank: int) -> Answers:
    """The fine-tuned model answers the inference prompts; scored like the base model's answers."""
    prompts = encode_prompts(base.tokenizer, candidate, study.experiment.prompts, study.device)
    answers = generate_answers(model, base.tokenizer, prompts, study.generation_settings, study.device)
    return _scored_answers(study, base, candidate, answers, f".r{rank}")


def _scored_answers(study: Study, base: BaseModel, candidate: Candidate, answers: list[Answer], tag: str = "") -> Answers:
    """Write the answers CSV (grades already given are kept) and score it: automatic figures and human grade."""
    answers_csv = child(study.settings.report_dir / "answers", f"{candidate.name}.{base.weights}-{base.scale}{tag}", ".csv")
    write_answers(answers_csv, answers)
    grade, graded = read_grades(answers_csv)
    quality = score_answers([a.answer for a in answers], [a.reference or None for a in answers])
    return Answers(str(answers_csv), quality, grade, graded)


def run_inference(study: Study, benchmark: Any, candidate: Candidate, node: pytest.Item, say: Say) -> BenchmarkRecord:
    """The untuned base answers every prompt; time the generation."""
    generation = study.generation_settings
    record = new_record(study, Kind.INFERENCE, candidate, None, node.nodeid, generation)
    _resume_or_none(study, record, candidate, say)
    with recorded(study, benchmark, record):
        base = study.models.get(candidate)
        record.weights_revision = base.revision
        prompts = encode_prompts(base.tokenizer, candidate, study.experiment.prompts, study.device)
        warm_up_generation(base.model, prompts[0], base.tokenizer.pad_token_id)

        def on_prompt(index: int, answer: Any) -> None:
            if progress_due(index, len(prompts), PROGRESS_EVERY_PROMPTS):
                say(f"{candidate.name} inference: prompt {index}/{len(prompts)} ({answer.new_tokens} new tokens)")

        def arguments(hook: Callable[..., None] | None = None, asked: Sequence[EncodedPrompt] = prompts) -> tuple:
            return base.model, base.tokenizer, asked, generation, study.device, on_prompt if hook is None else hook

        rounds = measure(study, benchmark, generate_answers, arguments)
        answers = rounds.median.value
        # After the rounds, which tell which prompts reach the peak (each answer is seeded on its own).
        chosen = prompts if study.settings.memory_pass == "full" else [prompts[i] for i in peak_prompts(answers)]
        tensors = tensor_peak(study, generate_answers, lambda hook: arguments(hook, chosen))
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
            utilisation=_plausible(study, "decode bandwidth use", lambda: decode_figures(
                base.model, [(a.prompt_tokens, a.new_tokens) for a in answers], generate_seconds, study.peaks
            )),
            **latency_figures(answers),
        )
    return record
