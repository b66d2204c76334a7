"""A good pytest citizen: installs anywhere, stays out of suites that do not use it, fits pytest-benchmark."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

# The study's stack (torch, transformers, peft) is imported here, not first inside a pytester in-process
# run: pytester restores sys.modules after each run, and torch cannot be imported a second time.
import ohlora_fixtures.session.study  # noqa: F401
from ohlora_fixtures.inputs import resources
from tests.conftest import REPO, SESSION_MODELS, TINY_RUN, GridRun

BUNDLED = {f"ohlora_fixtures/data/{name}" for name in resources.BUNDLED}
HEAVY = ("torch", "transformers", "peft", "pandas", "matplotlib", "huggingface_hub")
HF_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the offline switches, so a test can see whether the plugin sets them."""
    env = {key: value for key, value in os.environ.items() if key not in HF_SWITCHES and key != "PYTHONPATH"}
    return {**env, **extra}


# --- installs anywhere ---------------------------------------------------------------------------------


def _build(source: Path, backend_call: str, out: Path) -> Path:
    """Runs one setuptools PEP 517 hook (offline, no isolation) in `source`; returns the file it wrote."""
    result = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.{backend_call}({str(out)!r}))"],
        cwd=source, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist built from a copy of the checkout, a wheel built from that sdist, and the wheel
    installed (pip, --no-deps) into a target folder: (wheel, target)."""
    root = tmp_path_factory.mktemp("build")
    source = root / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("ohlora_fixtures", "data"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    sdist = _build(source, "build_sdist", root)
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = _build(unpacked, "build_wheel", root)
    target = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return wheel, target


def test_the_wheel_built_from_the_sdist_ships_every_data_file(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert BUNDLED <= names
    # Every module and package file of the source tree (the report package and its words included).
    shipped = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "ohlora_fixtures").rglob("*")
        if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts
    }
    assert "ohlora_fixtures/words/translations.toml" in shipped
    assert shipped <= names, sorted(shipped - names)
    assert not any(name.startswith("data/") for name in names)  # inside the package, not site-packages/data


def test_an_installed_package_reads_its_data_and_plans_from_any_directory(installed, tmp_path):
    _, target = installed
    env = _clean_env(PYTHONPATH=str(target))
    check = (
        "import ohlora_fixtures, json, tomllib\n"
        "from ohlora_fixtures.inputs import registry, resources\n"
        "from ohlora_fixtures.inputs import policy\n"
        "from ohlora_fixtures.inputs.dataset import load_experiment\n"
        "from ohlora_fixtures.inputs.options import DEFAULT_DATASET\n"
        "print(json.dumps({'package': ohlora_fixtures.__file__,\n"
        " 'files': [str(resources.bundled(name)) for name in resources.BUNDLED],\n"
        " 'candidates': len(registry.load_registry()), 'allowed': len(policy.load_licences().allowed),\n"
        " 'final': tomllib.loads(resources.bundled(resources.STUDY_RESULTS).read_text())['study']['final'],\n"
        " 'train': len(load_experiment(DEFAULT_DATASET).train)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout)
    assert loaded["package"].startswith(str(target))
    assert all(path.startswith(str(target)) and Path(path).is_file() for path in loaded["files"])
    assert loaded["candidates"] >= 2 and loaded["allowed"] > 0 and loaded["final"] and loaded["train"] > 0

    plan = subprocess.run(
        [sys.executable, "-m", "ohlora_fixtures", "plan", "--models", "TinyKo-v5-a", "--ranks", "16"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "TinyKo-v5-a" in plan.stdout

    # The report command, with its package and translations, from the installed copy too.
    stored = REPO / "tests" / "fixtures" / "schema1" / "results.jsonl"
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_fixtures",
            "report",
            str(stored),
            "--out",
            str(tmp_path / "out"),
            "--lang",
            "ko",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "모델" in (tmp_path / "out" / "leaderboard.md").read_text(encoding="utf-8")


def test_an_installed_copy_runs_the_study_from_another_folder(installed, tmp_path):
    # The benchmarks ship in the package: `ohlora-bench` (python -m ohlora_fixtures bench) runs them with
    # pytest-benchmark's JSON saved, from a folder that holds no checkout.
    _, target = installed
    env = _clean_env(PYTHONPATH=str(target))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_fixtures",
            "bench",
            "-p",
            "no:cacheprovider",
            "-v",  # the test ids: the packaged benchmarks are collected by the names a checkout gives them
            *TINY_RUN,
            "--ohlora-models",
            "TinyKo-v5-a",
            "--ohlora-report-dir",
            str(tmp_path / "ohlora"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 passed" in run.stdout  # PYTHONPATH holds only the installed copy, and the folder no checkout
    assert "PytestAssertRewriteWarning" not in run.stdout + run.stderr  # the package is imported before pytest
    assert "test_finetune.py::test_finetune[TinyKo-v5-a-r16] PASSED" in run.stdout
    assert "test_inference.py::test_inference[TinyKo-v5-a] PASSED" in run.stdout
    saved = list((tmp_path / ".benchmarks").glob("*/0001_*.json"))  # pytest-benchmark's <machine>/<n>_<commit>.json
    assert len(saved) == 1 and len(json.loads(saved[0].read_text())["benchmarks"]) == 2
    assert (tmp_path / "ohlora" / "leaderboard.md").is_file()


@pytest.mark.skipif(importlib.util.find_spec("pygal") is not None, reason="pygal is installed here")
def test_an_option_whose_extra_is_missing_is_refused_at_start_up_in_one_line(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "ohlora_fixtures.plugin",
            "-p",
            "no:cacheprovider",
            "--benchmark-histogram",
            "test_x.py",
        ],
        cwd=tmp_path,
        env=_clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4  # pytest's usage error: nothing was measured
    assert result.stderr.strip().splitlines() == [
        "ERROR: --benchmark-histogram draws with pygal, which is not installed: "
        "pip install 'ohlora-bench[histogram]', or leave --benchmark-histogram out"
    ]


def test_no_product_code_finds_files_relative_to_the_checkout():
    for module in (REPO / "ohlora_fixtures").glob("*.py"):
        source = module.read_text(encoding="utf-8")
        assert "parent.parent" not in source and "parents[1]" not in source, module.name


# --- invisible until asked for ---------------------------------------------------------------------

UNRELATED_TEST = f"""
import gc, json, os, sys

