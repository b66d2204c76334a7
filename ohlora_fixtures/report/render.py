"""Rendering: gather the records, then write leaderboard.md, leaderboard.html, results.csv and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from .. import results, selection
from .. import plots
from ..plots import CandidateSeries, TradeOffPlot, TradeOffPoint, write_plots
from ..record import Kind
from ..registry import Candidate
from ..settings import Settings
from .document import document
from . import cells, tradeoff
from .gather import Report, gather
from .html import to_html
from .language import text
from .markdown import to_markdown
from .stored import Stored
from .table_csv import write_csv

if TYPE_CHECKING:
    from ..study import Study


@dataclass(frozen=True)
class ReportFiles:
    """What a render wrote."""

    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]

    def lines(self) -> list[str]:
        """One line per file, for the terminal."""
        return [f"report: {self.markdown}", f"report: {self.html}", f"results table: {self.csv}",
                f"plots: {', '.join(str(p) for p in self.plots) or 'none'}"]


def _series(report: Report, lang: str) -> list[CandidateSeries]:
    series = []
    for c in report.candidates:
        ok = {r: rec for r in report.ranks if (rec := report.ok_record(c.name, Kind.FINETUNE, r))}
        inference = report.ok_record(c.name, Kind.INFERENCE)
        series.append(CandidateSeries(
            label=report.name(c, lang),
            finetune_seconds={r: rec.seconds for r, rec in ok.items()},
            finetune_peak_mib={r: rec.peak_mib for r, rec in ok.items() if rec.peak_mib is not None},
            losses={r: list(rec.finetune.losses) for r, rec in ok.items() if rec.finetune and rec.finetune.losses},
            inference_seconds=inference.inference.mean_seconds_per_prompt if inference else None,
            inference_peak_mib=inference.peak_mib if inference else None,
        ))
    return series


def _tradeoff_plot(report: Report, lang: str) -> TradeOffPlot:
    view = tradeoff.trade_offs(report, lang)
    points = [TradeOffPoint(p.label, p.quality, p.costs["finetune_time"], p.costs["inference_time"], p.role)
              for p in view.points]
    quality = text("plot_quality_graded" if view.graded else "plot_quality_stand_in", lang)
    return TradeOffPlot(points, quality, report.ranks[-1])


def render(
    stored: Iterable[Stored], candidates: Sequence[Candidate], settings: Settings, weights: Mapping[str, float],
) -> ReportFiles:
    """Write leaderboard.md, leaderboard.html, results.csv and the PNG plots to settings.report_dir."""
    report = gather(stored, candidates, settings, weights)
    out = settings.report_dir
    out.mkdir(parents=True, exist_ok=True)
    # Korean words on a plot need a Hangul font; without one the plots stay English rather than show boxes.
    font = plots.hangul_font() if report.lang != "en" else None
    lang = report.lang if font or report.lang == "en" else "en"
    subtitle = "; ".join(dict.fromkeys(cells.run_label(r.run, lang) for r in report.all_records))
    if report.stand_in:
        subtitle = text("plot_stand_in", lang, what=report.stand_in_text(lang), labels=subtitle)
    images = write_plots(_series(report, lang), out, subtitle, report.memory_metrics,
                         lambda key, **values: text(key, lang, **values), _tradeoff_plot(report, lang), font)
    blocks = document(report, images)
    files = ReportFiles(out / "leaderboard.md", out / "leaderboard.html", out / "results.csv", tuple(images.values()))
    files.markdown.write_text(to_markdown(blocks), encoding="utf-8")
    files.html.write_text(to_html(blocks, report.lang), encoding="utf-8")
    write_csv(report, files.csv)
    return files


def render_session(study: "Study", ini: Callable[[str], object] | None = None) -> ReportFiles | None:
    """The end-of-session report: this run's records in results.jsonl plus the session's own.

    Under pytest-xdist the controller holds no records itself; the workers
    share its run_id, so the log filtered by run_id has them all. None when
    the session measured nothing (e.g. `pytest tests`).
    """
    settings = study.settings
    path = settings.results_path
    logged = [Stored(r, str(path)) for r in results.read(path) if r.run.run_id == study.run_id]
    own = [Stored(r, str(path)) for r in study.records]
    if not logged and not own:
        return None
    weights = selection.resolve_weights(ini, settings.ranking_weights)
    return render([*logged, *own], study.candidates, settings, weights)
