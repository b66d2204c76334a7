"""The report's tables, each built from the gathered `Report` as rows of display strings."""

from __future__ import annotations

from typing import Callable

from ohlora_fixtures.inputs import policy
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.judge import selection
from ohlora_fixtures.judge.quality import grade_label
from ohlora_fixtures.measure import step_time
from ohlora_fixtures.records.figures import DTYPE_BYTES, MIB
from ohlora_fixtures.records.plans import CandidatePlan
from ohlora_fixtures.records.record import Answers, BenchmarkRecord, Kind
from ohlora_fixtures.report import cells, marks, tradeoff
from ohlora_fixtures.report.blocks import Table
from ohlora_fixtures.report.gather import Grade, Report
from ohlora_fixtures.words.language import text, word
from ohlora_fixtures.words.message import in_language


def results_table(report: Report) -> Table:
    """One row per candidate: fine-tuning time, peak and eval loss per rank; inference time, peak and quality."""
    lang, ranks, study = report.lang, report.ranks, report.study
    columns = [text("model", lang), text("leaderboard", lang), text("params", lang)]
    columns += [text("ft_time", lang, rank=r) for r in ranks] + [text("ft_memory", lang, rank=r) for r in ranks]
    columns += [text("eval_loss", lang, rank=r) for r in ranks]
    columns += [text("inf_time_answer", lang), text("inf_per_token", lang), text("inf_answer_tokens", lang),
                text("inf_memory", lang), text("answer_quality", lang)]
    if report.mixed_runs:
        columns.append(text("measured_with", lang))
    if len(report.runs) > 1:  # merged runs: which run each row's figures came from
        columns.append(text("from_runs", lang))
    rows = []
    for c in report.candidates:
        finetunes = [report.record(c.name, Kind.FINETUNE, r) for r in ranks]
        inference = report.record(c.name, Kind.INFERENCE)
        row = [report.name(c), cells.leaderboard_cell(c.leaderboard_average, lang), cells.params(report, c)]
        row += [
            cells.beside_study(report, cells.status_cell(report, rec, lambda r: cells.timed(r, r.seconds, lang)),
                               study and study.finetune(c.name, "finetune_seconds", rank), cells.seconds)
            for rank, rec in zip(ranks, finetunes)
        ]
        row += [
            cells.beside_study(report, cells.status_cell(report, rec, lambda r: cells.peak_cell(report, r)),
                               study and study.finetune(c.name, "finetune_memory_mib", rank), cells.mib)
            for rank, rec in zip(ranks, finetunes)
        ]
        row += [cells.status_cell(report, rec, lambda r: cells.eval_loss_cell(r, lang)) for rec in finetunes]
        study_row = study.rows.get(c.name, {}) if study else {}
        per_prompt = cells.status_cell(
            report, inference, lambda r: cells.timed(r, r.inference.mean_seconds_per_prompt, lang))
        row += [
            cells.beside_study(report, per_prompt, study_row.get("inference_seconds"), cells.seconds),
            cells.status_cell(
                report, inference, lambda r: cells.figure(cells.seconds_per_new_token(r), cells.millis, lang)
            ),
            cells.status_cell(
                report, inference, lambda r: cells.figure(cells.mean_answer_tokens(r), cells.tokens, lang)
            ),
            cells.beside_study(
                report,
                cells.status_cell(report, inference, lambda r: cells.peak_cell(report, r)),
                study_row.get("inference_memory_mib"),
                cells.mib,
            ),
            _beside_study_grade(
                report,
                c.name,
                cells.status_cell(report, inference, lambda r: _quality_cell(report, c.name, r.inference.answers)),
            ),
        ]
        mine = [r for r in (*finetunes, inference) if r is not None]
        if report.mixed_runs:
            row.append("; ".join(dict.fromkeys(cells.run_label(r.run, lang) for r in mine)) or text("not_run", lang))
        if len(report.runs) > 1:
            row.append(", ".join(dict.fromkeys(r.run.run_id for r in mine)) or text("not_run", lang))
        rows.append(tuple(row))
    return Table(tuple(columns), tuple(rows))


