"""Answer-quality figures for one candidate: automatic scores and human grades.

The automatic figures are cheap proxies (chrF against reference answers, how
much of the output is Korean, how much it repeats itself); the human grade read
back from the answers CSV is the figure the study actually ranks by.
"""

from __future__ import annotations

import csv
import io
import math
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

from sacrebleu.metrics import CHRF

from ohlora_fixtures.records.answers import decode_answers
from ohlora_fixtures.records.figures import QualityFigures
from ohlora_fixtures.records.storage import read_regular

GRADE_LABELS_EN = ("best", "good", "medium", "poor", "worst")
GRADE_LABELS_KO = ("최상", "상", "중", "하", "최하")

# The study's five-step scale; the first label of each tuple is worth 5.
GRADES: dict[str, int] = {
    **{label: 5 - i for i, label in enumerate(GRADE_LABELS_EN)},
    **{label: 5 - i for i, label in enumerate(GRADE_LABELS_KO)},
}

_ACCEPTED_GRADES = (
    ", ".join(GRADE_LABELS_EN)
    + " / "
    + ", ".join(GRADE_LABELS_KO)
    + " / 1-5 (5 = best); leave blank for not graded"
)

_NOT_GRADED = {"en": "not graded", "ko": "미평가"}

# Precomposed syllables plus every conjoining and compatibility jamo block, so
# that a model emitting bare jamo ("ㅋㅋㅋ", "ㅠㅠ") still counts as Korean.
_HANGUL_RANGES = (
    (0xAC00, 0xD7A3),  # Hangul Syllables
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B
)


def score_answers(
    answers: Sequence[str], references: Sequence[str | None]
) -> QualityFigures:
    """Compute the automatic quality figures of one candidate's answers.

    `references[i]` is the reference answer for `answers[i]`; None or a blank
    string means the prompt has none, and that answer is left out of chrF only.
    With no answers at all, every share is 0.
    """
    if len(answers) != len(references):
        raise ValueError(
            f"got {len(answers)} answers but {len(references)} references; "
            "pass one reference (or None) per answer"
        )
    pairs = [
        (answer, reference)
        for answer, reference in zip(answers, references)
        if reference is not None and reference.strip()
    ]
    chrf = None
    if pairs:
        hypotheses = [answer for answer, _ in pairs]
        # sacrebleu takes a list of reference streams; there is one stream here.
        chrf = CHRF().corpus_score(hypotheses, [[ref for _, ref in pairs]]).score

    n_empty = sum(1 for answer in answers if not answer.strip())
    hangul, characters = 0, 0
    for answer in answers:
        h, c = _hangul_counts(answer)
        hangul += h
        characters += c

    return QualityFigures(
        chrf=chrf,
        n_scored=len(pairs),
        empty_share=n_empty / len(answers) if answers else 0.0,
        hangul_share=hangul / characters if characters else 0.0,
        repeated_ngram_share=repeated_ngram_share(answers),
    )


def _is_hangul(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _HANGUL_RANGES)


def _hangul_counts(text: str) -> tuple[int, int]:
    """(Hangul characters, non-whitespace characters) in `text`."""
    visible = [char for char in text if not char.isspace()]
    return sum(1 for char in visible if _is_hangul(char)), len(visible)


def hangul_share(text: str) -> float:
    """Share of Hangul syllables and jamo among the non-whitespace characters.

    0 when the text has no such characters, e.g. "안녕 hi" -> 2/4 = 0.5.
    """
    hangul, characters = _hangul_counts(text)
    return hangul / characters if characters else 0.0


