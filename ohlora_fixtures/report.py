"""The leaderboard report and the recommendation: leaderboard.md, leaderboard.html, PNG plots, results.csv.

Rendered at the end of `pytest benchmarks` from this run's records, and on
demand with `python -m ohlora_fixtures report FILE...` from stored runs:
pytest-benchmark JSON files (their `extra_info`) and results.jsonl logs, merged
into one table where the latest measurement of each benchmark wins.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import html
import json
import time
import tomllib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import registry, results, selection
from .devices import DTYPES
from .errors import UsageError
from .plan import CandidatePlan, plan_candidate
from .plots import CandidateSeries, write_plots
from .quality import read_grades, grade_label
from .registry import Candidate
from .resources import STUDY_RESULTS, bundled
from .settings import Settings, parse

if TYPE_CHECKING:
    from .study import Study

DEFAULT_STUDY_RESULTS = bundled(STUDY_RESULTS)
MIB_PER_BYTE = 1 / (1024 * 1024)
FAILED_STATUSES = ("oom", "failed", "interrupted", "running")  # "running": the process died mid-benchmark

# (English, Korean); the Korean column headers follow the study's own table.
TEXT: dict[str, tuple[str, str]] = {
    "title": ("ohlora-bench leaderboard", "ohlora-bench 리더보드"),
    "what": ("What this report shows", "이 보고서가 보여주는 것"),
    "runs": ("Merged runs", "병합된 실행"),
    "candidates": ("Candidates and screening", "후보 모델과 선별"),
    "results": ("Results", "결과"),
    "choice": ("Final choice and backup", "최종 선택과 예비 모델"),
    "quality": ("Answer quality", "답변 품질"),
    "plan": ("Full-size plan (estimates)", "원래 크기 기준 예상치 (추정)"),
    "plots": ("Plots", "그래프"),
    "utilisation": ("Hardware utilisation (estimates)", "하드웨어 활용률 (추정)"),
    "mfu": ("MFU r{rank}", "MFU r{rank}"),
    "bandwidth": ("decode bandwidth use", "디코딩 대역폭 활용률"),
    "peaks": ("device peaks (source)", "장치 최대 성능 (출처)"),
    "utilisation_note": (
        "Estimates: MFU = model FLOPs of the timed fine-tuning steps / time / peak FLOP/s; decode bandwidth "
        "use = bytes of weights and KV cache read per new token x new tokens / generate time / peak bandwidth. "
        "Formulas in docs/performance.md.",
        "추정치: MFU = 측정 구간 학습의 모델 FLOPs / 시간 / 최대 FLOP/s; 디코딩 대역폭 활용률 = 새 토큰당 읽는 "
        "가중치와 KV 캐시 바이트 x 새 토큰 수 / 생성 시간 / 최대 대역폭. 공식은 docs/performance.md.",
    ),
    "recommendation": ("Recommendation", "추천"),
    "failures": ("Failures", "실패한 벤치마크"),
    "notes": ("Notes", "참고"),
    "rank": ("rank", "순위"),
    "model": ("model", "모델"),
    "params": ("parameters", "파라미터 수"),
    "leaderboard": ("leaderboard average", "리더보드 평균"),
    "licence": ("licence", "라이선스"),
    "korean": ("Korean", "한국어 지원"),
    "verdict": ("screening verdict", "선별 결과"),
    "ft_time": ("fine-tuning time r{rank} (s)", "학습 시간 r{rank} (초)"),
    "ft_memory": ("fine-tuning peak r{rank} (MiB)", "학습 메모리 r{rank} (MiB)"),
    "eval_loss": ("eval loss after fine-tuning r{rank}", "학습 후 평가 손실 r{rank}"),
    "inf_time": ("inference time (s per prompt)", "추론 시간 (프롬프트당 초)"),
    "inf_memory": ("inference peak (MiB)", "추론 메모리 (MiB)"),
    "answer_quality": ("answer quality", "답변 품질"),
    "measured_with": ("measured with", "측정 환경"),
    "adapter": ("adapter", "어댑터"),
    "base": ("none (base model)", "없음 (기본 모델)"),
    "human_grade": ("human grade", "사람 평가"),
    "graded": ("graded answers", "평가된 답변 수"),
    "chrf": ("chrF vs reference", "참고 답변 대비 chrF"),
    "empty": ("empty answers", "빈 답변"),
    "hangul": ("Hangul share", "한글 비율"),
    "repeats": ("repeated word 3-grams", "반복된 단어 3-gram"),
    "answers_csv": ("answers CSV", "답변 CSV"),
    "total_params": ("total parameters (exact)", "전체 파라미터 수 (정확)"),
    "weights_mib": ("weights MiB ({dtype})", "가중치 MiB ({dtype})"),
    "weights_as_run": ("weights MiB ({dtype}, as run)", "가중치 MiB ({dtype}, 실행 기준)"),
    "trainable": ("trainable r{rank} (exact)", "학습 파라미터 수 r{rank} (정확)"),
    "ft_estimate": ("FT peak r{rank} MiB (est., {dtype})", "학습 메모리 r{rank} MiB (추정, {dtype})"),
    "inf_estimate": ("inference peak MiB (est., {dtype})", "추론 메모리 MiB (추정, {dtype})"),
    "fits": ("FT r{rank} fits {budget} MiB", "학습 r{rank} {budget} MiB 이내"),
    "yes_est": ("yes (est.)", "예 (추정)"),
    "no_est": ("NO (est.)", "아니오 (추정)"),
    "final": ("final choice", "최종 선택"),
    "backup": ("backup", "예비 모델"),
    "why": ("why", "이유"),
    "score": ("score", "점수"),
    "place": ("place", "순위"),
    "not_run": ("not run", "미실행"),
    "skipped": ("skipped", "건너뜀"),
    "oom": ("OOM", "메모리 부족"),
    "failed": ("failed", "실패"),
    "interrupted": ("interrupted", "중단됨"),
    "running": ("interrupted", "중단됨"),
    "na": ("n/a", "해당 없음"),
    "no_valid_answers": ("n/a: valid rows have no answers", "해당 없음: 검증 행에 답변 없음"),
    "over_budget": ("over budget", "예산 초과"),
    "eligible": ("eligible", "통과"),
    "excluded": ("excluded", "제외"),
    "approx": (" (approx.)", " (근사)"),
    "random_weights": ("random weights", "무작위 가중치"),
    "tiny_scale": ("tiny-scale models", "축소 모델"),
    "and": (" and ", " 및 "),
    "study_t4": ("study T4", "스터디 T4"),
    "banner_stand_in": (
        "STAND-IN RESULTS — not real model figures. {what}: times and memory are those of these "
        "stand-in shapes; losses, answers and every quality figure say nothing about the real models.",
        "대체 모델 결과 — 실제 모델의 수치가 아닙니다. {what}: 시간과 메모리는 이 대체 모델 형태의 값이며, "
        "손실·답변·품질 수치는 실제 모델에 대해 아무것도 말해주지 않습니다.",
    ),
    "quality_meaningless": (
        "Random weights make every quality figure here (chrF, shares, grades, eval loss) meaningless.",
        "무작위 가중치이므로 여기의 품질 수치(chrF, 비율, 평가, 평가 손실)는 의미가 없습니다.",
    ),
}


def text(key: str, lang: str, **values: Any) -> str:
    """A report string in `lang` ("en" or "ko")."""
    english, korean = TEXT[key]
    return (korean if lang == "ko" else english).format(**values)


# --- loading and merging stored runs -------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One benchmark record and the file (or session) it came from."""

    record: dict[str, Any]
    source: str

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What identifies a benchmark across runs: candidate, kind, rank."""
        return self.record["candidate"], self.record["kind"], self.record.get("rank")


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and "candidate" in value and "kind" in value


def read_stored(path: Path) -> list[Stored]:
    """The records of a results.jsonl log or of a pytest-benchmark JSON file (its `extra_info`)."""
    if not path.is_file():
        raise UsageError(f"{path}: not found; give pytest-benchmark JSON files or results.jsonl logs")
    if path.suffix == ".jsonl":
        return [Stored(record, str(path)) for record in results.read(path) if _is_record(record)]
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a JSON file: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise UsageError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    found = [Stored(b["extra_info"], str(path)) for b in document["benchmarks"] if _is_record(b.get("extra_info"))]
    if document["benchmarks"] and not found:
        raise UsageError(f"{path}: its benchmarks carry no ohlora records; was it written by ohlora-bench?")
    return found


def merge(stored: Iterable[Stored]) -> tuple[list[Stored], int]:
    """The latest record of each benchmark (by `finished`; later input wins a tie), and how many were replaced.

    The same record seen twice (the session's copy and the log's) is not a replacement.
    """
    kept: dict[tuple[str, str, int | None], Stored] = {}
    replaced = 0
    for item in stored:
        earlier = kept.get(item.key)
        if earlier is not None:
            if earlier.record.get("finished") == item.record.get("finished"):
                continue
            if (earlier.record.get("finished") or 0) > (item.record.get("finished") or 0):
                replaced += 1
                continue
            replaced += 1
        kept[item.key] = item
    return list(kept.values()), replaced


# --- the reference study's published table -------------------------------------------------------


@dataclass(frozen=True)
class StudyResults:
    """The study's measured figures (T4, bf16), per candidate name."""

    device: str
    ranks: tuple[int, ...]
    final: str
    backup: str
    rows: Mapping[str, Mapping[str, Any]]

    def finetune(self, name: str, field: str, rank: int) -> float | None:
        """The study's fine-tuning `field` at `rank`, or None where it has none."""
        row = self.rows.get(name)
        if row is None or rank not in self.ranks:
            return None
        return row[field][self.ranks.index(rank)]


