"""Gather and merge: the kept records, re-read grades and full-size plans, in one `Report` the renderers read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import gpus, policy
from ohlora_fixtures.inputs.options import Settings
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.judge import selection
from ohlora_fixtures.judge.quality import read_grades
from ohlora_fixtures.measure import step_time
from ohlora_fixtures.measure.machine_load import busy_reasons
from ohlora_fixtures.records.figures import DTYPE_BYTES
from ohlora_fixtures.records.plans import CandidatePlan
from ohlora_fixtures.records.record import Answers, BenchmarkRecord, Kind, RunDescription, Status
from ohlora_fixtures.report.plan_store import plans_for
from ohlora_fixtures.report.reference import StudyResults, load_study
from ohlora_fixtures.report.stored import Merged, Stored
from ohlora_fixtures.words.display import display_name
from ohlora_fixtures.words.language import text, word
from ohlora_fixtures.words.message import Message

Key = tuple[str, str, int | None]


@dataclass(frozen=True)
class Grade:
    """A human grade read back from an answers CSV at render time."""

    score: float | None
    graded: int
    note: Message | str = ""


def reread_grade(answers: Answers, source: str) -> Grade:
    """The answers CSV's grades now (a person may have filled them in since the run).

    The path is tried as recorded, then beside the source file (`answers/NAME`),
    so a report dir that was copied elsewhere still works.
    """
    stored_grade, graded = answers.human_grade, answers.human_graded
    if not answers.answers_csv:
        return Grade(stored_grade, graded, Message("no_answers_file"))
    recorded = Path(answers.answers_csv)
    for path in (recorded, Path(source).parent / "answers" / recorded.name):
        if path.is_file():
            # Unreadable cells are warned about (file, line, value) and left out; never raises.
            score, count = read_grades(path)
            return Grade(score, count)
    return Grade(stored_grade, graded, Message("answers_file_missing", path=answers.answers_csv))


def is_measured_peak(record: BenchmarkRecord) -> bool:
    """Whether a record's peak is a GPU peak of a full-size model: the only one the VRAM budget can read."""
    return record.run.scale == "full" and record.memory is not None and record.memory.metric.startswith("cuda")


@dataclass(frozen=True)
class RunInfo:
    """One merged run: its description, files, and how many benchmarks of it the report uses."""

    run_id: str
    description: RunDescription
    sources: tuple[str, ...]
    used: int
    statuses: Mapping[str, int]

    def outcomes(self, lang: str) -> str:
        """What the run's used benchmarks measured, e.g. "3 ok, 29 skipped"."""
        return ", ".join(f"{count} {word(status, status, lang)}" for status, count in sorted(self.statuses.items())) \
            or text("nothing", lang)