def _quality_cell(report: Report, name: str, answers: Answers) -> str:
    grade = report.grades.get((name, None), Grade(None, 0))
    cell = grade_label(grade.score, report.lang)
    if grade.score is not None:
        cell += f" ({grade.score:.1f}, n={grade.graded})"
    if answers.quality.chrf is not None:
        cell += f" · chrF {answers.quality.chrf:.1f}"
    return cell


def _beside_study_grade(report: Report, name: str, cell: str) -> str:
    """The quality cell (with its own marks), then the study's grade with --compare-study."""
    if report.study is None or name not in report.study.rows:
        return cell
    theirs = report.study.rows[name]["human_grade"]
    return f"{cell} · {text('study_t4', report.lang)}: {word(f'grade_{theirs}', theirs, report.lang)}"


def candidates_table(report: Report) -> Table:
    """The screening: every candidate with its size, licence, Korean support and verdict."""
    lang = report.lang
    rows = []
    for place, c in enumerate(report.candidates, start=1):
        verdict = report.recommendation.verdicts[c.name]
        params = cells.params(report, c, with_count=True)
        summary = text("eligible" if verdict.eligible else "excluded", lang)
        details = [cells.sentences(verdict.reasons, lang)] if verdict.reasons else []
        details += [f"⚠ {in_language(flag, lang)}" for flag in verdict.flags]
        rows.append(
            (
                str(place),
                report.name(c),
                params,
                cells.leaderboard_cell(c.leaderboard_average, lang),
                word(f"licence_{c.license}", c.license, lang),
                word(f"korean_{c.korean}", c.korean, lang),
                summary + (": " + "; ".join(details) if details else ""),
            )
        )
    columns = ("rank", "model", "params", "leaderboard", "licence", "korean", "verdict")
    return Table(tuple(text(key, lang) for key in columns), tuple(rows))


def choice_table(report: Report) -> Table:
    """The final choice and the backup, with why (and the study's, with --compare-study)."""
    lang, rec = report.lang, report.recommendation
    rows = [
        (text("final", lang), rec.final or text("na", lang), in_language(rec.final_reason, lang)),
        (
            text("backup", lang),
            rec.backup or text("na", lang),
            in_language(rec.backup_reason, lang) or text("na", lang),
        ),
    ]
    if report.study is not None:
        rows.append(
            (
                f"{text('final', lang)} / {text('backup', lang)} ({text('study_t4', lang)})",
                f"{report.study.final} / {report.study.backup}",
                text("study_choice", lang),
            )
        )
    return Table(
        (text("final", lang) + " / " + text("backup", lang), text("model", lang), text("why", lang)), tuple(rows)
    )


def quality_table(report: Report) -> Table:
    """One row per candidate for the base model's answers, plus one per adapter rank scored after fine-tuning."""
    lang = report.lang
    rows = []
    for c in report.candidates:
        inference = report.record(c.name, Kind.INFERENCE)
        adapters: list[tuple[str, int | None, BenchmarkRecord, Answers]] = []
        if inference is None or not inference.ok:
            status = cells.status_cell(report, inference, str)
            rows.append((report.name(c), text("base", lang), *[status] * 7))
        else:
            adapters.append((text("base", lang), None, inference, inference.inference.answers))
        for rank in report.ranks:
            record = report.record(c.name, Kind.FINETUNE, rank)
            if record is not None and record.finetune is not None and record.finetune.after_finetune is not None:
                adapters.append((f"r{rank}", rank, record, record.finetune.after_finetune))
        rows += [
            _quality_row(report, c, adapter, rank, answered, marks.figure_marks(record))
            for adapter, rank, record, answered in adapters
        ]
    keys = ("model", "adapter", "human_grade", "graded", "chrf", "empty", "hangul", "repeats", "answers_csv")
    return Table(tuple(text(key, lang) for key in keys), tuple(rows))


