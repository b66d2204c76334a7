"""The recommendation: screen the candidates as the study did, apply the memory budget, rank the rest.

Screening (shown and applied): parameter count within bounds, a licence that
allows free use, Korean support. Hard constraint: the fine-tuning peak at the
largest LoRA rank fits the VRAM budget. Then a weighted score ranks the
survivors; its weights come from the defaults below, `ohlora_weight_*` ini
keys (setup.cfg) and `--ohlora-ranking-weights`, later ones winning.

This module only judges figures it is given; report.py gathers them.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import UsageError
from .message import Message
from .registry import Candidate
from .resources import LICENCES, bundled

DEFAULT_LICENCES = bundled(LICENCES)
INI_PREFIX = "ohlora_weight_"


@dataclass(frozen=True)
class Criterion:
    """One ranking criterion: what it reads and which way is better."""

    name: str
    label: str
    higher_is_better: bool
    default_weight: float
    unit: str = ""

    def show(self, value: float | None) -> Message:
        """A raw figure with its unit; memory in whole MiB."""
        if value is None:
            return Message("missing")
        figure = f"{value:,.0f}" if self.unit == "MiB" else f"{value:,.2f}"
        return Message(f"unit_{self.name}", value=figure)

    @property
    def title(self) -> Message:
        """The criterion's name, as the report shows it in any language."""
        return Message(f"criterion_{self.name}")


# The study's priorities: answer quality first, then the leaderboard average, then the costs.
CRITERIA: tuple[Criterion, ...] = (
    Criterion("quality", "answer quality", True, 4.0),
    Criterion("leaderboard", "leaderboard average", True, 2.0),
    Criterion("finetune_time", "fine-tuning time", False, 0.5, "s"),
    Criterion("finetune_memory", "fine-tuning peak memory", False, 0.5, "MiB"),
    Criterion("inference_time", "inference time", False, 0.5, "s/prompt"),
    Criterion("inference_memory", "inference peak memory", False, 0.5, "MiB"),
)
CRITERION_NAMES = tuple(criterion.name for criterion in CRITERIA)


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """`quality=4,leaderboard=2` -> (("quality", 4.0), ("leaderboard", 2.0)); ValueError if malformed."""
    pairs = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in CRITERION_NAMES:
            raise ValueError(part)
        weight = float(value)
        if not weight >= 0:
            raise ValueError(part)
        pairs.append((name, weight))
    return tuple(pairs)


parse_weights.expected = (  # type: ignore[attr-defined]
    "NAME=WEIGHT pairs separated by commas, weights >= 0, names from " + ", ".join(CRITERION_NAMES)
)


def ini_keys() -> dict[str, str]:
    """The `ohlora_weight_*` ini keys and their help texts."""
    return {
        INI_PREFIX + c.name: f"recommendation weight of {c.label} (default {c.default_weight:g})" for c in CRITERIA
    }


def resolve_weights(
    ini: Callable[[str], object] | None = None, override: Sequence[tuple[str, float]] | None = None
) -> dict[str, float]:
    """The ranking weights: defaults, then ini values (`ini(key)`; blank = unset), then the command line."""
    weights = {c.name: c.default_weight for c in CRITERIA}
    if ini is not None:
        for name in CRITERION_NAMES:
            raw = ini(INI_PREFIX + name)
            if raw is None or not str(raw).strip():
                continue
            try:
                weights[name] = float(str(raw))
            except ValueError:
                raise UsageError(f"ini key {INI_PREFIX}{name} = {raw!r} is not a number") from None
            if not weights[name] >= 0:
                raise UsageError(f"ini key {INI_PREFIX}{name} = {raw!r} must be >= 0")
    weights.update(dict(override or ()))
    if not sum(weights.values()) > 0:
        raise UsageError("the ranking weights are all zero; give at least one criterion a positive weight")
    return weights


@dataclass(frozen=True)
class LicencePolicy:
    """Which licences pass the screening (allowed), which exclude (refused); the rest are flagged."""

    allowed: tuple[str, ...]
    refused: tuple[str, ...]
    notes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def judge(self, licence: str) -> tuple[str, Message]:
        """("allowed" | "flagged" | "refused", a short note)."""
        key = licence.strip().lower()
        if any(fnmatch(key, pattern) for pattern in self.allowed):
            return "allowed", Message("licence_allowed", licence=licence)
        if any(fnmatch(key, pattern) for pattern in self.refused):
            return "refused", Message("licence_refused", licence=licence)
        if key in self.notes:
            return "flagged", Message.literal(self.notes[key])
        return "flagged", Message("licence_unlisted", licence=licence)