@dataclass
class Report:
    """Everything the renderers need, gathered once."""

    lang: str
    settings: Settings
    candidates: list[Candidate]
    records: dict[Key, Stored]
    ranks: list[int]
    runs: list[RunInfo]
    runs_read: int
    replaced: int
    plan_dtype: str
    plans: dict[str, CandidatePlan]
    grades: dict[tuple[str, int | None], Grade]
    weights: Mapping[str, float]
    study: StudyResults | None
    note: str = ""  # set by the renderer: which runs a merged leaderboard took and left out

    @cached_property
    def evidence(self) -> dict[str, selection.Evidence]:
        """What the recommendation reads of each candidate."""
        return {c.name: _evidence(self, c) for c in self.candidates}

    @cached_property
    def time_rates(self) -> step_time.DeviceRates | None:
        """The device every stand-in's full-size time estimate is for (step_time.py): the card --ohlora-gpu
        names, else this machine, at the median of each figure the measured records' calibrations give (one
        figure for all keeps merged runs whose calibrations differ from ranking a candidate by its run's
        calibration rather than its model); None where no record carries them."""
        if self.card is not None:
            return step_time.gpu_rates(*self.card)
        records = self.measured_records
        used = [u for r in records for u in (r.finetune and r.finetune.utilisation,
                                             r.inference and r.inference.utilisation) if u]
        figures = [u.time_model for u in used if u.time_model]
        if not figures:
            # Records from before the time model carry only the peaks they were judged against: matmul rate and
            # bandwidth, no per-operation overhead (a few per cent of a full-size CPU step) and no separate
            # matrix-vector bandwidth.
            tflops = [u.peak_tflops for u in used if hasattr(u, "mfu")]
            gbps = [u.peak_gbps for u in used if hasattr(u, "bandwidth_utilisation")]
            figures = [{"tflops": t, "gbps": g, "overhead_us": 0.0, "gemv_gbps": g} for t in tflops for g in gbps]
            if not figures:
                return None

        def middle(key: str) -> float:
            values = sorted(figure[key] for figure in figures)
            return values[(len(values) - 1) // 2]

        run_bytes = max(DTYPE_BYTES.get(r.run.dtype, 4) for r in records)
        return step_time.cpu_rates(middle("tflops"), middle("gbps"), middle("overhead_us"), middle("gemv_gbps"),
                                   bytes_scale=run_bytes / DTYPE_BYTES[self.plan_dtype])

    def time_estimate(self, record: BenchmarkRecord) -> float | None:
        """The full-size seconds the time model gives for a stand-in record's work (a fine-tuning run, or one
        answer) on `time_rates`' device; None where it cannot."""
        plan = self.plans.get(record.candidate)
        if plan is None or not is_stand_in(record):
            return None
        if record.kind is Kind.FINETUNE:
            return _finetune_time(self, plan, record, record.rank or 0).value
        return _answer_time(self, plan, record).value

    def time_device(self, lang: str | None = None) -> str:
        """The device the time estimates are for, as every time figure names it: a card's name or "this CPU"."""
        rates = self.time_rates
        if rates is None or rates.device == step_time.THIS_CPU:
            return text("this_cpu", lang or self.lang)
        return rates.device

    @cached_property
    def card(self) -> tuple[gpus.Gpu, gpus.GpuTable] | None:
        """The card --ohlora-gpu names, with the table it comes from; None without one."""
        if self.settings.gpu is None:
            return None
        table = gpus.load_gpus()
        return table.select([self.settings.gpu])[0], table

    @property
    def budget_mib(self) -> float:
        """The screening's memory budget: the named card's room for tensors (its memory less the CUDA context and
        fine-tuning's cuBLAS workspaces, estimates from data/gpus.toml), else --ohlora-vram-budget-mb."""
        if self.card is None:
            return self.settings.vram_budget_mb
        card, table = self.card
        return card.memory_mib - table.cuda_context_mib - card.workspace_mib(gpus.TRAINING_HANDLES)

    @cached_property
    def recommendation(self) -> selection.Recommendation:
        """Screening, budget, ranking: the final model and the backup."""
        s = self.settings
        rules = selection.Rules(
            max_params=s.max_params, min_params=s.min_params, vram_budget_mib=self.budget_mib,
            weights=self.weights, licences=policy.load_licences(s.licenses),
        )
        return selection.recommend(list(self.evidence.values()), rules)

    def name(self, candidate: Candidate, lang: str | None = None) -> str:
        """The candidate's display name; approximate stand-ins are marked wherever they appear."""
        return display_name(candidate.name, candidate.approximate, lang or self.lang)

    def record(self, name: str, kind: Kind, rank: int | None = None) -> BenchmarkRecord | None:
        """The kept record of one benchmark, or None when it was not run."""
        stored = self.records.get((name, kind.value, rank))
        return stored.record if stored else None

    def ok_record(self, name: str, kind: Kind, rank: int | None = None) -> BenchmarkRecord | None:
        """The kept record of one benchmark if it finished with figures, else None."""
        record = self.record(name, kind, rank)
        return record if record is not None and record.ok else None

    @property
    def all_records(self) -> list[BenchmarkRecord]:
        """Every kept record."""
        return [stored.record for stored in self.records.values()]

    @property
    def measured_records(self) -> list[BenchmarkRecord]:
        """The kept records that finished with figures: what the banners and the ranking may speak of."""
        return [record for record in self.all_records if record.ok]

    @property
    def measured_nothing(self) -> bool:
        """Whether no kept record has figures (e.g. every benchmark skipped): the report names no model."""
        return not self.measured_records

    @property
    def stand_in(self) -> list[str]:
        """What makes these figures stand-ins (text keys "random_weights", "tiny_scale"); empty for real ones."""
        found = []
        if any(r.run.weights == "random" for r in self.measured_records):
            found.append("random_weights")
        if any(r.run.scale == "tiny" for r in self.measured_records):
            found.append("tiny_scale")
        return found

    @property
    def memory_metrics(self) -> str:
        """The peak-memory metrics the records use, e.g. "cpu_peak_rss"."""
        return (
            ", ".join(sorted({r.memory.metric for r in self.measured_records if r.memory and r.memory.metric})) or "n/a"
        )

    def stand_in_text(self, lang: str | None = None) -> str:
        """E.g. "random weights and tiny-scale models"."""
        lang = lang or self.lang
        return text("and", lang).join(text(key, lang) for key in self.stand_in)

    @property
    def run_labels(self) -> list[str]:
        """Each distinct run setting of the measured records, e.g. "CPU: x, float32, random weights, tiny scale"."""
        return list(dict.fromkeys(r.run.label for r in self.measured_records))

    @property
    def mixed_runs(self) -> bool:
        """Whether the merged records differ in device, dtype, weights or scale."""
        return len(self.run_labels) > 1


def gather(
    stored: Iterable[Stored] | Merged,
    candidates: Sequence[Candidate],
    settings: Settings,
    weights: Mapping[str, float],
) -> Report:
    """Merge the records (or take them merged), re-read grades and plan every candidate at full size; the report
    judges them lazily."""
    merged = stored if isinstance(stored, Merged) else Merged(stored)
    kept, replaced = list(merged.kept.values()), merged.replaced
    known = {candidate.name for candidate in candidates}
    unknown = sorted({item.record.candidate for item in kept} - known)
    if unknown:
        raise UsageError(
            f"records name candidate(s) {unknown} that the registry {settings.candidates} does not list; "
            "pass the registry they were run with (--candidates)"
        )
    records = {item.key: item for item in kept}
    ranks = sorted(
        {item.record.rank for item in kept if item.record.kind is Kind.FINETUNE}
        | {rank for item in kept for rank in item.record.run.ranks}
    ) or list(settings.ranks)
    ordered = sorted(candidates, key=lambda c: (c.leaderboard_average is None, -(c.leaderboard_average or 0.0)))
    first_run = kept[0].record.run if kept else None
    gpu_dtypes = [item.record.run.dtype for item in kept if item.record.run.device.startswith("cuda")]
    # A GPU run plans at its own dtype; a CPU run at bf16, the dtype a GPU run of the study uses.
    plan_dtype = gpu_dtypes[0] if gpu_dtypes else "bfloat16"
    batch_size = first_run.batch_size if first_run else settings.batch_size
    max_new_tokens = first_run.max_new_tokens if first_run else settings.max_new_tokens
    folders = [Path(item.source).parent for item in kept if item.source.endswith(".jsonl")]
    plans = plans_for(ordered, ranks, plan_dtype, batch_size, max_new_tokens, first_run, settings, folders)
    return Report(
        lang=settings.lang,
        settings=settings,
        candidates=ordered,
        records=records,
        ranks=ranks,
        runs=_runs(kept),
        runs_read=len(merged.run_ids),
        replaced=replaced,
        plan_dtype=plan_dtype,
        plans=plans,
        grades=_reread_grades(records),
        weights=weights,
        study=load_study() if settings.compare_study else None,
    )


def _reread_grades(records: Mapping[Key, Stored]) -> dict[tuple[str, int | None], Grade]:
    """Grades of the base model's answers (rank None) and of each adapter's (rank r)."""
    grades = {}
    for (name, _, rank), stored in records.items():
        record = stored.record
        if record.kind is Kind.INFERENCE and record.ok and record.inference is not None:
            grades[(name, None)] = reread_grade(record.inference.answers, stored.source)
        if record.kind is Kind.FINETUNE and record.finetune and record.finetune.after_finetune:
            grades[(name, rank)] = reread_grade(record.finetune.after_finetune, stored.source)
    return grades


def _runs(kept: Sequence[Stored]) -> list[RunInfo]:
    runs: dict[str, tuple[RunDescription, list[str], Counter]] = {}
    for item in kept:
        run = item.record.run
        description, sources, statuses = runs.setdefault(run.run_id or "unknown", (run, [], Counter()))
        statuses[item.record.status.value] += 1
        if item.source not in sources:
            sources.append(item.source)
    return [
        RunInfo(run_id, d, tuple(sources), sum(statuses.values()), dict(statuses))
        for run_id, (d, sources, statuses) in runs.items()
    ]


def _evidence(report: Report, candidate: Candidate) -> selection.Evidence:
    """What the recommendation reads of one candidate, each figure with its source and spread."""
    largest = report.ranks[-1]
    plan = report.plans[candidate.name]
    finetune = report.record(candidate.name, Kind.FINETUNE, largest)
    ok_finetune = report.ok_record(candidate.name, Kind.FINETUNE, largest)
    ok_inference = report.ok_record(candidate.name, Kind.INFERENCE)
    estimate = Message("plan_estimate", dtype=plan.dtype)
    if finetune and finetune.status is Status.OOM and is_measured_peak(finetune):
        ft_peak, ft_source = None, Message("oom_full")
    elif ok_finetune and is_measured_peak(ok_finetune):
        ft_peak, ft_source = ok_finetune.peak_mib, Message("measured_metric", metric=ok_finetune.memory.metric)
    else:
        ft_peak = next(r.finetune_peak_estimate_mib for r in plan.ranks if r.rank == largest)
        ft_source = estimate
    if ok_inference and is_measured_peak(ok_inference):
        inf_peak, inf_source = ok_inference.peak_mib, Message("measured_metric", metric=ok_inference.memory.metric)
    else:
        inf_peak, inf_source = plan.inference_peak_estimate_mib, estimate
    failures = tuple(
        failure(record) for record in report.all_records if record.candidate == candidate.name and record.status.failed
    )
    grade = report.grades.get((candidate.name, None))
    pretrained = ok_inference is not None and ok_inference.run.weights == "pretrained"
    times = {
        "finetune_time": _finetune_time(report, plan, ok_finetune, largest),
        "inference_time": _answer_time(report, plan, ok_inference),
    }
    return selection.Evidence(
        candidate=candidate,
        largest_rank=largest,
        finetune_peak_mib=ft_peak,
        finetune_peak_source=ft_source,
        figures={
            "finetune_time": times["finetune_time"].value,
            "finetune_memory": ft_peak,
            "inference_time": times["inference_time"].value,
            "inference_memory": inf_peak,
        },
        sources={
            "finetune_time": times["finetune_time"].source,
            "finetune_memory": Message("at_rank", what=ft_source, rank=largest),
            "inference_time": times["inference_time"].source,
            "inference_memory": inf_source,
        },
        human_grade=grade.score if grade and pretrained else None,
        failures=failures,
        measured=any(r.ok for r in report.all_records if r.candidate == candidate.name),
        spreads={name: time.spread for name, time in times.items()},
        busy={name: time.busy for name, time in times.items() if time.busy},
    )


@dataclass(frozen=True)
class TimeFigure:
    """A time criterion's figure as the verdict reads it: the value, where it came from, how far it may be off,
    and why its machine was busy (empty: it was not, or the figure is an estimate)."""

    value: float | None
    source: Message
    spread: selection.Spread = selection.EXACT
    busy: str = ""


def is_stand_in(record: BenchmarkRecord) -> bool:
    """Whether a record's times are of a tiny stand-in: its seconds say nothing of the real model's."""
    return record.run.scale != "full"


def _measured_time(record: BenchmarkRecord, value: float, source: Message) -> TimeFigure:
    # Why, as a message the report words in its own language (the record keeps its English why_busy too).
    load = record.load
    busy = (
        Message(
            "busy_why",
            reasons=tuple(busy_reasons(load.cores, load.other_cores, load.steal, load.probe_before, load.probe_after)),
        )
        if load and load.busy
        else ""
    )
    return TimeFigure(value, source, selection.time_spread(record.round_seconds, bool(busy)), busy)


def _finetune_time(report: Report, plan: CandidatePlan, record: BenchmarkRecord | None, rank: int) -> TimeFigure:
    """Measured seconds of a full-size run; for a stand-in, the full-size model's estimated seconds."""
    if record is None or record.finetune is None:
        return TimeFigure(None, Message("not_measured"))
    rates = report.time_rates
    rank_plan = next((r for r in plan.ranks if r.rank == rank), None)
    # The run's own optimizer steps: a stand-in takes the steps the full-size model would, on the same data.
    steps = record.finetune.steps
    if not is_stand_in(record):
        # A real run's time beside the model's estimate of the same work on the device that ran it.
        own = _own_rates(record, record.finetune.utilisation, plan)
        estimated = (f"{step_time.finetune_seconds(plan, rank_plan, own, steps):,.1f} s"
                     if own and rank_plan and rank_plan.step_ops else "-")
        return _measured_time(record, record.seconds, Message("measured_at_beside", rank=rank, estimate=estimated))
    if rates is None or rank_plan is None or not rank_plan.step_ops:
        return TimeFigure(None, Message("no_full_size_time"))
    seconds = step_time.finetune_seconds(plan, rank_plan, rates, steps)
    return TimeFigure(seconds, Message("full_size_time_estimate_at", rank=rank, device=report.time_device(),
                                       steps=steps))


def _answer_time(report: Report, plan: CandidatePlan, record: BenchmarkRecord | None) -> TimeFigure:
    """Measured seconds per answer of a full-size run; for a stand-in, the full-size model's estimate."""
    if record is None or record.inference is None:
        return TimeFigure(None, Message("not_measured"))
    figures = record.inference
    rates = report.time_rates
    if not is_stand_in(record):
        own = _own_rates(record, figures.utilisation, plan)
        new_tokens = round(figures.new_tokens / figures.prompts) if figures.prompts else 0
        estimated = f"{step_time.answer_seconds(plan, own, new_tokens):,.2f} s" if own and plan.decode_ops else "-"
        return _measured_time(record, figures.mean_seconds_per_prompt, Message("measured_beside", estimate=estimated))
    if rates is None or not plan.decode_ops:
        return TimeFigure(None, Message("no_full_size_time"))
    # An answer of the full --ohlora-max-new-tokens: where a stand-in's random weights stop says nothing of
    # where the real model would.
    tokens = record.run.max_new_tokens
    seconds = step_time.answer_seconds(plan, rates, tokens)
    return TimeFigure(seconds, Message("full_size_time_estimate", device=report.time_device(), tokens=tokens))


def _own_rates(record: BenchmarkRecord, utilisation: Any, plan: CandidatePlan) -> step_time.DeviceRates | None:
    """The time model's rates of the CPU that measured a record (its own calibration); None on a GPU, whose
    card the record names only by the driver's words, or where the record predates the figures."""
    figures = getattr(utilisation, "time_model", None)
    if not figures or not record.run.device.startswith("cpu"):
        return None
    return step_time.cpu_rates(figures["tflops"], figures["gbps"], figures["overhead_us"], figures["gemv_gbps"],
                               bytes_scale=DTYPE_BYTES.get(record.run.dtype, 4) / DTYPE_BYTES[plan.dtype])


def benchmark_title(record: BenchmarkRecord) -> Message:
    """E.g. "fine-tuning r16" or "inference", in any report language."""
    return (
        Message("benchmark_finetune", rank=record.rank)
        if record.kind is Kind.FINETUNE
        else Message("benchmark_inference")
    )


def failure(record: BenchmarkRecord) -> Message:
    """Why a benchmark has no figures: which one, its status and its error (quoted as the program wrote it)."""
    error = Message("error_text", error=record.error) if record.error else Message("no_message")
    return Message(
        "failure_reason", benchmark=benchmark_title(record), status=Message(record.status.value), error=error
    )
