"""Rendering: gather the records, then write leaderboard.md, leaderboard.html, results.csv and the plots.

A report is written whole or not at all: every file is rendered into a
staging folder beside the report (same file system), fsynced, then renamed
over the old one, plots first and leaderboard.md last. A kill or a full disk
while rendering leaves the previous report as it was; a kill during the
renames (microseconds) can leave new plots, csv or html beside the old
leaderboard.md, never a half-written file. A staging folder left by a kill is
removed by the next render.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from ohlora_fixtures.inputs import policy
from ohlora_fixtures.inputs.options import Settings
from ohlora_fixtures.inputs.paths import slug
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.records.log_index import IndexMismatch, LogIndex
from ohlora_fixtures.records.record import BenchmarkRecord, Kind, RunDescription, comparable
from ohlora_fixtures.report import cells, marks, plots, tradeoff, verdict
from ohlora_fixtures.report.document import document
from ohlora_fixtures.report.gather import Report, gather
from ohlora_fixtures.report.html import to_html
from ohlora_fixtures.report.markdown import to_markdown
from ohlora_fixtures.report.plots import CandidateSeries, TradeOffPlot, TradeOffPoint, write_plots
from ohlora_fixtures.report.stored import Deferred, Merged, NotARecord, Stored
from ohlora_fixtures.report.table_csv import write_csv
from ohlora_fixtures.words.language import text


class SessionRecords(Protocol):
    """What a session measured or resumed, and its index of the results log."""

    measured: list[BenchmarkRecord]
    log_index: LogIndex


class Session(Protocol):
    """What the end-of-session report reads of a pytest session (session/study.py's Study is one)."""

    settings: Settings
    run_id: str
    candidates: Sequence[Candidate]
    records: SessionRecords

    def describe(self) -> RunDescription: ...


@dataclass(frozen=True)
class ReportFiles:
    """What a render wrote."""

    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]
    answer: tuple[str, ...] = ()  # the verdict and the leaderboard as terminal lines (verdict.terminal_lines)

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
            busy_ranks=frozenset(r for r, rec in ok.items() if marks.is_busy(rec)),
            inference_busy=marks.is_busy(inference),
        ))
    return series


STAGING_PREFIX = ".render-"
RUNS_FOLDER = "runs"
def _tradeoff_plot(report: Report, lang: str) -> TradeOffPlot:
    view = tradeoff.trade_offs(report, lang)
    points = [TradeOffPoint(p.label, p.quality, p.costs["finetune_time"], p.costs["inference_time"], p.role,
                            finetune_busy=marks.BUSY in marks.criterion_marks(report, p.name, "finetune_time"),
                            inference_busy=marks.BUSY in marks.criterion_marks(report, p.name, "inference_time"))
              for p in view.points]
    quality = text("plot_quality_graded" if view.graded else "plot_quality_stand_in", lang)
    estimated = any(marks.TIME_ESTIMATE in marks.criterion_marks(report, p.name, criterion)
                    for p in view.points for criterion in ("finetune_time", "inference_time"))
    time_mark = text(marks.TIME_ESTIMATE, lang, device=report.time_device(lang)) if estimated else ""
    return TradeOffPlot(points, quality, report.ranks[-1], time_mark)


Drawn = dict[str, dict[str, tuple[str, bytes]]]
"""Plots already drawn, by everything they are drawn from: {key: {plot name: (file name, PNG bytes)}}."""


def _plots(report: Report, lang: str, subtitle: str, font: str | None, staging: Path, drawn: Drawn) -> dict[str, Path]:
    """Write the report's plots into `staging`, copied from `drawn` when the same figures were drawn before;
    {plot name: PNG path}."""
    drawn_from = (_series(report, lang), subtitle, report.memory_metrics, _tradeoff_plot(report, lang), font, lang)
    key = repr(drawn_from)
    if key in drawn:
        for file_name, content in drawn[key].values():
            (staging / file_name).write_bytes(content)
        return {name: staging / file_name for name, (file_name, _) in drawn[key].items()}
    images = write_plots(
        drawn_from[0], staging, subtitle, report.memory_metrics, lambda key, **values: text(key, lang, **values),
        drawn_from[3], font,
    )
    drawn[key] = {name: (path.name, path.read_bytes()) for name, path in images.items()}
    return images