def load_licences(path: Path = DEFAULT_LICENCES) -> LicencePolicy:
    """The licence policy from a TOML file like data/licenses.toml."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"licence policy {path}: cannot be read: {error}") from None
    return LicencePolicy(
        allowed=tuple(p.lower() for p in document.get("allowed", ())),
        refused=tuple(p.lower() for p in document.get("refused", ())),
        notes={key.lower(): _note_texts(value) for key, value in document.get("notes", {}).items()},
    )


def _note_texts(value: str | Mapping[str, str]) -> dict[str, str]:
    # A note is one string (every language) or a table of strings per language: {en = "...", ko = "..."}.
    return dict(value) if isinstance(value, Mapping) else {"en": str(value)}


@dataclass(frozen=True)
class Rules:
    """What the recommendation applies: screening bounds, the budget and the weights."""

    max_params: float
    min_params: float
    vram_budget_mib: float
    weights: Mapping[str, float]
    licences: LicencePolicy


@dataclass(frozen=True)
class Evidence:
    """What is known of one candidate, gathered from the runs and the full-size plan.

    `figures` maps the cost criteria to raw values (None = not available);
    `sources` says where each came from. `finetune_peak_mib` is the figure the
    budget constraint reads. `human_grade` is None unless answers of pretrained
    weights were graded: grades of random-weight answers must not drive the choice.
    `measured` is whether any benchmark of the candidate finished with figures in
    the records the report reads: a candidate without one is never ranked.
    """

    candidate: Candidate
    largest_rank: int
    finetune_peak_mib: float | None
    finetune_peak_source: Message | str
    figures: Mapping[str, float | None]
    sources: Mapping[str, Message | str]
    human_grade: float | None = None
    failures: tuple[Message | str, ...] = ()
    measured: bool = False


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may be recommended, and why (not)."""

    eligible: bool
    reasons: tuple[Message | str, ...]
    flags: tuple[Message | str, ...]


@dataclass(frozen=True)
class Score:
    """One eligible candidate's raw and normalised figures and weighted score."""

    name: str
    raw: Mapping[str, float | None]
    normalised: Mapping[str, float]
    score: float
    place: int


@dataclass(frozen=True)
class Recommendation:
    """Verdicts for all, scores for the eligible, the final model and the backup with reasons."""

    verdicts: Mapping[str, Verdict]
    scores: tuple[Score, ...]
    quality_source: Message
    weights: Mapping[str, float]
    effective_weights: Mapping[str, float]
    final: str | None
    backup: str | None
    final_reason: Message
    backup_reason: Message | str


def screen(candidate: Candidate, rules: Rules) -> tuple[list[Message | str], list[Message | str]]:
    """The study's screening: (reasons to exclude, flags to show)."""
    reasons: list[Message | str] = []
    flags: list[Message | str] = []
    params = candidate.params_billions
    if params > rules.max_params:
        reasons.append(Message("params_above", params=f"{params:.2f}", bound=f"{rules.max_params:g}"))
    if params < rules.min_params:
        reasons.append(Message("params_below", params=f"{params:.2f}", bound=f"{rules.min_params:g}"))
    status, note = rules.licences.judge(candidate.license)
    if status == "refused":
        reasons.append(note)
    elif status == "flagged":
        flags.append(note)
    if candidate.korean == "none":
        reasons.append(Message("no_korean"))
    if candidate.approximate:
        flags.append(Message("approximate_flag"))
    return reasons, flags


def judge(evidence: Evidence, rules: Rules) -> Verdict:
    """Screening plus the hard constraints: fits the budget, benchmarks did not fail."""
    reasons, flags = screen(evidence.candidate, rules)
    peak = evidence.finetune_peak_mib
    if peak is not None and peak > rules.vram_budget_mib:
        reasons.append(Message("over_budget_reason", rank=evidence.largest_rank, peak=f"{peak:,.0f}",
                               source=evidence.finetune_peak_source, budget=f"{rules.vram_budget_mib:,.0f}"))
    elif peak is None:
        flags.append(Message("peak_unknown", rank=evidence.largest_rank))
    reasons.extend(evidence.failures)
    if not evidence.measured and not evidence.failures:
        reasons.append(Message("nothing_measured_for_it"))
    return Verdict(not reasons, tuple(reasons), tuple(flags))


def _finite(value: float | None) -> float | None:
    """The figure, or None when it is missing or not a finite number (a NaN must never rank best)."""
    return value if value is not None and math.isfinite(value) else None


