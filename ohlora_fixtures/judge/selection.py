"""The recommendation: screen the candidates as the study did, apply the memory budget, rank the rest.

Screening (shown and applied): parameter count within bounds, a licence that
allows free use, Korean support. Hard constraint: the fine-tuning peak at the
largest LoRA rank fits the VRAM budget. Then a weighted score ranks the
survivors; its weights come from the defaults below, `ohlora_weight_*` ini
keys (setup.cfg) and `--ohlora-ranking-weights`, later ones winning.

A place is won only by more than the figures' spread: every figure carries
the range it may truly lie in (`Spread`), and a candidate beats the next one
only when it still scores higher with its own figures at the bad end of their
ranges and the other's at the good end (`margin`). Otherwise the two are tied
within measurement noise, the report says so, and the tie is broken by a stated
rule (`tie_rule`): the higher leaderboard average, then a licence on the
allow-list, then the name.

This module only judges figures it is given; report/gather.py gathers them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ohlora_fixtures.inputs.policy import CRITERIA, CRITERION_NAMES, LicencePolicy
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.words.message import Message


@dataclass(frozen=True)
class Rules:
    """What the recommendation applies: screening bounds, the budget and the weights."""

    max_params: float
    min_params: float
    vram_budget_mib: float
    weights: Mapping[str, float]
    licences: LicencePolicy


NOISE_FLOOR = 0.15
"""How far a time measured in one timed round may be off, each way: one round of the default 25 answers read
1.88-2.50 ms per token across 8 quiet processes on this project's CPU (about +-14 %)."""
ROUNDS_FLOOR = 0.03
"""The least spread a time of several rounds is given, each way: rounds in one process agree more closely than
runs in separate processes do."""


@dataclass(frozen=True)
class Spread:
    """Where a figure may truly lie: between value x low and value x high (1, 1: known exactly)."""

    low: float = 1.0
    high: float = 1.0

    @classmethod
    def relative(cls, share: float) -> "Spread":
        """+- `share` of the value."""
        return cls(max(0.0, 1.0 - share), 1.0 + share)

    def bounds(self, value: float) -> tuple[float, float]:
        """(lowest, highest) true value."""
        return value * self.low, (value * self.high if math.isfinite(self.high) else math.inf)


EXACT = Spread()


