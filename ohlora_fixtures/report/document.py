"""The document: the report's sections in reading order, as blocks (headings, paragraphs, tables, images)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from ohlora_fixtures.inputs import policy
from ohlora_fixtures.measure.machine_load import BUSY_OTHER_CORES, BUSY_PROBE, BUSY_STEAL, busy_reasons
from ohlora_fixtures.records.record import Kind
from ohlora_fixtures.report import cells, marks, tables, verdict
from ohlora_fixtures.report.blocks import Block, Bullets, Heading, Image, Paragraph, Section, Table
from ohlora_fixtures.report.gather import Report, benchmark_title
from ohlora_fixtures.words.language import text
from ohlora_fixtures.words.message import in_language

# Mean answer lengths (max / min) above which the report flags that seconds per answer favours short answers.
ANSWER_LENGTH_SPREAD = 1.25


def _banner(report: Report) -> list[Block]:
    lang = report.lang
    if report.measured_nothing:
        outcomes = ", ".join(run.outcomes(lang) for run in report.runs) or text("nothing", lang)
        return [Paragraph(text("nothing_measured_banner", lang, outcomes=outcomes), "banner")]
    if report.stand_in:
        banner = text("banner_stand_in", lang, what=report.stand_in_text())
        if "random_weights" in report.stand_in:
            banner += " " + text("quality_meaningless", lang)
        return [Paragraph(banner, "banner")]
    return [Paragraph(text("real_figures_note", lang), "note")]


def _approximate_note(report: Report) -> list[str]:
    approximate = [report.name(c) for c in report.candidates if c.approximate]
    if not approximate:
        return []
    return [text("approximate_note", report.lang, names=", ".join(approximate))]


# Metric names that need a sentence more than the legend, and the sentence.
_METRIC_MEANINGS = (("cpu_tensor_peak", "tensor_peak_meaning"), ("above_runtime", "above_runtime_meaning"))


def _what_blocks(report: Report) -> list[Block]:
    s, lang = report.settings, report.lang
    labels = dict.fromkeys(cells.run_label(r.run, lang) for r in report.all_records)
    lines = [
        text("measured_with_line", lang, labels="; ".join(labels) or text("nothing", lang)),
        " ".join([text("memory_metric_line", lang, metrics=report.memory_metrics)]
                 + [text(meaning, lang) for marker, meaning in _METRIC_MEANINGS if marker in report.memory_metrics]),
        text("rendered_line", lang, time=time.strftime("%Y-%m-%d %H:%M:%S %Z"), runs_read=report.runs_read,
             kept=len(report.records), runs=len(report.runs), replaced=report.replaced),
        text("screening_line", lang, min=f"{s.min_params:g}", max=f"{s.max_params:g}",
             budget=verdict.budget_words(report), rank=report.ranks[-1]),
    ]
    if report.note:
        lines.append(report.note)
    return [*(Paragraph(line) for line in lines), tables.runs_table(report), tables.provenance_table(report)]


def _answer_length_blocks(report: Report) -> list[Block]:
    """What the inference ranking reads (seconds per answer), and a flag where answer lengths differ enough
    that a model which stops early looks fast for it."""
    lang = report.lang
    blocks: list[Block] = [Paragraph(text("answers_ranking_note", lang), "note")]
    lengths = {}
    for c in report.candidates:
        record = report.ok_record(c.name, Kind.INFERENCE)
        mean = cells.mean_answer_tokens(record) if record else None
        if mean:
            lengths[report.name(c)] = mean
    if len(lengths) < 2:
        return blocks
    shortest, longest = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
    ratio = lengths[longest] / lengths[shortest]
    if ratio > ANSWER_LENGTH_SPREAD:
        blocks.append(Paragraph(text(
            "answer_lengths_differ", lang, ratio=f"{ratio:.1f}", shortest=shortest, longest=longest,
            short=cells.tokens(lengths[shortest]), long=cells.tokens(lengths[longest])), "note"))
    return blocks


def _study_table_lead(report: Report) -> str:
    """Which figures fill the study's table: weights, scale, device, units."""
    lang = report.lang
    labels = dict.fromkeys(cells.run_label(r.run, lang) for r in report.all_records)
    stand_in = text("study_table_stand_in", lang, what=report.stand_in_text()) if report.stand_in else ""
    return text("study_table_lead", lang, labels="; ".join(labels) or text("nothing", lang), stand_in=stand_in,
                metrics=report.memory_metrics, ranks=" / ".join(f"r{r}" for r in report.ranks))