def load_study(path: Path = DEFAULT_STUDY_RESULTS) -> StudyResults:
    """data/study_results.toml."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    study = document["study"]
    return StudyResults(
        device=study["device"], ranks=tuple(study["ranks"]), final=study["final"], backup=study["backup"],
        rows={row["name"]: row for row in document["result"]},
    )


# --- figures -------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.1f}"


def _mib(value: float) -> str:
    return f"{value:,.0f}"


def _loss(value: float) -> str:
    return f"{value:.3f}"


def _share(value: float) -> str:
    return f"{value:.0%}"


def _percent(value: float) -> str:
    # utilisation of tiny models is a few percent: whole percents would round it away
    return f"{value:.1%}"


def _count(value: int) -> str:
    return f"{value:,}"


def _describe_run(run: Mapping[str, Any]) -> str:
    return f"{run.get('device_name') or run.get('device')}, {run.get('dtype')}, {run.get('weights')} weights, {run.get('scale')} scale"


def _is_measured_peak(record: Mapping[str, Any]) -> bool:
    """Whether a record's peak is a GPU peak of a full-size model: the only one the VRAM budget can read."""
    return record.get("run", {}).get("scale") == "full" and str(record.get("memory_metric", "")).startswith("cuda")


@dataclass(frozen=True)
class Grade:
    """A human grade read back from an answers CSV at render time."""

    score: float | None
    graded: int
    note: str = ""


def reread_grade(stored_grade: float | None, graded: int, answers_csv: str | None, source: str) -> Grade:
    """The answers CSV's grades now (a person may have filled them in since the run).

    The path is tried as recorded, then beside the source file (`answers/NAME`),
    so a report dir that was copied elsewhere still works.
    """
    if not answers_csv:
        return Grade(stored_grade, graded, "no answers file recorded")
    recorded = Path(answers_csv)
    for path in (recorded, Path(source).parent / "answers" / recorded.name):
        if path.is_file():
            try:
                score, count = read_grades(path)
            except UsageError as error:
                return Grade(stored_grade, graded, f"grades unreadable, stored value shown: {error}")
            return Grade(score, count)
    return Grade(stored_grade, graded, f"answers file {answers_csv} not found; grade as stored in the record")


