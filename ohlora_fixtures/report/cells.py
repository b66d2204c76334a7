"""How one figure reads in a table cell: number formats, and the word that stands where a figure is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.records.record import BenchmarkRecord, RunDescription
from ohlora_fixtures.report import marks
from ohlora_fixtures.report.gather import Report
from ohlora_fixtures.words.language import text, word
from ohlora_fixtures.words.message import in_language


def seconds(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.1f}"


def mib(value: float) -> str:
    return f"{value:,.0f}"


def millis(value: float) -> str:
    """Sub-second times in milliseconds (per-token and per-step times are fractions of a second), others in seconds."""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:,.2f} s"


def rate(value: float) -> str:
    return f"{value:,.1f}"


def tokens(value: float) -> str:
    return f"{value:,.1f}"


def mean_answer_tokens(record: BenchmarkRecord) -> float | None:
    """An inference record's mean new tokens per answer (each counted to its end-of-sequence token)."""
    figures = record.inference
    return figures.new_tokens / figures.prompts if figures and figures.prompts else None


def seconds_per_new_token(record: BenchmarkRecord) -> float | None:
    """An inference record's whole `generate` time over its new tokens: the prefill is spread over the answer."""
    figures = record.inference
    return 1 / figures.tokens_per_second if figures and figures.tokens_per_second > 0 else None


def mib_fine(value: float) -> str:
    # adapters of tiny stand-ins are a fraction of a MiB
    return f"{value:,.2f}"


def loss(value: float) -> str:
    return f"{value:.3f}"


def share(value: float) -> str:
    return f"{value:.0%}"


def percent(value: float) -> str:
    # utilisation of tiny models is a few percent: whole percents would round it away
    return f"{value:.1%}"


def count(value: int) -> str:
    return f"{value:,}"


def status_cell(report: Report, record: BenchmarkRecord | None, value: Callable[[BenchmarkRecord], str]) -> str:
    """A measured figure, or why there is none (not run, skipped, OOM, failed, interrupted): never blank.

    A figure measured on a stand-in carries the stand-in mark, so the cell keeps its warning wherever it goes.
    """
    if record is None:
        return text("not_run", report.lang)
    if not record.ok:
        return text(record.status.value, report.lang)
    cell = value(record)
    # Only a figure takes the mark (a digit in it): a sentence such as "n/a: valid rows have no answers" does not.
    stand_in = marks.is_stand_in(record) and any(ch.isdigit() for ch in cell)
    return marks.joined(cell, [marks.STAND_IN] if stand_in else [], report.lang)


def timed(record: BenchmarkRecord, value: float | None, lang: str) -> str:
    """A time figure of the record's median round; with several rounds, the range over them beside it (scaled
    from the rounds' totals to this figure), and a mark where the machine was busy (load.py)."""
    if value is None:
        return text("na", lang)
    cell = seconds(value)
    rounds = record.round_seconds
    if len(rounds) > 1 and record.seconds:
        scale = value / record.seconds
        cell += f" ({seconds(min(rounds) * scale)}–{seconds(max(rounds) * scale)}, {len(rounds)}×)"
    return marks.joined(cell, [marks.BUSY] if marks.is_busy(record) else [], lang)


def figure(value: float | None, fmt: Callable[[float], str], lang: str) -> str:
    """A figure, or n/a where the benchmark ran but the figure does not apply."""
    return text("na", lang) if value is None else fmt(value)


def eval_loss_cell(record: BenchmarkRecord, lang: str) -> str:
    figures = record.finetune
    # The study's own file leaves its valid rows unanswered: there is no loss to compute, and the cell says so.
    if figures is not None and figures.eval_loss is None and figures.eval_rows == 0:
        return text("no_valid_answers", lang)
    return figure(figures.eval_loss if figures else None, loss, lang)


def peak_cell(report: Report, record: BenchmarkRecord) -> str:
    cell = figure(record.peak_mib, mib, report.lang)
    if record.peak_mib is not None and record.peak_mib > report.budget_mib:
        cell += f" ⚠ {text('over_budget', report.lang)}"
    return cell


def beside_study(report: Report, cell: str, theirs: float | None, fmt: Callable[[float], str]) -> str:
    """The cell, followed by the reference study's figure when --compare-study asks for it."""
    if report.study is None or theirs is None:
        return cell
    return f"{cell} · {text('study_t4', report.lang)}: {fmt(theirs)}"


def beside_report(report: Report, path: str | None) -> str | None:
    """A path relative to the report's folder when it lies inside it: short, and still right if the folder moves."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(report.settings.report_dir.resolve()))
    except ValueError:
        return path


def params(report: Report, candidate: Candidate, with_count: bool = False) -> str:
    """The parameter count in billions, from the exact count where one is known (the registry's or the full-size
    plan's), so the label never contradicts it; the registry's label is named beside it where it differs."""
    plan = report.plans.get(candidate.name)
    exact = candidate.params_exact or (plan.total_params if plan else None)
    if not exact:
        return candidate.params_label
    label = f"{exact / 1e9:.2f} B"
    count = f"{exact:,}" if with_count else ""
    listed = candidate.params_label.split()[0]
    try:
        agrees = round(exact / 1e9, len(listed.partition(".")[2])) == float(listed)
    except ValueError:
        agrees = False
    notes = [count] + ([] if agrees else [text("params_listed", report.lang, label=candidate.params_label)])
    notes = [note for note in notes if note]
    return label + (f" ({'; '.join(notes)})" if notes else "")


def leaderboard_cell(average: float | None, lang: str) -> str:
    return text("na", lang) if average is None else f"{average:.2f}"


def run_label(run: RunDescription, lang: str) -> str:
    """What a run was measured with, e.g. "CPU: x, float32, random weights, tiny scale", in `lang`."""
    return text(
        "run_label",
        lang,
        device=run.device_name or run.device,
        dtype=run.dtype,
        weights=word(f"weights_{run.weights}", run.weights, lang),
        scale=word(f"scale_{run.scale}", run.scale, lang),
    )


def sentences(items: Iterable[object], lang: str) -> str:
    """Reasons or flags (messages, or plain strings given as they are) in `lang`, joined with "; "."""
    return "; ".join(str(in_language(item, lang)) for item in items)
