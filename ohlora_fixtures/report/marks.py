"""Marks that travel with a figure: taken on a busy machine, a plan estimate, measured on a stand-in.

Each mark is a short text appended to the cell (in every table and the CSV),
and `legend` says, beside the table, what the marks found in it mean, so a
table copied out of the report alone still carries its warnings. An
approximate stand-in model is marked on its name (text.APPROXIMATE), which
every row that holds its figures shows.
"""

from __future__ import annotations

from typing import Iterable

from ohlora_fixtures.records.record import BenchmarkRecord, Kind
from ohlora_fixtures.report import gather
from ohlora_fixtures.report.blocks import Table
from ohlora_fixtures.report.gather import Report, is_measured_peak
from ohlora_fixtures.words.display import APPROXIMATE
from ohlora_fixtures.words.language import text

BUSY, ESTIMATE, STAND_IN = "busy_mark", "estimate_mark", "stand_in_mark"  # text keys of the marks
TIME_ESTIMATE = "time_estimate_mark"  # a time estimate names its device: "(est., T4)", "(est., this CPU)"
# Which record each measured cost criterion of the recommendation comes from.
_KINDS = {"finetune_time": Kind.FINETUNE, "finetune_memory": Kind.FINETUNE,
          "inference_time": Kind.INFERENCE, "inference_memory": Kind.INFERENCE}


def is_stand_in(record: BenchmarkRecord) -> bool:
    """Whether a record's figures were measured on a stand-in: random weights or a tiny-scale model."""
    return record.run.weights == "random" or record.run.scale == "tiny"


def is_busy(record: BenchmarkRecord | None) -> bool:
    """Whether the record's rounds ran while the machine was busy (load.py): its times are suspect."""
    return record is not None and record.load is not None and record.load.busy


def joined(cell: str, marks: Iterable[str], lang: str, device: str = "") -> str:
    """The cell with its marks (text keys) after it, e.g. "2.35 (busy) †"; `device` names a time estimate's."""
    return " ".join([cell, *(text(mark, lang, device=device) for mark in marks)])


def figure_marks(record: BenchmarkRecord, timed: bool = False) -> list[str]:
    """The marks (text keys) of one measured figure of `record`: busy (times only: memory does not depend on
    the load), stand-in."""
    marks = [BUSY] if timed and is_busy(record) else []
    if is_stand_in(record):
        marks.append(STAND_IN)
    return marks


def criterion_marks(report: Report, name: str, criterion: str) -> list[str]:
    """The marks (text keys) of the figure the recommendation read for one candidate's criterion."""
    kind = _KINDS.get(criterion)
    if kind is None or report.evidence[name].figures.get(criterion) is None:
        return []
    record = report.ok_record(name, kind, report.ranks[-1] if kind is Kind.FINETUNE else None)
    if criterion.endswith("_memory") and (record is None or not is_measured_peak(record)):
        return [ESTIMATE]  # the full-size plan's estimate, not a measurement
    if criterion.endswith("_time") and (record is None or gather.is_stand_in(record)):
        return [TIME_ESTIMATE]  # a stand-in's time is never read: the full-size model's estimated seconds are
    return figure_marks(record, timed=criterion.endswith("_time")) if record else []


def legend(table: Table, report: Report) -> str:
    """What the marks found in the table's cells mean, one short clause each; empty when it has none."""
    lang = report.lang
    found = " ".join(" ".join(row) for row in table.rows)
    clauses = []
    device = report.time_device(lang)
    for key, meaning, values in (
        (BUSY, "legend_busy", {}),
        (TIME_ESTIMATE, "legend_time_estimate", {"device": device}),
        (ESTIMATE, "legend_estimate", {}),
        (STAND_IN, "legend_stand_in", {"what": report.stand_in_text() or text("stand_in_models", lang)}),
    ):
        mark = text(key, lang, device=device)
        if mark in found:
            clauses.append(text(meaning, lang, mark=mark, **values))
    approximate = APPROXIMATE.get(lang, APPROXIMATE["en"]).strip()
    if approximate in found:
        clauses.append(text("legend_approximate", lang, mark=approximate))
    return text("legend", lang, marks="; ".join(clauses)) if clauses else ""
