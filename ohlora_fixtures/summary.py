"""The short end-of-session table in the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .study import Study

_HEADER = ("candidate", "benchmark", "status", "time s", "peak MiB", "final loss", "eval loss")


def _cell(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(study: "Study") -> list[str]:
    """One line per benchmark of this session, then what the figures are."""
    rows = [_HEADER]
    for record in study.records:
        rows.append((
            record["candidate"] + (" (approx.)" if record.get("approximate") else ""),
            f"finetune r{record['rank']}" if record["kind"] == "finetune" else "inference",
            record["status"] + (" over budget" if record.get("over_budget") else ""),
            _cell(record.get("seconds"), 2),
            _cell(record.get("peak_mib"), 0),
            _cell(record.get("final_loss"), 4),
            _cell(record.get("eval_loss"), 4),
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    run = study.describe()
    metric = next((r["memory_metric"] for r in study.records if r.get("memory_metric")), "n/a")
    lines.append(
        f"{run['weights']} weights, {run['scale']} scale, {run['dtype']} on {run['device_name']}; "
        f"peak memory = {metric}; results: {study.settings.results_path}"
    )
    if run["weights"] == "random":
        lines.append("random weights: times and memory are real for these shapes; answers and losses say nothing of quality")
    return lines