def _quality_row(
    report: Report, c: Candidate, adapter: str, rank: int | None, answered: Answers, figure_marks: list[str]
) -> tuple[str, ...]:
    """One adapter's answer quality; every figure with `figure_marks` (answers of a stand-in are a stand-in's)."""
    lang = report.lang
    grade = report.grades.get((c.name, rank), Grade(None, 0))
    figures = answered.quality

    def marked(cell: str) -> str:
        return marks.joined(cell, figure_marks, lang)

    return (
        report.name(c),
        adapter,
        grade_label(grade.score, lang)
        + (f" ({marked(f'{grade.score:.1f}')})" if grade.score is not None else "")
        + (f" — {in_language(grade.note, lang)}" if grade.note else ""),
        str(grade.graded),
        text("na", lang) if figures.chrf is None else f"{marked(f'{figures.chrf:.1f}')} (n={figures.n_scored})",
        marked(cells.share(figures.empty_share)),
        marked(cells.share(figures.hangul_share)),
        marked(cells.share(figures.repeated_ngram_share)),
        cells.beside_report(report, answered.answers_csv) or text("na", lang),
    )


def plan_table(report: Report) -> Table:
    """Full-size parameter counts (exact) and memory (estimates) of every candidate, against the budget."""
    lang, ranks, budget = report.lang, report.ranks, report.budget_mib
    run_dtypes = sorted({r.run.dtype for r in report.all_records} - {report.plan_dtype})
    dtype = report.plan_dtype
    columns = [text("model", lang), text("total_params", lang), text("weights_mib", lang, dtype=dtype)]
    columns += [text("weights_as_run", lang, dtype=other) for other in run_dtypes]
    columns += [text("trainable", lang, rank=r) for r in ranks]
    columns += [text("ft_estimate", lang, rank=r, dtype=dtype) for r in ranks]
    columns += [text("inf_estimate", lang, dtype=dtype), text("fits", lang, rank=ranks[-1], budget=f"{budget:,.0f}")]
    # The full-size time on the device the verdict reads (the --ohlora-gpu card, else this machine).
    rates, device = report.time_rates, report.time_device(lang)
    if rates is not None:
        columns += [text("ft_time_estimate", lang, rank=r, device=device) for r in ranks]
        columns += [text("answer_time_estimate", lang, device=device)]
    rows = []

    def estimate(value: float) -> str:
        return marks.joined(cells.mib(value), [marks.ESTIMATE], lang)

    def steps(plan: CandidatePlan, rank: int) -> int:
        # The plan's own where its widths came from the data; else the run's (a stand-in takes the same steps).
        record = report.ok_record(plan.name, Kind.FINETUNE, rank)
        return plan.steps or (record.finetune.steps if record and record.finetune else 0)

    def times(plan: CandidatePlan) -> list[str]:
        if rates is None:
            return []
        finetune = [f"{step_time.finetune_seconds(plan, r, rates, steps(plan, r.rank)):,.1f}"
                    if r.step_ops and steps(plan, r.rank) else text("na", lang) for r in plan.ranks]
        answer = f"{step_time.answer_seconds(plan, rates):,.2f}" if plan.decode_ops else text("na", lang)
        return finetune + [answer]

    for c in report.candidates:
        plan = report.plans[c.name]
        largest = plan.ranks[-1].finetune_peak_estimate_mib
        rows.append(
            tuple(
                [report.name(c), cells.count(plan.total_params), cells.mib(plan.weights_mib)]
                + [cells.mib(plan.total_params * DTYPE_BYTES[other] / MIB) for other in run_dtypes]
                + [cells.count(r.trainable_params) for r in plan.ranks]
                + [estimate(r.finetune_peak_estimate_mib) for r in plan.ranks]
                + [estimate(plan.inference_peak_estimate_mib), text("yes_est" if largest <= budget else "no_est", lang)]
                + times(plan)
            )
        )
    return Table(tuple(columns), tuple(rows))


