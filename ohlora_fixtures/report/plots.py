"""The report's plots, as PNG files: costs against LoRA rank, training losses, inference cost, cost against quality.

matplotlib's object API (Figure, not pyplot) needs no display and keeps no
global state, so rendering at the end of a pytest session is safe. Every word
on a plot comes from `words(key, **values)`, so the caller picks the language;
a Korean plot needs a Hangul-capable font (`hangul_font`), else the caller
asks for English words rather than let the glyphs come out as boxes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ohlora_fixtures.judge.pareto import front

DPI = 110
# The smallest word on any plot, in points: at DPI 110 it is 15 px tall in the PNG, so a page that shows the
# image at 2/3 of its width or more (leaderboard.html shows it at its own size when it fits) keeps it >= 10 px.
MIN_FONT_PT = 10
LOSS_PANELS_PER_ROW = 3
# Every plot a report can hold, by name: the file each is written to when it has data.
PLOT_FILES = {
    "finetune_time": "finetune_time.png", "finetune_memory": "finetune_memory.png",
    "training_loss": "training_loss.png", "inference_cost": "inference_cost.png", "pareto": "pareto.png",
}

Words = Callable[..., str]
"""`words(key, **values)`: a plot's title or label in the report's language."""

# Families known to carry Hangul, most common first; any CJK family of Noto covers Korean.
HANGUL_FONTS = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "NanumGothic",
    "Nanum Gothic",
    "NanumBarunGothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Malgun Gothic",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "UnDotum",
    "Baekmuk Gulim",
)


def hangul_font() -> str | None:
    """The first installed font family (as matplotlib knows them) that can draw Hangul, or None. Where none is
    known, the font files installed since matplotlib built its font cache are added first: matplotlib does not
    look again, and a Korean font installed after it would leave the plots in English."""
    found = _known_hangul_font()
    if found is None and _add_fonts_installed_since_the_cache():
        found = _known_hangul_font()
    return found


def _known_hangul_font() -> str | None:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in HANGUL_FONTS if name in installed), None)


def _add_fonts_installed_since_the_cache() -> bool:
    known = {getattr(font, "fname", None) for font in font_manager.fontManager.ttflist}
    added = False
    for path in font_manager.findSystemFonts():
        if path in known:
            continue
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError):  # a file that is no font matplotlib reads: not ours to judge
            continue
        added = True
    return added


@dataclass(frozen=True)
class CandidateSeries:
    """One candidate's measured figures, as the plots need them (only successful benchmarks)."""

    label: str
    finetune_seconds: Mapping[int, float] = field(default_factory=dict)
    finetune_peak_mib: Mapping[int, float] = field(default_factory=dict)
    losses: Mapping[int, Sequence[float]] = field(default_factory=dict)
    inference_seconds: float | None = None
    inference_peak_mib: float | None = None
    busy_ranks: frozenset[int] = frozenset()  # fine-tuning times taken on a busy machine (load.py)
    inference_busy: bool = False


@dataclass(frozen=True)
class TradeOffPoint:
    """One candidate on the cost-against-quality plot."""

    label: str
    quality: float
    finetune_seconds: float | None
    inference_seconds: float | None
    role: str = ""  # "final", "backup" or ""
    finetune_busy: bool = False  # the time was taken on a busy machine
    inference_busy: bool = False


@dataclass(frozen=True)
class TradeOffPlot:
    """What the cost-against-quality plot shows: its points, the quality axis' name and the largest rank."""

    points: Sequence[TradeOffPoint]
    quality_label: str
    largest_rank: int
    time_mark: str = ""
    """Appended to the time axes' names where their figures are estimates, e.g. "(est., T4)"."""


MARKERS = "os^Dv<>pPX*h"


def _styles(series: Sequence[CandidateSeries]) -> dict[str, dict[str, str]]:
    # One colour and marker per candidate across every plot, so a reader can follow it from plot to
    # plot, and the marker still tells apart colours that look alike.
    return {
        s.label: {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)]} for index, s in enumerate(series)
    }


def _figure(
    title: str, subtitle: str, width: float = 7.0, height: float = 4.2, columns: int = 1, rows: int = 1
) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).flatten().tolist()
    # Wrapped: the subtitle names device, dtype, weights and scale, and must not run off the image.
    figure.suptitle(title + "\n" + textwrap.fill(subtitle, width=int(width * 10)), fontsize=MIN_FONT_PT + 1)
    return figure, axes


def _busy_handle(words: Words) -> Line2D:
    """The legend's entry for a hollow marker: a time taken on a busy machine."""
    return Line2D(
        [],
        [],
        linestyle="none",
        marker="o",
        markersize=8,
        markerfacecolor="none",
        markeredgecolor="0.2",
        label=words("plot_busy"),
    )