@lru_cache(maxsize=None)
def _plan(candidate: Candidate, ranks: tuple[int, ...], dtype: str, batch_size: int, max_new_tokens: int) -> CandidatePlan:
    # Building full-size models on the meta device takes a moment; reports of one process reuse it.
    return plan_candidate(candidate, ranks, dtype=dtype, batch_size=batch_size, max_new_tokens=max_new_tokens)


# --- gathering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """One merged run: its description, files, and how many benchmarks of it the report uses."""

    run_id: str
    description: Mapping[str, Any]
    sources: tuple[str, ...]
    used: int


@dataclass
class Report:
    """Everything the renderers need, gathered once."""

    lang: str
    settings: Settings
    candidates: list[Candidate]
    records: dict[tuple[str, str, int | None], Stored]
    ranks: list[int]
    runs: list[RunInfo]
    runs_read: int
    replaced: int
    plan_dtype: str
    plans: dict[str, CandidatePlan]
    grades: dict[tuple[str, int | None], Grade]
    weights: Mapping[str, float]
    study: StudyResults | None

    @cached_property
    def evidence(self) -> dict[str, selection.Evidence]:
        """What the recommendation reads of each candidate."""
        return {c.name: _evidence(self, c) for c in self.candidates}

    @cached_property
    def recommendation(self) -> selection.Recommendation:
        """Screening, budget, ranking: the final model and the backup."""
        s = self.settings
        rules = selection.Rules(
            max_params=s.max_params, min_params=s.min_params, vram_budget_mib=s.vram_budget_mb,
            weights=self.weights, licences=selection.load_licences(s.licenses),
        )
        return selection.recommend(list(self.evidence.values()), rules)

    def name(self, candidate: Candidate, lang: str | None = None) -> str:
        """The candidate's display name; approximate stand-ins are marked wherever they appear."""
        return candidate.name + (text("approx", lang or self.lang) if candidate.approximate else "")

    def record(self, name: str, kind: str, rank: int | None = None) -> dict[str, Any] | None:
        """The kept record of one benchmark, or None when it was not run."""
        stored = self.records.get((name, kind, rank))
        return stored.record if stored else None

    @property
    def all_records(self) -> list[dict[str, Any]]:
        """Every kept record."""
        return [stored.record for stored in self.records.values()]

    @property
    def stand_in(self) -> list[str]:
        """What makes these figures stand-ins (text keys "random_weights", "tiny_scale"); empty for real ones."""
        found = []
        if any(r["run"].get("weights") == "random" for r in self.all_records):
            found.append("random_weights")
        if any(r["run"].get("scale") == "tiny" for r in self.all_records):
            found.append("tiny_scale")
        return found

    @property
    def memory_metrics(self) -> str:
        """The peak-memory metrics the records use, e.g. "cpu_peak_rss"."""
        return ", ".join(sorted({str(r["memory_metric"]) for r in self.all_records if r.get("memory_metric")})) or "n/a"

    def stand_in_text(self, lang: str | None = None) -> str:
        """E.g. "random weights and tiny-scale models"."""
        lang = lang or self.lang
        return text("and", lang).join(text(key, lang) for key in self.stand_in)

    @property
    def mixed_runs(self) -> bool:
        """Whether the merged records differ in device, dtype, weights or scale."""
        return len({_describe_run(r["run"]) for r in self.all_records}) > 1


def gather(
    stored: Iterable[Stored], candidates: Sequence[Candidate], settings: Settings, weights: Mapping[str, float],
) -> Report:
    """Merge the records, re-read grades and plan every candidate at full size; the report judges them lazily."""
    stored = list(stored)
    kept, replaced = merge(stored)
    known = {candidate.name for candidate in candidates}
    unknown = sorted({item.record["candidate"] for item in kept} - known)
    if unknown:
        raise UsageError(
            f"records name candidate(s) {unknown} that the registry {settings.candidates} does not list; "
            "pass the registry they were run with (--candidates)"
        )
    records = {item.key: item for item in kept}
    ranks = sorted(
        {item.record["rank"] for item in kept if item.record["kind"] == "finetune"}
        | {rank for item in kept for rank in item.record["run"].get("ranks", ())}
    ) or list(settings.ranks)
    ordered = sorted(candidates, key=lambda c: (c.leaderboard_average is None, -(c.leaderboard_average or 0.0)))
    first_run = kept[0].record["run"] if kept else {}
    gpu_dtypes = [item.record["run"]["dtype"] for item in kept if str(item.record["run"].get("device")).startswith("cuda")]
    # A GPU run plans at its own dtype; a CPU run at bf16, the dtype a GPU run of the study uses.
    plan_dtype = gpu_dtypes[0] if gpu_dtypes else "bfloat16"
    plans = {
        c.name: _plan(c, tuple(ranks), plan_dtype, int(first_run.get("batch_size", settings.batch_size)),
                      int(first_run.get("max_new_tokens", settings.max_new_tokens)))
        for c in ordered
    }
    return Report(
        lang=settings.lang, settings=settings, candidates=ordered, records=records, ranks=ranks, runs=_runs(kept),
        runs_read=len({item.record["run"].get("run_id") for item in stored}), replaced=replaced,
        plan_dtype=plan_dtype, plans=plans, grades=_reread_grades(records), weights=weights,
        study=load_study() if settings.compare_study else None,
    )


def _reread_grades(records: Mapping[tuple[str, str, int | None], Stored]) -> dict[tuple[str, int | None], Grade]:
    """Grades of the base model's answers (rank None) and of each adapter's (rank r)."""
    grades = {}
    for (name, kind, rank), stored in records.items():
        record = stored.record
        if kind == "inference" and record.get("status") == "ok":
            grades[(name, None)] = reread_grade(
                record.get("human_grade"), record.get("human_graded", 0), record.get("answers_csv"), stored.source
            )
        after = record.get("quality_after_finetune")
        if kind == "finetune" and isinstance(after, dict):
            grades[(name, rank)] = reread_grade(
                after.get("human_grade"), after.get("human_graded", 0), after.get("answers_csv"), stored.source
            )
    return grades


