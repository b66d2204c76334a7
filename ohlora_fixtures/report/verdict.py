"""The answer, first on the page: the verdict card (final choice, backup, what decided, caveats: ties within
measurement noise, busy figures) and the compact leaderboard (one row per candidate: the figures the score
used, the score, the place)."""

from __future__ import annotations

from ohlora_fixtures.inputs import gpus, policy
from ohlora_fixtures.judge import selection
from ohlora_fixtures.measure import gpu_fit
from ohlora_fixtures.records.figures import DTYPE_BYTES
from ohlora_fixtures.report import cells, marks
from ohlora_fixtures.report.blocks import Card, Table
from ohlora_fixtures.report.gather import Report
from ohlora_fixtures.words.language import text
from ohlora_fixtures.words.message import Message, in_language

# How each criterion's figure reads in the leaderboard (its unit is in the column's header).
_FORMATS = {"quality": lambda v: f"{v:.1f}", "leaderboard": lambda v: f"{v:.2f}", "finetune_time": cells.seconds,
            "finetune_memory": cells.mib, "inference_time": cells.seconds, "inference_memory": cells.mib}


def used_criteria(report: Report) -> list[policy.Criterion]:
    """The criteria the score weighed (effective weight above 0), in the recommendation's order."""
    weights = report.recommendation.effective_weights
    return [c for c in policy.CRITERIA if weights[c.name] > 0]


def verdict_caveats(report: Report) -> list[str]:
    """Every caveat the answer carries, one sentence each in the report's language, most serious first.

    The one place the card's caveats come from (HTML, Markdown and the terminal alike): stand-in figures,
    ties within measurement noise and how they were broken, the busy figures the verdict rests on,
    estimates, answer quality that did not count, approximate stand-ins and flags of the chosen ones.
    """
    rec, lang = report.recommendation, report.lang
    caveats: list[Message] = []
    if report.stand_in:
        caveats.append(Message("caveat_stand_in", what=tuple(Message(key) for key in report.stand_in)))
    chosen = [name for name in (rec.final, rec.backup) if name]
    estimated = tuple(c.title for c in used_criteria(report)
                      if any({marks.ESTIMATE, marks.TIME_ESTIMATE} & set(marks.criterion_marks(report, name, c.name))
                             for name in chosen))
    if estimated:
        caveats.append(Message("caveat_estimated", criteria=estimated))
    if report.mixed_runs:  # a merge of unlike runs: the ranking compares figures of different devices or dtypes
        labels = dict.fromkeys(cells.run_label(r.run, lang) for r in report.measured_records)
        caveats.append(Message("caveat_mixed_runs", runs="; ".join(labels)))
    if rec.weights["quality"] > 0 and rec.effective_weights["quality"] == 0 and chosen:
        caveats.append(Message("caveat_no_quality"))
    by_name = {c.name: c for c in report.candidates}
    for name in chosen:
        if by_name[name].approximate:
            caveats.append(Message("caveat_approximate", name=name))
        caveats += [Message("caveat_flag", name=name, flag=flag) for flag in rec.verdicts[name].flags
                    if not (isinstance(flag, Message) and flag.key == "approximate_flag")]
    lines = [caveats[0].in_(lang)] if report.stand_in else []
    lines += _tie_and_busy_lines(report)
    return lines + [caveat.in_(lang) for caveat in caveats[1 if report.stand_in else 0:]]


def _tie_and_busy_lines(report: Report) -> list[str]:
    """Any tie and how it was broken, and any busy figure the verdict rests on; nothing when no model is named."""
    rec, lang = report.recommendation, report.lang
    if rec.final is None:
        return []
    lines = []
    for role, tie in (("role_final", rec.final_tie), ("role_backup", rec.backup_tie)):
        if tie:
            lines.append(text("tie_line", lang, role=text(role, lang), names=", ".join(tie),
                              rule=selection.tie_rule().in_(lang)))
    if rec.busy_figures:
        titles = {c.name: c.title.in_(lang) for c in policy.CRITERIA}
        figures = "; ".join(
            text("busy_figure", lang, name=name, criterion=titles[criterion], why=in_language(why, lang))
            for name, criterion, why in rec.busy_figures
        )
        lines.append(text("busy_verdict", lang, figures=figures))
    return lines


def decided(report: Report) -> str:
    """What decided, in the report's language: each weighted criterion and where its figures came from (measured,
    a full-size estimate, the candidate list), e.g. "fine-tuning time (full-size estimate at r16 ...)"."""
    rec, lang = report.recommendation, report.lang
    parts = []
    for criterion in used_criteria(report):
        if criterion.name in ("quality", "leaderboard"):
            source = rec.quality_source.in_(lang) if criterion.name == "quality" else text("leaderboard_source", lang)
        else:
            found = dict.fromkeys(in_language(e.sources[criterion.name], lang) for e in report.evidence.values())
            source = " / ".join(found)
        parts.append(f"{criterion.title.in_(lang)} ({source})")
    return text("decided_line", lang, sources="; ".join(parts))


