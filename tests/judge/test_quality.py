"""Tests for ohlora_fixtures.judge.quality: automatic figures and human grades."""

from __future__ import annotations

import csv
import math
import unicodedata
from pathlib import Path

import pytest

from ohlora_fixtures.judge.quality import (
    GRADE_LABELS_EN,
    GRADE_LABELS_KO,
    GRADES,
    GradeWarning,
    grade_label,
    hangul_share,
    parse_grade,
    read_grades,
    repeated_ngram_share,
    score_answers,
)
from ohlora_fixtures.records.figures import QualityFigures

COLUMNS = ["prompt_line", "prompt", "reference", "answer", "new_tokens", "seconds", "grade"]


def write_answers(path: Path, grades: list[str], answers: list[str] | None = None) -> Path:
    """An answers CSV like the inference benchmark writes: BOM, all columns."""
    answers = answers or [f"답변 {i}" for i in range(len(grades))]
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, (answer, grade) in enumerate(zip(answers, grades)):
            writer.writerow([i + 2, f"질문 {i}", "", answer, 10, 0.5, grade])
    return path


# --- score_answers ----------------------------------------------------------


def test_chrf_identical_is_100() -> None:
    text = "오늘 날씨가 정말 좋네요! 산책 갈래요?"
    figures = score_answers([text], [text])
    assert figures.chrf == pytest.approx(100.0)
    assert figures.n_scored == 1


def test_chrf_unrelated_is_low() -> None:
    figures = score_answers(["오늘 날씨가 정말 좋네요"], ["the quick brown fox jumps"])
    assert figures.chrf is not None
    assert figures.chrf < 20


def test_none_and_blank_references_are_skipped() -> None:
    text = "저는 오로라예요. 반가워요!"
    figures = score_answers(
        [text, "전혀 다른 대답", text, "또 다른 대답"], [text, None, text, "  "]
    )
    assert figures.n_scored == 2
    # Only the two identical pairs are scored, so the unrelated answers do not drag it down.
    assert figures.chrf == pytest.approx(100.0)


def test_all_references_none_gives_no_chrf() -> None:
    figures = score_answers(["안녕하세요", "네"], [None, None])
    assert figures.chrf is None
    assert figures.n_scored == 0


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="2 answers but 1 references"):
        score_answers(["a", "b"], [None])


def test_empty_share() -> None:
    figures = score_answers(["안녕", "", "   \n", "hi"], [None] * 4)
    assert figures.empty_share == pytest.approx(0.5)


def test_no_answers_gives_zero_shares() -> None:
    figures = score_answers([], [])
    assert figures == QualityFigures(
        chrf=None, n_scored=0, empty_share=0.0, hangul_share=0.0, repeated_ngram_share=0.0
    )


def test_hangul_share_pooled_over_answers() -> None:
    # 2 Hangul of 4 characters, then 0 of 4: pooled 2/8, not the mean of shares.
    figures = score_answers(["안녕 hi", "abcd"], [None, None])
    assert figures.hangul_share == pytest.approx(2 / 8)


def test_repeated_ngram_share_in_figures() -> None:
    figures = score_answers(["a b c a b c a b c"], [None])
    assert figures.repeated_ngram_share == pytest.approx(4 / 7)


def test_as_dict() -> None:
    figures = score_answers(["안녕"], ["안녕"])
    assert figures.as_dict() == {
        "chrf": pytest.approx(100.0),
        "n_scored": 1,
        "empty_share": 0.0,
        "hangul_share": 1.0,
        "repeated_ngram_share": 0.0,
    }


# --- hangul_share -----------------------------------------------------------


def test_hangul_share_mixed() -> None:
    assert hangul_share("안녕 hi") == pytest.approx(2 / 4)


def test_hangul_share_counts_bare_jamo() -> None:
    assert hangul_share("ㅋㅋㅋ ㅠㅠ") == pytest.approx(1.0)


def test_hangul_share_no_characters() -> None:
    assert hangul_share("") == 0.0
    assert hangul_share(" \n\t") == 0.0


# --- repeated_ngram_share ---------------------------------------------------


def test_repeated_ngrams_by_hand() -> None:
    # 9 words -> 7 trigrams: abc bca cab | abc bca cab abc; the last four repeat.
    assert repeated_ngram_share(["a b c a b c a b c"]) == pytest.approx(4 / 7)


def test_unique_text_has_no_repeats() -> None:
    assert repeated_ngram_share(["저는 오늘 친구와 함께 공원에 갔어요"]) == 0.0


def test_repeats_are_counted_within_one_text_and_pooled() -> None:
    # The same trigram in two different answers is not a repeat; counts pool: 4 of 7 + 1.
    assert repeated_ngram_share(["a b c a b c a b c", "a b c"]) == pytest.approx(4 / 8)


def test_short_texts_have_no_ngrams() -> None:
    assert repeated_ngram_share(["네 네", "", "응"]) == 0.0
    assert repeated_ngram_share([]) == 0.0