def _recommendation_blocks(report: Report) -> list[Block]:
    """How the score was computed: weights, formula, where the figures came from, every criterion per candidate."""
    rec, lang = report.recommendation, report.lang
    by_name = {c.name: c for c in report.candidates}
    weights = ", ".join(f"{c.title.in_(lang)} {rec.weights[c.name]:g}" for c in policy.CRITERIA)
    blocks: list[Block] = [
        Paragraph(text("weights_line", lang, weights=weights)),
        Paragraph(text("effective_weights_line", lang, weights=", ".join(
            f"{c.title.in_(lang)} {rec.effective_weights[c.name]:g}" for c in policy.CRITERIA))),
        Paragraph(text("quality_from_line", lang, source=rec.quality_source.in_(lang))),
        Paragraph(text("formula_line", lang, formula=text("formula", lang))),
        Paragraph(text("cost_figures_line", lang, sources=_sources_sentence(report))),
    ]
    if rec.scores:
        blocks.append(tables.scores_table(report))
    if report.study is not None:
        blocks.append(tables.choice_table(report))
    excluded = [f"{report.name(by_name[name])}: {cells.sentences(v.reasons, lang)}"
                for name, v in rec.verdicts.items() if not v.eligible]
    if excluded:
        blocks += [Paragraph(text("excluded_list", lang)), Bullets(tuple(excluded))]
    flagged = [
        f"{report.name(by_name[name])}: {cells.sentences(v.flags, lang)}" for name, v in rec.verdicts.items() if v.flags
    ]
    if flagged:
        blocks += [Paragraph(text("flagged_list", lang)), Bullets(tuple(flagged))]
    return blocks


def _sources_sentence(report: Report) -> str:
    """Where each cost criterion's figures come from, e.g. "inference peak memory: plan estimate ..."."""
    parts = []
    for criterion in policy.CRITERIA[2:]:
        found = dict.fromkeys(in_language(e.sources[criterion.name], report.lang) for e in report.evidence.values())
        parts.append(f"{criterion.title.in_(report.lang)}: {' / '.join(found)}")
    return "; ".join(parts)


def _failures(report: Report) -> list[str]:
    lang = report.lang
    return [
        f"{report.name(c)} {benchmark_title(r).in_(lang)}: {text(r.status.value, lang)} — "
        + (f"`{r.error}`" if r.error else text("no_message", lang))
        for c in report.candidates
        for r in report.all_records
        if r.candidate == c.name and not r.ok
    ]


def _notes(report: Report) -> list[Block]:
    lang = report.lang
    notes = [text("note_cells", lang), text("note_timing", lang), _rounds_note(report), text("note_eval_loss", lang)]
    if report.candidates:
        plan = report.plans[report.candidates[0].name]
        measured = "tokenizer" in plan.width_source  # else assumed: the run's dataset could not be read
        widths = text(
            "plan_widths_data" if measured else "plan_widths_assumed",
            lang,
            widest=plan.seq_len,
            mean=f"{plan.mean_seq_len:.0f}",
        )
        notes.append(text("note_plan", lang, batch=plan.batch_size, widths=widths))
    notes += _approximate_note(report)
    if report.study is not None:
        notes.append(text("note_study", lang, label=text("study_t4", lang), device=report.study.device))
    blocks: list[Block] = [Bullets(tuple(note for note in notes if note))]
    busy = [
        f"{report.name(c)} {benchmark_title(r).in_(lang)}: "
        + "; ".join(
            [reason.in_(lang) for reason in busy_reasons(
                r.load.cores, r.load.other_cores, r.load.steal, r.load.probe_before, r.load.probe_after
            )]
            + ([text(f"busy_kept_{r.load.kept_busy.replace('-', '_')}", lang, attempts=r.load.attempts)]
               if r.load.kept_busy else [])
        )
        for c in report.candidates
        for r in report.all_records
        if r.candidate == c.name and marks.is_busy(r)
    ]
    if busy:
        blocks += [Paragraph(text("busy_list", lang)), Bullets(tuple(busy))]
    return blocks