def _normalise(values: Mapping[str, float | None], higher_is_better: bool) -> dict[str, float]:
    values = {name: _finite(value) for name, value in values.items()}
    known = [value for value in values.values() if value is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    normalised = {}
    for name, value in values.items():
        if value is None:
            normalised[name] = 0.0  # a missing figure counts as the worst
        elif high == low:
            normalised[name] = 1.0  # no spread: the criterion cannot tell them apart
        else:
            share = (value - low) / (high - low)
            normalised[name] = share if higher_is_better else 1.0 - share
    return normalised


def effective_weights(
    weights: Mapping[str, float], raw: Mapping[str, Mapping[str, float | None]], graded: bool,
) -> dict[str, float]:
    """The weights the score uses: a criterion counts only where some eligible candidate has a figure for it.

    Without human grades answer quality has no evidence of its own; handing its
    weight to the leaderboard average would count that criterion twice.
    """
    effective = dict(weights)
    for criterion in CRITERIA:
        if criterion.name == "quality" and not graded:
            effective["quality"] = 0.0
        elif not any(_finite(row[criterion.name]) is not None for row in raw.values()):
            effective[criterion.name] = 0.0
    return effective


def recommend(evidence: Sequence[Evidence], rules: Rules) -> Recommendation:
    """Judge every candidate, rank the eligible ones and name the final model and the backup."""
    verdicts = {e.candidate.name: judge(e, rules) for e in evidence}
    licence_status = {e.candidate.name: rules.licences.judge(e.candidate.license)[0] for e in evidence}
    eligible = [e for e in evidence if verdicts[e.candidate.name].eligible]
    graded = bool(eligible) and all(e.human_grade is not None for e in eligible)
    quality_source = Message("quality_from_grades" if graded else "quality_no_evidence")
    raw: dict[str, dict[str, float | None]] = {}
    for e in eligible:
        raw[e.candidate.name] = {
            "quality": e.human_grade if graded else None,
            "leaderboard": e.candidate.leaderboard_average,
            **{name: e.figures.get(name) for name in CRITERION_NAMES[2:]},
        }
    normalised: dict[str, dict[str, float]] = {name: {} for name in raw}
    for criterion in CRITERIA:
        column = _normalise({name: row[criterion.name] for name, row in raw.items()}, criterion.higher_is_better)
        for name, value in column.items():
            normalised[name][criterion.name] = value
    weights = effective_weights(rules.weights, raw, graded)
    total = sum(weights.values())
    # With no weighted evidence left every score is 0 and the leaderboard average breaks the tie.
    weighted = {
        name: sum(weights[c] * n for c, n in normalised[name].items()) / total if total else 0.0 for name in raw
    }
    leaderboard = {e.candidate.name: e.candidate.leaderboard_average or 0.0 for e in eligible}
    order = sorted(weighted, key=lambda name: (-weighted[name], -leaderboard[name]))
    scores = tuple(
        Score(name, raw[name], normalised[name], weighted[name], place) for place, name in enumerate(order, start=1)
    )
    final, backup, final_reason, backup_reason = _choose(scores, evidence, licence_status, rules, weights)
    return Recommendation(
        verdicts, scores, quality_source, dict(rules.weights), weights, final, backup, final_reason, backup_reason,
    )


def _choose(
    scores: Sequence[Score], evidence: Sequence[Evidence], licence_status: Mapping[str, str], rules: Rules,
    weights: Mapping[str, float],
) -> tuple[str | None, str | None, Message, Message | str]:
    """The first-placed candidate, and a backup.

    The study ended up using its backup because of the final model's licence,
    so when the final's licence is only flagged the backup is the best-placed
    candidate whose licence is on the allow-list (if any), else the runner-up.
    """
    if not scores:
        if not any(e.measured for e in evidence):
            return None, None, Message("nothing_measured_no_model"), ""
        return None, None, Message("no_candidate"), ""
    by_name = {e.candidate.name: e for e in evidence}
    final = scores[0]
    others = list(scores[1:])
    backup = None
    licence_backup = False
    if licence_status[final.name] != "allowed":
        backup = next((s for s in others if licence_status[s.name] == "allowed"), None)
        licence_backup = backup is not None
    if backup is None and others:
        backup = others[0]
    if len(scores) == 1:
        final_reason = Message("only_candidate", name=final.name)
    else:
        final_reason = Message("places_first", name=final.name, count=len(scores), score=f"{final.score:.2f}",
                               strengths=_strengths(final, by_name[final.name], rules, weights))
    if licence_status[final.name] != "allowed":
        note = rules.licences.judge(by_name[final.name].candidate.license)[1]
        final_reason = Message("but_licence_flagged", reason=final_reason, note=note)
    final_reason = Message("sentence", text=final_reason)
    if backup is None:
        return final.name, None, final_reason, Message("no_second")
    strengths = _strengths(backup, by_name[backup.name], rules, weights)
    if licence_backup:
        backup_reason = Message("licence_backup", name=backup.name, licence=by_name[backup.name].candidate.license,
                                final=final.name, place=backup.place, score=f"{backup.score:.2f}", strengths=strengths)
    else:
        backup_reason = Message("backup_places", name=backup.name, place=backup.place, score=f"{backup.score:.2f}",
                                strengths=strengths)
    return final.name, backup.name, final_reason, backup_reason


def _strengths(score: Score, evidence: Evidence, rules: Rules, weights: Mapping[str, float]) -> Message:
    """A clause naming the candidate's strongest figures and the budget figure it passed."""
    shown = [c for c in CRITERIA if weights[c.name] > 0 and _finite(score.raw[c.name]) is not None]
    best = [c for c in shown if score.normalised[c.name] == 1.0]
    listed = best or sorted(shown, key=lambda c: -score.normalised[c.name])[:2]
    figures = tuple(Message("criterion_figure", criterion=c.title, value=c.show(score.raw[c.name])) for c in listed)
    lead = Message("best_on" if best else "strongest_on", figures=figures)
    if evidence.finetune_peak_mib is not None:
        lead = Message("fits_budget", lead=lead, rank=evidence.largest_rank, peak=f"{evidence.finetune_peak_mib:,.0f}",
                       source=evidence.finetune_peak_source, budget=f"{rules.vram_budget_mib:,.0f}")
    return lead
