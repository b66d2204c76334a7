"""The package's layers hold: the bottom loads no heavy library, and import-linter's contracts are kept."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "matplotlib", "pandas")
BOTTOM = (
    "ohlora_fixtures.records.record", "ohlora_fixtures.records.results", "ohlora_fixtures.records.figures",
    "ohlora_fixtures.records.answers", "ohlora_fixtures.records.storage", "ohlora_fixtures.words.message",
    "ohlora_fixtures.words.display",
)


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", BOTTOM)
def test_the_record_and_the_words_load_no_heavy_library(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


def test_a_stored_record_is_read_and_a_sentence_said_without_torch() -> None:
    code = (
        "from ohlora_fixtures.records import results\n"
        "from ohlora_fixtures.words.message import Message\n"
        "records = list(results.read(__import__('pathlib').Path('tests/fixtures/schema1/results.jsonl')))\n"
        "assert records and str(Message('missing')) and Message('missing').in_('ko')\n"
    )
    assert _loaded_after(code) == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above must be able to fail: a module that does load torch is seen.
    assert "torch" in _loaded_after("import ohlora_fixtures.measure.memory")


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed (pip install -e '.[lint]')")
def test_import_linter_contracts_are_kept() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "setup.cfg"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]


def test_a_second_report_over_stored_results_builds_no_model(tmp_path: Path) -> None:
    # The first report plans every candidate (meta models) and stores the plans beside it; the second finds
    # them there, loads no torch, transformers or peft, and writes the same leaderboard.
    out = tmp_path / "out"
    render = (
        "from ohlora_fixtures.report.cli import main\n"
        f"main(['tests/fixtures/schema1/results.jsonl', 'tests/fixtures/schema1/benchmark.json', '--out', {str(out)!r},"
        " '--lang', 'en', '--compare-study'])\n"
    )
    assert "torch" in _loaded_after(render)
    first = _undated((out / "leaderboard.md").read_text(encoding="utf-8"))
    assert (out / "plans.json").is_file()
    assert [m for m in _loaded_after(render) if m not in ("pandas", "matplotlib")] == []
    assert _undated((out / "leaderboard.md").read_text(encoding="utf-8")) == first


def _undated(markdown: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", "DATE", markdown)
