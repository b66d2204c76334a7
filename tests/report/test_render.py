"""The leaderboard report: every cell filled or explained, shards merged, grades read back, Korean headers."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ohlora_fixtures import report
from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import policy
from ohlora_fixtures.inputs.options import parse
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.records.figures import DecodeUtilisation, FinetuneUtilisation, MemoryFigures, QualityFigures
from ohlora_fixtures.records.record import (
    Answers,
    BenchmarkRecord,
    FinetuneFigures,
    InferenceFigures,
    Kind,
    RunDescription,
    Status,
    plain,
)
from ohlora_fixtures.report.tables import results_table
from ohlora_fixtures.session.session_records import SessionRecords
from tests.conftest import GridRun

CANDIDATES = {c.name: c for c in load_registry()}
# Small full-size plans keep the tests fast; TinyKo is the approximate stand-in.
NAMES = ("polyglot-ko-1.3b", "TinyKo-v5-a")
RANKS = (16, 32)


def run_description(run_id: str = "run-a", **overrides: Any) -> RunDescription:
    return dataclasses.replace(RunDescription(
        run_id=run_id, date="2026-01-02 03:04:05 UTC", device="cpu", device_name="CPU: test",
        dtype="float32", weights="random", scale="tiny", dataset="data/persona_qa.csv",
        preset="default", data_fingerprint="0123456789ab", train_rows=20, valid_rows=5, prompts=3, batch_size=4,
        epochs=10, learning_rate=2e-4, lora_alpha=16, lora_dropout=0.05, ranks=RANKS, max_new_tokens=80,
        greedy=False, seed=42, vram_budget_mb=12288.0,
        versions={"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2"},
    ), **overrides)


def memory(peak_mib: float, start_mib: float, after_mib: float) -> MemoryFigures:
    return MemoryFigures("cpu_peak_rss", peak_mib, start_mib, after_mib, peak_mib - start_mib)


# What a calibration gives the time model (measure/step_time.py): a CPU's matmul TFLOP/s, copy and
# matrix-vector GB/s and per-operation microseconds.
TIME_MODEL = {"tflops": 0.19, "gbps": 30.0, "gemv_gbps": 20.0, "overhead_us": 5.0}


def finetune(name: str, rank: int, finished: float = 1.0, status: Status = Status.OK,
             run: RunDescription | None = None, seconds: float = 1.5) -> BenchmarkRecord:
    record = BenchmarkRecord(
        id=f"benchmarks/test_finetune.py::test_finetune[{name}-r{rank}]", kind=Kind.FINETUNE,
        candidate=name, rank=rank, approximate=CANDIDATES[name].approximate, fingerprint=f"ft-{name}-{rank}",
        run=run or run_description(), status=status, error=None if status is Status.OK else "RuntimeError: boom",
        finished=finished,
    )
    if status is Status.OK:
        record.seconds, record.memory = seconds, memory(400.0 + rank, 390.0, 401.0)
        record.finetune = FinetuneFigures(
            steps=3, losses=(7.2, 7.1, 7.0), final_loss=7.0, eval_loss=7.05, eval_rows=5,
            trainable_params=1000 * rank, total_params=100_000, tokens=300, tokens_per_second=200.0,
            utilisation=FinetuneUtilisation(8_100_000_000, 0.008, 0.19, 0.0425, "calibrated", time_model=TIME_MODEL),
        )
    return record


def inference(
    name: str, answers_csv: Path, finished: float = 2.0, run: RunDescription | None = None
) -> BenchmarkRecord:
    answers = Answers(
        str(answers_csv),
        QualityFigures(chrf=4.5, n_scored=3, empty_share=0.0, hangul_share=0.9, repeated_ngram_share=0.1),
    )
    return BenchmarkRecord(
        id=f"benchmarks/test_inference.py::test_inference[{name}]",
        kind=Kind.INFERENCE,
        candidate=name,
        rank=None,
        approximate=CANDIDATES[name].approximate,
        fingerprint=f"inf-{name}",
        run=run or run_description(),
        status=Status.OK,
        finished=finished,
        seconds=0.6,
        memory=memory(420.0, 410.0, 415.0),
        inference=InferenceFigures(
            prompts=3,
            mean_seconds_per_prompt=0.2,
            new_tokens=30,
            max_new_tokens_seen=10,
            prompt_tokens=20,
            tokens_per_second=50.0,
            total_params=100_000,
            answers=answers,
            utilisation=DecodeUtilisation(55_800_000, 0.93, 30.0, 0.031, "datasheet", time_model=TIME_MODEL),
        ),
    )


def answers_file(path: Path, grades: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["prompt_line", "prompt", "reference", "answer", "new_tokens", "seconds", "grade"])
        for index, grade in enumerate(grades):
            writer.writerow([index + 2, f"질문 {index}", "참고", f"답변 {index}", 10, 0.2, grade])
    return path


def benchmark_json(path: Path, records: list[BenchmarkRecord]) -> Path:
    """A file shaped like pytest-benchmark's autosave: each benchmark's extra_info is one record."""
    path.write_text(
        json.dumps(
            {
                "machine_info": {},
                "commit_info": {},
                "datetime": "2026-01-02T03:04:05",
                "version": "5.3.1",
                "benchmarks": [{"name": r.id, "extra_info": r.flat(), "stats": {"mean": 1.0}} for r in records],
                "ohlora": plain(records[0].run) if records else {},
            }
        ),
        encoding="utf-8",
    )
    return path


def jsonl(path: Path, records: list[BenchmarkRecord]) -> Path:
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    return path


def settings_for(out: Path, **raw: str | bool) -> Any:
    return parse({"report_dir": str(out), **raw})


def full_run(tmp_path: Path) -> list[BenchmarkRecord]:
    """polyglot measured at every rank; TinyKo with an OOM, a failure and a rank not run."""
    answers = tmp_path / "answers"
    return [
        finetune("polyglot-ko-1.3b", 16),
        finetune("polyglot-ko-1.3b", 32),
        inference("polyglot-ko-1.3b", answers_file(answers / "polyglot-ko-1.3b.random-tiny.csv", ["", "", ""])),
        finetune("TinyKo-v5-a", 16, status=Status.OOM),
        dataclasses.replace(
            inference("TinyKo-v5-a", answers / "none.csv"), status=Status.FAILED, error="ValueError: bad"
        ),
    ]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading`, header row included."""
    section = markdown.split(f"## {heading}\n", 1)[1]
    table = next(block for block in section.strip().split("\n\n") if block.startswith("|"))
    lines = table.splitlines()
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines if "---|" not in line]


