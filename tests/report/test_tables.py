"""The report's views beyond the leaderboard: cost against quality (Pareto), the study's own table,
a Korean report with no English sentence left, and plots that never draw Hangul as boxes."""

from __future__ import annotations

import dataclasses
import importlib
import re
import warnings
from pathlib import Path

import pytest

from ohlora_fixtures import report
from ohlora_fixtures.records.record import BenchmarkRecord, RunDescription
from ohlora_fixtures.report import plots
from ohlora_fixtures.session.session_records import SessionRecords
from tests.report.test_render import (
    CANDIDATES,
    answers_file,
    finetune,
    full_run,
    inference,
    jsonl,
    run_description,
    settings_for,
    table_rows,
)

PRETRAINED = run_description(weights="pretrained")
# Grades (1-5) and costs chosen so the front is known: llama1B beats FinguAI on both views.
GRADED = {  # name: (grade, fine-tuning seconds at r32, inference seconds per prompt)
    "polyglot-ko-1.3b": ("5", 30.0, 0.5),
    "llama1B": ("4", 20.0, 0.3),
    "FinguAI-Chat-v1": ("3", 25.0, 0.4),
    "TinyKo-v5-a": ("1", 5.0, 0.1),
}


def graded_run(tmp_path: Path, run: RunDescription = PRETRAINED) -> list[BenchmarkRecord]:
    records = []
    for name, (grade, ft_seconds, inf_seconds) in GRADED.items():
        records += [finetune(name, 16, run=run), finetune(name, 32, run=run, seconds=ft_seconds)]
        answers = answers_file(tmp_path / "answers" / f"{name}.csv", [grade] * 3)
        record = inference(name, answers, run=run)
        record.inference = dataclasses.replace(record.inference, mean_seconds_per_prompt=inf_seconds)
        records.append(record)
    return records


def render(tmp_path: Path, records: list[BenchmarkRecord], *args: str) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    report.main([str(jsonl(tmp_path / "results.jsonl", records)), "--out", str(out), *args])
    return (out / "leaderboard.md").read_text(encoding="utf-8")


def test_a_graded_set_gives_the_expected_pareto_table_and_plot(tmp_path: Path) -> None:
    # Full-size pretrained runs: their measured times are the costs (a stand-in's would be full-size estimates).
    markdown = render(tmp_path, graded_run(tmp_path, dataclasses.replace(PRETRAINED, scale="full")))

    rows = {row[0]: row for row in table_rows(markdown, "Cost against quality (Pareto view)")}
    header = rows.pop("model")
    assert header[1] == "quality: human grade (1-5)"
    final = next(name for name in rows if name.endswith("(final choice)"))
    assert final.startswith("polyglot-ko-1.3b")  # the best grade wins with the default weights
    assert any(name.endswith("(backup)") for name in rows)
    by_name = {name.split(" (")[0]: row for name, row in rows.items()}
    assert by_name["FinguAI-Chat-v1"][6:8] == ["llama1B", "llama1B"]  # worse and slower in both views
    for name in ("polyglot-ko-1.3b", "llama1B"):
        assert by_name[name][6] == "none: on the front"
    assert by_name["TinyKo-v5-a"][6] == "none: on the front"  # worst, but the cheapest to fine-tune
    assert (tmp_path / "out" / "pareto.png").is_file() and "(pareto.png)" in markdown


def test_without_grades_the_leaderboard_average_stands_in_and_says_so(tmp_path: Path) -> None:
    markdown = render(tmp_path, full_run(tmp_path))

    header = table_rows(markdown, "Cost against quality (Pareto view)")[0]
    assert header[1].startswith("quality: leaderboard average, standing in")


# Answers of different lengths: seconds per answer ranks; a spread of mean lengths above 25 % is flagged.
RANKING_NOTE = "The ranking's inference-time criterion is seconds per answer"


