"""results.csv: one row per kept benchmark, every figure of its flat view, for pandas and spreadsheet users.

Its `marks` column says which warnings the row's figures carry ("stand-in": random weights or a tiny-scale
model; "busy": timed on a busy machine), as the report's cells do; `seconds_device` which device timed
`seconds`, and for a stand-in `full_size_seconds_estimate` the time model's full-size estimate on
`full_size_estimate_device` (the --ohlora-gpu card, else this CPU), as the verdict reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ohlora_fixtures.records.record import Kind
from ohlora_fixtures.report import marks
from ohlora_fixtures.report.gather import Report


def results_frame(report: Report) -> Any:
    """One row per benchmark, nested figures flattened (`quality.chrf`, `run.versions.torch`), for pandas users."""
    import pandas as pd

    rows = []
    for stored in report.records.values():
        record = stored.record
        # Sorted, as results.jsonl lines were before the typed record: the columns keep their order.
        row = json.loads(json.dumps(record.flat(), sort_keys=True))
        grade = report.grades.get((record.candidate, None if record.kind is Kind.INFERENCE else record.rank))
        if grade is not None:
            # The grade as it stands now, not as it stood when the benchmark ran.
            graded = {"human_grade": grade.score, "human_graded": grade.graded}
            if record.kind is Kind.INFERENCE:
                row.update(graded)
            else:
                row["quality_after_finetune"] = {**row["quality_after_finetune"], **graded}
        if isinstance(row.get("losses"), list):
            row["losses"] = json.dumps(row["losses"])
        row["source"] = stored.source
        row["seconds_device"] = record.run.device_name or record.run.device
        if marks.is_stand_in(record) and record.ok:
            figure = report.time_estimate(record)
            row["full_size_seconds_estimate"] = figure
            row["full_size_estimate_device"] = report.time_device("en") if figure is not None else None
        # The marks the report's cells carry, so a figure read from the CSV keeps its warning.
        row["marks"] = ";".join(name for name, marked in (("stand-in", marks.is_stand_in(record)),
                                                          ("busy", marks.is_busy(record))) if marked)
        rows.append(row)
    frame = pd.json_normalize(rows, sep=".")
    first = [c for c in ("candidate", "kind", "rank", "status", "marks", "seconds", "peak_mib") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_csv(report: Report, path: Path) -> None:
    """Write results.csv."""
    results_frame(report).to_csv(path, index=False)
