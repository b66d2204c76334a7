"""Load a question/answer CSV and select the rows one experiment uses.

The file format is the reference study's: one row per question, with the
columns ``data_type`` (``train`` or ``valid``), ``input_data`` (the question)
and ``output_data`` (the answer). Other columns are allowed and ignored.
Every problem with the file is raised as a :class:`DatasetError` that names
the file and, where it applies, the line and column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ohlora_fixtures.errors import DatasetError, UsageError
from ohlora_fixtures.records.storage import not_a_file, read_regular

if TYPE_CHECKING:
    import pandas

REQUIRED_COLUMNS: tuple[str, ...] = ("data_type", "input_data", "output_data")
DATA_TYPES: tuple[str, ...] = ("train", "valid")
PRESETS: tuple[str, ...] = ("default", "study")

# Korean spreadsheet programs save CSV as CP949 unless told otherwise.
ENCODINGS: tuple[str, ...] = ("utf-8-sig", "cp949")

# The reference study's selection; see select_experiment.
STUDY_TRAIN = slice(120, 140)
STUDY_VALID = slice(5, 10)
STUDY_PROMPTS = slice(81, 106)
STUDY_COUNTS = {
    "n_train": len(range(STUDY_TRAIN.start, STUDY_TRAIN.stop)),
    "n_valid": len(range(STUDY_VALID.start, STUDY_VALID.stop)),
    "n_prompts": len(range(STUDY_PROMPTS.start, STUDY_PROMPTS.stop)),
}

# Enough to show a pattern without burying the first problem.
MAX_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class QAPair:
    """One question with its answer, as found in the dataset file."""

    question: str
    answer: str | None
    """None when the file has no answer for this row."""
    line: int
    """1-based line of the file on which the row starts (the header is line 1)."""


@dataclass(frozen=True)
class ExperimentData:
    """The rows one experiment trains on, validates on and prompts with."""

    source: Path
    preset: str
    train: tuple[QAPair, ...]
    valid: tuple[QAPair, ...]
    prompts: tuple[QAPair, ...]
    source_sha256: str = ""
    """sha256 of the file's bytes when it was loaded; empty if not from a file."""

    def fingerprint(self) -> str:
        """Return 12 hex digits identifying the file, the preset and the rows.

        Results are stored under this value so that results measured on
        different data are never compared or merged.
        """
        payload = {
            "source_sha256": self.source_sha256,
            "preset": self.preset,
            **{
                role: [[pair.question, pair.answer] for pair in pairs]
                for role, pairs in (
                    ("train", self.train),
                    ("valid", self.valid),
                    ("prompts", self.prompts),
                )
            },
        }
        encoded = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:12]


def load_dataset(path: str | Path) -> pandas.DataFrame:
    """Read and check a dataset CSV.

    Returns every column of the file as strings (empty cells are ``""``),
    with ``data_type`` stripped and lower-cased, indexed by the 1-based
    line on which each row starts (index name ``line``). The sha256 of the
    file's bytes is in ``frame.attrs["sha256"]``.

    Raises DatasetError when the file is missing, empty, not UTF-8 or CP949,
    not well-formed CSV, lacks a required column, or has a row that cannot
    be used.
    """
    # Imported here so that loading the pytest plugin does not pay for pandas.
    import pandas

    path = Path(path)
    raw = _read_bytes(path)
    text = _decode(raw, path)
    header_line, row_lines = _scan_rows(text, path)
    try:
        # The python engine tokenises with the csv module, as _scan_rows does,
        # so both split the file into the same rows.
        frame = pandas.read_csv(
            _lines(text),
            engine="python",
            dtype=str,
            keep_default_na=False,
            index_col=False,
        )
    except pandas.errors.ParserError as exc:
        raise DatasetError(f"{path}: not a well-formed CSV file: {exc}") from exc
    if len(frame) != len(row_lines):
        raise DatasetError(
            f"{path}: pandas read {len(frame)} data rows but the csv module "
            f"read {len(row_lines)}, so rows cannot be matched to lines; "
            "re-save the file as plain UTF-8 CSV"
        )
    # Rows with fewer fields than the header get NaN for the missing ones.
    frame = frame.fillna("")
    frame.index = pandas.Index(row_lines, name="line")
    frame.attrs["sha256"] = hashlib.sha256(raw).hexdigest()

    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: the header (line {header_line}) lacks the required "
            f"column(s) {', '.join(missing)}; expected "
            f"{', '.join(REQUIRED_COLUMNS)}, found "
            f"{', '.join(repr(column) for column in frame.columns)}"
        )
    raw_types = frame["data_type"]
    frame["data_type"] = raw_types.str.strip().str.lower()
    _check_rows(frame, raw_types, path)
    return frame


