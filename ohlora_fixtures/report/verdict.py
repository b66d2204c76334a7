"""The sentences that qualify the verdict: what decided it, ties within measurement noise, busy figures."""

from __future__ import annotations

from .. import selection
from ..message import in_language
from .gather import Report
from .language import text


def verdict_lines(report: Report) -> list[str]:
    """What decided the choice, any tie and how it was broken, and any busy figure it rests on, in the
    report's language; nothing when no model is named."""
    rec, lang = report.recommendation, report.lang
    if rec.final is None:
        return []
    lines = [text("decided_line", lang, sources=_decided(report))]
    for role, tie in (("role_final", rec.final_tie), ("role_backup", rec.backup_tie)):
        if tie:
            lines.append(text("tie_line", lang, role=text(role, lang), names=", ".join(tie),
                              rule=selection.tie_rule().in_(lang)))
    if rec.busy_figures:
        titles = {c.name: c.title.in_(lang) for c in selection.CRITERIA}
        figures = "; ".join(text("busy_figure", lang, name=name, criterion=titles[criterion], why=why)
                            for name, criterion, why in rec.busy_figures)
        lines.append(text("busy_verdict", lang, figures=figures))
    return lines


def _decided(report: Report) -> str:
    """Each weighted criterion and where its figures came from, e.g. "fine-tuning time: full-size estimate ..."."""
    rec, lang = report.recommendation, report.lang
    parts = []
    for criterion in selection.CRITERIA:
        if rec.effective_weights.get(criterion.name, 0) <= 0:
            continue
        if criterion.name in ("quality", "leaderboard"):
            source = rec.quality_source.in_(lang) if criterion.name == "quality" else text("leaderboard_source", lang)
        else:
            found = dict.fromkeys(in_language(e.sources[criterion.name], lang) for e in report.evidence.values())
            source = " / ".join(found)
        parts.append(f"{criterion.title.in_(lang)} ({source})")
    return "; ".join(parts)