def answered(tmp_path: Path, new_tokens: dict[str, int], **run: object) -> list[BenchmarkRecord]:
    """One inference record per candidate: 3 answers in 0.6 s holding `new_tokens` new tokens in all."""
    records = []
    for name, tokens in new_tokens.items():
        record = inference(name, answers_file(tmp_path / "answers" / f"{name}.csv", [""] * 3),
                           run=run_description(**run))
        record.inference = dataclasses.replace(record.inference, new_tokens=tokens, tokens_per_second=tokens / 0.6)
        records.append(record)
    return records


def test_answer_lengths_within_a_quarter_of_each_other_are_not_flagged(tmp_path: Path) -> None:
    markdown = render(tmp_path, answered(tmp_path, {"polyglot-ko-1.3b": 30, "TinyKo-v5-a": 37}))  # 10 and 12.3

    assert RANKING_NOTE in markdown and "Answer lengths differ" not in markdown
    rows = {row[0]: row for row in table_rows(markdown, "Results")}
    assert rows["polyglot-ko-1.3b"][9:12] == ["0.20 †", "20.0 ms †", "10.0 †"]
    assert rows["TinyKo-v5-a (approx.)"][9:12] == ["0.20 †", "16.2 ms †", "12.3 †"]


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_answer_lengths_apart_by_more_than_a_quarter_are_flagged_naming_both(tmp_path: Path, lang: str) -> None:
    lengths = {"polyglot-ko-1.3b": 30, "llama1B": 33, "TinyKo-v5-a": 39}  # 10, 11 and 13 per answer
    markdown = render(tmp_path, answered(tmp_path, lengths), "--lang", lang)

    if lang == "en":
        assert ("⚠ Answer lengths differ 1.3×: polyglot-ko-1.3b averages 10.0 new tokens per answer, "
                "TinyKo-v5-a (approx.) 13.0.") in markdown
        assert RANKING_NOTE in markdown and "`--ohlora-min-new-tokens N`" in markdown
    else:
        assert "⚠ 답변 길이가 1.3배 차이 납니다: polyglot-ko-1.3b은(는) 답변당 새 토큰 평균 10.0개" in markdown
        assert "TinyKo-v5-a (근사)은(는) 13.0개" in markdown
        results = markdown.split("## 결과\n", 1)[1].split("## 답변 품질", 1)[0]
        assert english_pieces(results, NAMES) == []


def test_a_run_with_a_floor_on_answer_length_says_so(tmp_path: Path) -> None:
    markdown = render(tmp_path, answered(tmp_path, {"polyglot-ko-1.3b": 30}, min_new_tokens=8))

    assert "3 prompts, 8–80 new tokens, sampled" in markdown and "≤80" not in markdown
    korean = render(tmp_path / "ko", answered(tmp_path, {"polyglot-ko-1.3b": 30}, min_new_tokens=8), "--lang", "ko")
    assert "프롬프트 3개, 새 토큰 8–80개, 샘플링" in korean


# The study's table: its own 8 headers, our figures, three ranks in one cell.
STUDY_HEADERS = [
    "모델 이름", "종합 점수 (Average from Leaderboard)", "파라미터 개수", "Fine-Tuning 시간 (LoRA rank 16, 32, 64)",
    "Fine-Tuning 최대 메모리 사용량 (LoRA rank 16, 32, 64)", "Inference 시간", "Inference 최대 메모리 사용량",
    "Inference 답변 품질",
]


def study_table(markdown: str) -> list[list[str]]:
    return table_rows(markdown, "스터디 형식의 결과표")