def test_repeated_ngrams_other_n() -> None:
    # Bigrams of "x x x x": 3, the last two repeat the first.
    assert repeated_ngram_share(["x x x x"], n=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        repeated_ngram_share(["x"], n=0)


# --- parse_grade ------------------------------------------------------------


def test_grades_scale() -> None:
    assert GRADES == {
        "best": 5, "good": 4, "medium": 3, "poor": 2, "worst": 1,
        "최상": 5, "상": 4, "중": 3, "하": 2, "최하": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("label_en", "label_ko", "score"),
    list(zip(GRADE_LABELS_EN, GRADE_LABELS_KO, [5, 4, 3, 2, 1])),
)
def test_parse_grade_labels(label_en: str, label_ko: str, score: int) -> None:
    assert parse_grade(label_en) == score
    assert parse_grade(label_en.upper()) == score
    assert parse_grade(f"  {label_en.title()} ") == score
    assert parse_grade(label_ko) == score
    assert parse_grade(f" {label_ko}\n") == score
    assert parse_grade(str(score)) == score


def test_parse_grade_full_width_and_decomposed() -> None:
    assert parse_grade("５") == 5
    assert parse_grade("ＢＥＳＴ") == 5
    assert parse_grade(unicodedata.normalize("NFD", "최하")) == 1


@pytest.mark.parametrize("blank", ["", "   ", "\n", None, math.nan])
def test_parse_grade_blank(blank: str | float | None) -> None:
    assert parse_grade(blank) is None


@pytest.mark.parametrize("bad", ["great", "0", "6", "4.5", "최고", "5점"])
def test_parse_grade_bad_value(bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_grade(bad)
    message = str(excinfo.value)
    assert repr(bad) in message
    for label in GRADE_LABELS_EN + GRADE_LABELS_KO:
        assert label in message
    assert "1-5" in message


# --- read_grades ------------------------------------------------------------


def test_read_grades_mixed_labels(tmp_path: Path) -> None:
    path = write_answers(tmp_path / "answers.csv", ["최상", "good", "", "중", " ", "BEST", "2"])
    mean, count = read_grades(path)
    assert count == 5
    assert mean == pytest.approx((5 + 4 + 3 + 5 + 2) / 5)


def test_read_grades_file_starts_with_bom(tmp_path: Path) -> None:
    path = write_answers(tmp_path / "answers.csv", ["상"])
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_grades(path) == (4.0, 1)


def test_read_grades_all_blank(tmp_path: Path) -> None:
    path = write_answers(tmp_path / "answers.csv", ["", "", ""])
    assert read_grades(path) == (None, 0)


def test_read_grades_no_grade_column(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text("prompt_line,prompt,answer\n2,질문,답변\n", encoding="utf-8-sig")
    assert read_grades(path) == (None, 0)


def test_read_grades_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_bytes(b"")
    assert read_grades(path) == (None, 0)


def test_read_grades_bad_value_is_warned_with_file_line_value_and_left_out(tmp_path: Path) -> None:
    path = write_answers(tmp_path / "my_answers.csv", ["최상", "", "excellent", "great", "2"])
    with pytest.warns(GradeWarning) as caught:
        assert read_grades(path) == (pytest.approx((5 + 2) / 2), 2)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2
    assert "my_answers.csv" in messages[0] and "line 4" in messages[0]  # header is line 1
    assert "'excellent'" in messages[0] and "ignored" in messages[0]
    assert "최상" in messages[0] and "worst" in messages[0]
    assert "line 5" in messages[1] and "'great'" in messages[1]


def test_read_grades_line_counts_multiline_answers(tmp_path: Path) -> None:
    # The first answer spans three lines, so the second row starts on line 5.
    path = write_answers(
        tmp_path / "answers.csv", ["상", "???"], answers=["첫 줄\n둘째 줄\n셋째 줄", "답"]
    )
    with pytest.warns(GradeWarning, match="line 5"):
        assert read_grades(path) == (4.0, 1)


def test_read_grades_reads_a_file_a_spreadsheet_re_saved_as_cp949(tmp_path: Path) -> None:
    path = write_answers(tmp_path / "answers.csv", ["최상", "하"])
    path.write_bytes(path.read_text(encoding="utf-8-sig").encode("cp949"))
    assert read_grades(path) == (3.5, 2)


def test_read_grades_undecodable_or_malformed_file_is_warned_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_bytes(b"prompt,answer,grade\n\xff\xfe\xff,x,best\n")
    with pytest.warns(GradeWarning, match="neither UTF-8 nor CP949"):
        assert read_grades(path) == (None, 0)
    # A field past the csv module's size limit (131,072 characters) is one of the few errors it raises.
    path.write_bytes(b"prompt,answer,grade\nq,a,best\nq," + b"x" * 200_000 + b",good\n")
    with pytest.warns(GradeWarning, match="answers.csv: line 3: not well-formed CSV"):
        assert read_grades(path) == (5.0, 1)


def test_read_grades_missing_file(tmp_path: Path) -> None:
    with pytest.warns(GradeWarning, match="missing.csv"):
        assert read_grades(tmp_path / "missing.csv") == (None, 0)


# --- grade_label ------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "en", "ko"),
    [
        (5.0, "best", "최상"),
        (4.6, "best", "최상"),
        (4.5, "best", "최상"),
        (4.49, "good", "상"),
        (3.5, "good", "상"),
        (3.2, "medium", "중"),
        (2.0, "poor", "하"),
        (1.4, "worst", "최하"),
        (1.0, "worst", "최하"),
    ],
)
def test_grade_label_rounding(score: float, en: str, ko: str) -> None:
    assert grade_label(score) == en
    assert grade_label(score, lang="ko") == ko


def test_grade_label_not_graded() -> None:
    assert grade_label(None) == "not graded"
    assert grade_label(None, lang="ko") == "미평가"


def test_grade_label_bad_input() -> None:
    with pytest.raises(ValueError):
        grade_label(0.5)
    with pytest.raises(ValueError):
        grade_label(3.0, lang="jp")
