"""Bad input stops the run at start-up: one clean `ERROR:` line from pytest, exit code 4, nothing loaded.

Each case runs the real benchmark files in-process through pytester, so the
message is the one a user sees. Model loading is booby-trapped: a usage error
found only once benchmarks run would show up as a failure, not exit code 4.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_ENTRY, write_registry

VALID_NAMES = (
    "FinguAI-Chat-v1, KoAlpaca-KoRWKV-1.5B, TinyKo-v5-a, gemma-2-2b-it, gemma-ko-v01, "
    "koquality-polyglot-1.3b, llama1B, polyglot-ko-1.3b"
)

OPTION_CASES = [
    (
        ["--ohlora-models", "llama1B,nope"],
        f"--ohlora-models: unknown candidate(s) ['nope']; valid names: {VALID_NAMES}",
    ),
    (["--ohlora-models", ","], "--ohlora-models: ',' is not valid; expected comma-separated names"),
    (["--ohlora-ranks", "0"], "--ohlora-ranks: '0' is not valid; expected comma-separated positive integers"),
    (["--ohlora-ranks", "16,x"], "--ohlora-ranks: '16,x' is not valid; expected comma-separated positive integers"),
    (["--ohlora-ranks=-8"], "--ohlora-ranks: '-8' is not valid; expected comma-separated positive integers"),
    (["--ohlora-ranks", "1.5"], "--ohlora-ranks: '1.5' is not valid; expected comma-separated positive integers"),
    (
        ["--ohlora-ranks", "16,65537"],
        "--ohlora-ranks: '16,65537' is not valid; expected comma-separated positive integers up to 65536",
    ),
    (
        ["--ohlora-quantization", "none,3bit"],
        "--ohlora-quantization: 'none,3bit' is not valid; expected comma-separated names from none, 8bit, 4bit",
    ),
    (["--ohlora-weights", "huge"], "--ohlora-weights: 'huge' is not valid; expected one of random, pretrained"),
    (["--ohlora-scale", "medium"], "--ohlora-scale: 'medium' is not valid; expected one of tiny, full"),
    (["--ohlora-device", "tpu"], "--ohlora-device: 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["--ohlora-device", "meta"], "--ohlora-device: 'meta' is not supported; use auto, cpu, cuda or cuda:N"),
    (
        ["--ohlora-dtype", "int8"],
        "--ohlora-dtype: 'int8' is not valid; expected one of auto, float32, bfloat16, float16",
    ),
    (
        ["--ohlora-vram-budget-mb", "lots"],
        "--ohlora-vram-budget-mb: 'lots' is not valid; expected a positive number of MiB",
    ),
    (
        ["--ohlora-vram-budget-mb", "inf"],
        "--ohlora-vram-budget-mb: 'inf' is not valid; expected a positive number of MiB",
    ),
    (["--ohlora-vram-budget-mb", "0"], "--ohlora-vram-budget-mb: '0' is not valid; expected a positive number of MiB"),
    (["--ohlora-lr", "nan"], "--ohlora-lr: 'nan' is not valid; expected a positive number"),
    (["--ohlora-epochs", "0"], "--ohlora-epochs: '0' is not valid; expected a positive integer"),
    (["--ohlora-seed", "1.5"], "--ohlora-seed: '1.5' is not valid; expected an integer"),
    (["--ohlora-lora-dropout", "1"], "--ohlora-lora-dropout: '1' is not valid; expected a number in [0, 1)"),
    (["--ohlora-min-params", "5"], "--ohlora-min-params 5.0 is above --ohlora-max-params 3.0"),
    (["--ohlora-min-new-tokens", "-1"], "--ohlora-min-new-tokens: '-1' is not valid; expected an integer >= 0"),
    (["--ohlora-min-new-tokens", "81"], "--ohlora-min-new-tokens 81 is above --ohlora-max-new-tokens 80"),
    (
        ["--ohlora-min-new-tokens", "12", "--ohlora-max-new-tokens", "10"],
        "--ohlora-min-new-tokens 12 is above --ohlora-max-new-tokens 10",
    ),
    (["--ohlora-train-rows", "100000"], "needs 100000 train rows"),
    (["--ohlora-remeasure-share", "150%"], "--ohlora-remeasure-share: '150%' is not valid; expected a share from 0"),
]


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model build or load fails the inner run loudly: a usage error must come before one."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the usage error")

    monkeypatch.setattr("ohlora_fixtures.session.study.build_random", refuse)
    monkeypatch.setattr("ohlora_fixtures.session.study.load_pretrained", refuse)


def assert_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> str:
    """Run the benchmarks with `args`; the run must stop at start-up with `message`, once, and no traceback."""
    result = pytester.runpytest_inprocess(*args)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    assert message in errors[0]
    assert "Traceback" not in output
    assert "collected" not in output
    return errors[0]


@pytest.mark.parametrize("args, message", OPTION_CASES, ids=[" ".join(args) for args, _ in OPTION_CASES])
def test_bad_option_is_one_usage_error(bench_pytester: pytest.Pytester, args: list[str], message: str) -> None:
    assert_usage_error(bench_pytester, args, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_a_usage_error(bench_pytester: pytest.Pytester) -> None:
    assert_usage_error(
        bench_pytester, ["--ohlora-device", "cuda"], "--ohlora-device cuda: no CUDA GPU is visible to torch"
    )


def _bad_csv(path: Path) -> Path:
    path.write_text("data_type,input_data\ntrain,hi\n", encoding="utf-8")
    return path


def _not_toml(path: Path) -> Path:
    path.write_text("this is = = not toml\n", encoding="utf-8")
    return path


# (option, how to make the bad path under tmp, message excerpt)
PATH_CASES = [
    (
        "--ohlora-dataset",
        lambda tmp: tmp / "missing.csv",
        "missing.csv: dataset file not found; pass the path of a CSV file with --ohlora-dataset",
    ),
    ("--ohlora-dataset", lambda tmp: tmp, "dataset file is a directory, not a file"),
    (
        "--ohlora-dataset",
        lambda tmp: _bad_csv(tmp / "bad.csv"),
        "bad.csv: the header (line 1) lacks the required column(s) output_data",
    ),
    (
        "--ohlora-candidates",
        lambda tmp: tmp / "missing.toml",
        "missing.toml: not found; pass --ohlora-candidates with the path of a TOML registry",
    ),
    ("--ohlora-candidates", lambda tmp: tmp, ": is a directory, not a file; pass --ohlora-candidates"),
    ("--ohlora-candidates", lambda tmp: _not_toml(tmp / "bad.toml"), "bad.toml: not valid UTF-8 TOML: "),
    (
        "--ohlora-report-dir",
        lambda tmp: _bad_csv(tmp / "file"),
        "--ohlora-report-dir: {path} exists and is not a directory",
    ),
    (
        "--ohlora-report-dir",
        lambda tmp: _bad_csv(tmp / "file") / "sub",
        "cannot be created: {tmp}/file is a file, not a directory",
    ),
]


@pytest.mark.parametrize(
    "option, make, message", PATH_CASES, ids=[f"{option}-{index}" for index, (option, _, _) in enumerate(PATH_CASES)]
)
def test_bad_path_is_one_usage_error(
    bench_pytester: pytest.Pytester, tmp_path: Path, option: str, make, message: str
) -> None:
    path = make(tmp_path)
    assert_usage_error(bench_pytester, [option, str(path)], message.format(path=path, tmp=tmp_path))


def _entry(**changes: object) -> dict:
    entry = copy.deepcopy(TINY_ENTRY)
    for key, value in changes.items():
        if value is None:
            del entry[key]
        else:
            entry[key] = value
    return entry


# (entry or entries, message excerpt after "ERROR: ")
REGISTRY_CASES = {
    "missing field": ([_entry(hub_id=None)], "entry 1 ('tiny-llama'): missing field 'hub_id'"),
    "wrong type": (
        [_entry(target_modules="q_proj")],
        "entry 1 ('tiny-llama'): field 'target_modules' should be list, got 'q_proj'",
    ),
    "unknown field": ([_entry(hubid="x")], "entry 1 ('tiny-llama'): unknown field(s) ['hubid']; known fields: "),
    "bad choice": (
        [_entry(korean="fluent")],
        "field 'korean' should be one of ('specialised', 'supporting', 'none'), got 'fluent'",
    ),
    "bad hub id": ([_entry(hub_id="not a repo")], "field 'hub_id' = 'not a repo' is not a Hugging Face repo id"),
    "path not a dir": ([_entry(path="nowhere")], "field 'path' = 'nowhere' is not a directory"),
    "duplicate": ([_entry(), _entry()], "duplicate names ['tiny-llama']; names must be unique"),
    "model_type typo": (
        [_entry(model_type="lama")],
        "registry entry 'tiny-llama': field 'model_type' = 'lama' is not a transformers model type; "
        "did you mean 'llama'",
    ),
    "architecture": (
        [_entry(architecture="GPT2LMHeadModel")],
        "registry entry 'tiny-llama': field 'architecture' = 'GPT2LMHeadModel', "
        "but model_type 'llama' builds LlamaForCausalLM",
    ),
    "target module": (
        [_entry(target_modules=["qkv"])],
        "registry entry 'tiny-llama': field 'target_modules' names ['qkv'], which LlamaForCausalLM does not have",
    ),
    "config value": (
        [_entry(config={**TINY_ENTRY["config"], "hidden_size": "big"})],
        "registry entry 'tiny-llama': field 'config' cannot build LlamaForCausalLM at tiny scale: TypeError",
    ),
}


@pytest.mark.parametrize("entries, message", REGISTRY_CASES.values(), ids=REGISTRY_CASES.keys())
def test_bad_registry_entry_is_one_usage_error(
    bench_pytester: pytest.Pytester, tmp_path: Path, entries: list[dict], message: str
) -> None:
    registry = write_registry(tmp_path / "candidates.toml", *entries)
    assert_usage_error(bench_pytester, ["--ohlora-candidates", str(registry)], message)


def test_good_registry_entry_passes_the_start_up_checks(bench_pytester: pytest.Pytester, tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "candidates.toml", TINY_ENTRY)
    result = bench_pytester.runpytest_inprocess("--ohlora-candidates", str(registry), "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_finetune[[]tiny-llama-r16[]]", "*4 tests collected*"])


def test_local_path_without_a_checkpoint_is_one_usage_error(bench_pytester: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    registry = write_registry(tmp_path / "candidates.toml", _entry(path="empty"))
    assert_usage_error(
        bench_pytester,
        ["--ohlora-candidates", str(registry), "--ohlora-weights", "pretrained"],
        f"registry entry 'tiny-llama': field 'path' = '{tmp_path / 'empty'}' holds no checkpoint (no config.json)",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--batch-size", "0"], "error: --batch-size: '0' is not valid; expected a positive integer"),
        (["plan", "--ranks", "8,x"], "error: --ranks: '8,x' is not valid"),
        (
            ["report", "x.jsonl", "--max-params", "abc"],
            "error: --max-params: 'abc' is not valid; expected a positive number",
        ),
        (["report", "x.jsonl", "--min-params", "5"], "error: --min-params 5.0 is above --max-params 3.0"),
        (["report", "x.jsonl", "--out", "{file}"], "error: --out: {file} exists and is not a directory"),
    ],
)
def test_commands_name_their_own_spelling_of_a_bad_option(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    from ohlora_fixtures.__main__ import main

    file = tmp_path / "file"
    file.write_text("", encoding="utf-8")
    assert main([arg.format(file=file) for arg in argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message.format(file=file)), error
    assert "--ohlora-" not in error


@pytest.mark.parametrize("text, share", [("50%", 0.5), ("0.25", 0.25), ("0", 0.0), ("100%", 1.0)])
def test_the_remeasure_share_reads_a_share_or_a_percentage(text: str, share: float) -> None:
    from ohlora_fixtures.inputs.options import parse

    assert parse({"remeasure_share": text, "report_dir": None}).remeasure_share == share