def _runs(kept: Sequence[Stored]) -> list[RunInfo]:
    runs: dict[str, dict[str, Any]] = {}
    for item in kept:
        run = item.record["run"]
        entry = runs.setdefault(run.get("run_id", "unknown"), {"description": run, "sources": [], "used": 0})
        entry["used"] += 1
        if item.source not in entry["sources"]:
            entry["sources"].append(item.source)
    return [RunInfo(run_id, e["description"], tuple(e["sources"]), e["used"]) for run_id, e in runs.items()]


def _evidence(report: Report, candidate: Candidate) -> selection.Evidence:
    """What the recommendation reads of one candidate, each figure with its source."""
    largest = report.ranks[-1]
    plan = report.plans[candidate.name]
    finetune = report.record(candidate.name, "finetune", largest)
    inference = report.record(candidate.name, "inference")
    ok_finetune = finetune if finetune and finetune["status"] == "ok" else None
    ok_inference = inference if inference and inference["status"] == "ok" else None
    estimate = f"plan estimate at full size, {plan.dtype}"
    if finetune and finetune["status"] == "oom" and _is_measured_peak(finetune):
        ft_peak, ft_source = None, "out of memory at full size"
    elif ok_finetune and _is_measured_peak(ok_finetune):
        ft_peak, ft_source = ok_finetune["peak_mib"], f"measured, {ok_finetune['memory_metric']}"
    else:
        ft_peak = next(r.finetune_peak_estimate_mib for r in plan.ranks if r.rank == largest)
        ft_source = estimate
    if ok_inference and _is_measured_peak(ok_inference):
        inf_peak, inf_source = ok_inference["peak_mib"], f"measured, {ok_inference['memory_metric']}"
    else:
        inf_peak, inf_source = plan.inference_peak_estimate_mib, estimate
    failures = tuple(
        f"{_benchmark_name(record)} {_status_word(record['status'], 'en')}: {record.get('error') or 'no message'}"
        for record in report.all_records
        if record["candidate"] == candidate.name and record["status"] in FAILED_STATUSES
    )
    grade = report.grades.get((candidate.name, None))
    pretrained = ok_inference is not None and ok_inference["run"].get("weights") == "pretrained"
    return selection.Evidence(
        candidate=candidate,
        largest_rank=largest,
        finetune_peak_mib=ft_peak,
        finetune_peak_source=ft_source,
        figures={
            "finetune_time": ok_finetune["seconds"] if ok_finetune else None,
            "finetune_memory": ft_peak,
            "inference_time": ok_inference["mean_seconds_per_prompt"] if ok_inference else None,
            "inference_memory": inf_peak,
        },
        sources={
            "finetune_time": f"measured at r{largest}" if ok_finetune else "not measured",
            "finetune_memory": f"{ft_source} at r{largest}",
            "inference_time": "measured" if ok_inference else "not measured",
            "inference_memory": inf_source,
        },
        human_grade=grade.score if grade and pretrained else None,
        failures=failures,
    )


def _benchmark_name(record: Mapping[str, Any]) -> str:
    return f"fine-tuning r{record['rank']}" if record["kind"] == "finetune" else "inference"


# --- the document: blocks rendered to Markdown and HTML ------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    style: str = "p"  # "p", "banner" or "note"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str
    wide: bool = False


Block = Heading | Paragraph | Bullets | Table | Image


def _status_cell(report: Report, record: Mapping[str, Any] | None, value: Callable[[Mapping[str, Any]], str]) -> str:
    """A measured figure, or why there is none: never blank."""
    lang = report.lang
    if record is None:
        return text("not_run", lang)
    if record["status"] != "ok":
        return _status_word(record["status"], lang)
    return value(record)


def _status_word(status: str, lang: str) -> str:
    """Why a benchmark has no figure: skipped, OOM, failed, interrupted (an unknown status as it is)."""
    return text(status, lang) if status in ("skipped", *FAILED_STATUSES) else status


def _figure(record: Mapping[str, Any], field: str, fmt: Callable[[float], str], lang: str) -> str:
    value = record.get(field)
    return text("na", lang) if value is None else fmt(value)


def _eval_loss_cell(record: Mapping[str, Any], lang: str) -> str:
    # The study's own file leaves its valid rows unanswered: there is no loss to compute, and the cell says so.
    if record.get("eval_loss") is None and record.get("eval_rows") == 0:
        return text("no_valid_answers", lang)
    return _figure(record, "eval_loss", _loss, lang)


def _peak(report: Report, record: Mapping[str, Any]) -> str:
    cell = _figure(record, "peak_mib", _mib, report.lang)
    if record.get("peak_mib") is not None and record["peak_mib"] > report.settings.vram_budget_mb:
        cell += f" ⚠ {text('over_budget', report.lang)}"
    return cell


def _beside_study(report: Report, cell: str, theirs: float | None, fmt: Callable[[float], str]) -> str:
    if report.study is None or theirs is None:
        return cell
    return f"{cell} · {text('study_t4', report.lang)}: {fmt(theirs)}"


def _quality_cell(report: Report, name: str, record: Mapping[str, Any]) -> str:
    grade = report.grades.get((name, None), Grade(None, 0))
    cell = grade_label(grade.score, report.lang)
    if grade.score is not None:
        cell += f" ({grade.score:.1f}, n={grade.graded})"
    chrf = record.get("quality", {}).get("chrf")
    if chrf is not None:
        cell += f" · chrF {chrf:.1f}"
    if report.study is not None and name in report.study.rows:
        cell += f" · {text('study_t4', report.lang)}: {report.study.rows[name]['human_grade']}"
    return cell