def select_experiment(
    frame: pandas.DataFrame,
    source: Path,
    preset: str,
    n_train: int = 20,
    n_valid: int = 5,
    n_prompts: int = 25,
) -> ExperimentData:
    """Pick the train, valid and prompt rows from a frame from load_dataset.

    ``default``: the first n_train train rows, the first n_valid valid rows,
    and as prompts the n_prompts valid rows that follow those.

    ``study``: the reference study's selection: train rows [120:140], valid
    rows [5:10], and as prompts the data rows at positions 81..105 of the
    file whatever their data_type (positions count from 0 over all data
    rows). The counts are fixed at 20/5/25.
    """
    if preset not in PRESETS:
        raise UsageError(
            f"unknown dataset preset {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    if n_train < 1 or n_valid < 0 or n_prompts < 0:
        raise UsageError(
            f"row counts n_train={n_train}, n_valid={n_valid}, "
            f"n_prompts={n_prompts} are invalid: n_train must be at least 1 "
            "and n_valid, n_prompts at least 0"
        )
    source = Path(source)
    train_rows = frame[frame["data_type"] == "train"]
    valid_rows = frame[frame["data_type"] == "valid"]

    if preset == "study":
        counts = {"n_train": n_train, "n_valid": n_valid, "n_prompts": n_prompts}
        if counts != STUDY_COUNTS:
            fixed = ", ".join(f"{name}={value}" for name, value in STUDY_COUNTS.items())
            raise UsageError(
                f"the study preset fixes {fixed} "
                f"(got n_train={n_train}, n_valid={n_valid}, "
                f"n_prompts={n_prompts}); use the default preset to choose "
                "other counts"
            )
        needed = (STUDY_TRAIN.stop, STUDY_VALID.stop, STUDY_PROMPTS.stop)
        if (
            len(train_rows) < needed[0]
            or len(valid_rows) < needed[1]
            or len(frame) < needed[2]
        ):
            raise DatasetError(
                f"{source}: has {len(train_rows)} train rows, "
                f"{len(valid_rows)} valid rows and {len(frame)} data rows in "
                f"all; the study preset needs at least {needed[0]} train "
                f"rows (it uses train rows {_span(STUDY_TRAIN)}), {needed[1]} "
                f"valid rows (valid rows {_span(STUDY_VALID)}) and {needed[2]} "
                f"data rows (prompts are data rows {_span(STUDY_PROMPTS)}, "
                "counting from 0); use the default preset with fewer rows"
            )
        train = train_rows.iloc[STUDY_TRAIN]
        valid = valid_rows.iloc[STUDY_VALID]
        prompts = frame.iloc[STUDY_PROMPTS]
    else:
        if len(train_rows) < n_train or len(valid_rows) < n_valid + n_prompts:
            raise DatasetError(
                f"{source}: has {len(train_rows)} train rows and "
                f"{len(valid_rows)} valid rows; the default preset with "
                f"n_train={n_train}, n_valid={n_valid}, n_prompts={n_prompts} "
                f"needs {n_train} train rows and {n_valid + n_prompts} valid "
                "rows (prompts come from the valid rows after those used for "
                "validation); ask for fewer rows or use another preset"
            )
        train = train_rows.iloc[:n_train]
        valid = valid_rows.iloc[:n_valid]
        prompts = valid_rows.iloc[n_valid : n_valid + n_prompts]

    return ExperimentData(
        source=source,
        preset=preset,
        train=_pairs(train),
        valid=_pairs(valid),
        prompts=_pairs(prompts),
        source_sha256=frame.attrs.get("sha256", ""),
    )


def load_experiment(
    path: str | Path,
    preset: str = "default",
    n_train: int = 20,
    n_valid: int = 5,
    n_prompts: int = 25,
) -> ExperimentData:
    """Load a dataset CSV and select one experiment's rows from it."""
    path = Path(path)
    return select_experiment(
        load_dataset(path), path, preset, n_train, n_valid, n_prompts
    )


def _read_bytes(path: Path) -> bytes:
    problem = not_a_file(path)
    if problem:
        raise DatasetError(
            f"{path}: dataset file {problem}; pass the path of a CSV file with "
            "--ohlora-dataset"
        )
    try:
        return read_regular(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset file: {exc}") from exc


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode(ENCODINGS[0])
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode(ENCODINGS[1])
    except UnicodeDecodeError:
        text = None
    lines = raw.split(b"\n")  # a newline byte is never inside a UTF-8 or CP949 character
    # A line with non-ASCII bytes that is valid UTF-8 is never CP949 Hangul (its lead bytes are
    # UTF-8 continuation bytes): a file that also has a non-UTF-8 line mixes the two encodings.
    not_utf8 = next(n for n, line in enumerate(lines, 1) if not _decodes(line, "utf-8"))
    utf8 = next((n for n, line in enumerate(lines, 1) if not line.isascii() and _decodes(line, "utf-8")), None)
    if text is not None and utf8 is None:
        return text
    neither = next(
        (n for n, line in enumerate(lines, 1) if not _decodes(line, "utf-8") and not _decodes(line, "cp949")), None
    )
    if neither is not None:
        what = f"line {neither} is neither UTF-8 nor CP949"
    else:
        what = f"it mixes encodings: line {utf8} is UTF-8 but line {not_utf8} is not (CP949?)"
    raise DatasetError(f"{path}: cannot decode the file: {what}; re-save the whole file as UTF-8 CSV")


def _decodes(line: bytes, encoding: str) -> bool:
    try:
        line.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _lines(text: str) -> io.StringIO:
    # Universal newlines, so that files saved with bare CR line ends parse and
    # line numbers match what an editor shows.
    return io.StringIO(text, newline=None)


def _is_blank(record: list[str]) -> bool:
    # pandas' rule for the rows it drops as blank lines (skip_blank_lines).
    return not record or (len(record) == 1 and not record[0].strip())


def _scan_rows(text: str, path: Path) -> tuple[int, list[int]]:
    """Return the header's line and the line on which each data row starts.

    pandas numbers rows, not lines, in its errors, and a quoted field can
    span lines; scanning with the csv module gives exact line numbers for
    both the rows and the malformed-CSV errors.
    """
    reader = csv.reader(_lines(text), strict=True)
    header_line = 0
    width = 0
    row_lines: list[int] = []
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetError(
                f"{path}: not a well-formed CSV file: the row starting on line "
                f"{start} is malformed ({exc}, at line {reader.line_num}); "
                "check that every quoted field has a closing double quote and "
                'that quotes inside a field are doubled ("")'
            ) from exc
        record_start, start = start, reader.line_num + 1
        if _is_blank(record):
            continue
        if not header_line:
            header_line, width = record_start, len(record)
            _check_header(record, record_start, path)
        elif len(record) > width:
            raise DatasetError(
                f"{path}: not a well-formed CSV file: line {record_start} has "
                f"{len(record)} fields but the header (line {header_line}) has "
                f"{width}; quote fields that contain commas"
            )
        else:
            row_lines.append(record_start)
    if not header_line:
        raise DatasetError(
            f"{path}: the dataset file is empty; expected a header with the "
            f"columns {', '.join(REQUIRED_COLUMNS)} and at least one data row"
        )
    if not row_lines:
        raise DatasetError(f"{path}: the dataset file has a header (line {header_line}) but no data rows")
    return header_line, row_lines


def _check_header(header: list[str], line: int, path: Path) -> None:
    # pandas would rename the second copy to "input_data.1" and use the first without a word.
    repeated = [column for column in REQUIRED_COLUMNS if header.count(column) > 1]
    if repeated:
        raise DatasetError(
            f"{path}: the header (line {line}) has the column {repeated[0]!r} "
            f"{header.count(repeated[0])} times; keep one, or rename the others"
        )


def _is_blank_text(text: str) -> bool:
    """No visible character: only whitespace and control or format characters (NUL, zero-width space)."""
    return all(char.isspace() or unicodedata.category(char) in ("Cc", "Cf") for char in text)


def _check_rows(frame: pandas.DataFrame, raw_types: pandas.Series, path: Path) -> None:
    problems: list[str] = []
    for line, data_type, raw_type, question, answer in zip(
        frame.index,
        frame["data_type"],
        raw_types,
        frame["input_data"],
        frame["output_data"],
        strict=True,
    ):
        if data_type not in DATA_TYPES:
            problems.append(f"line {line}, column data_type: {raw_type!r} is neither train nor valid")
            continue
        if _is_blank_text(question):
            problems.append(
                f"line {line}, column input_data: the question is empty or has no "
                f"visible character ({data_type} rows need one)"
            )
        if data_type == "train" and _is_blank_text(answer):
            problems.append(
                f"line {line}, column output_data: the answer is empty or has no "
                "visible character (train rows need one)"
            )
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise DatasetError(f"{path}: {len(problems)} problem(s) with rows:\n  " + "\n  ".join(shown))


def _span(rows: slice) -> str:
    return f"{rows.start}-{rows.stop - 1}"


def _pairs(rows: pandas.DataFrame) -> tuple[QAPair, ...]:
    return tuple(
        QAPair(
            question=question,
            answer=answer if answer.strip() else None,
            line=int(line),
        )
        for line, question, answer in zip(rows.index, rows["input_data"], rows["output_data"], strict=True)
    )