def test_unrelated():
    seen = {{"heavy": [m for m in {HEAVY!r} if m in sys.modules],
            "env": [k for k in {HF_SWITCHES!r} if k in os.environ], "frozen": gc.get_freeze_count()}}
    with open("seen.json", "w") as stream:
        json.dump(seen, stream)
"""

# pytest under an audit hook that notes every bundled data file opened.
AUDITED_PYTEST = f"""
import json, os, sys
opened = []

def note(event, args):
    named = isinstance(args[0], (str, bytes))
    if event == "open" and named and os.path.basename(os.fsdecode(args[0])) in {resources.BUNDLED!r}:
        opened.append(os.fsdecode(args[0]))

sys.addaudithook(note)
import pytest
code = pytest.main(sys.argv[1:])
with open("opened.json", "w") as stream:
    json.dump(opened, stream)
sys.exit(code)
"""


def _run_unrelated(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, list]:
    (directory / "test_unrelated.py").write_text(UNRELATED_TEST, encoding="utf-8")
    (directory / "audited.py").write_text(AUDITED_PYTEST, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "audited.py", "-q", "-p", "no:cacheprovider", "test_unrelated.py", *args],
        cwd=directory,
        env=_clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((directory / "seen.json").read_text())
    opened = json.loads((directory / "opened.json").read_text())
    return result, seen, opened


def test_an_unrelated_suite_does_not_notice_the_plugin(tmp_path):
    used, seen, opened = _run_unrelated(tmp_path, "-p", "ohlora_fixtures.plugin")
    assert seen == {"heavy": [], "env": [], "frozen": 0}
    assert opened == []
    without, _, _ = _run_unrelated(tmp_path, "-p", "no:ohlora_fixtures.plugin")

    def words(output: str) -> list[str]:
        return [word for word in output.split() if not word.endswith("s")]  # drop the duration, e.g. 0.01s

    assert words(used.stdout) == words(without.stdout) and used.stderr == without.stderr


def test_an_ohlora_option_builds_the_study_at_start_up(tmp_path):
    _, seen, opened = _run_unrelated(tmp_path, "-p", "ohlora_fixtures.plugin", "--ohlora-ranks", "16")
    assert "torch" in seen["heavy"] and seen["env"] == list(HF_SWITCHES) and seen["frozen"] > 0
    assert {Path(path).name for path in opened} >= {resources.CANDIDATES, resources.DATASET, resources.LICENCES}


def test_collecting_a_benchmark_builds_the_study_without_any_option(bench_pytester):
    result = bench_pytester.runpytest_inprocess("--collect-only", "-q", "-k", "llama1B")
    assert result.ret == 0, result.stdout.str()
    assert result.stdout.lines[:4] == [
        "test_finetune.py::test_finetune[llama1B-r16]",
        "test_finetune.py::test_finetune[llama1B-r32]",
        "test_finetune.py::test_finetune[llama1B-r64]",
        "test_inference.py::test_inference[llama1B]",
    ]


def test_quantization_is_an_axis_only_where_asked_for(bench_pytester):
    # The default (none) adds no id part, so earlier runs' ids and records stay matched; asked for, every
    # precision gets its own benchmark, in the order of the axis, one precision's benchmarks together.
    result = bench_pytester.runpytest_inprocess(
        "--collect-only", "-q", "-k", "llama1B and not 8bit", "--ohlora-ranks", "16", "--ohlora-quantization",
        "4bit,none,8bit",
    )
    assert result.ret == 0, result.stdout.str()
    assert result.stdout.lines[:4] == [
        "test_finetune.py::test_finetune[llama1B-r16-none]",
        "test_inference.py::test_inference[llama1B-none]",
        "test_finetune.py::test_finetune[llama1B-r16-4bit]",
        "test_inference.py::test_inference[llama1B-4bit]",
    ]


def test_a_missing_licence_policy_stops_the_run_at_start_up(bench_pytester):
    result = bench_pytester.runpytest_inprocess("--ohlora-licenses", "nope.toml")
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and errors[0].startswith("ERROR: licence policy nope.toml: cannot be read"), errors


# --- fits pytest and pytest-benchmark ---------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("--ohlora-ranks", "16")], ids=["lazy", "at-start-up"])
def test_without_pytest_benchmark_the_run_stops_with_one_error_line(bench_pytester, args):
    result = bench_pytester.runpytest_inprocess("-p", "no:benchmark", *args)
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert errors == [
        "ERROR: ohlora benchmarks are measured by pytest-benchmark, which -p no:benchmark switched off; "
        "drop that option (--benchmark-disable runs them once, untimed)"
    ]
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_an_unrelated_suite_runs_with_pytest_benchmark_switched_off(tmp_path):
    result, _, _ = _run_unrelated(tmp_path, "-p", "ohlora_fixtures.plugin", "-p", "no:benchmark")
    assert "1 passed" in result.stdout and "INTERNALERROR" not in result.stdout + result.stderr


def test_the_cache_stays_on_and_out_of_git():
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "setup.cfg", encoding="utf-8")
    assert "cacheprovider" not in config["tool:pytest"]["addopts"]
    assert ".pytest_cache/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def saved_run(tiny_grid: GridRun) -> Path:
    """The session's tiny run (two candidates at ranks 8 and 16): its pytest-benchmark JSON file."""
    return tiny_grid.json