def test_every_column_is_rendered_from_a_stored_run_and_no_cell_is_blank(tmp_path: Path) -> None:
    stored = benchmark_json(tmp_path / "0001_run.json", full_run(tmp_path))
    out = tmp_path / "report"

    assert report.main([str(stored), "--out", str(out)]) == 0

    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    rows = table_rows(markdown, "Results")
    header = rows[0]
    expected = ["model", "leaderboard average", "parameters"] + [f"fine-tuning time r{r} (s per run)" for r in RANKS]
    expected += [f"fine-tuning peak r{r} (MiB)" for r in RANKS] + [f"eval loss after fine-tuning r{r}" for r in RANKS]
    expected += [
        "inference time (s per answer, ranked)",
        "time per new token (generate time / new tokens)",
        "new tokens per answer (mean)",
        "inference peak (MiB)",
        "answer quality",
    ]
    assert header == expected
    assert len(rows) == 1 + len(NAMES)
    assert all(cell for row in rows for cell in row)
    polyglot, tiny = rows[1], rows[2]
    # The label follows the exact count (1,331,810,304); the leaderboard's own label is named beside it.
    # Every figure of these random-weight, tiny-scale runs carries the stand-in mark.
    assert polyglot[:5] == ["polyglot-ko-1.3b", "29.95", "1.33 B (leaderboard lists 1.43 B)", "1.50 †", "1.50 †"]
    assert polyglot[5:7] == ["416 †", "432 †"]
    # 3 answers, 30 new tokens in 0.6 s: 0.2 s per answer = 20 ms per new token × 10 tokens per answer.
    assert polyglot[9:14] == ["0.20 †", "20.0 ms †", "10.0 †", "420 †", "not graded · chrF 4.5 †"]
    assert tiny[0] == "TinyKo-v5-a (approx.)"
    assert tiny[3:5] == ["OOM", "not run"] and tiny[9:14] == ["failed"] * 5
    assert "ValueError: bad" in markdown.split("## Failures", 1)[1]
    for section in ("Candidates and screening", "Answer quality", "Full-size plan (estimates)"):
        assert all(cell for row in table_rows(markdown, section) for cell in row), section
    for shown in (
        "device",
        "dtype",
        "weights",
        "scale",
        "torch / transformers / peft",
        "2026-01-02 03:04:05 UTC",
        "batch 4, 10 epochs",
        "3 prompts, ≤80 new tokens",
    ):
        assert shown in markdown
    assert "STAND-IN RESULTS" in markdown and "meaningless" in markdown
    # An approximate candidate is never shown unmarked, except inside a file name.
    assert not re.search(r"TinyKo-v5-a(?! \(approx\.\)|\.)", markdown)

    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert 'class="banner"' in html and html.count("data:image/png;base64,") == 5
    assert sorted(p.name for p in out.glob("*.png")) == [
        "finetune_memory.png",
        "finetune_time.png",
        "inference_cost.png",
        "pareto.png",
        "training_loss.png",
    ]
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 5
    assert {"quality.chrf", "run.versions.torch", "peak_mib", "memory_metric", "source"} <= set(frame.columns)


