"""The short end-of-session table in the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .record import Kind, Status
from .text import aligned, display_name

if TYPE_CHECKING:
    from .study import Study

_HEADER = ("candidate", "benchmark", "status", "time s", "peak MiB", "final loss", "eval loss")


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(study: "Study") -> list[str]:
    """One line per benchmark of this session, then what the figures are."""
    rows = [_HEADER]
    for record in study.records:
        figures = record.finetune
        rows.append((
            display_name(record.candidate, record.approximate),
            f"finetune r{record.rank}" if record.kind is Kind.FINETUNE else "inference",
            record.status.value + (" over budget" if record.over_budget else ""),
            _cell(record.seconds, 2),
            _cell(record.peak_mib, 0),
            _cell(figures.final_loss if figures else None, 4),
            _cell(figures.eval_loss if figures else None, 4),
        ))
    lines = aligned(rows)
    run = study.describe()
    metric = next((r.memory.metric for r in study.records if r.memory), "n/a")
    lines.append(
        f"{run.weights} weights, {run.scale} scale, {run.dtype} on {run.device_name}; "
        f"peak memory = {metric}; results: {study.settings.results_path}"
    )
    if any(r.status is Status.INTERRUPTED for r in study.records):
        lines.append(
            "interrupted: every benchmark that finished is kept (results.jsonl, pytest-benchmark's JSON); "
            "run again with --ohlora-resume to measure only the rest"
        )
    if run.weights == "random":
        lines.append("random weights: times and memory are real for these shapes; answers and losses say nothing of quality")
    return lines
