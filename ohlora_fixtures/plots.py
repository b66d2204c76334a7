"""The report's plots, as PNG files: costs against LoRA rank, training losses, inference cost.

matplotlib's object API (Figure, not pyplot) needs no display and keeps no
global state, so rendering at the end of a pytest session is safe.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from matplotlib.figure import Figure

DPI = 110


@dataclass(frozen=True)
class CandidateSeries:
    """One candidate's measured figures, as the plots need them (only successful benchmarks)."""

    label: str
    finetune_seconds: Mapping[int, float] = field(default_factory=dict)
    finetune_peak_mib: Mapping[int, float] = field(default_factory=dict)
    losses: Mapping[int, Sequence[float]] = field(default_factory=dict)
    inference_seconds: float | None = None
    inference_peak_mib: float | None = None


MARKERS = "os^Dv<>pPX*h"


def _styles(series: Sequence[CandidateSeries]) -> dict[str, dict[str, str]]:
    # One colour and marker per candidate across every plot, so a reader can follow it from plot to
    # plot, and the marker still tells apart colours that look alike.
    return {
        s.label: {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)]}
        for index, s in enumerate(series)
    }


def _figure(title: str, subtitle: str, width: float = 7.0, height: float = 4.2, columns: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns, sharey=True, squeeze=False)[0].tolist()
    # Wrapped: the subtitle names device, dtype, weights and scale, and must not run off the image.
    figure.suptitle(title + "\n" + textwrap.fill(subtitle, width=int(width * 12)), fontsize=10)
    return figure, axes


def _by_rank(
    series: Sequence[CandidateSeries], pick: Callable[[CandidateSeries], Mapping[int, float]],
    title: str, ylabel: str, subtitle: str, path: Path,
) -> Path | None:
    plotted = [s for s in series if pick(s)]
    if not plotted:
        return None
    styles = _styles(series)
    figure, (axes,) = _figure(title, subtitle)
    ranks = sorted({rank for s in plotted for rank in pick(s)})
    for s in plotted:
        points = sorted(pick(s).items())
        axes.plot([r for r, _ in points], [v for _, v in points], label=s.label, **styles[s.label])
    axes.set_xscale("log", base=2)
    axes.set_xticks(ranks, [str(rank) for rank in ranks])
    axes.minorticks_off()
    axes.set_xlabel("LoRA rank")
    axes.set_ylim(bottom=0)  # from zero: a zoomed axis makes noise look like a difference
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.savefig(path)
    return path


def _losses(series: Sequence[CandidateSeries], subtitle: str, path: Path) -> Path | None:
    ranks = sorted({rank for s in series for rank in s.losses})
    if not ranks:
        return None
    styles = _styles(series)
    figure, axes = _figure("Training loss per optimizer step", subtitle, width=4.6 * len(ranks) + 2.0,
                           height=4.6, columns=len(ranks))
    for axis, rank in zip(axes, ranks):
        for s in series:
            if rank in s.losses:
                losses = s.losses[rank]
                axis.plot(range(1, len(losses) + 1), losses, label=s.label, color=styles[s.label]["color"],
                          linewidth=1.2)
        axis.set_title(f"rank {rank}", fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("training loss")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.savefig(path)
    return path


def _inference(series: Sequence[CandidateSeries], subtitle: str, memory_metric: str, path: Path) -> Path | None:
    plotted = [s for s in series if s.inference_seconds is not None and s.inference_peak_mib is not None]
    if not plotted:
        return None
    styles = _styles(series)
    figure, (axes,) = _figure("Inference: time per prompt vs peak memory", subtitle)
    for s in plotted:
        # No text labels on the points: close points would print over each other; the legend names them.
        axes.scatter(s.inference_peak_mib, s.inference_seconds, label=s.label, s=45, **styles[s.label])
    axes.set_xlim(left=0)
    axes.set_xlabel(f"peak memory (MiB, {memory_metric})")
    axes.set_ylabel("mean seconds per prompt")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.savefig(path)
    return path


def write_plots(
    series: Sequence[CandidateSeries], out_dir: Path, subtitle: str, memory_metric: str
) -> dict[str, Path]:
    """Write every plot that has data to `out_dir`; returns {plot name: PNG path}.

    `subtitle` says what the figures are (device, weights, scale), so a plot
    copied out of the report still cannot pass for something else; the memory
    axes name `memory_metric`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "finetune_time": _by_rank(series, lambda s: s.finetune_seconds, "Fine-tuning time vs LoRA rank",
                                  "seconds (timed training loop)", subtitle, out_dir / "finetune_time.png"),
        "finetune_memory": _by_rank(series, lambda s: s.finetune_peak_mib, "Fine-tuning peak memory vs LoRA rank",
                                    f"peak memory (MiB, {memory_metric})", subtitle, out_dir / "finetune_memory.png"),
        "training_loss": _losses(series, subtitle, out_dir / "training_loss.png"),
        "inference_cost": _inference(series, subtitle, memory_metric, out_dir / "inference_cost.png"),
    }
    return {name: path for name, path in written.items() if path is not None}
