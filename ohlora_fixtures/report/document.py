"""The document: the report's sections in reading order, as blocks (headings, paragraphs, tables, images)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

from .. import selection
from . import tables
from ..load import BUSY_OTHER_CORES, BUSY_PROBE, BUSY_STEAL
from .blocks import Block, Bullets, Heading, Image, Paragraph
from .gather import Report
from .language import text

CAPTIONS = {
    "finetune_time": "Fine-tuning time vs LoRA rank", "finetune_memory": "Fine-tuning peak memory vs LoRA rank",
    "training_loss": "Training loss curves", "inference_cost": "Inference time vs peak memory",
}


def _banner(report: Report) -> list[Block]:
    lang = report.lang
    if report.measured_nothing:
        outcomes = ", ".join(run.outcomes for run in report.runs) or "no benchmark ran"
        return [Paragraph(f"NOTHING MEASURED ({outcomes}): no benchmark finished with figures, so this report "
                          "has no figures and names no model. See Failures for why each benchmark did not run.",
                          "banner")]
    if report.stand_in:
        blocks: list[Block] = [Paragraph(text("banner_stand_in", lang, what=report.stand_in_text()), "banner")]
        if "random_weights" in report.stand_in:
            blocks.append(Paragraph(text("quality_meaningless", lang), "banner"))
        return blocks
    return [Paragraph("Pretrained weights at full size: real figures of the measured models on the device below.",
                      "note")]


def _approximate_note(report: Report) -> list[str]:
    approximate = [report.name(c) for c in report.candidates if c.approximate]
    if not approximate:
        return []
    return [f"{', '.join(approximate)}: the architecture is unknown; a stand-in of about the right size "
            "is measured and planned instead. Its figures are approximate wherever they appear."]


_ABOVE_RUNTIME_MEANING = (
    " The *_above_runtime figures count from the process's resident memory once Python and the libraries were "
    "loaded, before any model was built; the C allocator's freed memory was given back before each region."
)


def _what_blocks(report: Report) -> list[Block]:
    s = report.settings
    lines = [
        f"Measured with: {'; '.join(report.run_labels) or 'nothing'}.",
        f"Peak memory metric: {report.memory_metrics} (cuda_max_allocated = torch's allocator peak; "
        "cpu_peak_rss = the process's peak resident memory, model and Python included)."
        + (_ABOVE_RUNTIME_MEANING if "above_runtime" in report.memory_metrics else ""),
        f"Rendered {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from {report.runs_read} run(s); the latest "
        f"measurement of each benchmark (candidate, kind, rank) is kept: {len(report.records)} benchmark(s) "
        f"from the {len(report.runs)} run(s) below, {report.replaced} earlier measurement(s) replaced.",
        f"Screening: {s.min_params:g} B ≤ parameters ≤ {s.max_params:g} B, licence on the allow-list "
        f"(data/licenses.toml), Korean support; VRAM budget {s.vram_budget_mb:,.0f} MiB for the fine-tuning "
        f"peak at r{report.ranks[-1]}.",
    ]
    if report.note:
        lines.append(report.note)
    return [*(Paragraph(line) for line in lines), tables.runs_table(report), tables.provenance_table(report)]


def _recommendation_blocks(report: Report) -> list[Block]:
    rec = report.recommendation
    by_name = {c.name: c for c in report.candidates}
    blocks: list[Block] = [
        Paragraph("Weights (defaults, then setup.cfg `ohlora_weight_*`, then `--ohlora-ranking-weights`): "
                  + ", ".join(f"{c.label} {rec.weights[c.name]:g}" for c in selection.CRITERIA) + "."),
        Paragraph("Effective weights used (a criterion without evidence counts 0): "
                  + ", ".join(f"{c.label} {rec.effective_weights[c.name]:g}" for c in selection.CRITERIA) + "."),
        Paragraph(f"Answer quality comes from: {rec.quality_source}."),
        Paragraph(f"Formula: {selection.FORMULA}"),
        Paragraph("Cost figures: " + _sources_sentence(report)),
    ]
    if rec.scores:
        blocks.append(tables.scores_table(report))
    blocks.append(Paragraph(f"**{text('final', report.lang)}: {rec.final or text('na', report.lang)}** — {rec.final_reason}"))
    if rec.backup:
        blocks.append(Paragraph(f"**{text('backup', report.lang)}: {rec.backup}** — {rec.backup_reason}"))
    excluded = [f"{report.name(by_name[name])}: {'; '.join(v.reasons)}" for name, v in rec.verdicts.items() if not v.eligible]
    if excluded:
        blocks += [Paragraph("Excluded:"), Bullets(tuple(excluded))]
    flagged = [f"{report.name(by_name[name])}: {'; '.join(v.flags)}" for name, v in rec.verdicts.items() if v.flags]
    if flagged:
        blocks += [Paragraph("Flagged (kept, but check):"), Bullets(tuple(flagged))]
    return blocks


def _sources_sentence(report: Report) -> str:
    """Where each cost criterion's figures come from, e.g. "inference peak memory: plan estimate ..."."""
    parts = []
    for criterion in selection.CRITERIA[2:]:
        found = dict.fromkeys(e.sources[criterion.name] for e in report.evidence.values())
        parts.append(f"{criterion.label}: {' / '.join(found)}")
    return "; ".join(parts) + "."