def test_benchmarks_carry_a_group_and_storable_params(saved_run):
    saved = json.loads(saved_run.read_text())["benchmarks"]
    stored = sorted((bench["group"], json.dumps(bench["params"], sort_keys=True)) for bench in saved)
    assert stored == sorted(
        (group, json.dumps({"lora_rank": rank, "ohlora_candidate": name}, sort_keys=True))
        for name in SESSION_MODELS
        for group, rank in [("finetune-r16", 16), ("finetune-r8", 8), ("inference", None)]
    )


@pytest.mark.parametrize(
    ("group_by", "headers"),
    [
        ("group", ["finetune-r16", "finetune-r8", "inference"]),
        ("param:lora_rank", ["lora_rank=16", "lora_rank=8", "lora_rank=None"]),
        ("param:ohlora_candidate", [f"ohlora_candidate={name}" for name in SESSION_MODELS]),
    ],
)
def test_pytest_benchmark_compare_prints_one_table_per_group(saved_run, group_by, headers):
    compare = shutil.which("pytest-benchmark", path=str(Path(sys.executable).parent))
    if compare is None:
        pytest.skip("pytest-benchmark's command is not installed beside this Python")
    result = subprocess.run(
        [compare, "compare", f"--group-by={group_by}", str(saved_run)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    titles = [line for line in result.stdout.splitlines() if "benchmark" in line and "'" in line]
    assert sorted(title.split("'")[1] for title in titles) == sorted(headers), result.stdout
    assert "UNSERIALIZABLE" not in result.stdout