def test_the_plots_line_lists_exactly_the_plots_in_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A later report into the same folder without data for a plot (here the Pareto view: no rank-32 time, no
    inference) removes that plot's old file: the folder, the plots line and the report agree."""
    out = tmp_path / "out"

    def listed_plots(records: list[BenchmarkRecord]) -> set[str]:
        assert report.main([str(jsonl(tmp_path / "results.jsonl", records)), "--out", str(out)]) == 0
        line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("plots: "))
        return {Path(path).name for path in line.removeprefix("plots: ").split(", ")}

    assert listed_plots(full_run(tmp_path)) == {p.name for p in out.glob("*.png")} >= {"pareto.png"}
    assert (
        listed_plots([finetune("polyglot-ko-1.3b", 16)])
        == {p.name for p in out.glob("*.png")}
        == {"finetune_time.png", "finetune_memory.png", "training_loss.png"}
    )
    assert "pareto.png" not in (out / "leaderboard.md").read_text(encoding="utf-8")


def test_eval_loss_cell_says_why_when_valid_rows_have_no_answers(tmp_path: Path) -> None:
    measured = finetune("polyglot-ko-1.3b", 16)
    unanswered = dataclasses.replace(
        measured, finetune=dataclasses.replace(measured.finetune, eval_loss=None, eval_rows=0)
    )
    out = tmp_path / "report"
    assert report.main([str(benchmark_json(tmp_path / "run.json", [unanswered])), "--out", str(out)]) == 0

    rows = table_rows((out / "leaderboard.md").read_text(encoding="utf-8"), "Results")
    assert rows[1][rows[0].index("eval loss after fine-tuning r16")] == "n/a: valid rows have no answers"


