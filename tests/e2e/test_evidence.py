"""No verdict without evidence, no lost or stale result: partial runs, skipped runs, resumed runs under
pytest-xdist, renders killed or out of disk, and bad lines in the log (issues 10 and 11)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ohlora_fixtures import report
from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import policy
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import Status
from tests.conftest import (
    REPO,
    SESSION_MODELS,
    SESSION_RANKS,
    TINY_RUN,
    XDIST_RUN,
    GridRun,
    run_grid,
    run_grid_inprocess,
)
from tests.report.test_render import CANDIDATES, NAMES, finetune, full_run, inference, jsonl, settings_for, table_rows

PAIR = "FinguAI-Chat-v1,TinyKo-v5-a"


def skipped(record):
    return dataclasses.replace(record, status=Status.SKIPPED, error="weights not on this machine", finished=9.0,
                               seconds=None, memory=None, finetune=None, inference=None)


def test_a_skip_never_replaces_a_measurement_whatever_its_date(tmp_path: Path) -> None:
    measured = report.Stored(finetune("polyglot-ko-1.3b", 16, finished=1.0), "a")
    later_skip = report.Stored(skipped(finetune("polyglot-ko-1.3b", 16)), "b")
    for order in ([measured, later_skip], [later_skip, measured]):
        kept, _ = report.merge(order)
        assert [item.record.status for item in kept] == [Status.OK]
    later_failure = report.Stored(finetune("polyglot-ko-1.3b", 16, finished=5.0, status=Status.OOM), "c")
    assert [i.record.status for i in report.merge([measured, later_failure])[0]] == [Status.OOM]


def test_a_run_that_measured_nothing_says_so_and_names_no_model(tmp_path: Path) -> None:
    pretrained = dataclasses.replace(finetune("polyglot-ko-1.3b", 16).run, weights="pretrained", scale="full")
    records = [skipped(finetune(name, 16, run=pretrained)) for name in NAMES]
    records += [skipped(inference(name, tmp_path / "none.csv", run=pretrained)) for name in NAMES]
    out = tmp_path / "out"
    assert report.main([str(jsonl(tmp_path / "results.jsonl", records)), "--out", str(out)]) == 0

    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "NOTHING MEASURED (4 skipped)" in markdown
    assert "real figures" not in markdown
    assert "**final choice: n/a** — nothing was measured" in markdown
    assert "backup" not in markdown.split("## The answer", 1)[1].split("\n## ", 1)[0]
    assert table_rows(markdown, "What this report shows")[1][-1] == "4 skipped"


def test_a_candidate_unmeasured_in_the_merged_runs_is_not_ranked(tmp_path: Path) -> None:
    records = full_run(tmp_path)[:3]  # polyglot only; TinyKo has no record at all
    gathered = report.gather([report.Stored(r, "x") for r in records], [CANDIDATES[n] for n in NAMES],
                             settings_for(tmp_path / "out"), policy.resolve_weights())
    rec = gathered.recommendation
    assert rec.final == "polyglot-ko-1.3b" and rec.backup is None
    assert "nothing measured" in rec.verdicts["TinyKo-v5-a"].reasons[-1]


# --- atomic report -------------------------------------------------------------------------------------


def _report_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}


def test_a_render_that_fails_midway_leaves_the_previous_report_whole(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    log = jsonl(tmp_path / "results.jsonl", full_run(tmp_path))
    out = tmp_path / "out"
    assert report.main([str(log), "--out", str(out)]) == 0
    before = _report_bytes(out)
    assert {"leaderboard.md", "leaderboard.html", "results.csv", "finetune_time.png"} <= set(before)

    def disk_full(frame_report, path: Path) -> None:
        path.write_bytes(b"half a ro")
        raise OSError(28, "No space left on device", str(path))

    # report.render is also the name of the function the package exports: reach the module itself.
    monkeypatch.setattr(importlib.import_module("ohlora_fixtures.report.render"), "write_csv", disk_full)
    with pytest.raises(UsageError, match=r"report not written: No space left on device .*results.csv.*unchanged"):
        report.main([str(log), "--out", str(out), "--lang", "ko"])
    assert _report_bytes(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".render-")]


KILL_DURING_RENDER = '''
import importlib, os, signal, sys
render = importlib.import_module("ohlora_fixtures.report.render")

def killed(report, path):
    path.write_bytes(b"half a ro")
    os.kill(os.getpid(), signal.SIGKILL)

render.write_csv = killed
from ohlora_fixtures.__main__ import main
sys.exit(main(sys.argv[1:]))
'''


def test_a_kill_during_rendering_leaves_the_previous_report_whole(tmp_path: Path) -> None:
    log = jsonl(tmp_path / "results.jsonl", full_run(tmp_path))
    out = tmp_path / "out"
    assert report.main([str(log), "--out", str(out)]) == 0
    before = _report_bytes(out)
    script = tmp_path / "killed_render.py"
    script.write_text(KILL_DURING_RENDER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    killed = subprocess.run([sys.executable, str(script), "report", str(log), "--out", str(out), "--lang", "ko"],
                            env=env, capture_output=True, text=True, timeout=300)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _report_bytes(out) == before  # all files of the old render, none of the new
    staging = [p for p in out.iterdir() if p.name.startswith(".render-")]
    assert len(staging) == 1  # the killed render's leftovers, hidden; the next render removes them
    assert report.main([str(log), "--out", str(out)]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".render-")]


# --- bad lines and files never stop a report ------------------------------------------------------------



def _salted_log(tmp_path: Path) -> Path:
    good = full_run(tmp_path)
    log = jsonl(tmp_path / "results.jsonl", good)
    no_rank = json.loads(good[0].to_json())
    del no_rank["rank"]
    wrong_seconds = json.loads(good[1].to_json())
    wrong_seconds["seconds"] = "abc"
    oops = json.loads(good[2].to_json())
    oops["run"] = "oops"
    with log.open("a", encoding="utf-8") as stream:
        for line in (no_rank, wrong_seconds, oops, {"benchmarks": [1, "x"]}, [1, "x"], "x", None):
            stream.write(json.dumps(line) + "\n")
    return log


def test_wrong_typed_lines_are_skipped_with_a_warning_and_the_report_is_written(tmp_path: Path) -> None:
    log = _salted_log(tmp_path)
    with pytest.warns(results.UnreadableRecord) as caught:
        assert report.main([str(log), "--out", str(tmp_path / "out")]) == 0
    messages = [str(w.message) for w in caught]
    for number, what in (
        (6, "rank: missing"),
        (7, "seconds: 'abc' is not a number"),
        (8, "run: 'oops' is not an object"),
        (9, "id: missing"),
        (10, "not list"),
        (11, "not str"),
        (12, "not NoneType"),
    ):
        assert any(f"results.jsonl:{number}:" in m and what in m for m in messages), (number, messages)
    assert (tmp_path / "out" / "leaderboard.md").is_file()


def test_a_json_file_without_our_benchmarks_and_an_ini_that_is_not_ini_say_so_in_one_line(tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"benchmarks": [1, "x"]}', encoding="utf-8")
    with pytest.raises(UsageError, match="its benchmarks carry no ohlora records"):
        report.main([str(odd)])
    log = jsonl(tmp_path / "results.jsonl", full_run(tmp_path))
    not_ini = tmp_path / "setup.cfg"
    not_ini.write_text("this is not = an ini file\n[unclosed\n", encoding="utf-8")
    with pytest.raises(UsageError, match=rf"--ini {re.escape(str(not_ini))}: not an INI file"):
        report.main([str(log), "--out", str(tmp_path / "out"), "--ini", str(not_ini)])


# --- the real grid: partial runs, resume under pytest-xdist, a full disk at the end ----------------------

def _disk_full(report: object, path: Path) -> None:
    raise OSError(28, "No space left on device", str(path))


def _csv_rows(path: Path) -> set[tuple[str, str, str]]:
    import pandas as pd

    frame = pd.read_csv(path)
    return {(row.candidate, row.kind, row.status) for row in frame.itertuples()}


def test_partial_runs_add_to_the_leaderboard_and_resumed_xdist_records_are_reported(
    xdist_grid: GridRun, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The session's run on two workers (5 benchmarks of two candidates) is this test's first run.
    xdist_grid.copy_to(tmp_path)
    out, log = tmp_path / "ohlora", tmp_path / "ohlora" / "results.jsonl"
    both = {(name, kind, "ok") for name in SESSION_MODELS for kind in ("finetune", "inference")}
    env = {"OMP_NUM_THREADS": "1"}
    settings = XDIST_RUN[: XDIST_RUN.index("-k")]  # the same settings, without -k and -n
    assert _csv_rows(out / "results.csv") == both
    with log.open("a", encoding="utf-8") as stream:  # a salted log never stops a session or a resume
        stream.write('{"schema": 2, "run": "oops"}\n{"benchmarks": [1, "x"]}\n')

    # Issue 11 item 2: every benchmark resumed by two workers is in the controller's report.
    resumed = run_grid(tmp_path, *XDIST_RUN, "--ohlora-resume", env=env)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert re.search(r"\b5 skipped\b", output), output
    run_folders = sorted((out / "runs").iterdir())
    assert len(run_folders) == 2
    assert _csv_rows(run_folders[-1] / "results.csv") == both
    assert "not run" not in table_rows((run_folders[-1] / "leaderboard.md").read_text(encoding="utf-8"), "Results")[1]

    # Issue 10: `-k TinyKo` measures one candidate; its own report ranks only it, the top-level keeps both.
    partial = run_grid_inprocess(pytester, tmp_path, *settings, "-k", f"TinyKo and not r{SESSION_RANKS[0]}")
    assert partial.ret == 0, partial.stdout.str()[-3000:] + partial.stderr.str()[-3000:]
    newest = max((out / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    own = newest.joinpath("leaderboard.md").read_text(encoding="utf-8")
    assert "**backup: n/a** — no second eligible candidate" in own and "FinguAI-Chat-v1: nothing measured" in own
    assert _csv_rows(out / "results.csv") == both
    merged = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "Merged from every run" in merged and "not run" not in table_rows(merged, "Results")[1]

    # Issue 11 item 11: a full disk while the report is written: one clear line, the summary, nothing lost.
    before = (out / "leaderboard.md").read_bytes(), log.read_bytes()
    monkeypatch.setattr(importlib.import_module("ohlora_fixtures.report.render"), "write_csv", _disk_full)
    full_disk = run_grid_inprocess(pytester, tmp_path, *settings, "-k", "TinyKo and inference")
    output = full_disk.stdout.str() + full_disk.stderr.str()
    assert full_disk.ret == 0, output
    assert "Traceback" not in output
    assert re.search(
        r"report not written: No space left on device \(.*results.csv\); every finished measurement "
        r"is in .*results.jsonl",
        output,
    ), output
    assert re.search(r"TinyKo-v5-a\S*( \(approx\.\))?\s+inference\s+ok\b", output.split("= ohlora-bench =", 1)[1])
    assert (out / "leaderboard.md").read_bytes() == before[0]
    assert log.read_bytes().startswith(before[1]) and len(log.read_bytes()) > len(before[1])


def test_pretrained_weights_that_are_not_here_give_a_report_that_names_no_model(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    result = run_grid_inprocess(
        pytester, tmp_path, *TINY_RUN, "--ohlora-models", PAIR, "--ohlora-weights", "pretrained"
    )
    assert result.ret == 0, result.stdout.str()[-3000:] + result.stderr.str()[-3000:]
    markdown = (tmp_path / "ohlora" / "leaderboard.md").read_text(encoding="utf-8")
    assert "NOTHING MEASURED (4 skipped)" in markdown and "real figures" not in markdown
    assert "**final choice: n/a**" in markdown and "**backup:" not in markdown


def test_identical_settings_ignore_when_where_the_grid_and_the_gpu_index_but_not_what() -> None:
    from ohlora_fixtures.records.record import comparable

    base = finetune("polyglot-ko-1.3b", 16).run
    same = [
        dataclasses.replace(
            base, run_id="other", date="later", dataset="/elsewhere.csv", ranks=(4,), vram_budget_mb=1.0
        )
    ]
    same.append(dataclasses.replace(base, device="cuda:1", device_name="GPU"))
    assert comparable(same[0]) == comparable(base)
    assert comparable(same[1]) == comparable(dataclasses.replace(base, device="cuda:0", device_name="GPU"))
    for change in (
        {"seed": 7},
        {"dtype": "bfloat16"},
        {"data_fingerprint": "x"},
        {"tokenizer": "t"},
        {"measuring_code": "0.1.0+edited"},
        {"versions": {"torch": "3"}},
        {"weights": "pretrained"},
    ):
        assert comparable(dataclasses.replace(base, **change)) != comparable(base), change