def test_korean_report_has_the_studys_table_with_its_headers_and_our_figures(tmp_path: Path) -> None:
    records = [r for r in graded_run(tmp_path) if r.candidate != "llama1B" or r.rank != 16]  # one rank not run
    rows = study_table(render(tmp_path, records, "--lang", "ko"))

    header, by_name = rows[0], {row[0]: row for row in rows[1:]}
    assert len(header) == 8
    # The ranks actually run (16, 32) stand in the header, in the study's wording.
    assert header == [h.replace("16, 32, 64", "16, 32") for h in STUDY_HEADERS]
    polyglot = by_name["polyglot-ko-1.3b"]
    assert polyglot[1:3] == ["29.95", "1.33 B (리더보드 표기 1.43 B)"]
    # Pretrained weights but tiny scale: every figure carries the stand-in mark, so the table pasted alone keeps it.
    assert polyglot[3] == "1.50 † / 30.00 †" and polyglot[4] == "416 † / 432 †"
    assert polyglot[5] == "0.50 †" and polyglot[6] == "420 †" and polyglot[7].startswith("최상")
    assert by_name["llama1B"][3] == "미실행 / 20.00 †"


def test_the_studys_table_says_what_kind_of_figures_fill_it(tmp_path: Path) -> None:
    markdown = render(tmp_path, full_run(tmp_path), "--lang", "ko")

    section = markdown.split("## 스터디 형식의 결과표\n", 1)[1]
    lead = section.strip().split("\n\n")[0]
    assert "무작위 가중치" in lead and "축소" in lead and "CPU: test" in lead
    assert "## 스터디 형식의 결과표" not in render(tmp_path / "en", full_run(tmp_path))


# Every sentence of the Korean report is Korean. A piece of prose (a line, a bullet, a table cell, split
# at ; : — · and brackets) may hold Latin words only if it also holds Hangul, or if every Latin word is
# a name, a unit or a technical term; code spans (`...`), paths and the candidates' names are set aside.
HANGUL = re.compile(r"[\uac00-\ud7a3]")
TERMS = {
    "lora", "rank", "mfu", "chrf", "mib", "gb", "tflop", "flops", "flop", "vram", "cuda", "cpu", "gpu", "kv",
    "bf16", "float32", "bfloat16", "torch", "transformers", "peft", "python", "meta", "utc", "id", "min", "max",
    "ohlora-bench", "apache-2.0", "gemma", "markdown", "readme", "safetensors", "nvml", "p90", "p99", "ms",
}


def english_pieces(markdown: str, names: set[str]) -> list[str]:
    """The pieces of prose that read as English: Latin words beyond the known terms, and no Hangul."""
    found = []
    for line in markdown.splitlines():
        if not line.strip() or set(line) <= set("|-"):
            continue
        cells = re.split(r"(?<!\\)\|", line)[1:-1] if line.startswith("|") else [line]
        for cell in cells:
            cell = re.sub(r"\\(.)", r"\1", cell)  # Markdown's escapes: the text as a reader sees it
            cell = re.sub(r"`[^`]*`|\]\([^)]*\)|\S*/\S*|\S*\w_\w\S*", " ", cell)
            for name in names:
                cell = cell.replace(name, " ")
            for piece in re.split(r"[;:—·()\[\]]", cell):
                words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9.'-]*[A-Za-z0-9]|[A-Za-z]{2,}", piece)
                         if w.lower().strip(".") not in TERMS and not re.fullmatch(r"r\d+|n|w|x|s|B", w)]
                if words and not HANGUL.search(piece):
                    found.append(piece.strip())
    return found


# Read as they are in any language: names, identifiers, the test's device name and the study's own headers.
NAMES = {*CANDIDATES, "run-a", "CPU: test", *(h.replace("16, 32, 64", "16, 32") for h in STUDY_HEADERS)}


def test_every_sentence_of_the_korean_report_is_korean(tmp_path: Path) -> None:
    records = full_run(tmp_path) + graded_run(tmp_path / "graded")
    markdown = render(tmp_path, records, "--lang", "ko", "--compare-study")

    assert english_pieces(markdown, NAMES) == []
    html = (tmp_path / "out" / "leaderboard.html").read_text(encoding="utf-8")
    assert "<title>ohlora-bench 리더보드</title>" in html


