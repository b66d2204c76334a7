"""Tests for ohlora_fixtures.inputs.dataset: loading, checking and selecting rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ohlora_fixtures.errors import DatasetError, UsageError
from ohlora_fixtures.inputs.dataset import (
    PRESETS,
    ExperimentData,
    QAPair,
    load_dataset,
    load_experiment,
    select_experiment,
)

REFERENCE_CSV = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "OhLoRA_fine_tuning_2025-04-19.csv"
)
BUNDLED_CSV = Path(__file__).resolve().parents[2] / "data" / "persona_qa.csv"

HEADER = "data_type,input_data,output_data\n"
KOREAN = (
    HEADER
    + "train,너는 누구야?,나는 오로라야\n"
    + 'train,좋아하는 음식은?,"떡볶이, 그리고 김밥"\n'
    + "valid,오늘 기분 어때?,\n"
)


def write_rows(path: Path, rows: list[tuple[str, str, str]], header=HEADER) -> Path:
    """Write rows under HEADER as UTF-8 CSV, quoting where needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    path.write_text(header + buffer.getvalue(), encoding="utf-8")
    return path


def make_rows(n_train: int, n_valid: int, valid_answers: bool = True):
    train = [
        ("train", f"train question {i}", f"train answer {i}") for i in range(n_train)
    ]
    valid = [
        ("valid", f"valid question {i}", f"valid answer {i}" if valid_answers else "")
        for i in range(n_valid)
    ]
    return train + valid