def utilisation_table(report: Report) -> Table:
    """MFU per rank and the decode's bandwidth use, with the peaks they are measured against."""
    lang, ranks = report.lang, report.ranks
    columns = [text("model", lang)] + [text("mfu", lang, rank=r) for r in ranks]
    columns += [text("bandwidth", lang), text("peaks", lang)]
    rows = []
    for c in report.candidates:
        inference = report.record(c.name, Kind.INFERENCE)
        finetunes = [report.record(c.name, Kind.FINETUNE, r) for r in ranks]
        trained = next(
            (
                r.finetune.utilisation
                for r in finetunes
                if r is not None and r.finetune is not None and r.finetune.utilisation is not None
            ),
            None,
        )
        decoded = inference.inference.utilisation if inference is not None and inference.inference else None
        peaks = []
        if trained is not None:
            source = word(f"source_{trained.peak_source}", trained.peak_source, lang)
            peaks.append(f"{trained.peak_tflops:.3g} TFLOP/s ({source})")
        if decoded is not None:
            source = word(f"source_{decoded.peak_source}", decoded.peak_source, lang)
            peaks.append(f"{decoded.peak_gbps:.3g} GB/s ({source})")
        rows.append(
            tuple(
                [report.name(c)]
                # Utilisation is work over time: a time taken on a busy machine makes it suspect too.
                + [
                    cells.status_cell(
                        report,
                        record,
                        lambda x: _busy(
                            x,
                            cells.figure(x.finetune.utilisation and x.finetune.utilisation.mfu, cells.percent, lang),
                            lang,
                        ),
                    )
                    for record in finetunes
                ]
                + [
                    cells.status_cell(
                        report,
                        inference,
                        lambda x: _busy(
                            x,
                            cells.figure(
                                x.inference.utilisation and x.inference.utilisation.bandwidth_utilisation,
                                cells.percent,
                                lang,
                            ),
                            lang,
                        ),
                    ),
                    "; ".join(peaks) or text("na", lang),
                ]
            )
        )
    return Table(tuple(columns), tuple(rows))


def runs_table(report: Report) -> Table:
    """The merged runs: where each came from and what it was run with."""
    lang = report.lang
    rows = []
    for run in report.runs:
        d = run.description
        sampling = "inference_cell_greedy" if d.greedy else "inference_cell_sampled"
        rows.append(
            (
                run.run_id,
                ", ".join(run.sources),
                d.date or "?",
                f"{d.device_name or d.device} ({d.device})",
                d.dtype,
                word(f"weights_{d.weights}", d.weights, lang),
                word(f"scale_{d.scale}", d.scale, lang),
                text(
                    "rows_cell",
                    lang,
                    train=d.train_rows,
                    valid=d.valid_rows,
                    preset=word(f"preset_{d.preset}", d.preset, lang),
                ),
                text("training_cell", lang, batch=d.batch_size, epochs=d.epochs, lr=d.learning_rate),
                ", ".join(str(r) for r in d.ranks),
                text(
                    sampling,
                    lang,
                    prompts=d.prompts,
                    tokens=f"{d.min_new_tokens}–{d.max_new_tokens}" if d.min_new_tokens else f"≤{d.max_new_tokens}",
                ),
                " / ".join(f"{lib} {d.versions.get(lib, '?')}" for lib in ("torch", "transformers", "peft")),
                str(run.used),
                run.outcomes(lang),
            )
        )
    columns = (
        "run_id",
        "run_files",
        "run_date",
        "run_device",
        "run_dtype",
        "run_weights",
        "run_scale",
        "run_rows",
        "run_training",
        "run_ranks",
        "run_inference",
        "run_versions",
        "run_used",
        "run_outcome",
    )
    return Table(tuple(text(key, lang) for key in columns), tuple(rows))


def _weight(rec: selection.Recommendation, name: str, lang: str) -> str:
    """The weight the score used, and the configured one where they differ (e.g. "0, set 4")."""
    used, configured = rec.effective_weights[name], rec.weights[name]
    return f"{used:g}" if used == configured else text("weight_used_set", lang, used=f"{used:g}", set=f"{configured:g}")


def scores_table(report: Report) -> Table:
    """Each eligible candidate's raw and normalised criteria, and its weighted score."""
    rec, lang = report.recommendation, report.lang
    columns = (
        [text("model", lang), text("place", lang)]
        + [f"{c.title.in_(lang)} (w={_weight(rec, c.name, lang)})" for c in policy.CRITERIA]
        + [text("score", lang)]
    )
    by_name = {c.name: c for c in report.candidates}
    rows = []
    for score in rec.scores:
        row = [report.name(by_name[score.name]), str(score.place)]
        row += [
            marks.joined(c.show(score.raw[c.name]).in_(lang), marks.criterion_marks(report, score.name, c.name), lang,
                         report.time_device(lang))
            + f" → {score.normalised[c.name]:.2f}"
            for c in policy.CRITERIA
        ]
        row.append(f"{score.score:.3f}")
        rows.append(tuple(row))
    return Table(tuple(columns), tuple(rows))