def _results_table(report: Report) -> Table:
    lang, ranks = report.lang, report.ranks
    columns = [text("model", lang), text("leaderboard", lang), text("params", lang)]
    columns += [text("ft_time", lang, rank=r) for r in ranks] + [text("ft_memory", lang, rank=r) for r in ranks]
    columns += [text("eval_loss", lang, rank=r) for r in ranks]
    columns += [text("inf_time", lang), text("inf_memory", lang), text("answer_quality", lang)]
    if report.mixed_runs:
        columns.append(text("measured_with", lang))
    rows = []
    for c in report.candidates:
        study = report.study
        finetunes = [report.record(c.name, "finetune", r) for r in ranks]
        inference = report.record(c.name, "inference")
        row = [report.name(c), _leaderboard(c, lang), c.params_label]
        row += [
            _beside_study(report, _status_cell(report, rec, lambda r: _figure(r, "seconds", _seconds, lang)),
                          study and study.finetune(c.name, "finetune_seconds", rank), _seconds)
            for rank, rec in zip(ranks, finetunes)
        ]
        row += [
            _beside_study(report, _status_cell(report, rec, lambda r: _peak(report, r)),
                          study and study.finetune(c.name, "finetune_memory_mib", rank), _mib)
            for rank, rec in zip(ranks, finetunes)
        ]
        row += [_status_cell(report, rec, lambda r: _eval_loss_cell(r, lang)) for rec in finetunes]
        study_row = study.rows.get(c.name, {}) if study else {}
        row += [
            _beside_study(report, _status_cell(report, inference, lambda r: _figure(r, "mean_seconds_per_prompt", _seconds, lang)),
                          study_row.get("inference_seconds"), _seconds),
            _beside_study(report, _status_cell(report, inference, lambda r: _peak(report, r)),
                          study_row.get("inference_memory_mib"), _mib),
            _status_cell(report, inference, lambda r: _quality_cell(report, c.name, r)),
        ]
        if report.mixed_runs:
            mine = [r for r in (*finetunes, inference) if r is not None]
            row.append("; ".join(dict.fromkeys(_describe_run(r["run"]) for r in mine)) or text("not_run", lang))
        rows.append(tuple(row))
    return Table(tuple(columns), tuple(rows))


def _leaderboard(candidate: Candidate, lang: str) -> str:
    return text("na", lang) if candidate.leaderboard_average is None else f"{candidate.leaderboard_average:.2f}"


def _candidates_table(report: Report) -> Table:
    lang = report.lang
    rows = []
    for place, c in enumerate(report.candidates, start=1):
        verdict = report.recommendation.verdicts[c.name]
        params = c.params_label + (f" ({c.params_exact:,})" if c.params_exact else "")
        summary = text("eligible" if verdict.eligible else "excluded", lang)
        details = [*verdict.reasons, *(f"⚠ {flag}" for flag in verdict.flags)]
        rows.append((str(place), report.name(c), params, _leaderboard(c, lang), c.license, c.korean,
                     summary + (": " + "; ".join(details) if details else "")))
    columns = ("rank", "model", "params", "leaderboard", "licence", "korean", "verdict")
    return Table(tuple(text(key, lang) for key in columns), tuple(rows))


def _choice_table(report: Report) -> Table:
    lang, rec = report.lang, report.recommendation
    rows = [
        (text("final", lang), rec.final or text("na", lang), rec.final_reason),
        (text("backup", lang), rec.backup or text("na", lang), rec.backup_reason or text("na", lang)),
    ]
    if report.study is not None:
        rows.append((f"{text('final', lang)} / {text('backup', lang)} ({text('study_t4', lang)})",
                     f"{report.study.final} / {report.study.backup}",
                     "the reference study's choice (it used the backup in the end, for its licence)"))
    return Table((text("final", lang) + " / " + text("backup", lang), text("model", lang), text("why", lang)),
                 tuple(rows))


def _quality_table(report: Report) -> Table:
    """One row per candidate for the base model's answers, plus one per adapter rank scored after fine-tuning."""
    lang = report.lang
    rows = []
    for c in report.candidates:
        inference = report.record(c.name, "inference")
        if inference is None or inference["status"] != "ok":
            status = _status_cell(report, inference, str)
            rows.append((report.name(c), text("base", lang), *[status] * 7))
            adapters: list[tuple[str, int | None, Mapping[str, Any]]] = []
        else:
            adapters = [(text("base", lang), None, inference)]
        for rank in report.ranks:
            record = report.record(c.name, "finetune", rank)
            after = record.get("quality_after_finetune") if record else None
            if isinstance(after, dict):
                adapters.append((f"r{rank}", rank, after))
        for adapter, rank, answered in adapters:
            grade = report.grades.get((c.name, rank), Grade(None, 0))
            figures = answered.get("quality") or {}
            chrf = figures.get("chrf")
            rows.append((
                report.name(c), adapter,
                grade_label(grade.score, lang) + (f" ({grade.score:.1f})" if grade.score is not None else "")
                + (f" — {grade.note}" if grade.note else ""),
                str(grade.graded),
                text("na", lang) if chrf is None else f"{chrf:.1f} (n={figures.get('n_scored', 0)})",
                _share(figures.get("empty_share", 0.0)),
                _share(figures.get("hangul_share", 0.0)),
                _share(figures.get("repeated_ngram_share", 0.0)),
                _beside_report(report, answered.get("answers_csv")) or text("na", lang),
            ))
    keys = ("model", "adapter", "human_grade", "graded", "chrf", "empty", "hangul", "repeats", "answers_csv")
    return Table(tuple(text(key, lang) for key in keys), tuple(rows))