def repeated_ngram_share(texts: Sequence[str], n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text.

    Words are whitespace-separated tokens. Korean separates words (eojeol) with
    spaces too, so one rule fits both languages; a text with fewer than `n`
    words has no n-grams and adds nothing to either count. Counts are pooled
    over all texts, so long answers weigh more. 0 when there are no n-grams.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    total, repeated = 0, 0
    for text in texts:
        words = text.split()
        seen: set[tuple[str, ...]] = set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            total += 1
            if gram in seen:
                repeated += 1
            else:
                seen.add(gram)
    return repeated / total if total else 0.0


def parse_grade(value: str | float | None) -> int | None:
    """The score (1..5) of one human grade cell; None when it is not graded.

    Blank strings, None and NaN (a blank cell read by pandas) mean not graded.
    English labels match case-insensitively; Korean labels and digits 1..5
    are accepted as well. Anything else raises ValueError listing what is valid.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    # NFKC folds full-width input from a Korean IME ("５", "ＢＥＳＴ") and
    # recomposes Hangul that some editors save decomposed.
    text = unicodedata.normalize("NFKC", str(value)).strip().lower()
    if not text:
        return None
    if text in GRADES:
        return GRADES[text]
    if text in {"1", "2", "3", "4", "5"}:
        return int(text)
    raise ValueError(f"{value!r} is not a grade; accepted: {_ACCEPTED_GRADES}")


class GradeWarning(UserWarning):
    """A grade cell or answers file that cannot be read; it is left out, the measurement stands."""


def read_grades(answers_csv: Path) -> tuple[float | None, int]:
    """Mean human grade (1..5) from the `grade` column of an answers CSV written
    by the inference benchmark, and how many rows were graded.

    (None, 0) if the column is absent or empty. Never raises: a person's
    mistake must not cost a finished measurement. A cell that is not a grade
    is left out with a GradeWarning naming the file, the line and the value;
    a file that cannot be read at all gives (None, 0) with a GradeWarning.
    The line is the one where the row begins in the file (header is line 1).
    """
    # The csv module, not pandas, because answers often span several lines
    # and the reader's line counter is what lets the warning point at the row.
    try:
        text = decode_answers(read_regular(Path(answers_csv)))
    except OSError as error:
        warnings.warn(GradeWarning(f"cannot read answers file {answers_csv}: {error}; grades ignored"), stacklevel=2)
        return None, 0
    except UnicodeDecodeError as error:
        warnings.warn(GradeWarning(
            f"{answers_csv}: neither UTF-8 nor CP949 ({error}); grades ignored; "
            "re-save it as CSV UTF-8"), stacklevel=2)
        return None, 0
    reader = csv.reader(io.StringIO(text, newline=""))
    scores: list[int] = []
    try:
        header = next(reader, None)
        if header is None or "grade" not in header:
            return None, 0
        column = header.index("grade")
        row_start = reader.line_num + 1
        for row in reader:
            line, row_start = row_start, reader.line_num + 1
            # A short row (hand-edited file) simply has no grade.
            if len(row) <= column:
                continue
            try:
                score = parse_grade(row[column])
            except ValueError:
                warnings.warn(GradeWarning(
                    f"{answers_csv}: line {line}: grade {row[column]!r} is not a grade and is "
                    f"ignored; accepted: {_ACCEPTED_GRADES}"), stacklevel=2)
                continue
            if score is not None:
                scores.append(score)
    except csv.Error as error:
        warnings.warn(GradeWarning(
            f"{answers_csv}: line {reader.line_num}: not well-formed CSV ({error}); "
            "grades from there on ignored"), stacklevel=2)
    if not scores:
        return None, 0
    return sum(scores) / len(scores), len(scores)


def grade_label(score: float | None, lang: str = "en") -> str:
    """The label nearest to a (mean) score, e.g. 4.6 -> "best"; halves round up.

    None means not graded: "not graded" in English, "미평가" in Korean.
    `lang` is "en" or "ko".
    """
    if lang not in _NOT_GRADED:
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    if score is None:
        return _NOT_GRADED[lang]
    if not 1 <= score <= 5:
        raise ValueError(f"a grade score lies between 1 and 5, got {score!r}")
    # floor(x + 0.5), not round(): round() sends 4.5 down to 4 (banker's rounding).
    step = math.floor(score + 0.5)
    labels = GRADE_LABELS_EN if lang == "en" else GRADE_LABELS_KO
    return labels[5 - step]