def pareto_table(report: Report) -> Table:
    """Each measured candidate's quality and costs, and which candidates dominate it in each view."""
    lang, largest = report.lang, report.ranks[-1]
    view = tradeoff.trade_offs(report)
    quality = text("quality_graded" if view.graded else "quality_stand_in", lang)
    columns = [
        text("model", lang),
        text("quality_axis", lang, source=quality),
        text("ft_time", lang, rank=largest),
        text("pareto_ft_memory", lang, rank=largest),
        text("inf_time", lang),
        text("pareto_inf_memory", lang),
        text("dominated_finetune", lang, rank=largest),
        text("dominated_inference", lang),
        text("dominated_all", lang),
    ]
    rows = []
    for point in view.points:
        role = f" ({text(point.role, lang)})" if point.role else ""
        costs = point.costs

        def cost(criterion: str, fmt: Callable[[float], str]) -> str:
            value = costs[criterion]
            return (
                text("na", lang)
                if value is None
                else marks.joined(fmt(value), marks.criterion_marks(report, point.name, criterion), lang,
                                  report.time_device(lang))
            )

        rows.append(
            (
                point.label + role,
                f"{point.quality:.2f}",
                cost("finetune_time", cells.seconds),
                cost("finetune_memory", cells.mib),
                cost("inference_time", cells.seconds),
                cost("inference_memory", cells.mib),
                *(
                    _dominance_cell(report, view.dominated[name].get(point.name))
                    for name in ("finetune", "inference", "all")
                ),
            )
        )
    return Table(tuple(columns), tuple(rows))


def _dominance_cell(report: Report, by: tuple[str, ...] | None) -> str:
    if by is None:
        return text("na", report.lang)
    if not by:
        return text("on_front", report.lang)
    names = {c.name: report.name(c) for c in report.candidates}
    return ", ".join(names[name] for name in by)


# The reference study's own results table, word for word; `{ranks}` becomes the ranks run ("16, 32, 64").
STUDY_COLUMNS = (
    "모델 이름",
    "종합 점수 (Average from Leaderboard)",
    "파라미터 개수",
    "Fine-Tuning 시간 (LoRA rank {ranks})",
    "Fine-Tuning 최대 메모리 사용량 (LoRA rank {ranks})",
    "Inference 시간",
    "Inference 최대 메모리 사용량",
    "Inference 답변 품질",
)


def study_table(report: Report) -> Table:
    """Our figures in the study's table: its 8 columns, the ranks of one figure in one cell (`a / b / c`)."""
    lang, ranks = report.lang, report.ranks
    rows = []
    for c in report.candidates:
        finetunes = [report.record(c.name, Kind.FINETUNE, r) for r in ranks]
        inference = report.record(c.name, Kind.INFERENCE)
        grade = report.grades.get((c.name, None), Grade(None, 0))
        rows.append(
            (
                report.name(c),
                cells.leaderboard_cell(c.leaderboard_average, lang),
                cells.params(report, c),
                " / ".join(
                    cells.status_cell(report, r, lambda x: _busy(x, cells.figure(x.seconds, cells.seconds, lang), lang))
                    for r in finetunes
                ),
                " / ".join(
                    cells.status_cell(report, r, lambda x: cells.figure(x.peak_mib, cells.mib, lang)) for r in finetunes
                ),
                cells.status_cell(
                    report,
                    inference,
                    lambda x: _busy(x, cells.figure(x.inference.mean_seconds_per_prompt, cells.seconds, lang), lang),
                ),
                cells.status_cell(report, inference, lambda x: cells.figure(x.peak_mib, cells.mib, lang)),
                cells.status_cell(
                    report,
                    inference,
                    lambda x: (
                        grade_label(grade.score, lang)
                        + (f" ({grade.score:.1f}, n={grade.graded})" if grade.score is not None else "")
                    ),
                ),
            )
        )
    columns = tuple(column.format(ranks=", ".join(str(r) for r in ranks)) for column in STUDY_COLUMNS)
    return Table(columns, tuple(rows))