def _beside_report(report: Report, path: str | None) -> str | None:
    """A path relative to the report's folder when it lies inside it: short, and still right if the folder moves."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(report.settings.report_dir.resolve()))
    except ValueError:
        return path


def _plan_table(report: Report) -> Table:
    lang, ranks, budget = report.lang, report.ranks, report.settings.vram_budget_mb
    run_dtypes = sorted({r["run"]["dtype"] for r in report.all_records} - {report.plan_dtype})
    dtype = report.plan_dtype
    columns = [text("model", lang), text("total_params", lang), text("weights_mib", lang, dtype=dtype)]
    columns += [text("weights_as_run", lang, dtype=other) for other in run_dtypes]
    columns += [text("trainable", lang, rank=r) for r in ranks]
    columns += [text("ft_estimate", lang, rank=r, dtype=dtype) for r in ranks]
    columns += [text("inf_estimate", lang, dtype=dtype), text("fits", lang, rank=ranks[-1], budget=f"{budget:,.0f}")]
    rows = []
    for c in report.candidates:
        plan = report.plans[c.name]
        largest = plan.ranks[-1].finetune_peak_estimate_mib
        rows.append(tuple(
            [report.name(c), _count(plan.total_params), _mib(plan.weights_mib)]
            + [_mib(plan.total_params * DTYPES[other].itemsize * MIB_PER_BYTE) for other in run_dtypes]
            + [_count(r.trainable_params) for r in plan.ranks]
            + [_mib(r.finetune_peak_estimate_mib) for r in plan.ranks]
            + [_mib(plan.inference_peak_estimate_mib), text("yes_est" if largest <= budget else "no_est", lang)]
        ))
    return Table(tuple(columns), tuple(rows))


def _utilisation_table(report: Report) -> Table:
    """MFU per rank and the decode's bandwidth use, with the peaks they are measured against."""
    lang, ranks = report.lang, report.ranks
    columns = [text("model", lang)] + [text("mfu", lang, rank=r) for r in ranks]
    columns += [text("bandwidth", lang), text("peaks", lang)]
    rows = []
    for c in report.candidates:
        inference = report.record(c.name, "inference")
        finetune = (report.record(c.name, "finetune", r) for r in ranks)
        trained = next((r for r in finetune if r is not None and r.get("peak_tflops") is not None), None)
        peaks = []
        if trained is not None:
            peaks.append(f"{trained['peak_tflops']:.3g} TFLOP/s ({trained['peak_source']})")
        if inference is not None and inference.get("peak_gbps") is not None:
            peaks.append(f"{inference['peak_gbps']:.3g} GB/s ({inference['peak_source']})")
        peak_cell = "; ".join(peaks) or text("na", lang)
        rows.append(tuple(
            [report.name(c)]
            + [_status_cell(report, report.record(c.name, "finetune", r), lambda x: _figure(x, "mfu", _percent, lang))
               for r in ranks]
            + [_status_cell(report, inference, lambda x: _figure(x, "bandwidth_utilisation", _percent, lang)), peak_cell]
        ))
    return Table(tuple(columns), tuple(rows))


def _runs_table(report: Report) -> Table:
    rows = []
    for run in report.runs:
        d = run.description
        versions = d.get("versions", {})
        rows.append((
            run.run_id, ", ".join(run.sources), str(d.get("date", "?")),
            f"{d.get('device_name') or d.get('device')} ({d.get('device')})", str(d.get("dtype")),
            str(d.get("weights")), str(d.get("scale")),
            f"train {d.get('train_rows')}, valid {d.get('valid_rows')} ({d.get('preset')})",
            f"batch {d.get('batch_size')}, {d.get('epochs')} epochs, lr {d.get('learning_rate')}",
            ", ".join(str(r) for r in d.get("ranks", ())),
            f"{d.get('prompts')} prompts, ≤{d.get('max_new_tokens')} new tokens"
            + (", greedy" if d.get("greedy") else ", sampled"),
            " / ".join(f"{lib} {versions.get(lib, '?')}" for lib in ("torch", "transformers", "peft")),
            str(run.used),
        ))
    columns = ("run id", "file(s)", "date", "device", "dtype", "weights", "scale", "rows", "training",
               "ranks", "inference", "torch / transformers / peft", "benchmarks used")
    return Table(columns, tuple(rows))


def _scores_table(report: Report) -> Table:
    rec = report.recommendation
    columns = [text("model", report.lang), text("place", report.lang)] + [
        f"{c.label} (w={rec.weights[c.name]:g})" for c in selection.CRITERIA
    ] + [text("score", report.lang)]
    by_name = {c.name: c for c in report.candidates}
    rows = []
    for score in rec.scores:
        cells = [report.name(by_name[score.name]), str(score.place)]
        for c in selection.CRITERIA:
            cells.append(f"{c.show(score.raw[c.name])} → {score.normalised[c.name]:.2f}")
        cells.append(f"{score.score:.3f}")
        rows.append(tuple(cells))
    return Table(tuple(columns), tuple(rows))


def _banner(report: Report) -> list[Block]:
    lang = report.lang
    if report.stand_in:
        blocks: list[Block] = [Paragraph(text("banner_stand_in", lang, what=report.stand_in_text()), "banner")]
        if "random_weights" in report.stand_in:
            blocks.append(Paragraph(text("quality_meaningless", lang), "banner"))
        return blocks
    return [Paragraph("Pretrained weights at full size: real figures of these models on the device below.", "note")]


def _approximate_note(report: Report) -> list[str]:
    approximate = [report.name(c) for c in report.candidates if c.approximate]
    if not approximate:
        return []
    return [f"{', '.join(approximate)}: the architecture is unknown; a stand-in of about the right size "
            "is measured and planned instead. Its figures are approximate wherever they appear."]


def _what_blocks(report: Report) -> list[Block]:
    s = report.settings
    lines = [
        f"Measured with: {'; '.join(dict.fromkeys(_describe_run(r['run']) for r in report.all_records)) or 'nothing'}.",
        f"Peak memory metric: {report.memory_metrics} (cuda_max_allocated = torch's allocator peak; "
        "cpu_peak_rss = the process's peak resident memory, model and Python included).",
        f"Rendered {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from {report.runs_read} run(s); the latest "
        f"measurement of each benchmark (candidate, kind, rank) is kept: {len(report.records)} benchmark(s) "
        f"from the {len(report.runs)} run(s) below, {report.replaced} earlier measurement(s) replaced.",
        f"Screening: {s.min_params:g} B ≤ parameters ≤ {s.max_params:g} B, licence on the allow-list "
        f"(data/licenses.toml), Korean support; VRAM budget {s.vram_budget_mb:,.0f} MiB for the fine-tuning "
        f"peak at r{report.ranks[-1]}.",
    ]
    return [*(Paragraph(line) for line in lines), _runs_table(report)]