def render(
    stored: Iterable[Stored] | Merged,
    candidates: Sequence[Candidate],
    settings: Settings,
    weights: Mapping[str, float],
    out: Path | None = None,
    note: str = "",
    drawn: Drawn | None = None,
) -> ReportFiles:
    """Write leaderboard.md, leaderboard.html, results.csv and the PNG plots to `out` (settings.report_dir).

    `note` is a sentence for the report's "what" section (e.g. which runs were merged and which left out);
    `drawn` holds plots an earlier render of the same caller drew, reused where the figures are the same.
    """
    report = gather(stored, candidates, settings, weights)
    report.note = note
    out = out or settings.report_dir
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
    lock = _lock(staging)
    try:
        # Korean words on a plot need a Hangul font; without one the plots stay English rather than show boxes.
        font = plots.hangul_font() if report.lang != "en" else None
        lang = report.lang if font or report.lang == "en" else "en"
        subtitle = "; ".join(dict.fromkeys(cells.run_label(r.run, lang) for r in report.all_records))
        if report.stand_in:
            subtitle = text("plot_stand_in", lang, what=report.stand_in_text(lang), labels=subtitle)
        images = _plots(report, lang, subtitle, font, staging, {} if drawn is None else drawn)
        blocks = document(report, images)
        (staging / "leaderboard.md").write_text(to_markdown(blocks), encoding="utf-8")
        (staging / "leaderboard.html").write_text(to_html(blocks, report.lang), encoding="utf-8")
        write_csv(report, staging / "results.csv")
        names = [*(path.name for path in images.values()), "results.csv", "leaderboard.html", "leaderboard.md"]
        for name in names:
            _fsync(staging / name)
        for name in names:  # leaderboard.md, the file people open, last
            os.replace(staging / name, out / name)
        for name in set(plots.PLOT_FILES.values()) - set(names):
            # An earlier render's plot that this one has no data for would show figures the report no longer does.
            (out / name).unlink(missing_ok=True)
        _fsync_folder(out)
    except OSError as error:
        if error.filename and Path(error.filename).parent == staging:
            # Name the file the user knows, not the hidden staging copy that was being written.
            raise OSError(error.errno, error.strerror, str(out / Path(error.filename).name)) from error
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)
    answer = tuple(verdict.terminal_lines(report))
    return ReportFiles(
        out / "leaderboard.md",
        out / "leaderboard.html",
        out / "results.csv",
        tuple(out / path.name for path in images.values()),
        answer,
    )


def _fsync(path: Path) -> None:
    with path.open("rb") as stream:
        os.fsync(stream.fileno())


def _fsync_folder(folder: Path) -> None:
    # The renames themselves reach the disk only when the folder is synced.
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


STAGING_LOCK = ".lock"
UNLOCKED_GRACE_S = 60  # a staging folder without its lock file yet: a render that has just begun, for so long