def _failure_blocks(report: Report) -> list[Block]:
    failures = [
        f"{report.name(c)} {r.benchmark_name}: {text(r.status.value, 'en')} — {r.error or 'no message'}"
        for c in report.candidates for r in report.all_records
        if r.candidate == c.name and not r.ok
    ]
    return [Heading(text("failures", report.lang)), Bullets(tuple(failures))] if failures else []


def _notes(report: Report) -> list[str]:
    notes = [
        "A cell that is not a figure says why: not run (no record in the merged runs), skipped "
        "(e.g. weights not on this machine), OOM, failed (see Failures), interrupted (the process died mid-run); "
        "n/a: the benchmark ran but the figure does not apply (e.g. no held-out rows for the eval loss).",
        "Fine-tuning time is the timed training loop (optimizer steps); inference time is the mean `generate` "
        "time per prompt, at most the stated number of NEW tokens.",
        _rounds_note(report),
        "Eval loss: answer-token loss on the held-out rows after the fine-tuning steps: the adapter's potential, "
        "with the same caveat as every quality figure for random weights.",
        "Full-size plan: parameter counts are exact (meta-device build); memory beyond the weights is an estimate "
        f"(batch {report.plans[report.candidates[0].name].batch_size}, "
        f"{report.plans[report.candidates[0].name].seq_len} tokens per row); CUDA context not included."
        if report.candidates else "",
        *_approximate_note(report),
    ]
    if report.study is not None:
        notes.append(
            f"'{text('study_t4', 'en')}': measured by the reference study on a {report.study.device}, bf16 weights. "
            "Its memory figures are memory still allocated after the run, not peaks (its inference figures equal "
            "the bf16 weights alone), its r32/r64 runs could carry an earlier adapter, and its 80-token cap counted "
            "the prompt: compare with care."
        )
    return [note for note in notes if note]


def _rounds_note(report: Report) -> str:
    """What the rounds and the busy mark mean, where the report shows either."""
    records = report.all_records
    if not any(len(r.round_seconds) > 1 or (r.load and r.load.busy) for r in records):
        return ""
    busy = [f"{r.candidate} {r.benchmark_name}: {r.load.why_busy}" for r in records if r.load and r.load.busy]
    return (
        "With --ohlora-rounds N > 1 a time is the median round's, with the range over the N rounds in brackets "
        "(for time per prompt scaled from the rounds' totals); peak memory is the highest round's. "
        + text("busy_mark", report.lang) + ": taken on a busy machine (another process kept at least "
        f"{BUSY_OTHER_CORES} core busy, the hypervisor stole at least {BUSY_STEAL:.0%} of CPU time, or a short matmul "
        f"probe ran below {BUSY_PROBE:.0%} of its calibrated speed); measure again on a quiet machine"
        + (": " + "; ".join(busy) if busy else "") + "."
    )


def document(report: Report, images: Mapping[str, Path]) -> list[Block]:
    """The report as blocks, in reading order."""
    lang = report.lang
    blocks: list[Block] = [Heading(text("title", lang), 1), *_banner(report), Heading(text("what", lang)),
                           *_what_blocks(report)]
    blocks += [Heading(text("candidates", lang)), tables.candidates_table(report)]
    blocks += [Heading(text("results", lang)), tables.results_table(report), tables.choice_table(report)]
    if report.stand_in:
        blocks.append(Paragraph(text("banner_stand_in", lang, what=report.stand_in_text()), "note"))
    blocks += [Heading(text("quality", lang)), tables.quality_table(report)]
    blocks.append(Paragraph(
        "Human grades are re-read from the answers CSVs at render time: fill in the `grade` column "
        "(best/good/medium/poor/worst, 최상/상/중/하/최하 or 1-5) and render again."
        + (" " + text("quality_meaningless", lang) if "random_weights" in report.stand_in else ""), "note"))
    blocks += [Heading(text("utilisation", lang)), tables.utilisation_table(report)]
    blocks.append(Paragraph(text("utilisation_note", lang), "note"))
    blocks += [Heading(text("anatomy", lang)), tables.latency_table(report), tables.finetune_spread_table(report),
               Paragraph(text("anatomy_note", lang), "note")]
    blocks += [Heading(text("plan", lang)), tables.plan_table(report)]
    blocks += [Heading(text("plots", lang))]
    blocks += [Image(path, CAPTIONS[name], wide=name == "training_loss") for name, path in images.items()]
    if not images:
        blocks.append(Paragraph("No successful benchmark to plot."))
    blocks += [Heading(text("recommendation", lang)), *_recommendation_blocks(report)]
    blocks += _failure_blocks(report)
    blocks += [Heading(text("notes", lang)), Bullets(tuple(_notes(report)))]
    return blocks