def budget_words(report: Report) -> str:
    """The screening's budget as the report states it: the MiB, and where a card is named, what it is made of."""
    if report.card is None:
        return f"{report.budget_mib:,.0f} MiB"
    card, table = report.card
    return text("card_budget", report.lang, budget=f"{report.budget_mib:,.0f}", card=card.name,
                memory=f"{card.memory_mib:,.0f}", context=f"{table.cuda_context_mib:,.0f}",
                workspaces=f"{card.workspace_mib(gpus.TRAINING_HANDLES):,.1f}")


def card_fit_line(report: Report, name: str) -> str | None:
    """Whether `name` fine-tunes on the named card at the run's batch and largest rank, else the largest batch
    that fits (gpu_fit.py's estimate); None without a card or a plan of that rank."""
    if report.card is None:
        return None
    card, table = report.card
    plan, largest = report.plans[name], report.ranks[-1]
    rank = next((r for r in plan.ranks if r.rank == largest), None)
    if rank is None:
        return None
    values = {"name": name, "card": card.name, "batch": plan.batch_size, "rank": largest}
    if DTYPE_BYTES[plan.dtype] != 2:
        return text("card_not_estimated", report.lang, name=name, card=card.name, dtype=plan.dtype)
    fit = gpu_fit.finetune_fit(plan, rank, card, table)
    values.update(total=f"{fit.total_mib:,.0f}", memory=f"{fit.memory_mib:,.0f}")
    if fit.fits:
        return text("card_fits", report.lang, **values)
    if fit.only_with_checkpointing:
        return text("card_checkpointed", report.lang, largest=fit.max_batch_size_with_checkpointing, **values)
    if fit.max_batch_size:
        return text("card_largest_batch", report.lang, largest=fit.max_batch_size, **values)
    return text("card_no_fit", report.lang, **values)


def verdict_card(report: Report) -> Card:
    """The final choice and the backup with one line each on why, what decided, and the caveats."""
    rec, lang = report.recommendation, report.lang
    by_name = {c.name: c for c in report.candidates}

    def shown(name: str | None) -> str:  # an approximate stand-in is marked here too
        return report.name(by_name[name]) if name else text("na", lang)

    lines = [f"**{text('final', lang)}: {shown(rec.final)}** — {in_language(rec.final_reason, lang)}"]
    if rec.final:
        backup = in_language(rec.backup_reason, lang) or text("na", lang)
        lines.append(f"**{text('backup', lang)}: {shown(rec.backup)}** — {backup}")
        lines.append(decided(report))
        lines += [line for name in (rec.final, rec.backup) if name and (line := card_fit_line(report, name))]
    return Card(text("answer", lang), tuple(lines), tuple(verdict_caveats(report)))


def leaderboard_table(report: Report) -> Table:
    """One row per candidate, ranked ones first by place: the figures the score used, the score, the place."""
    rec, lang, largest = report.recommendation, report.lang, report.ranks[-1]
    weighed = used_criteria(report)
    columns = [text("place", lang), text("model", lang)]
    columns += [text(f"lb_{c.name}", lang, rank=largest, weight=f"{rec.effective_weights[c.name]:g}") for c in weighed]
    columns.append(text("score", lang))
    by_name = {c.name: c for c in report.candidates}
    rows = []
    for score in rec.scores:
        figures = [_figure(report, score.name, c, score.raw.get(c.name)) for c in weighed]
        rows.append((str(score.place), report.name(by_name[score.name]), *figures, f"{score.score:.3f}"))
    ranked = {score.name for score in rec.scores}
    for c in report.candidates:
        if c.name in ranked:
            continue
        evidence = report.evidence[c.name]
        raw = {"leaderboard": c.leaderboard_average, "quality": evidence.human_grade, **evidence.figures}
        verdict = rec.verdicts[c.name]
        place = text("excluded" if not verdict.eligible else "not_ranked", lang)
        rows.append(("—", report.name(c), *(_figure(report, c.name, k, raw.get(k.name)) for k in weighed), place))
    return Table(tuple(columns), tuple(rows))


def _figure(report: Report, name: str, criterion: policy.Criterion, value: float | None) -> str:
    if value is None:
        return text("missing", report.lang)
    return marks.joined(
        _FORMATS[criterion.name](value), marks.criterion_marks(report, name, criterion.name), report.lang,
        report.time_device()
    )


def terminal_lines(report: Report) -> list[str]:
    """The answer for the terminal, in the report's order: the card's lines, its caveats, then the leaderboard."""
    from ohlora_fixtures.words.display import aligned

    card = verdict_card(report)
    lines = [line.replace("**", "") for line in card.lines] + [f"⚠ {caveat}" for caveat in card.caveats]
    if report.measured_nothing:
        return lines
    table = leaderboard_table(report)
    lines += aligned([table.columns, *table.rows])
    legend = marks.legend(table, report)
    return lines + ([legend] if legend else [])
