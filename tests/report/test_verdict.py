"""The answer first: the verdict card and the compact leaderboard open the report; every busy, estimated or
stand-in figure carries its mark in every table, the CSV and the plots; Korean busy reasons are Korean."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd

from ohlora_fixtures.inputs import policy
from ohlora_fixtures.judge import selection
from ohlora_fixtures.records.figures import MachineLoad
from ohlora_fixtures.records.record import BenchmarkRecord, Kind
from ohlora_fixtures.report import plots
from tests.report.test_render import CANDIDATES, full_run, table_rows
from tests.report.test_tables import GRADED, NAMES, english_pieces, graded_run, render

# Another process kept 1.4 of 2 cores busy and the probe ran at 40 % and 50 % (before and after): both readings
# make the machine busy.
BUSY = MachineLoad(
    cores=2,
    load_before=2.1,
    load_after=2.3,
    other_cores=1.4,
    steal=None,
    probe_before=0.4,
    probe_after=0.5,
    busy=True,
    why_busy="other processes used 1.4 of 2 cores; probe at 50% of its calibrated speed",
)


def busy_run(tmp_path: Path) -> list[BenchmarkRecord]:
    """The graded set at full scale (its times are read, not estimated), with llama1B's r32 fine-tuning and
    inference timed on a busy machine."""
    records = [dataclasses.replace(r, run=dataclasses.replace(r.run, scale="full")) for r in graded_run(tmp_path)]
    return [
        dataclasses.replace(r, load=BUSY)
        if r.candidate == "llama1B" and (r.kind is Kind.INFERENCE or r.rank == 32)
        else r
        for r in records
    ]


def sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, re.MULTILINE)


def test_the_report_opens_with_the_verdict_then_the_leaderboard(tmp_path: Path) -> None:
    markdown = render(tmp_path, graded_run(tmp_path))

    assert sections(markdown)[:2] == ["The answer", "Leaderboard (the figures the score used)"]
    card = markdown.split("## The answer\n", 1)[1].split("\n## ", 1)[0]
    assert "**final choice: polyglot-ko-1.3b** — polyglot-ko-1.3b places first of 4" in card
    assert "**backup: llama1B** — llama1B places 2 with score 0.62: best on no criterion; its strongest" in card
    assert "What decided: answer quality (human grade (mean of the graded answers, 1-5)); leaderboard average" in card
    # Pretrained weights, tiny scale: the stand-ins' times are not read; the full-size estimates are, and say so.
    assert "fine-tuning time (full-size estimate on this CPU at r32" in card
    assert "- ⚠ Stand-in figures (tiny-scale models)" in card
    assert "- ⚠ Estimated, not measured: fine-tuning time, fine-tuning peak memory, inference time" in card
    rows = table_rows(markdown, "Leaderboard (the figures the score used)")
    assert len(rows) == 1 + len(GRADED) and len(rows[0]) <= 9  # one row per candidate, a handful of columns
    assert rows[0][:2] == ["place", "model"] and rows[0][-1] == "score"
    assert [row[0] for row in rows[1:]] == ["1", "2", "3", "4"] and rows[1][1] == "polyglot-ko-1.3b"
    assert rows[1][2] == "5.0"  # the grade the score used, on its own scale
    html = (tmp_path / "out" / "leaderboard.html").read_text(encoding="utf-8")
    # The answer stands before the first collapsed section; the rest of the page is in <details>.
    assert html.index('id="verdict"') < html.index("<table") < html.index("<details")
    assert html.count("<details>") + html.count("<details open>") == len(sections(markdown)) - 2


def test_an_excluded_candidate_keeps_its_row_and_says_so(tmp_path: Path) -> None:
    rows = table_rows(render(tmp_path, full_run(tmp_path)), "Leaderboard (the figures the score used)")

    assert [(row[0], row[1], row[-1]) for row in rows[1:]] == [
        ("1", "polyglot-ko-1.3b", "1.000"),
        ("—", "TinyKo-v5-a (approx.)", "excluded"),
    ]


def test_busy_estimated_and_stand_in_figures_carry_their_marks_everywhere(tmp_path: Path) -> None:
    markdown = render(tmp_path, busy_run(tmp_path))

    leaderboard = {row[1]: row for row in table_rows(markdown, "Leaderboard (the figures the score used)")}
    header = leaderboard["model"]
    llama = dict(zip(header, leaderboard["llama1B"]))
    # Pretrained weights at full scale: measured, not stand-ins' (no †), and busy.
    assert llama["fine-tuning time r32 (s per run, w=0.5)"] == "20.00 (busy)"
    assert llama["inference time (s per answer, w=0.5)"] == "0.30 (busy)"
    assert llama["fine-tuning peak r32 (MiB, w=0.5)"].endswith(" (est.)")  # a plan estimate: no GPU peak
    for heading in ("How the score was computed", "Results", "Cost against quality (Pareto view)"):
        cells = [cell for row in table_rows(markdown, heading) for cell in row]
        assert any(re.match(r"20\.00( s per run)? \(busy\)( →|$)", cell) for cell in cells), heading
    utilisation = {row[0]: row for row in table_rows(markdown, "Hardware utilisation (estimates)")}
    assert [cell.endswith("(busy)") for cell in utilisation["llama1B"][1:4]] == [False, True, True]  # r16 quiet
    # Each table's legend stands right under it and names every mark it uses.
    for table in re.findall(r"((?:^\|.*\n)+)\n(.*)", markdown, re.MULTILINE):
        marks_used = [m for m in ("(busy)", "(est.)", "†", "(approx.)") if m in table[0].split("\n", 2)[-1]]
        if marks_used:
            assert table[1].startswith("_Marks: "), table
            assert all(mark in table[1] for mark in marks_used), table
    card = markdown.split("## The answer\n", 1)[1].split("\n## ", 1)[0]
    assert "**backup: llama1B**" in card  # so the busy figures the choice rests on are named
    assert "This verdict rests on figures measured while the machine was busy" in card
    assert (
        "llama1B fine-tuning time (other processes used 1.4 of 2 cores, probe at 50% of its calibrated speed)" in card
    )
    notes = markdown.split("## Notes\n", 1)[1]
    assert (
        "- llama1B fine-tuning r32: other processes used 1.4 of 2 cores; probe at 50% of its calibrated speed" in notes
    )
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    marks = dict(
        zip(frame["candidate"] + " " + frame["rank"].fillna(0).astype(int).astype(str), frame["marks"].fillna(""))
    )
    assert marks["llama1B 32"] == "busy" and marks["llama1B 16"] == ""


def test_korean_report_words_the_machine_load_in_korean(tmp_path: Path) -> None:
    markdown = render(tmp_path, busy_run(tmp_path), "--lang", "ko")

    assert "다른 프로세스가 코어 2개 중 1.4개를 사용함; 행렬곱 시험이 보정 속도의 50%로 돎" in markdown
    assert "other processes" not in markdown and "probe at" not in markdown
    assert english_pieces(markdown, NAMES) == []
    study = table_rows(markdown, "스터디 형식의 결과표")
    llama = next(row for row in study if row[0] == "llama1B")
    assert llama[3] == "1.50 / 20.00 (부하)" and llama[5] == "0.30 (부하)"


def test_a_backup_best_on_nothing_is_said_to_be_so() -> None:
    # Leaderboard average and fine-tuning time only: polyglot is best on the average, TinyKo the fastest,
    # llama1B second on both and best on neither, yet second overall.
    figures = {"polyglot-ko-1.3b": 20.0, "llama1B": 30.0, "TinyKo-v5-a": 10.0}
    evidence = [
        selection.Evidence(
            candidate=CANDIDATES[name],
            largest_rank=16,
            finetune_peak_mib=100.0,
            finetune_peak_source="measured",
            figures={
                "finetune_time": seconds,
                "finetune_memory": None,
                "inference_time": None,
                "inference_memory": None,
            },
            sources={},
            measured=True,
        )
        for name, seconds in figures.items()
    ]
    weights = {c.name: 0.0 for c in policy.CRITERIA} | {"leaderboard": 2.0, "finetune_time": 0.5}
    rules = selection.Rules(
        max_params=3,
        min_params=0,
        vram_budget_mib=12288,
        weights=weights,
        licences=policy.LicencePolicy(allowed=("*",), refused=()),
    )
    rec = selection.recommend(evidence, rules)

    assert (rec.final, rec.backup) == ("polyglot-ko-1.3b", "llama1B")
    assert "best on no criterion; its strongest criteria: leaderboard average (29.73)" in rec.backup_reason
    assert "best of the ranked on leaderboard average (29.95)" in rec.final_reason


def test_plots_draw_busy_times_hollow_and_name_them_in_the_legend(tmp_path: Path) -> None:
    asked: list[str] = []

    def words(key: str, **values: object) -> str:
        asked.append(key)
        return key

    quiet = plots.CandidateSeries("a", finetune_seconds={16: 1.0, 32: 2.0}, inference_seconds=0.1, inference_peak_mib=5)
    plots.write_plots([quiet], tmp_path / "quiet", "sub", "rss", words)
    assert "plot_busy" not in asked
    busy = dataclasses.replace(quiet, busy_ranks=frozenset({32}), inference_busy=True)
    written = plots.write_plots([busy], tmp_path / "busy", "sub", "rss", words)
    assert asked.count("plot_busy") >= 2 * 2  # the fine-tuning time and inference plots: handle and label
    assert set(written) >= {"finetune_time", "inference_cost"}


def test_a_named_card_sets_the_screening_budget_and_the_verdict_says_the_batch_that_fits(tmp_path: Path) -> None:
    markdown = render(tmp_path, graded_run(tmp_path), "--gpu", "T4")
    card = markdown.split("## ", 2)[1]
    final = re.search(r"\*\*final choice: ([^*\s]+)", card).group(1)
    assert re.search(
        rf"^{re.escape(final)} fits a T4 at batch \d+ \(est\.\): fine-tuning r\d+ about [\d,]+ of 16,384 MiB",
        card,
        re.M,
    ), card
    # 16,384 MiB less the CUDA context and two cuBLAS workspaces (data/gpus.toml), in place of the 12,288 MiB default.
    assert "VRAM budget 15,968 MiB (a T4's 16,384 MiB less the CUDA context, 400 MiB," in markdown
    assert "VRAM budget 12,288 MiB for" in render(tmp_path / "no-card", graded_run(tmp_path / "no-card"))


def test_the_card_line_names_the_largest_batch_when_the_runs_does_not_fit() -> None:
    from types import SimpleNamespace

    from ohlora_fixtures.inputs import gpus
    from ohlora_fixtures.measure import plan
    from ohlora_fixtures.report.verdict import card_fit_line

    table = gpus.load_gpus()
    t4 = table.select(["T4"])[0]
    llama = CANDIDATES["llama1B"]

    def line(batch: int, card: gpus.Gpu = t4) -> str:
        planned = plan.plan_candidate(llama, (64,), "bfloat16", batch, plan.fixed_widths(512))
        report = SimpleNamespace(card=(card, table), plans={"llama1B": planned}, ranks=[64], lang="en")
        return card_fit_line(report, "llama1B")

    assert line(1).startswith("llama1B fits a T4 at batch 1 (est.)")
    too_big = line(64)
    largest = int(re.search(r"the largest batch that fits is (\d+)$", too_big).group(1))
    assert too_big.startswith("llama1B does not fit a T4 at batch 64") and 1 <= largest < 64
    assert line(largest).startswith(f"llama1B fits a T4 at batch {largest}")
    # One row more does not fit as it is; with gradient checkpointing it may, and the line says so.
    assert not line(largest + 1).startswith(f"llama1B fits a T4 at batch {largest + 1} (est.)")
    assert line(largest + 1).startswith(f"llama1B fits a T4 at batch {largest + 1} only with gradient checkpointing")


def test_a_ranking_of_rows_from_different_devices_says_so_in_the_verdict(tmp_path: Path) -> None:
    records = graded_run(tmp_path)
    assert "Ranked across unlike runs" not in render(tmp_path / "one", records)
    other = dataclasses.replace(records[0].run, device="cuda", device_name="Tesla T4")
    mixed = [dataclasses.replace(r, run=other) if r.candidate == "llama1B" else r for r in records]
    verdict = render(tmp_path / "mixed", mixed).split("## ", 2)[1]
    assert "Ranked across unlike runs (" in verdict and "Tesla T4" in verdict, verdict