def test_utilisation_is_shown_per_rank_with_its_peaks_or_why_not(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert report.main([str(benchmark_json(tmp_path / "run.json", full_run(tmp_path))), "--out", str(out)]) == 0

    rows = table_rows((out / "leaderboard.md").read_text(encoding="utf-8"), "Hardware utilisation (estimates)")
    assert rows[0] == ["model", "MFU r16", "MFU r32", "decode bandwidth use", "device peaks (source)"]
    assert rows[1] == [
        "polyglot-ko-1.3b",
        "4.2% †",
        "4.2% †",
        "3.1% †",
        "0.19 TFLOP/s (calibrated); 30 GB/s (datasheet)",
    ]
    assert rows[2][1:4] == ["OOM", "not run", "failed"]


def test_merging_two_shards_gives_the_same_table_as_one_run_with_both(tmp_path: Path) -> None:
    records = full_run(tmp_path)
    earlier = finetune("polyglot-ko-1.3b", 16, finished=0.5, seconds=99.0, run=run_description("run-0"))
    settings = settings_for(tmp_path / "out")
    weights = policy.resolve_weights()
    shard_a = benchmark_json(tmp_path / "a.json", records[:3])
    shard_b = jsonl(tmp_path / "results.jsonl", [*records[3:], earlier])

    merged = report.gather(
        [*report.read_stored(shard_a), *report.read_stored(shard_b)],
        list(CANDIDATES[n] for n in NAMES),
        settings,
        weights,
    )
    single = report.gather(
        [report.Stored(r, "one run") for r in records], [CANDIDATES[n] for n in NAMES], settings, weights
    )

    assert results_table(merged) == results_table(single)
    assert merged.replaced == 1  # the later 1.50 s replaced the earlier 99 s
    assert {source for run in merged.runs for source in run.sources} == {str(shard_a), str(shard_b)}
    assert merged.recommendation == single.recommendation


def test_a_later_measurement_replaces_an_earlier_one_whatever_the_file_order(tmp_path: Path) -> None:
    later = report.Stored(finetune("polyglot-ko-1.3b", 16, finished=5.0, seconds=2.0), "b")
    earlier = report.Stored(finetune("polyglot-ko-1.3b", 16, finished=1.0, seconds=9.0), "a")

    for order in ([earlier, later], [later, earlier]):
        kept, replaced = report.merge(order)
        assert [item.record.seconds for item in kept] == [2.0] and replaced == 1
    kept, replaced = report.merge([later, later])
    assert len(kept) == 1 and replaced == 0


def test_human_grades_are_read_back_from_the_answers_csv_at_render_time(tmp_path: Path) -> None:
    records = full_run(tmp_path)
    log = jsonl(tmp_path / "results.jsonl", records)
    out = tmp_path / "out"
    report.main([str(log), "--out", str(out)])
    assert "not graded" in table_rows((out / "leaderboard.md").read_text(encoding="utf-8"), "Results")[1][13]

    answers_file(Path(records[2].inference.answers.answers_csv), ["best", "good", "5"])  # a person grades the answers
    report.main([str(log), "--out", str(out)])

    cell = table_rows((out / "leaderboard.md").read_text(encoding="utf-8"), "Results")[1][13]
    assert cell.startswith("best (4.7, n=3)")
    frame = pd.read_csv(out / "results.csv")
    assert frame.loc[frame["kind"] == "inference", "human_graded"].tolist()[0] == 3


def test_korean_headers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report.main([str(jsonl(tmp_path / "results.jsonl", full_run(tmp_path))), "--out", str(out), "--lang", "ko"])

    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    for header in (
        "모델",
        "파라미터 수",
        "리더보드 평균",
        "학습 시간 r16",
        "학습 메모리 r32",
        "추론 시간",
        "추론 메모리",
        "답변 품질",
        "최종 선택",
        "예비 모델",
        "미실행",
        "메모리 부족",
        "TinyKo-v5-a (근사)",
    ):
        assert header in markdown, header
    assert '<html lang="ko">' in (out / "leaderboard.html").read_text(encoding="utf-8")


def test_compare_study_shows_the_studys_t4_figures_beside_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report.main([str(jsonl(tmp_path / "results.jsonl", full_run(tmp_path))), "--out", str(out), "--compare-study"])

    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    polyglot = table_rows(markdown, "Results")[1]
    assert polyglot[3] == "1.50 † · study T4: 24.20" and polyglot[5] == "416 † · study T4: 2,593"
    assert "study T4: good" in polyglot[13]
    assert "not peaks" in markdown


def test_merged_runs_that_differ_say_so_per_row(tmp_path: Path) -> None:
    gpu = run_description("run-gpu", device="cuda", device_name="NVIDIA T4", dtype="bfloat16")
    records = [finetune("polyglot-ko-1.3b", 16), finetune("TinyKo-v5-a", 16, run=gpu)]
    out = tmp_path / "out"
    report.main([str(jsonl(tmp_path / "results.jsonl", records)), "--out", str(out)])

    rows = table_rows((out / "leaderboard.md").read_text(encoding="utf-8"), "Results")
    assert rows[0][-2:] == ["measured with", "run(s)"]
    assert rows[1][-2:] == ["CPU: test, float32, random weights, tiny scale", "run-a"]
    assert rows[2][-2:] == ["NVIDIA T4, bfloat16, random weights, tiny scale", "run-gpu"]


def test_cli_rejects_a_file_that_is_not_a_stored_run(tmp_path: Path) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text("{}", encoding="utf-8")
    with pytest.raises(UsageError, match="not a pytest-benchmark JSON"):
        report.main([str(bogus)])


def test_pytest_benchmarks_ends_with_the_report(tiny_grid: GridRun) -> None:
    result = tiny_grid  # the session's run, with --ohlora-eval-after-finetune
    out = tiny_grid.report_dir
    for name in ("leaderboard.md", "leaderboard.html", "results.csv", "finetune_time.png", "inference_cost.png"):
        assert (out / name).is_file(), name
        assert str(out / name) in result.stdout
    # The plots each folder of the session holds, and no other, are named in the terminal.
    plots = next(line for line in result.stdout.splitlines() if line.startswith("plots: "))
    assert sorted(plots.removeprefix("plots: ").split(", ")) == sorted(str(p) for p in out.glob("*.png"))
    own = re.search(r"^this run alone: (\S+)leaderboard\.md \(plots: (.*)\)$", result.stdout, re.MULTILINE)
    assert own is not None, result.stdout
    assert sorted(own[2].split(", ")) == sorted(p.name for p in Path(own[1]).glob("*.png")), result.stdout
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| TinyKo-v5-a (approx.) | r16 |" in markdown  # answers scored with the adapter attached
    assert (out / "answers" / "TinyKo-v5-a.random-tiny.r16.csv").is_file()
    # The terminal gives the answer first, as the report does, then the benchmarks with each time's unit.
    summary = result.stdout.split("= ohlora-bench =", 1)[1]
    # (FinguAI and TinyKo tie exactly on the estimates: best leaderboard average against the four cheapest costs.)
    assert summary.index("final choice: FinguAI-Chat-v1") < summary.index("s per run") < summary.index("report: ")
    header = next(line for line in summary.splitlines() if line.startswith("candidate"))
    assert "s per run" in header and "s per answer" in header and "time s" not in header


def test_a_session_builds_only_the_older_runs_records_it_keeps_and_reads_again_where_one_is_not_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    from types import SimpleNamespace

    from ohlora_fixtures.records import results
    from ohlora_fixtures.records.record import BenchmarkRecord as Record

    rendering = importlib.import_module("ohlora_fixtures.report.render")
    settings = settings_for(tmp_path)
    now = run_description("now")
    older = [dataclasses.replace(finetune("polyglot-ko-1.3b", 16, finished=float(i)), run=run_description(f"old{i}"),
                                 seconds=100.0 + i) for i in range(1, 21)]
    other = dataclasses.replace(finetune("polyglot-ko-1.3b", 16, finished=30.0),
                                run=run_description("other", batch_size=2))  # other settings: not merged
    own = dataclasses.replace(finetune("llama1B", 16, finished=40.0), run=now)
    jsonl(settings.results_path, [*older, other, own])
    study = SimpleNamespace(settings=settings, run_id="now", candidates=tuple(load_registry()),
                            records=SessionRecords(settings.results_path), describe=lambda: now)
    built = []
    real = Record.from_json.__func__
    monkeypatch.setattr(Record, "from_json", classmethod(lambda cls, data: built.append(1) or real(cls, data)))

    def seconds() -> dict[str, float]:
        frame = pd.read_csv(tmp_path / "results.csv")
        return dict(zip(frame["candidate"], frame["seconds"]))

    rendering.render_session(study)
    assert len(built) == 2  # this run's record and the newest older one, of 22 lines
    assert seconds() == {"polyglot-ko-1.3b": 120.0, "llama1B": own.seconds}

    # The newest older record not valid: read again, building each; it is named and the one before it kept.
    lines = settings.results_path.read_text(encoding="utf-8").splitlines()
    lines[19] = lines[19].replace('"seconds": ', '"seconds": -', 1)
    settings.results_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(results.UnreadableRecord, match=rf"{re.escape(str(settings.results_path))}:20: .*seconds"):
        rendering.render_session(study)
    assert seconds() == {"polyglot-ko-1.3b": 119.0, "llama1B": own.seconds}
