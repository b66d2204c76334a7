"""The cost-against-quality view: each candidate's quality and costs, and who dominates whom.

Only measured candidates take part. Quality is the human grade when every one
of them has one (of pretrained answers, as the recommendation reads it);
otherwise the leaderboard average stands in, for all of them, never a mix of
the two scales.
"""

from __future__ import annotations

from dataclasses import dataclass

from ohlora_fixtures.judge.pareto import dominated_by
from ohlora_fixtures.report.gather import Report

# The axes each view compares, quality first; costs are the recommendation's criteria.
VIEWS: dict[str, tuple[str, ...]] = {
    "finetune": ("finetune_time",),
    "inference": ("inference_time",),
    "all": ("finetune_time", "finetune_memory", "inference_time", "inference_memory"),
}


@dataclass(frozen=True)
class TradeOff:
    """One candidate in the view: its quality, its costs (None where unknown) and its role in the recommendation."""

    name: str
    label: str
    quality: float
    costs: dict[str, float | None]
    role: str  # "final", "backup" or ""


@dataclass(frozen=True)
class TradeOffs:
    """The candidates that have a quality figure, whether it is the human grade, and each view's dominance."""

    graded: bool
    points: tuple[TradeOff, ...]
    dominated: dict[str, dict[str, tuple[str, ...]]]  # view -> name -> dominating names; absent: a cost unknown

    def front(self, view: str) -> list[TradeOff]:
        """The view's non-dominated candidates."""
        return [p for p in self.points if self.dominated[view].get(p.name) == ()]


def trade_offs(report: Report, lang: str | None = None) -> TradeOffs:
    """The view's data, from the figures the recommendation reads (report.evidence)."""
    rec = report.recommendation
    # Only measured candidates: one with nothing but plan estimates has no time to compare.
    measured = [c for c in report.candidates
                if any(report.evidence[c.name].figures.get(k) is not None for k in ("finetune_time", "inference_time"))]
    graded = bool(measured) and all(report.evidence[c.name].human_grade is not None for c in measured)
    points = []
    for c in measured:
        e = report.evidence[c.name]
        quality = e.human_grade if graded else c.leaderboard_average
        if quality is None:
            continue
        role = "final" if c.name == rec.final else "backup" if c.name == rec.backup else ""
        points.append(
            TradeOff(c.name, report.name(c, lang), quality, {k: e.figures.get(k) for k in VIEWS["all"]}, role)
        )
    dominated = {}
    for view, costs in VIEWS.items():
        known = {
            p.name: (p.quality, *(p.costs[k] for k in costs))
            for p in points
            if all(p.costs[k] is not None for k in costs)
        }
        dominated[view] = dominated_by(known, (True, *(False for _ in costs)))
    return TradeOffs(graded, tuple(points), dominated)