def _legend(axes, words: Words, busy: bool) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if busy:
        handles.append(_busy_handle(words))
        labels.append(words("plot_busy"))
    axes.legend(handles, labels, fontsize=MIN_FONT_PT, loc="center left", bbox_to_anchor=(1.01, 0.5))


def _by_rank(
    series: Sequence[CandidateSeries],
    pick: Callable[[CandidateSeries], Mapping[int, float]],
    title: str,
    ylabel: str,
    subtitle: str,
    path: Path,
    words: Words,
    timed: bool = False,
) -> Path | None:
    """One line per candidate over the ranks; with `timed`, a time taken on a busy machine is a hollow marker on a
    dotted line, so noise is not read as a property of the model."""
    plotted = [s for s in series if pick(s)]
    if not plotted:
        return None
    styles = _styles(series)
    figure, (axes,) = _figure(title, subtitle)
    ranks = sorted({rank for s in plotted for rank in pick(s)})
    any_busy = False
    for s in plotted:
        points = sorted(pick(s).items())
        busy = [timed and rank in s.busy_ranks for rank, _ in points]
        any_busy = any_busy or any(busy)
        quiet = [index for index, flag in enumerate(busy) if not flag]
        axes.plot(
            [r for r, _ in points],
            [v for _, v in points],
            label=s.label,
            markevery=quiet,
            markersize=7,
            linestyle=":" if any(busy) else "-",
            **styles[s.label],
        )
        hollow = [(r, v) for (r, v), flag in zip(points, busy) if flag]
        if hollow:
            axes.scatter(
                [r for r, _ in hollow],
                [v for _, v in hollow],
                s=60,
                facecolors="none",
                linewidths=1.5,
                edgecolors=styles[s.label]["color"],
                marker=styles[s.label]["marker"],
                zorder=3,
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks(ranks, [str(rank) for rank in ranks])
    axes.minorticks_off()
    axes.set_xlabel(words("plot_lora_rank"))
    axes.set_ylim(bottom=0)  # from zero: a zoomed axis makes noise look like a difference
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    _legend(axes, words, any_busy)
    figure.savefig(path)
    return path


def _losses(series: Sequence[CandidateSeries], subtitle: str, path: Path, words: Words) -> Path | None:
    ranks = sorted({rank for s in series for rank in s.losses})
    if not ranks:
        return None
    styles = _styles(series)
    # At most LOSS_PANELS_PER_ROW panels side by side: a wider image would be shown scaled down, its words
    # below MIN_FONT_PT's 10 px on a 1280 px page.
    columns = min(len(ranks), LOSS_PANELS_PER_ROW)
    rows = -(-len(ranks) // columns)
    figure, axes = _figure(
        words("plot_loss_title"),
        subtitle,
        width=4.6 * columns + 2.0,
        height=0.6 + 4.0 * rows,
        columns=columns,
        rows=rows,
    )
    for axis in axes[len(ranks) :]:
        axis.set_visible(False)
    for axis, rank in zip(axes, ranks):
        for s in series:
            if rank in s.losses:
                losses = s.losses[rank]
                axis.plot(
                    range(1, len(losses) + 1), losses, label=s.label, color=styles[s.label]["color"], linewidth=1.2
                )
        axis.set_title(words("plot_rank", rank=rank), fontsize=MIN_FONT_PT)
        axis.set_xlabel(words("plot_step"))
        axis.grid(alpha=0.3)
    for axis in axes[::columns]:
        axis.set_ylabel(words("plot_loss_axis"))
    _legend(axes[columns - 1], words, False)
    figure.savefig(path)
    return path


def _inference(
    series: Sequence[CandidateSeries], subtitle: str, memory_metric: str, path: Path, words: Words
) -> Path | None:
    plotted = [s for s in series if s.inference_seconds is not None and s.inference_peak_mib is not None]
    if not plotted:
        return None
    styles = _styles(series)
    figure, (axes,) = _figure(words("plot_inference_title"), subtitle)
    for s in plotted:
        # No text labels on the points: close points would print over each other; the legend names them.
        style = styles[s.label]
        hollow = {"facecolors": "none", "edgecolors": style["color"], "linewidths": 1.5} if s.inference_busy else {}
        axes.scatter(
            s.inference_peak_mib,
            s.inference_seconds,
            label=s.label,
            s=55,
            marker=style["marker"],
            **(hollow or {"color": style["color"]}),
        )
    axes.set_xlim(left=0)
    axes.set_xlabel(words("plot_peak_axis", metric=memory_metric))
    axes.set_ylabel(words("plot_seconds_per_prompt"))
    axes.grid(alpha=0.3)
    _legend(axes, words, any(s.inference_busy for s in plotted))
    figure.savefig(path)
    return path


def _tradeoff(
    series: Sequence[CandidateSeries], view: TradeOffPlot | None, subtitle: str, path: Path, words: Words
) -> Path | None:
    """Quality against fine-tuning time (largest rank) and against inference time, each panel's front joined."""
    panels = (
        [
            (
                lambda p: p.finetune_seconds,
                lambda p: p.finetune_busy,
                " ".join(filter(None, [words("plot_finetune_cost", rank=view.largest_rank), view.time_mark])),
            ),
            (lambda p: p.inference_seconds, lambda p: p.inference_busy,
             " ".join(filter(None, [words("plot_seconds_per_prompt"), view.time_mark]))),
        ]
        if view
        else []
    )
    panels = [(cost, busy, label) for cost, busy, label in panels if any(cost(p) is not None for p in view.points)]
    if not panels:
        return None
    styles = _styles(series)
    figure, axes = _figure(
        words("plot_tradeoff_title"), subtitle, width=5.0 * len(panels) + 2.2, height=4.6, columns=len(panels)
    )
    any_busy = False
    for axis, (cost, busy, label) in zip(axes, panels):
        points = [p for p in view.points if cost(p) is not None]
        for p in points:
            style = styles.get(p.label, {"color": "C7", "marker": "o"})
            hollow = {"facecolors": "none", "edgecolors": style["color"], "linewidths": 1.5} if busy(p) else {}
            any_busy = any_busy or busy(p)
            axis.scatter(
                cost(p),
                p.quality,
                s=55,
                label=p.label,
                zorder=3,
                marker=style["marker"],
                **(hollow or {"color": style["color"]}),
            )
        on_front = front({p.label: (p.quality, cost(p)) for p in points}, (True, False))
        line = sorted((p for p in points if p.label in on_front), key=cost)
        axis.plot(
            [cost(p) for p in line],
            [p.quality for p in line],
            color="0.35",
            linestyle="--",
            linewidth=1.0,
            zorder=2,
            label=words("plot_front"),
        )
        for p in points:
            if p.role:
                # A ring around the chosen ones and a word beside them, so the mark survives grey-scale printing.
                axis.scatter(
                    cost(p),
                    p.quality,
                    s=220,
                    facecolors="none",
                    edgecolors="black",
                    linewidths=1.3,
                    zorder=4,
                    marker="*" if p.role == "final" else "s",
                )
                axis.annotate(
                    words(p.role), (cost(p), p.quality), textcoords="offset points", xytext=(7, 7), fontsize=MIN_FONT_PT
                )
        axis.margins(x=0.1, y=0.12)  # room for the words beside the chosen ones
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(view.quality_label)
    _legend(axes[-1], words, any_busy)
    figure.savefig(path)
    return path


def write_plots(
    series: Sequence[CandidateSeries],
    out_dir: Path,
    subtitle: str,
    memory_metric: str,
    words: Words,
    tradeoff: TradeOffPlot | None = None,
    font: str | None = None,
) -> dict[str, Path]:
    """Write every plot that has data to `out_dir`; returns {plot name: PNG path}.

    `subtitle` says what the figures are (device, weights, scale), so a plot
    copied out of the report still cannot pass for something else; the memory
    axes name `memory_metric`. `font` is the family to draw with (None:
    matplotlib's default), `tradeoff` the cost-against-quality view.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = {"font.size": MIN_FONT_PT, **({"font.family": [font, "sans-serif"]} if font else {})}
    with matplotlib.rc_context(rc):
        file = {name: out_dir / file_name for name, file_name in PLOT_FILES.items()}
        written = {
            "finetune_time": _by_rank(
                series,
                lambda s: s.finetune_seconds,
                words("caption_finetune_time"),
                words("plot_finetune_seconds"),
                subtitle,
                file["finetune_time"],
                words,
                timed=True,
            ),
            "finetune_memory": _by_rank(
                series,
                lambda s: s.finetune_peak_mib,
                words("caption_finetune_memory"),
                words("plot_peak_axis", metric=memory_metric),
                subtitle,
                file["finetune_memory"],
                words,
            ),
            "training_loss": _losses(series, subtitle, file["training_loss"], words),
            "inference_cost": _inference(series, subtitle, memory_metric, file["inference_cost"], words),
            "pareto": _tradeoff(series, tradeoff, subtitle, file["pareto"], words),
        }
    return {name: path for name, path in written.items() if path is not None}