def _rounds_note(report: Report) -> str:
    """What the rounds and the busy mark mean, where the report shows either."""
    records = report.all_records
    if not any(len(r.round_seconds) > 1 or marks.is_busy(r) for r in records):
        return ""
    return text(
        "note_rounds",
        report.lang,
        mark=text("busy_mark", report.lang),
        cores=BUSY_OTHER_CORES,
        steal=f"{BUSY_STEAL:.0%}",
        probe=f"{BUSY_PROBE:.0%}",
    )


def _with_legends(blocks: list[Block], report: Report) -> list[Block]:
    """Every table with the legend of the marks in its cells beside it."""
    out: list[Block] = []
    for block in blocks:
        if isinstance(block, Table):
            block = replace(block, legend=marks.legend(block, report))
        elif isinstance(block, Section):
            block = replace(block, blocks=tuple(_with_legends(list(block.blocks), report)))
        out.append(block)
    return out


def document(report: Report, images: Mapping[str, Path]) -> list[Block]:
    """The report as blocks, in reading order: the answer first (verdict card, leaderboard), then the detail
    in sections."""
    lang = report.lang
    blocks: list[Block] = [Heading(text("title", lang), 1), *_banner(report)]
    blocks.append(verdict.verdict_card(report))  # with nothing measured it names no model, and says why
    if not report.measured_nothing:
        blocks += [Heading(text("leaderboard_heading", lang)), verdict.leaderboard_table(report)]
    failures = _failures(report)
    if failures:  # what did not run stays in sight: it may be why a candidate is missing from the leaderboard
        blocks.append(Section(text("failures", lang), (Bullets(tuple(failures)),), open=True))
    blocks.append(Section(text("score_details", lang), tuple(_recommendation_blocks(report))))
    results: list[Block] = [tables.results_table(report), *_answer_length_blocks(report)]
    blocks.append(Section(text("results", lang), tuple(results)))
    plots_blocks: list[Block] = [
        Image(path, text(f"caption_{name}", lang), wide=name == "training_loss") for name, path in images.items()
    ]
    blocks.append(Section(text("plots", lang), tuple(plots_blocks or [Paragraph(text("no_plots", lang))])))
    blocks.append(Section(text("candidates", lang), (tables.candidates_table(report),)))
    quality_note = text("grades_note", lang) + (
        " " + text("quality_meaningless", lang) if "random_weights" in report.stand_in else ""
    )
    blocks.append(Section(text("quality", lang), (tables.quality_table(report), Paragraph(quality_note, "note"))))
    blocks.append(
        Section(text("pareto", lang), (tables.pareto_table(report), Paragraph(text("pareto_note", lang), "note")))
    )
    if lang == "ko":  # the study's table is Korean by nature: its headers are the study's own
        blocks.append(
            Section(text("study_table", lang), (Paragraph(_study_table_lead(report)), tables.study_table(report)))
        )
    blocks.append(Section(text("what", lang), tuple(_what_blocks(report))))
    blocks.append(
        Section(
            text("utilisation", lang),
            (tables.utilisation_table(report), Paragraph(text("utilisation_note", lang), "note")),
        )
    )
    blocks.append(
        Section(
            text("anatomy", lang),
            (
                tables.latency_table(report),
                tables.finetune_spread_table(report),
                Paragraph(text("anatomy_note", lang), "note"),
            ),
        )
    )
    blocks.append(Section(text("plan", lang), (tables.plan_table(report),)))
    blocks.append(Section(text("notes", lang), tuple(_notes(report))))
    return _with_legends(blocks, report)