def _recommendation_blocks(report: Report) -> list[Block]:
    rec = report.recommendation
    by_name = {c.name: c for c in report.candidates}
    blocks: list[Block] = [
        Paragraph("Weights (defaults, then setup.cfg `ohlora_weight_*`, then `--ohlora-ranking-weights`): "
                  + ", ".join(f"{c.label} {rec.weights[c.name]:g}" for c in selection.CRITERIA) + "."),
        Paragraph(f"Answer quality comes from: {rec.quality_source}."),
        Paragraph(f"Formula: {selection.FORMULA}"),
        Paragraph("Cost figures: " + _sources_sentence(report)),
    ]
    if rec.scores:
        blocks.append(_scores_table(report))
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
        f"{report.name(c)} {_benchmark_name(r)}: {_status_word(r['status'], 'en')} — "
        f"{r.get('error') or 'no message'}"
        for c in report.candidates for r in report.all_records
        if r["candidate"] == c.name and r["status"] != "ok"
    ]
    return [Heading(text("failures", report.lang)), Bullets(tuple(failures))] if failures else []


def _notes(report: Report) -> list[str]:
    notes = [
        "A cell that is not a figure says why: not run (no record in the merged runs), skipped "
        "(e.g. weights not on this machine), OOM, failed (see Failures), interrupted (the process died mid-run); "
        "n/a: the benchmark ran but the figure does not apply (e.g. no held-out rows for the eval loss).",
        "Fine-tuning time is the timed training loop (optimizer steps); inference time is the mean `generate` "
        "time per prompt, at most the stated number of NEW tokens.",
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


def document(report: Report, images: Mapping[str, Path]) -> list[Block]:
    """The report as blocks, in reading order."""
    lang = report.lang
    captions = {
        "finetune_time": "Fine-tuning time vs LoRA rank", "finetune_memory": "Fine-tuning peak memory vs LoRA rank",
        "training_loss": "Training loss curves", "inference_cost": "Inference time vs peak memory",
    }
    blocks: list[Block] = [Heading(text("title", lang), 1), *_banner(report), Heading(text("what", lang)),
                           *_what_blocks(report)]
    blocks += [Heading(text("candidates", lang)), _candidates_table(report)]
    blocks += [Heading(text("results", lang)), _results_table(report), _choice_table(report)]
    if report.stand_in:
        blocks.append(Paragraph(text("banner_stand_in", lang, what=report.stand_in_text()), "note"))
    blocks += [Heading(text("quality", lang)), _quality_table(report)]
    blocks.append(Paragraph(
        "Human grades are re-read from the answers CSVs at render time: fill in the `grade` column "
        "(best/good/medium/poor/worst, 최상/상/중/하/최하 or 1-5) and render again."
        + (" " + text("quality_meaningless", lang) if "random_weights" in report.stand_in else ""), "note"))
    blocks += [Heading(text("utilisation", lang)), _utilisation_table(report)]
    blocks.append(Paragraph(text("utilisation_note", lang), "note"))
    blocks += [Heading(text("plan", lang)), _plan_table(report)]
    blocks += [Heading(text("plots", lang))]
    blocks += [Image(path, captions[name], wide=name == "training_loss") for name, path in images.items()]
    if not images:
        blocks.append(Paragraph("No successful benchmark to plot."))
    blocks += [Heading(text("recommendation", lang)), *_recommendation_blocks(report)]
    blocks += _failure_blocks(report)
    blocks += [Heading(text("notes", lang)), Bullets(tuple(_notes(report)))]
    return blocks


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images as relative links to the PNG files beside it."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(f"> **⚠ {block.text}**" if block.style == "banner" else
                       f"_{block.text}_" if block.style == "note" else block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
                     "|" + "---|" * len(block.columns)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({block.path.name})")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1800px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
th, td { border: 1px solid #bbb; padding: 3px 6px; vertical-align: top; }
th { background: #eef1f5; text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.banner { background: #fde2e1; border: 2px solid #c0392b; color: #7b1d16; padding: 0.7em 1em; font-weight: bold; }
.note { color: #555; font-style: italic; }
figure { display: inline-block; width: 48%; margin: 0.5em 1% 0.5em 0; vertical-align: top; }
figure.wide { width: 97%; }
figcaption { font-size: 12px; color: #555; }
img { width: 100%; border: 1px solid #ddd; }
"""


def _inline(value: str) -> str:
    # The only markup the blocks use is **bold** and `code`; escape first, then apply it.
    escaped = html.escape(value)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: Sequence[Block], lang: str) -> str:
    """A self-contained HTML page: plots embedded as base64 PNGs, so the file can be sent on its own."""
    out = [f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
           f"<title>{html.escape(text('title', lang))}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            style = f' class="{block.style}"' if block.style != "p" else ""
            out.append(f"<p{style}>{'⚠ ' if block.style == 'banner' else ''}{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            wide = ' class="wide"' if block.wide else ""
            out.append(f'<figure{wide}><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(block.caption)} ({html.escape(block.path.name)})</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)


def results_frame(report: Report) -> Any:
    """One row per benchmark, nested figures flattened (`quality.chrf`, `run.versions.torch`), for pandas users."""
    import pandas as pd

    rows = []
    for stored in report.records.values():
        record = dict(stored.record)
        grade = report.grades.get((record["candidate"], None if record["kind"] == "inference" else record.get("rank")))
        if grade is not None:
            # The grade as it stands now, not as it stood when the benchmark ran.
            if record["kind"] == "inference":
                record.update(human_grade=grade.score, human_graded=grade.graded)
            else:
                record["quality_after_finetune"] = {
                    **record["quality_after_finetune"], "human_grade": grade.score, "human_graded": grade.graded,
                }
        if isinstance(record.get("losses"), list):
            record["losses"] = json.dumps(record["losses"])
        record["source"] = stored.source
        rows.append(record)
    frame = pd.json_normalize(rows, sep=".")
    first = [c for c in ("candidate", "kind", "rank", "status", "seconds", "peak_mib") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


# --- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """What a render wrote."""

    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]

    def lines(self) -> list[str]:
        """One line per file, for the terminal."""
        return [f"report: {self.markdown}", f"report: {self.html}", f"results table: {self.csv}",
                f"plots: {', '.join(str(p) for p in self.plots) or 'none'}"]


def _series(report: Report) -> list[CandidateSeries]:
    series = []
    for c in report.candidates:
        finetunes = {r: report.record(c.name, "finetune", r) for r in report.ranks}
        ok = {r: rec for r, rec in finetunes.items() if rec and rec["status"] == "ok"}
        inference = report.record(c.name, "inference")
        inference = inference if inference and inference["status"] == "ok" else None
        series.append(CandidateSeries(
            label=report.name(c, "en"),  # plot fonts may lack Hangul
            finetune_seconds={r: rec["seconds"] for r, rec in ok.items()},
            finetune_peak_mib={r: rec["peak_mib"] for r, rec in ok.items() if rec.get("peak_mib") is not None},
            losses={r: rec["losses"] for r, rec in ok.items() if rec.get("losses")},
            inference_seconds=inference["mean_seconds_per_prompt"] if inference else None,
            inference_peak_mib=inference.get("peak_mib") if inference else None,
        ))
    return series


def render(
    stored: Iterable[Stored], candidates: Sequence[Candidate], settings: Settings, weights: Mapping[str, float],
) -> ReportFiles:
    """Write leaderboard.md, leaderboard.html, results.csv and the PNG plots to settings.report_dir."""
    report = gather(stored, candidates, settings, weights)
    out = settings.report_dir
    out.mkdir(parents=True, exist_ok=True)
    subtitle = "; ".join(dict.fromkeys(_describe_run(r["run"]) for r in report.all_records))
    if report.stand_in:
        subtitle = f"STAND-IN ({report.stand_in_text('en')}): {subtitle}"
    images = write_plots(_series(report), out, subtitle, report.memory_metrics)
    blocks = document(report, images)
    files = ReportFiles(out / "leaderboard.md", out / "leaderboard.html", out / "results.csv", tuple(images.values()))
    files.markdown.write_text(to_markdown(blocks), encoding="utf-8")
    files.html.write_text(to_html(blocks, report.lang), encoding="utf-8")
    results_frame(report).to_csv(files.csv, index=False)
    return files


def render_session(study: "Study", ini: Callable[[str], object] | None = None) -> ReportFiles | None:
    """The end-of-session report: this run's records in results.jsonl plus the session's own.

    Under pytest-xdist the controller holds no records itself; the workers
    share its run_id, so the log filtered by run_id has them all. None when
    the session measured nothing (e.g. `pytest tests`).
    """
    settings = study.settings
    path = settings.results_path
    logged = [Stored(r, str(path)) for r in results.read(path)
              if _is_record(r) and r.get("run", {}).get("run_id") == study.run_id]
    own = [Stored(r, str(path)) for r in study.records]
    if not logged and not own:
        return None
    weights = selection.resolve_weights(ini, settings.ranking_weights)
    return render([*logged, *own], study.candidates, settings, weights)


def _ini_from(path: Path | None) -> Callable[[str], object] | None:
    """`ohlora_weight_*` keys of a setup.cfg's [tool:pytest] section, as pytest would read them."""
    if path is None or not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    section = parser["tool:pytest"] if parser.has_section("tool:pytest") else {}
    return lambda key: section.get(key)


def main(argv: list[str]) -> int:
    """`python -m ohlora_fixtures report FILE...`: render the report from stored runs."""
    parser = argparse.ArgumentParser(
        prog="python -m ohlora_fixtures report",
        description="Merge stored runs (pytest-benchmark JSON files under .benchmarks/<machine>/ and/or "
        "results.jsonl logs) into one leaderboard; the latest measurement of each benchmark "
        "(candidate, kind, rank) wins.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="pytest-benchmark JSON or results.jsonl")
    parser.add_argument("--out", default=str(Path(".benchmarks") / "ohlora"), help="output directory (default: %(default)s)")
    parser.add_argument("--candidates", default=str(registry.DEFAULT_REGISTRY), help="candidate registry TOML")
    parser.add_argument("--licenses", default=str(selection.DEFAULT_LICENCES), help="licence policy TOML")
    parser.add_argument("--lang", default="en", help="en or ko (Korean headers)")
    parser.add_argument("--compare-study", action="store_true", help="show the reference study's T4 figures beside ours")
    parser.add_argument("--max-params", default=None, help="screening: at most this many billion parameters (3.0)")
    parser.add_argument("--min-params", default=None, help="screening: at least this many billion parameters (0.0)")
    parser.add_argument("--vram-budget-mb", default=None, help="fine-tuning peak budget in MiB (12288)")
    parser.add_argument("--ranking-weights", default=None, metavar="NAME=W,...",
                        help="recommendation weights; names: " + ", ".join(selection.CRITERION_NAMES))
    parser.add_argument("--ini", type=Path, default=Path("setup.cfg"),
                        help="read ohlora_weight_* keys from this file's [tool:pytest] section (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = parse({
            "report_dir": args.out, "candidates": args.candidates, "licenses": args.licenses, "lang": args.lang,
            "compare_study": args.compare_study, "max_params": args.max_params, "min_params": args.min_params,
            "vram_budget_mb": args.vram_budget_mb, "ranking_weights": args.ranking_weights,
        })
    except UsageError as error:
        # The options are checked by the plugin's own parsers, whose messages name the pytest flags.
        raise UsageError(str(error).replace("--ohlora-report-dir", "--out").replace("--ohlora-", "--")) from None
    stored = [item for path in args.files for item in read_stored(path)]
    if not stored:
        raise UsageError(f"no ohlora records in {', '.join(str(p) for p in args.files)}")
    names = {item.record["candidate"] for item in stored}
    candidates = [c for c in registry.load_registry(settings.candidates) if c.name in names]
    weights = selection.resolve_weights(_ini_from(args.ini), settings.ranking_weights)
    files = render(stored, candidates, settings, weights)
    print("\n".join(files.lines()))
    return 0