def write_reference_layout(path: Path) -> Path:
    """250 rows laid out like the study's file: 200 train, 50 unanswered valid."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["", "data_type", "input_data", "output_data", "output_message", "memory"]
    )
    for index in range(250):
        if index < 200:
            row = ["train", f"question {index}", f"answer {index}"]
        else:
            row = ["valid", f"question {index}", ""]
        writer.writerow([str(index), *row, row[2], ""])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def dataset_error(path: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert path.name in message
    return message


# --- encodings ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp949"])
def test_encodings_load_to_the_same_rows(tmp_path, encoding):
    reference = tmp_path / "utf8.csv"
    reference.write_bytes(KOREAN.encode("utf-8"))
    path = tmp_path / f"{encoding}.csv"
    path.write_bytes(KOREAN.encode(encoding))

    frame = load_dataset(path)

    assert list(frame.columns) == ["data_type", "input_data", "output_data"]
    assert frame.values.tolist() == load_dataset(reference).values.tolist()
    assert frame["output_data"].iloc[1] == "떡볶이, 그리고 김밥"
    assert list(frame.index) == [2, 3, 4]


def test_cp949_file_is_not_valid_utf8():
    # Guards the test above: it must exercise the fallback, not utf-8.
    with pytest.raises(UnicodeDecodeError):
        KOREAN.encode("cp949").decode("utf-8")


def test_undecodable_file_names_the_line_and_the_encodings_tried(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(HEADER.encode() + b"train,\x80\xff,answer\n")
    message = dataset_error(path)
    assert "line 2 is neither UTF-8 nor CP949; re-save the whole file as UTF-8 CSV" in message


# --- file-level rejections ---------------------------------------------------


def test_missing_file(tmp_path):
    message = dataset_error(tmp_path / "nope.csv")
    assert "not found" in message
    assert "--ohlora-dataset" in message


def test_directory_instead_of_file(tmp_path):
    directory = tmp_path / "dir.csv"
    directory.mkdir()
    message = dataset_error(directory)
    assert "directory" in message
    assert "--ohlora-dataset" in message


@pytest.mark.parametrize("content", ["", "  \n\n \t\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    assert "empty" in dataset_error(path)


def test_header_only(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(HEADER, encoding="utf-8")
    message = dataset_error(path)
    assert "no data rows" in message


def test_missing_columns_are_listed_with_those_found(tmp_path):
    path = tmp_path / "columns.csv"
    path.write_text("data_type,question,output_data\ntrain,q,a\n", encoding="utf-8")
    message = dataset_error(path)
    assert "input_data" in message
    assert "'question'" in message
    assert "line 1" in message


# --- row-level rejections ----------------------------------------------------


def test_unknown_data_type_gives_line_and_value(tmp_path):
    path = write_rows(
        tmp_path / "types.csv", [("train", "q", "a"), ("test", "q2", "a2")]
    )
    message = dataset_error(path)
    assert "line 3" in message
    assert "data_type" in message
    assert "'test'" in message
    assert "train" in message and "valid" in message


def test_data_type_is_stripped_and_case_insensitive(tmp_path):
    path = write_rows(
        tmp_path / "types.csv", [(" Train ", "q", "a"), ("VALID", "q2", "")]
    )
    frame = load_dataset(path)
    assert list(frame["data_type"]) == ["train", "valid"]


def test_train_row_without_answer(tmp_path):
    path = write_rows(
        tmp_path / "answer.csv", [("train", "q", "a"), ("train", "q2", " ")]
    )
    message = dataset_error(path)
    assert "line 3" in message
    assert "output_data" in message
    assert "train" in message


def test_valid_row_without_answer_is_accepted(tmp_path):
    path = write_rows(
        tmp_path / "answer.csv", [("train", "q", "a"), ("valid", "q2", "")]
    )
    assert load_dataset(path)["output_data"].iloc[1] == ""


@pytest.mark.parametrize("data_type", ["train", "valid"])
def test_row_without_question(tmp_path, data_type):
    path = write_rows(
        tmp_path / "question.csv", [("train", "q", "a"), (data_type, "", "a2")]
    )
    message = dataset_error(path)
    assert "line 3" in message
    assert "input_data" in message


def test_all_bad_rows_are_reported(tmp_path):
    path = write_rows(
        tmp_path / "many.csv",
        [
            ("train", "q", ""),
            ("train", "q", "a"),
            ("bogus", "q", "a"),
            ("valid", "", ""),
        ],
    )
    message = dataset_error(path)
    assert "3 problem(s)" in message
    for line in ("line 2", "line 4", "line 5"):
        assert line in message


def test_line_numbers_follow_multiline_fields_and_blank_lines(tmp_path):
    path = tmp_path / "multiline.csv"
    path.write_text(
        HEADER
        + 'train,"first\nquestion",a1\n'
        + "\n"
        + "train,q2,a2\n"
        + "bogus,q3,a3\n",
        encoding="utf-8",
    )
    message = dataset_error(path)
    assert "line 6" in message

    path.write_text(
        HEADER + 'train,"first\nquestion",a1\n\ntrain,q2,a2\n', encoding="utf-8"
    )
    assert list(load_dataset(path).index) == [2, 5]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_ends(tmp_path, newline):
    path = tmp_path / "newlines.csv"
    text = HEADER + "train,q1,a1\nvalid,q2,\nbogus,q3,a3\n"
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    assert "line 4" in dataset_error(path)


# --- malformed CSV -----------------------------------------------------------


def test_unterminated_quote(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text(
        HEADER + 'train,q1,a1\ntrain,"q2,a2\ntrain,q3,a3\n', encoding="utf-8"
    )
    message = dataset_error(path)
    assert "well-formed" in message
    assert "line 3" in message


def test_text_after_closing_quote(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text(HEADER + 'train,q1,a1\ntrain,"q2"x,a2\n', encoding="utf-8")
    message = dataset_error(path)
    assert "well-formed" in message
    assert "line 3" in message


def test_row_with_more_fields_than_header(tmp_path):
    path = tmp_path / "fields.csv"
    path.write_text(HEADER + "train,q1,a1\ntrain,q2,a2,extra\n", encoding="utf-8")
    message = dataset_error(path)
    assert "line 3" in message
    assert "4 fields" in message and "3" in message


def test_every_row_with_one_field_too_many_is_not_taken_as_an_index(tmp_path):
    # pandas alone would silently use the first column as the index here.
    path = tmp_path / "fields.csv"
    path.write_text(HEADER + "train,q1,a1,x\ntrain,q2,a2,y\n", encoding="utf-8")
    assert "line 2" in dataset_error(path)


def test_row_with_fewer_fields_is_padded(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text(HEADER + "train,q1,a1\nvalid,q2\n", encoding="utf-8")
    assert load_dataset(path)["output_data"].tolist() == ["a1", ""]


# --- extra columns -----------------------------------------------------------


def test_extra_unnamed_index_column_is_ignored(tmp_path):
    path = tmp_path / "indexed.csv"
    path.write_text(
        ",data_type,input_data,output_data,memory\n0,train,q1,a1,\n1,valid,q2,,\n",
        encoding="utf-8",
    )
    experiment = load_experiment(path, n_train=1, n_valid=1, n_prompts=0)
    assert experiment.train == (QAPair("q1", "a1", 2),)
    assert experiment.valid == (QAPair("q2", None, 3),)


# --- selection ---------------------------------------------------------------


def test_default_preset_counts_and_no_overlap(tmp_path):
    path = write_rows(tmp_path / "data.csv", make_rows(30, 40))
    experiment = load_experiment(path)

    assert isinstance(experiment, ExperimentData)
    assert (len(experiment.train), len(experiment.valid), len(experiment.prompts)) == (
        20,
        5,
        25,
    )
    assert experiment.preset == "default"
    assert experiment.source == path
    assert experiment.train[0] == QAPair("train question 0", "train answer 0", 2)
    assert experiment.valid[0].question == "valid question 0"
    assert experiment.prompts[0].question == "valid question 5"
    assert experiment.prompts[-1].question == "valid question 29"
    lines = [
        {pair.line for pair in pairs}
        for pairs in (experiment.train, experiment.valid, experiment.prompts)
    ]
    assert not (lines[0] & lines[1] or lines[0] & lines[2] or lines[1] & lines[2])


def test_default_preset_custom_counts(tmp_path):
    path = write_rows(tmp_path / "data.csv", make_rows(3, 4, valid_answers=False))
    experiment = load_experiment(path, n_train=2, n_valid=1, n_prompts=3)
    assert [len(experiment.train), len(experiment.valid), len(experiment.prompts)] == [
        2,
        1,
        3,
    ]
    assert all(pair.answer is None for pair in experiment.prompts)


def test_study_preset_positions(tmp_path):
    path = write_reference_layout(tmp_path / "study.csv")
    experiment = load_experiment(path, preset="study")

    assert (len(experiment.train), len(experiment.valid), len(experiment.prompts)) == (
        20,
        5,
        25,
    )
    assert experiment.train[0].question == "question 120"
    assert experiment.train[-1].question == "question 139"
    assert experiment.valid[0].question == "question 205"
    assert experiment.valid[-1].question == "question 209"
    assert all(pair.answer is None for pair in experiment.valid)
    assert experiment.prompts[0].question == "question 81"
    assert experiment.prompts[0].line == 83  # header, then data row 0 on line 2
    assert experiment.prompts[-1].question == "question 105"


def test_study_preset_fixes_the_counts(tmp_path):
    path = write_reference_layout(tmp_path / "study.csv")
    with pytest.raises(UsageError, match="study preset fixes"):
        load_experiment(path, preset="study", n_train=10)


def test_study_preset_needs_the_reference_size(tmp_path):
    path = write_rows(tmp_path / "small.csv", make_rows(100, 40))
    with pytest.raises(DatasetError) as info:
        load_experiment(path, preset="study")
    message = str(info.value)
    assert "small.csv" in message
    assert "100 train rows" in message and "40 valid rows" in message
    assert "140 train" in message


def test_too_few_rows(tmp_path):
    path = write_rows(tmp_path / "few.csv", make_rows(10, 12))
    with pytest.raises(DatasetError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "few.csv" in message
    assert "10 train rows" in message and "12 valid rows" in message
    assert "20 train rows" in message and "30 valid rows" in message
    assert "fewer rows" in message and "preset" in message


def test_unknown_preset_lists_presets(tmp_path):
    path = write_rows(tmp_path / "data.csv", make_rows(30, 40))
    with pytest.raises(UsageError) as info:
        load_experiment(path, preset="fancy")
    assert not isinstance(info.value, DatasetError)
    for preset in PRESETS:
        assert preset in str(info.value)


def test_negative_count_is_a_usage_error(tmp_path):
    path = write_rows(tmp_path / "data.csv", make_rows(30, 40))
    with pytest.raises(UsageError, match="n_prompts=-1"):
        load_experiment(path, n_prompts=-1)


# --- fingerprint -------------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_the_data(tmp_path):
    rows = make_rows(30, 40)
    path = write_rows(tmp_path / "data.csv", rows)
    first = load_experiment(path).fingerprint()

    assert len(first) == 12
    int(first, 16)
    assert load_experiment(path).fingerprint() == first
    assert load_experiment(path, n_prompts=24).fingerprint() != first

    changed = list(rows)
    changed[3] = ("train", "train question 3", "a different answer")
    write_rows(path, changed)
    assert load_experiment(path).fingerprint() != first

    # A row outside the selection still changes the file, hence the fingerprint.
    changed = list(rows)
    changed[-1] = ("valid", "another unused question", "x")
    write_rows(path, changed)
    assert load_experiment(path).fingerprint() != first

    write_rows(path, rows)
    assert load_experiment(path).fingerprint() == first


def test_select_experiment_on_a_loaded_frame(tmp_path):
    path = write_rows(tmp_path / "data.csv", make_rows(30, 40))
    frame = load_dataset(path)
    assert select_experiment(frame, path, "default") == load_experiment(path)


# --- real files --------------------------------------------------------------


def test_reference_file_study_preset():
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference dataset not present at {REFERENCE_CSV}")
    experiment = load_experiment(REFERENCE_CSV, preset="study")
    assert (len(experiment.train), len(experiment.valid), len(experiment.prompts)) == (
        20,
        5,
        25,
    )
    assert all(pair.answer is None for pair in experiment.valid)
    assert all(pair.answer for pair in experiment.train)


def test_bundled_dataset_default_preset():
    experiment = load_experiment(BUNDLED_CSV)
    assert (len(experiment.train), len(experiment.valid), len(experiment.prompts)) == (
        20,
        5,
        25,
    )
    assert all(pair.answer for pair in experiment.prompts)