def _busy(record: BenchmarkRecord, cell: str, lang: str) -> str:
    """A time cell with the busy mark where the machine was busy while it was measured."""
    return marks.joined(cell, [marks.BUSY] if marks.is_busy(record) else [], lang)


def latency_table(report: Report) -> Table:
    """The inference anatomy per candidate: prefill (time to first token), decode per token, decode
    throughput and the spread of whole generate calls, medians and p90 over the prompts."""
    lang = report.lang
    keys = ("first_token", "decode_token", "decode_rate", "generate_spread")
    rows = []
    for c in report.candidates:
        record = report.record(c.name, Kind.INFERENCE)

        def pair(low: float | None, high: float | None) -> str:
            return text("na", lang) if low is None or high is None else f"{cells.millis(low)} / {cells.millis(high)}"

        def latency(r: BenchmarkRecord) -> tuple[str, ...]:
            f = r.inference
            spread = (f.generate_median_s, f.generate_p90_s, f.generate_max_s)
            return (
                pair(f.first_token_median_s, f.first_token_p90_s),
                pair(f.decode_token_median_s, f.decode_token_p90_s),
                cells.figure(f.decode_tokens_per_second, cells.rate, lang),
                text("na", lang) if None in spread else " / ".join(cells.millis(v) for v in spread),
            )

        if record is not None and record.ok:
            measured = tuple(
                cell if cell == text("na", lang) else marks.joined(cell, marks.figure_marks(record, timed=True), lang)
                for cell in latency(record)
            )
        else:
            measured = (cells.status_cell(report, record, str),) * 4
        rows.append((report.name(c), *measured))
    return Table(tuple(text(key, lang) for key in ("model", *keys)), tuple(rows))


def finetune_spread_table(report: Report) -> Table:
    """One row per fine-tuning benchmark: step time median and p90, adapter size on disk, and the
    sampled device memory (mean, p99, peak) where a sampler ran."""
    lang = report.lang
    rows = []
    for c in report.candidates:
        for rank in report.ranks:
            record = report.record(c.name, Kind.FINETUNE, rank)
            if record is None or not record.ok:
                rows.append((report.name(c), f"r{rank}", *(cells.status_cell(report, record, str),) * 3))
                continue
            f, memory = record.finetune, record.memory
            steps = (
                text("na", lang)
                if f.step_median_s is None or f.step_p90_s is None
                else f"{cells.millis(f.step_median_s)} / {cells.millis(f.step_p90_s)}"
            )
            sampled = (memory.sampled_mean_mib, memory.sampled_p99_mib, memory.sampled_peak_mib) if memory else (None,)
            measured = (
                steps,
                cells.figure(f.adapter_bytes and f.adapter_bytes / MIB, cells.mib_fine, lang),
                text("na", lang)
                if None in sampled
                else " / ".join(cells.mib(v) for v in sampled) + f" ({memory.sampler})",
            )
            rows.append(
                (
                    report.name(c),
                    f"r{rank}",
                    *(  # only the step times depend on the machine's load
                        cell
                        if cell == text("na", lang)
                        else marks.joined(cell, marks.figure_marks(record, timed=index == 0), lang)
                        for index, cell in enumerate(measured)
                    ),
                )
            )
    keys = ("model", "adapter", "step_time", "adapter_size", "sampled_memory")
    return Table(tuple(text(key, lang) for key in keys), tuple(rows))


def provenance_table(report: Report) -> Table:
    """Per merged run: this project's code, the GPU's driver and CUDA, and which weights each candidate ran."""
    lang = report.lang
    rows = []
    for run in report.runs:
        d = run.description
        weights = dict.fromkeys(
            f"{r.candidate}: {r.weights_revision}"
            for r in report.all_records
            if r.run.run_id == run.run_id and r.weights_revision
        )
        gpu = (
            text("gpu_software_cell", lang, driver=d.gpu_driver, cuda=d.cuda_version)
            if d.gpu_driver or d.cuda_version
            else "—"
        )
        rows.append((run.run_id, d.code_revision or "?", gpu, "; ".join(weights) or "?"))
    keys = ("run_id", "code_revision", "gpu_software", "weights_revision")
    return Table(tuple(text(key, lang) for key in keys), tuple(rows))
