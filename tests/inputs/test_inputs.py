"""Bad inputs and start-up checks (issue 11): names that would become unsafe paths, a grader's
mistakes, concurrent answer writers, registry entries LoRA or the plan cannot handle, seeds and
folders that cannot be used, rows longer than a model's positions, datasets that are not files."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from ohlora_fixtures.errors import RegistryError
from ohlora_fixtures.inputs.paths import child, slug
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.records import results
from ohlora_fixtures.records.answers import Answer, read_answer_grades, write_answers
from tests.conftest import TINY_ENTRY, TINY_RUN, write_registry
from tests.inputs.test_options import _entry, assert_usage_error

# --- 5: a name becomes a path only through a slug ------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("gemma-2-2b-it", "gemma-2-2b-it"),
    ("../../../../escape_test/pwn", "_.._.._.._escape_test_pwn"),
    ("a/b", "a_b"),
    ("..", "_"),
    ("한국어", "___"),
    ("", "_"),
])
def test_slug_is_one_safe_file_name(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_child_never_leaves_its_folder(tmp_path: Path) -> None:
    path = child(tmp_path / "answers", "../../../../escape_test/pwn", ".csv")
    assert path.parent == tmp_path / "answers"
    assert path.name == "_.._.._.._escape_test_pwn.csv"


@pytest.mark.parametrize(
    "name", ["../../../../escape_test/pwn", "a/b", "한국어", "-dash", "not", "x" * 65, "has space"]
)
def test_registry_refuses_a_name_pytest_cannot_select_or_a_file_cannot_carry(tmp_path: Path, name: str) -> None:
    path = write_registry(tmp_path / "candidates.toml", _entry(name=name))
    with pytest.raises(RegistryError, match=r"field 'name' = .* must be 1-64 ASCII letters, digits"):
        load_registry(path)


def test_registry_accepts_dots_dashes_and_underscores(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "candidates.toml", _entry(name="Qwen2.5-0.5B_ko"))
    assert load_registry(path)[0].name == "Qwen2.5-0.5B_ko"


# --- 8: concurrent writers of one answers CSV ----------------------------------------------


def _answers(text: str) -> list[Answer]:
    return [Answer(prompt_line=2, prompt="질문", reference="", answer=text, prompt_tokens=3, new_tokens=2, seconds=0.1)]


def _write_many(path: str, writer: int, count: int) -> int:
    failures = 0
    for _ in range(count):
        try:
            write_answers(Path(path), _answers("답변"))
        except OSError:
            failures += 1
    return failures


def test_two_processes_writing_one_answers_csv_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "answers" / "model.random-tiny.csv"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        failures = pool.starmap(_write_many, [(str(path), 1, 100), (str(path), 2, 100)])
    assert failures == [0, 0]
    assert read_answer_grades(path) == {}  # whole and readable
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left behind


def test_an_unreadable_graded_file_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "model.csv"
    path.write_bytes(b"prompt,answer,grade\n\xff\xfe,x,best\n")
    write_answers(path, _answers("답변"))
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("model.graded-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"prompt,answer,grade\n\xff\xfe,x,best\n"
    assert read_answer_grades(path) == {}


# --- 6: a grader's mistake never costs a finished measurement ------------------------------


def test_a_bad_grade_or_a_cp949_answers_file_leaves_the_measurement_standing(bench_pytester: pytest.Pytester) -> None:
    args = (
        "--ohlora-models",
        "FinguAI-Chat-v1",
        *TINY_RUN,
        "--ohlora-report-dir",
        "report",
        "-k",
        "test_inference",
        "-p",
        "no:randomly",
    )
    bench_pytester.runpytest_inprocess(*args).assert_outcomes(passed=1)
    answers = bench_pytester.path / "report" / "answers" / "FinguAI-Chat-v1.random-tiny.csv"
    log = bench_pytester.path / "report" / "results.jsonl"
    # A grader types a grade the scale does not have beside a good one.
    rows = answers.read_text(encoding="utf-8-sig").splitlines()
    rows[1] += "great"
    rows[2] += "최상"
    answers.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8-sig")

    result = bench_pytester.runpytest_inprocess(*args)

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*GradeWarning: *FinguAI-Chat-v1.random-tiny.csv: line 2: grade 'great' is not a grade and is ignored*"]
    )
    record = list(results.read(log))[-1]
    assert (record.status, record.inference.answers.human_grade, record.inference.answers.human_graded) == (
        "ok",
        5.0,
        1,
    )

    # Then a spreadsheet re-saves it as CP949 (what it cannot encode becomes "?").
    original = answers.read_text(encoding="utf-8-sig").encode("cp949", errors="replace")
    answers.write_bytes(original)

    bench_pytester.runpytest_inprocess(*args).assert_outcomes(passed=1)

    record = list(results.read(log))[-1]
    kept = list(answers.parent.glob("FinguAI-Chat-v1.random-tiny.graded-*.csv"))
    # The graded rows survived the round trip, so their grades carry over; an answer that did
    # not would have made the CP949 file be kept aside instead.
    assert (record.status, record.inference.answers.human_grade, record.inference.answers.human_graded, kept) == (
        "ok",
        5.0,
        1,
        [],
    )


# --- 10: target modules LoRA cannot adapt, and full-size configs past the sanity bounds -----

BOUND_CASES = {
    "norm as target": (
        _entry(target_modules=["q_proj", "input_layernorm"]),
        "field 'target_modules' names 'input_layernorm', which is a LlamaRMSNorm (model.layers.0.input_layernorm); "
        "LoRA adapts only Linear, Embedding, Conv and Conv1D layers; Linear layers of LlamaForCausalLM: down_proj, ",
    ),
    "too many layers": (
        _entry(config={**TINY_ENTRY["config"], "num_hidden_layers": 200_000}),
        "field 'config' has num_hidden_layers = 200,000, above the sanity bound of 1,000 layers",
    ),
    "too many parameters": (
        _entry(config={**TINY_ENTRY["config"], "hidden_size": 65_536, "intermediate_size": 400_000}),
        "B parameters at full size, above the sanity bound of 100 B",
    ),
}


@pytest.mark.parametrize("entry, message", BOUND_CASES.values(), ids=BOUND_CASES.keys())
def test_registry_entry_lora_or_the_full_size_plan_cannot_handle_stops_the_start(
    bench_pytester: pytest.Pytester, tmp_path: Path, entry: dict, message: str
) -> None:
    registry = write_registry(tmp_path / "candidates.toml", entry)
    assert_usage_error(bench_pytester, ["--ohlora-candidates", str(registry)], message)


def test_plan_refuses_a_target_lora_cannot_adapt(tmp_path: Path) -> None:
    from ohlora_fixtures.__main__ import main

    registry = write_registry(tmp_path / "candidates.toml", _entry(target_modules=["input_layernorm"]))
    assert main(["plan", "--candidates", str(registry)]) == 2


# --- 12: seeds, report folders and results logs that cannot be used; plan's own options -----


def _results_dir(tmp: Path) -> Path:
    (tmp / "report" / "results.jsonl").mkdir(parents=True)
    return tmp / "report"


START_UP_CASES = {
    "seed too large": (
        ["--ohlora-seed", "99999999999999999999999"],
        "--ohlora-seed: '99999999999999999999999' is not valid; expected an integer from 0 to 18446744073709551615",
    ),
    "negative seed": (["--ohlora-seed", "-1"], "--ohlora-seed: '-1' is not valid; expected an integer from 0"),
    # Root passes os.access for /proc; creating a file there still fails.
    "unwritable folder": (
        ["--ohlora-report-dir", "/proc/ohlora-x"],
        "--ohlora-report-dir: /proc/ohlora-x cannot be written: creating a file in /proc fails",
    ),
}


@pytest.mark.parametrize("args, message", START_UP_CASES.values(), ids=START_UP_CASES.keys())
def test_unusable_seed_or_report_folder_is_refused_at_start_up(
    bench_pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    assert_usage_error(bench_pytester, args, message)


def test_a_results_log_that_is_a_directory_is_refused_at_start_up(
    bench_pytester: pytest.Pytester, tmp_path: Path
) -> None:
    report = _results_dir(tmp_path)
    assert_usage_error(
        bench_pytester,
        ["--ohlora-report-dir", str(report)],
        f"--ohlora-report-dir: {report / 'results.jsonl'} is not a regular file",
    )


def test_a_results_log_that_cannot_be_appended_to_is_refused_at_start_up(
    bench_pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "results.jsonl").write_text("", encoding="utf-8")
    real_open = Path.open

    def read_only(self: Path, mode: str = "r", *args: object, **kwargs: object):
        # Fault injection: as root a chmod 0444 file stays writable, so the refusal is simulated.
        if self.name == "results.jsonl" and "a" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    assert_usage_error(
        bench_pytester,
        ["--ohlora-report-dir", str(tmp_path)],
        f"{tmp_path / 'results.jsonl'} cannot be appended to (Permission denied)",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "-4"], "--batch-size: '-4' is not valid; expected a positive integer"),
        (["--seq-len", "0"], "--seq-len: '0' is not valid; expected a positive integer"),
        (["--models", "nope"], "error: --models: unknown candidate(s) ['nope']"),
    ],
)
def test_plan_refuses_bad_sizes_naming_its_own_options(
    capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    from ohlora_fixtures.__main__ import main

    try:
        code = main(["plan", *args])
    except SystemExit as exit:  # argparse exits on its own errors
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "--ohlora-" not in error


# --- 13: rows longer than a candidate's positions ---------------------------------------------


def _dataset(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(("data_type", "input_data", "output_data"))
        writer.writerows(rows)
    return path


def _long(words: int) -> str:
    return " ".join(f"답변{index % 97}번" for index in range(words))  # about 20,000 characters at 3,500 words


def _short_positions_registry(tmp: Path) -> Path:
    return write_registry(
        tmp / "candidates.toml", _entry(config={**TINY_ENTRY["config"], "max_position_embeddings": 128})
    )


def test_long_training_rows_are_cut_to_the_positions_with_one_warning(
    bench_pytester: pytest.Pytester, tmp_path: Path
) -> None:
    long_answer = _long(3_500)
    assert len(long_answer) >= 20_000
    rows = [("train", f"질문 {i}", long_answer if i in (1, 3) else f"짧은 답 {i}") for i in range(4)]
    rows += [("valid", f"검증 {i}", long_answer) for i in range(4)]
    dataset = _dataset(tmp_path / "long.csv", rows)

    result = bench_pytester.runpytest_inprocess(
        "--ohlora-candidates",
        str(_short_positions_registry(tmp_path)),
        "--ohlora-dataset",
        str(dataset),
        *TINY_RUN,
        "--ohlora-report-dir",
        "report",
        "-k",
        "test_finetune",
        "-p",
        "no:randomly",
    )

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"*RowsTruncatedWarning: tiny-llama: 4 training/validation row(s) are longer than its 128 positions; "
            f"their answers are cut to fit (first at {dataset} line 3)*",
        ]
    )
    assert result.stdout.str().count("RowsTruncatedWarning") == 1
    record = list(results.read(bench_pytester.path / "report" / "results.jsonl"))[-1]
    assert record.status == "ok"
    # 2 of 4 rows hold 128 tokens, per epoch: well under what 20,000-character rows would be.
    assert record.finetune.tokens <= 4 * 128


@pytest.mark.parametrize(
    "question, message",
    [
        (_long(3_000), "line 2: the prompt alone is"),
        ("짧은 질문", "line 9: the prompt plus --ohlora-max-new-tokens 100 needs"),
    ],
)
def test_a_prompt_that_does_not_fit_the_positions_is_refused_with_its_line(
    bench_pytester: pytest.Pytester, tmp_path: Path, question: str, message: str
) -> None:
    rows = (
        [("train", question, "답")] + [("train", f"질문 {i}", "답") for i in range(3)] + [("valid", "검증", "답")] * 2
    )
    # Prompts are the valid rows after the two used for validation: lines 8 and 9.
    rows += [("valid", "검증", "답"), ("valid", _long(60) if "max-new" in message else "검증", "답")]
    dataset = _dataset(tmp_path / "long.csv", rows)
    assert_usage_error(
        bench_pytester,
        [
            "--ohlora-candidates",
            str(_short_positions_registry(tmp_path)),
            "--ohlora-dataset",
            str(dataset),
            *TINY_RUN,
            "--ohlora-max-new-tokens",
            "100",
        ],
        message,
    )


def test_rwkv_s_limit_is_its_context_length() -> None:
    from ohlora_fixtures.measure.finetune import position_limit
    from ohlora_fixtures.measure.models import build_config

    rwkv = next(c for c in load_registry() if c.model_type == "rwkv")
    assert position_limit(build_config(rwkv, "tiny")) == build_config(rwkv, "tiny").context_length == 1024


# --- 14: special files, folders, mixed encodings, duplicate columns, invisible questions --------


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo.csv")
    return tmp / "fifo.csv"


SPECIAL_CASES = {
    "dev null": (lambda tmp: Path("/dev/null"), "/dev/null: dataset file is not a regular file (a character device)"),
    # Opening a FIFO would wait for a writer forever: the check must only stat it.
    "fifo": (_fifo, "fifo.csv: dataset file is not a regular file (a FIFO)"),
}


@pytest.mark.parametrize("make, message", SPECIAL_CASES.values(), ids=SPECIAL_CASES.keys())
def test_a_dataset_that_is_not_a_regular_file_says_what_it_is(
    bench_pytester: pytest.Pytester, tmp_path: Path, make, message: str
) -> None:
    assert_usage_error(bench_pytester, ["--ohlora-dataset", str(make(tmp_path))], message)


def test_a_registry_that_is_a_device_says_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="/dev/null: is not a regular file"):
        load_registry("/dev/null")


def test_report_given_a_folder_says_it_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ohlora_fixtures.__main__ import main

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path}: is a directory, expected a results file" in capsys.readouterr().err


def _dataset_error(path: Path) -> str:
    from ohlora_fixtures.errors import DatasetError
    from ohlora_fixtures.inputs.dataset import load_dataset

    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    return str(caught.value)


HEADER = b"data_type,input_data,output_data\n"


def test_a_mixed_encoding_dataset_names_a_line_of_each(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(HEADER + "train,안녕,반가워\n".encode("utf-8") + "train,누구야,오로라야\n".encode("cp949"))
    assert "it mixes encodings: line 2 is UTF-8 but line 3 is not (CP949?)" in _dataset_error(path)


def test_a_cp949_dataset_still_loads(tmp_path: Path) -> None:
    from ohlora_fixtures.inputs.dataset import load_dataset

    path = tmp_path / "cp949.csv"
    path.write_bytes(HEADER + "train,안녕,반가워\ntrain,누구야,오로라야\n".encode("cp949"))
    assert list(load_dataset(path)["input_data"]) == ["안녕", "누구야"]


def test_a_duplicate_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_bytes(b"data_type,input_data,output_data,input_data\ntrain,q,a,q2\n")
    assert "the header (line 1) has the column 'input_data' 2 times" in _dataset_error(path)


@pytest.mark.parametrize("question", ["\x00", " \x00\t\x00 ", "\u200b"])
def test_a_question_without_a_visible_character_is_refused_naming_the_line(tmp_path: Path, question: str) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(HEADER + b"train,ok,a\n" + f'train,"{question}",b\n'.encode("utf-8"))
    assert "line 3, column input_data: the question is empty or has no visible character" in _dataset_error(path)


def test_eval_after_finetune_with_resume_warns_that_reused_fine_tunes_give_no_new_answers(
    bench_pytester: pytest.Pytester,
) -> None:
    result = bench_pytester.runpytest_inprocess(
        "--ohlora-models",
        "FinguAI-Chat-v1",
        "--ohlora-eval-after-finetune",
        "--ohlora-resume",
        "--collect-only",
        "-q",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*UserWarning: --ohlora-eval-after-finetune with --ohlora-resume: "
            "fine-tunes already in results.jsonl are not re-run*"
        ]
    )


def test_a_tokenizer_cache_that_cannot_be_written_warns_and_the_tokenizer_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import Tokenizer

    from ohlora_fixtures.inputs.tokenizer import dataset_tokenizer

    def full(self: Tokenizer, path: str, *args: object) -> None:
        raise Exception("No space left on device (os error 28)")  # what tokenizers raises for an OS error

    monkeypatch.setattr(Tokenizer, "save", full)
    with pytest.warns(UserWarning, match="could not be cached .*os error 28.*trained again next run"):
        tokenizer = dataset_tokenizer(["안녕하세요 반가워요", "hello there"], tmp_path / "cache")
    assert tokenizer("안녕하세요").input_ids and not list((tmp_path / "cache").iterdir())
