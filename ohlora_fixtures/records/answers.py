"""The answers CSV, in one place: its columns, how it is written and how it is read back.

The inference benchmark writes one file per candidate (`write_answers`); a person fills in the
`grade` column; the judge reads the grades back (judge/quality.py, through `decode_answers`).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ohlora_fixtures.records.storage import read_regular, replace_atomically

ANSWER_COLUMNS = ("prompt_line", "prompt", "reference", "answer", "new_tokens", "seconds", "grade")


@dataclass(frozen=True)
class Answer:
    """One generated answer and what it cost."""

    prompt_line: int
    prompt: str
    reference: str
    answer: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    first_token_seconds: float = 0.0
    """Time to first token: from the call of `generate` until its first new token is on the host (FirstTokenClock)."""
    generated_tokens: int = 0
    """Tokens `generate` produced (`new_tokens` stops at the first end-of-sequence token)."""


# The inference benchmark writes UTF-8; Korean spreadsheet programs re-save as CP949.
ANSWER_ENCODINGS = ("utf-8-sig", "cp949")


def decode_answers(raw: bytes) -> str:
    """The text of an answers CSV in any of ANSWER_ENCODINGS; UnicodeDecodeError if none fits."""
    for encoding in ANSWER_ENCODINGS[:-1]:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode(ANSWER_ENCODINGS[-1])


def write_answers(path: Path, answers: Sequence[Answer]) -> None:
    """The answers CSV, UTF-8 with BOM so spreadsheets show Korean; `grade` is left for a person.

    Grades a person already gave are kept where the prompt and answer are
    unchanged; if any cannot be carried over, or the old file cannot be read,
    the old file is kept beside it. Written through a unique temporary, so
    concurrent writers never trip over each other.
    """
    previous = read_answer_grades(path)

    def write(stream: Any) -> None:
        writer = csv.DictWriter(stream, fieldnames=ANSWER_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for answer in answers:
            grade = (previous or {}).get((answer.prompt, answer.answer), "")
            writer.writerow({**asdict(answer), "seconds": f"{answer.seconds:.4f}", "grade": grade})

    path.parent.mkdir(parents=True, exist_ok=True)
    if previous is None or carried_short(previous, answers):
        _keep_aside(path)
    replace_atomically(path, write, encoding="utf-8-sig", newline="")


def carried_short(previous: dict[tuple[str, str], str], answers: Sequence[Answer]) -> bool:
    """Whether some grade a person gave has no matching (prompt, answer) in the new answers."""
    kept = {(answer.prompt, answer.answer) for answer in answers}
    return any(key not in kept for key in previous)


def _keep_aside(path: Path) -> None:
    # A copy, not a rename: another writer may be replacing `path` at this moment.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    handle, backup = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.graded-{stamp}-", suffix=path.suffix)
    os.close(handle)
    try:
        shutil.copyfile(path, backup)
    except FileNotFoundError:
        os.unlink(backup)


def read_answer_grades(path: Path) -> dict[tuple[str, str], str] | None:
    """The grades a person gave, by (prompt, answer); {} when there is no file, None when it cannot be read."""
    if not path.is_file():
        return {}
    try:
        text = decode_answers(read_regular(path))
        return {
            (row.get("prompt") or "", row.get("answer") or ""): row["grade"].strip()
            for row in csv.DictReader(io.StringIO(text, newline=""))
            if isinstance(row.get("grade"), str) and row["grade"].strip()
        }
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