def time_spread(round_seconds: Sequence[float], busy: bool) -> Spread:
    """The spread of a measured time: its rounds' half-range (at least ROUNDS_FLOOR), else one round's NOISE_FLOOR.

    A time measured while the machine was busy, and still busy when measured
    again, may be off by any factor (the same benchmark read 36x apart between a
    loaded and a quiet run): its range is unbounded, so it can never decide a
    place, whatever it reads.
    """
    if busy:
        return Spread(0.0, math.inf)
    rounds = sorted(s for s in round_seconds if s > 0)
    if len(rounds) < 2:
        return Spread.relative(NOISE_FLOOR)
    middle = rounds[(len(rounds) - 1) // 2]
    return Spread.relative(max(ROUNDS_FLOOR, (rounds[-1] - rounds[0]) / 2 / middle))


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
    spreads: Mapping[str, Spread] = field(default_factory=dict)
    """Per cost criterion, where its figure may truly lie; a criterion not named is known exactly."""
    busy: Mapping[str, str] = field(default_factory=dict)
    """Per cost criterion whose figure was measured on a busy machine (and stayed busy when measured again):
    why it was busy."""


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
    final_tie: tuple[str, ...] = ()
    """The candidates the final choice is tied with within measurement noise, itself first; empty: a clear win."""
    backup_tie: tuple[str, ...] = ()
    busy_figures: tuple[tuple[str, str, str], ...] = ()
    """(candidate, criterion, why busy) of every busy figure the score read with a weight above 0."""


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
    by_name = {e.candidate.name: e for e in eligible}
    order = sorted(weighted, key=lambda name: (-weighted[name], _tie_key(by_name[name], licence_status)))
    scores = tuple(
        Score(name, raw[name], normalised[name], weighted[name], place) for place, name in enumerate(order, start=1)
    )
    spreads = {e.candidate.name: e.spreads for e in eligible}

    def pick(ranked: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
        """The one candidate of `ranked` that no other beats beyond the noise, else the tie-break's choice among
        all such (then also returned, in tie-break order). Which candidates those are does not depend on any
        busy figure's value: the verdict cannot move with one. A score that is not a number (weights the
        start-up checks should have refused) never names a choice."""
        ranked = [name for name in ranked if math.isfinite(weighted[name])]
        unbeaten = [n for n in ranked if not any(margin(o, n, raw, spreads, weights) > 0 for o in ranked if o != n)]
        if len(unbeaten) <= 1:
            return (unbeaten or [None])[0], ()
        unbeaten.sort(key=lambda name: _tie_key(by_name[name], licence_status))
        return unbeaten[0], tuple(unbeaten)

    final, final_tie = pick(order)
    rest = [name for name in order if name != final]
    licence_backup = final is not None and licence_status[final] != "allowed" and any(
        licence_status[name] == "allowed" for name in rest)
    backup, backup_tie = pick([n for n in rest if licence_status[n] == "allowed"] if licence_backup else rest)
    final_reason, backup_reason = _reasons(scores, evidence, final, backup, licence_backup, rules, weights)
    busy = tuple((name, criterion, why) for name in order for criterion, why in by_name[name].busy.items()
                 if weights.get(criterion, 0) > 0)
    return Recommendation(
        verdicts, scores, quality_source, dict(rules.weights), weights, final, backup, final_reason, backup_reason,
        final_tie, backup_tie, busy,
    )


def tie_rule() -> Message:
    """How a tie within measurement noise is broken (`_tie_key`): leaderboard average, then licence, then name."""
    return Message("tie_rule")


def _tie_key(evidence: Evidence, licence_status: Mapping[str, str]) -> tuple[float, int, str]:
    leaderboard = _finite(evidence.candidate.leaderboard_average)
    name = evidence.candidate.name
    return (-(leaderboard if leaderboard is not None else -math.inf), licence_status[name] != "allowed", name)


def margin(
    first: str, second: str, raw: Mapping[str, Mapping[str, float | None]], spreads: Mapping[str, Mapping[str, Spread]],
    weights: Mapping[str, float],
) -> float:
    """`first`'s score minus `second`'s in the worst case the spreads allow: `first`'s figures at the bad end of
    their ranges, `second`'s at the good end, and every other candidate's figures where they hurt `first` most
    (they set each criterion's min and max, hence how much a difference counts). Above 0: `first` places ahead
    whatever the noise; at or below 0: the two are tied within it. With exact figures it is the score difference."""
    total = sum(weights.values())
    if not total:
        return 0.0
    worst = 0.0
    for criterion in CRITERIA:
        weight = weights.get(criterion.name, 0.0)
        if not weight:
            continue
        # Goodness: higher is better for every criterion, so one rule serves costs and merits.
        sign = 1.0 if criterion.higher_is_better else -1.0
        ranges: dict[str, tuple[float, float]] = {}
        for name, row in raw.items():
            value = _finite(row[criterion.name])
            if value is not None:
                low, high = spreads.get(name, {}).get(criterion.name, EXACT).bounds(value)
                ranges[name] = (min(sign * low, sign * high), max(sign * low, sign * high))
        if first not in ranges or second not in ranges:
            # A missing figure counts as the worst (n = 0) and sets no bound: only the other's n matters.
            if first in ranges:
                worst += weight * _n_bound(ranges[first][0], [r[1] for n, r in ranges.items() if n != first])
            elif second in ranges:
                worst -= weight * _n_bound(ranges[second][1], [r[0] for n, r in ranges.items() if n != second])
            continue
        mine, theirs = ranges[first][0], ranges[second][1]
        if not (math.isfinite(mine) and math.isfinite(theirs)):
            worst -= weight  # either may be anything: `first` at n = 0, `second` at n = 1
            continue
        others = [r for name, r in ranges.items() if name not in (first, second)]
        difference = mine - theirs
        if difference > 0:  # a lead counts least over the widest span the others allow
            span = max([mine, theirs] + [r[1] for r in others]) - min([mine, theirs] + [r[0] for r in others])
        else:  # a deficit counts most over the narrowest
            span = max([mine, theirs] + [r[0] for r in others]) - min([mine, theirs] + [r[1] for r in others])
        if span > 0 and math.isfinite(span):
            worst += weight * difference / span
        elif difference < 0:
            worst -= weight  # a deficit over a vanishing span: as bad as it gets
    return worst / total


def _n_bound(value: float, others: Sequence[float]) -> float:
    """A normalised figure n = (value - min) / (max - min) with the others at `others`: the least n when `others`
    are their highest values, the most when their lowest (n falls as min or max rises)."""
    values = [value, *others]
    low, high = min(values), max(values)
    if not all(math.isfinite(v) for v in values):
        return 1.0 if value == high else 0.0
    return (value - low) / (high - low) if high > low else 1.0


def _reasons(
    scores: Sequence[Score], evidence: Sequence[Evidence], final: str | None, backup: str | None,
    licence_backup: bool, rules: Rules, weights: Mapping[str, float],
) -> tuple[Message, Message | str]:
    """Why the final choice and the backup.

    The study ended up using its backup because of the final model's licence,
    so when the final's licence is only flagged the backup is the best-placed
    candidate whose licence is on the allow-list (if any), else the runner-up.
    """
    if final is None:
        if not any(e.measured for e in evidence):
            return Message("nothing_measured_no_model"), ""
        return Message("no_candidate"), ""
    by_name = {e.candidate.name: e for e in evidence}
    placed = {s.name: s for s in scores}
    chosen = placed[final]
    if len(scores) == 1:
        final_reason = Message("only_candidate", name=final)
    else:
        final_reason = Message("places_first" if chosen.place == 1 else "chosen_in_tie", name=final,
                               count=len(scores), place=chosen.place, score=f"{chosen.score:.2f}",
                               strengths=_strengths(chosen, by_name[final], rules, weights))
    licence = by_name[final].candidate.license
    status, note = rules.licences.judge(licence)
    if status != "allowed":
        final_reason = Message("but_licence_flagged", reason=final_reason, note=note)
    final_reason = Message("sentence", text=final_reason)
    if backup is None:
        return final_reason, Message("no_second")
    second = placed[backup]
    strengths = _strengths(second, by_name[backup], rules, weights)
    if licence_backup:
        return final_reason, Message("licence_backup", name=backup, licence=by_name[backup].candidate.license,
                                     final=final, place=second.place, score=f"{second.score:.2f}", strengths=strengths)
    return final_reason, Message("backup_places", name=backup, place=second.place, score=f"{second.score:.2f}",
                                 strengths=strengths)


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
