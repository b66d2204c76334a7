"""The short end-of-session table in the terminal."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Sequence

from ohlora_fixtures.records.record import Kind, Status
from ohlora_fixtures.words.display import aligned, display_name

if TYPE_CHECKING:
    from ohlora_fixtures.session.study import Study

# Each time column names its unit: a whole run (every step, or every prompt) and one answer.
_HEADER = ("candidate", "benchmark", "status", "s per run", "s per answer", "peak MiB", "final loss", "eval loss")


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(study: "Study", answer: Sequence[str] = ()) -> list[str]:
    """The answer (the report's verdict and leaderboard, when one was rendered), then one line per benchmark of
    this session, then what the figures are."""
    rows = [_HEADER]
    for record in study.records.measured:
        figures = record.finetune
        busy = " (busy)" if record.load is not None and record.load.busy else ""
        per_answer = record.inference.mean_seconds_per_prompt if record.inference else None
        rows.append((
            display_name(record.candidate, record.approximate),
            f"finetune r{record.rank}" if record.kind is Kind.FINETUNE else "inference",
            record.status.value + (" over budget" if record.over_budget else ""),
            _cell(record.seconds, 2) + (busy if record.seconds is not None else ""),
            _cell(per_answer, 2) + (busy if per_answer is not None else ""),
            _cell(record.peak_mib, 0),
            _cell(figures.final_loss if figures else None, 4),
            _cell(figures.eval_loss if figures else None, 4),
        ))
    lines = [*answer, *([""] if answer else []), *aligned(rows)]
    run = study.describe()
    metric = next((r.memory.metric for r in study.records.measured if r.memory), "n/a")
    lines.append(
        f"{run.weights} weights, {run.scale} scale, {run.dtype} on {run.device_name}; "
        f"peak memory = {metric}; results: {study.settings.results_path}"
    )
    lines += _busy_lines(study)
    if any(r.status is Status.INTERRUPTED for r in study.records.measured):
        lines.append(
            "interrupted: every benchmark that finished is kept (results.jsonl, pytest-benchmark's JSON); "
            "run again with --ohlora-resume to measure only the rest"
        )
    if run.weights == "random":
        lines.append(
            "random weights: times and memory are real for these shapes; answers and losses say nothing of quality"
        )
    return lines


def _busy_lines(study: "Study") -> list[str]:
    """What a busy machine cost this session: its re-measures, and the busy figures kept as they were, by why."""
    budget = study.remeasure
    kept = Counter(r.load.kept_busy for r in study.records.measured if r.load is not None and r.load.busy)
    if not budget.attempts and not kept:
        return []
    why = {"stand-in": "a stand-in run: its times decide nothing", "budget": "the re-measure share was spent",
           "retries": "busy at every attempt", "": "recorded before this was noted"}
    elapsed = budget.clock() - budget.started
    return [
        f"busy machine: {budget.attempts} re-measure attempt(s), {budget.spent:.0f} s of the session's "
        f"{elapsed:.0f} s (--ohlora-remeasure-share {budget.share:.0%}); busy figures kept: "
        + (", ".join(f"{count} ({why.get(reason, reason)})" for reason, count in sorted(kept.items())) or "none")
    ]