def test_the_korean_check_finds_english(tmp_path: Path) -> None:
    english = render(tmp_path, full_run(tmp_path), "--compare-study")
    assert len(english_pieces(english, NAMES)) > 50
    planted = "## 참고\n\n- 학습 시간은 측정값입니다; but this clause was left in English.\n"
    assert english_pieces(planted, NAMES) == ["but this clause was left in English."]
    assert english_pieces("| 모델 | missing |\n|---|---|\n", NAMES) == ["missing"]


# Fonts: the page asks for Korean-capable fonts first; plots draw Hangul only with a Hangul font.
def test_the_html_names_korean_fonts_before_the_system_font(tmp_path: Path) -> None:
    render(tmp_path, full_run(tmp_path), "--lang", "ko")
    html = (tmp_path / "out" / "leaderboard.html").read_text(encoding="utf-8")
    family = " ".join(re.search(r"body \{ font-family: ([^;]+);", html).group(1).split())
    assert family.startswith(
        '"Noto Sans KR", "Noto Sans CJK KR", "Nanum Gothic", "Apple SD Gothic Neo", "Malgun Gothic"'
    )
    assert family.endswith("system-ui, sans-serif")


def plot_words(monkeypatch: pytest.MonkeyPatch, font: str | None, tmp_path: Path) -> dict:
    """Render a Korean report with `font` as the Hangul font found; returns what the plots were given."""
    monkeypatch.setattr(plots, "hangul_font", lambda: font)
    seen: dict = {}
    write = plots.write_plots

    def spy(series, out_dir, subtitle, metric, words, tradeoff=None, font=None):
        seen.update(title=words("plot_loss_title"), subtitle=subtitle, labels=[s.label for s in series], font=font)
        return write(series, out_dir, subtitle, metric, words, tradeoff, font)

    # The package exports a function named render, so the module is fetched by its full name.
    monkeypatch.setattr(importlib.import_module("ohlora_fixtures.report.render"), "write_plots", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render(tmp_path, full_run(tmp_path), "--lang", "ko")
    seen["missing_glyphs"] = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    return seen


def test_korean_plots_fall_back_to_english_words_without_a_hangul_font(monkeypatch, tmp_path: Path) -> None:
    seen = plot_words(monkeypatch, None, tmp_path)

    assert seen["font"] is None and seen["title"] == "Training loss per optimizer step"
    assert "TinyKo-v5-a (approx.)" in seen["labels"] and seen["subtitle"].startswith("STAND-IN")
    assert not any(HANGUL.search(text) for text in (seen["title"], seen["subtitle"], *seen["labels"]))
    assert seen["missing_glyphs"] == []  # nothing drawn as boxes


def test_korean_plots_use_korean_words_and_the_hangul_font_found(monkeypatch, tmp_path: Path) -> None:
    seen = plot_words(monkeypatch, "DejaVu Sans", tmp_path)  # a stand-in name: the lookup is what is faked

    assert seen["font"] == "DejaVu Sans" and seen["title"] == "옵티마이저 스텝별 학습 손실"
    assert "TinyKo-v5-a (근사)" in seen["labels"] and seen["subtitle"].startswith("대체 모델")


def test_the_hangul_font_lookup_picks_a_known_cjk_family(monkeypatch) -> None:
    fake = [type("Font", (), {"name": name}) for name in ("DejaVu Sans", "NanumGothic", "Noto Sans CJK JP")]
    monkeypatch.setattr(plots.font_manager.fontManager, "ttflist", fake)
    assert plots.hangul_font() == "NanumGothic"
    monkeypatch.setattr(plots.font_manager.fontManager, "ttflist", fake[:1])
    monkeypatch.setattr(plots.font_manager, "findSystemFonts", lambda: [])
    assert plots.hangul_font() is None


def test_a_hangul_font_installed_after_matplotlibs_font_cache_is_found(monkeypatch) -> None:
    cached = [type("Font", (), {"name": "DejaVu Sans", "fname": "/fonts/DejaVuSans.ttf"})()]
    monkeypatch.setattr(plots.font_manager.fontManager, "ttflist", cached)
    monkeypatch.setattr(plots.font_manager, "findSystemFonts", lambda: ["/fonts/DejaVuSans.ttf", "/fonts/Nanum.ttf"])
    added: list[str] = []

    def addfont(path: str) -> None:
        added.append(path)
        cached.append(type("Font", (), {"name": "NanumGothic", "fname": path})())

    monkeypatch.setattr(plots.font_manager.fontManager, "addfont", addfont)
    assert plots.hangul_font() == "NanumGothic"
    assert added == ["/fonts/Nanum.ttf"]  # only the file the cache did not know


@pytest.mark.skipif(plots.hangul_font() is None, reason="no Hangul font installed for matplotlib")
def test_with_a_real_hangul_font_korean_plots_draw_every_glyph(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render(tmp_path, graded_run(tmp_path), "--lang", "ko")
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []


def test_a_sessions_merged_leaderboard_copies_the_plots_of_its_own_report_and_a_changed_figure_redraws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from ohlora_fixtures.inputs.registry import load_registry

    rendering = importlib.import_module("ohlora_fixtures.report.render")  # the package exports a function `render`
    drawn = []
    real = rendering.write_plots
    monkeypatch.setattr(rendering, "write_plots", lambda *args, **kwargs: drawn.append(1) or real(*args, **kwargs))

    def session(folder: Path, records: list[BenchmarkRecord]) -> rendering.SessionReport:
        folder.mkdir(parents=True, exist_ok=True)
        settings = settings_for(folder)
        jsonl(settings.results_path, records)
        run = records[0].run
        study = SimpleNamespace(settings=settings, run_id=run.run_id, candidates=tuple(load_registry()),
                                records=SessionRecords(settings.results_path), describe=lambda: run)
        return rendering.render_session(study)

    records = graded_run(tmp_path / "a")
    files = session(tmp_path / "a", records)
    assert len(drawn) == 1  # the run's own report drew them; the merged leaderboard, the same figures, copied
    for own, merged in zip(files.run.plots, files.merged.plots):
        assert own.name == merged.name and own.read_bytes() == merged.read_bytes()
    faster = [dataclasses.replace(r, seconds=r.seconds / 2) if r.kind.value == "finetune" else r for r in records]
    session(tmp_path / "b", faster)
    assert len(drawn) == 2  # a new session draws its own, once


def test_a_stand_in_reports_time_figures_name_the_device_they_are_estimated_for(tmp_path: Path) -> None:
    """Stand-ins' times are full-size estimates: on this CPU by default, on the --gpu card when one is named,
    in every table the verdict's figures appear in, in English and in Korean."""

    def time_cells(markdown: str) -> list[str]:
        rows = table_rows(markdown, "Leaderboard (the figures the score used)")
        columns = [i for i, name in enumerate(rows[0]) if "time" in name]
        return [row[i] for row in rows[1:] for i in columns]

    here = render(tmp_path / "cpu", graded_run(tmp_path / "cpu"))
    assert time_cells(here) and all(cell.endswith("(est., this CPU)") for cell in time_cells(here))
    plan = table_rows(here, "Full-size plan (estimates)")[0]
    assert "FT time r32, s per run (est., this CPU)" in plan and "s per answer (est., this CPU)" in plan
    t4 = render(tmp_path / "t4", graded_run(tmp_path / "t4"), "--gpu", "T4")
    assert all(cell.endswith("(est., T4)") for cell in time_cells(t4)) and "(est., this CPU)" not in t4
    assert "FT time r32, s per run (est., T4)" in table_rows(t4, "Full-size plan (estimates)")[0]
    korean = render(tmp_path / "ko", graded_run(tmp_path / "ko"), "--lang", "ko")
    assert "(추정, 이 CPU)" in korean and "(est., this CPU)" not in korean
    csv = (tmp_path / "t4" / "out" / "results.csv").read_text(encoding="utf-8")
    assert "full_size_estimate_device" in csv and ",T4" in csv