def _lock(staging: Path) -> int:
    """Hold a lock on `staging` while this render uses it; the kernel drops it when the process dies."""
    handle = os.open(staging / STAGING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _remove_stale_staging(out: Path) -> None:
    """Staging folders a killed render left behind: those whose lock nobody holds. A render still running
    (in another process) holds its folder's lock and is left alone."""
    for staging in out.glob(STAGING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if not staging.is_dir():
                continue
            try:
                handle = os.open(staging / STAGING_LOCK, os.O_RDWR)
            except FileNotFoundError:
                if time.time() - staging.stat().st_mtime > UNLOCKED_GRACE_S:
                    shutil.rmtree(staging, ignore_errors=True)
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError (an OSError): in use
                shutil.rmtree(staging, ignore_errors=True)
            finally:
                os.close(handle)


@dataclass(frozen=True)
class SessionReport:
    """The end-of-session reports: this run's own, and the top-level leaderboard it updated."""

    run: ReportFiles
    merged: ReportFiles

    @property
    def answer(self) -> tuple[str, ...]:
        """The merged leaderboard's verdict and ranking, for the top of the terminal summary."""
        return self.merged.answer

    def lines(self) -> list[str]:
        """One line per file of the merged leaderboard, and where this run's own report is, with its plots."""
        own_plots = ", ".join(path.name for path in self.run.plots) or "none"
        return [*self.merged.lines(), f"this run alone: {self.run.markdown} (plots: {own_plots})"]


def _read_log(study: Session, settings_now: str, defer: bool) -> tuple[Merged, Merged, set[str]]:
    """`_merge_log`, again from the index read anew where a line was not what the stored index said."""
    try:
        return _merge_log(study, settings_now, defer)
    except IndexMismatch:
        return _merge_log(study, settings_now, defer)


def _merge_log(study: Session, settings_now: str, defer: bool) -> tuple[Merged, Merged, set[str]]:
    """This run's records in the log, those of runs with its settings merged, and every run's id.

    One pass over the log's index (`LogIndex`: what each line holds, kept beside a long log), merging as it
    goes: a long log is never held whole. Records of other runs and settings are not read (their run ids are
    all the report's note needs); with `defer`, those of other runs with this run's settings are merged by
    their heads and only the ones kept are read and built (`Merged.kept` raises NotARecord where one of them
    is not valid).
    """
    index = study.records.log_index
    index.refresh()  # the lines this session wrote since it read the log
    source = str(index.path)
    this_run, same, every_run = Merged(), Merged(), set()
    for entry in index.lines():
        if entry.run_id is not None and entry.settings is not None:
            every_run.add(entry.run_id)
        ours, alike = entry.run_id == study.run_id, entry.settings == settings_now
        if alike and not ours and defer and entry.head is not None:
            same.add_deferred(entry.head, Deferred(index, entry, source))
        # A line that is not a valid run is built all the same, to be warned of like any unreadable line.
        elif (ours or alike or entry.settings is None) and (record := index.record(entry)) is not None:
            item = Stored(record, source)
            if ours:
                this_run.add(item)
            if alike:
                same.add(item)
    same.build_deferred()  # now, while a NotARecord can still send the caller back
    return this_run, same, every_run


def render_session(study: Session, ini: Callable[[str], object] | None = None) -> SessionReport | None:
    """The end-of-session reports: this run's own, then the top-level leaderboard.

    This run's report (report_dir/runs/RUN_ID/) holds this run's records in
    results.jsonl plus the session's own (resumed ones included). The
    top-level leaderboard (report_dir/) merges, from every run in the log with
    settings identical to this one's (`comparable`), the latest measurement of
    each benchmark: a partial run (`-k`, `--ohlora-models`) adds to a fuller
    leaderboard instead of replacing it. Under pytest-xdist the controller
    holds no measured records itself; the workers share its run_id, so the
    log filtered by run_id has them all. None when the session measured
    nothing (e.g. `pytest tests`). Records of other runs with other settings
    are not checked here (`python -m ohlora_fixtures report` reads them all).
    """
    settings = study.settings
    path = settings.results_path
    settings_now = comparable(study.describe())
    try:
        this_run, same, every_run = _read_log(study, settings_now, defer=True)
    except NotARecord:  # a deferred record kept is not valid: read again, building each, to warn and skip it
        this_run, same, every_run = _read_log(study, settings_now, defer=False)
    own = [Stored(r, str(path)) for r in study.records.measured]
    for item in own:
        this_run.add(item)
    if not this_run.kept:
        return None
    weights = policy.resolve_weights(ini, settings.ranking_weights)
    # This run's report and the merged leaderboard often show the same figures: the second copies the plots.
    drawn: Drawn = {}
    run_files = render(
        this_run, study.candidates, settings, weights, out=settings.report_dir / RUNS_FOLDER / slug(study.run_id),
        drawn=drawn,
    )
    other_runs = sorted(every_run - same.run_ids)
    note = text("merged_note", settings.lang, path=path, run=study.run_id)
    if other_runs:
        shown = ", ".join(other_runs[-5:]) + (", ..." if len(other_runs) > 5 else "")
        note += " " + text("merged_left_out", settings.lang, count=len(other_runs), runs=shown, folder=RUNS_FOLDER)
    for item in own:
        if comparable(item.record.run) == settings_now:  # resumed records, and this run's own
            same.add(item)
    merged_files = render(same, study.candidates, settings, weights, note=note, drawn=drawn)
    return SessionReport(run_files, merged_files)
