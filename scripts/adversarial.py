"""An adversarial user's cases against the plugin and the report, each in a temporary folder of its own.

    .venv/bin/python scripts/adversarial.py [--only SUBSTRING] [--list]

Issue 18's re-run: the categories the third round tried (bad records, bad files, bad options, signals, full
and read-only disks, caches, scale-out, resume) rebuilt as cases. Each runs the real thing in a subprocess
(`pytest benchmarks` on one tiny stand-in, or `python -m ohlora_fixtures report`), then checks what a user
must see: the exit code, one line that names the file, row or option, no traceback, the report whole and
nothing measured lost. Prints one row per case (case, expectation, PASS or FAIL, evidence); exits 1 when
any case fails. Outside the test suite: about ten minutes on two cores.
"""

from __future__ import annotations

import argparse
import array
import base64
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
MODEL = "TinyKo-v5-a"
TINY = (
    "--ohlora-models", MODEL, "--ohlora-ranks", "16", "--ohlora-epochs", "1", "--ohlora-train-rows", "4",
    "--ohlora-batch-size", "2", "--ohlora-valid-rows", "2", "--ohlora-prompts", "2", "--ohlora-max-new-tokens", "4",
    "--ohlora-busy-retries", "0",
)
Done = subprocess.CompletedProcess


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    run: Callable[[Path], tuple[bool, str]]


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return {**env, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(folder / "cache"), "PYTHONPATH": str(REPO), **extra}


def grid_command(folder: Path, *args: str, storage: str = "storage") -> list[str]:
    """`pytest benchmarks` on the tiny stand-in, writing only under `folder`."""
    return [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider", "-p", "no:randomly",
            "--benchmark-storage", f"file://{folder / storage}", "--ohlora-report-dir", str(folder / "ohlora"),
            *TINY, *args]


def grid(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Done:
    """`grid_command` run to its end."""
    return subprocess.run(grid_command(folder, *args), cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env=env or _env(folder))


def started(command: list[str], folder: Path) -> subprocess.Popen:
    """`command` running in `folder`, its output captured; SIGHUP at its default, as in a terminal, even where
    this script runs under nohup."""
    return subprocess.Popen(command, cwd=folder, env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


def report(folder: Path, *args: str, timeout: float = 120) -> Done:
    """`python -m ohlora_fixtures report ARGS` with --out folder/out unless ARGS name one."""
    out = () if "--out" in args else ("--out", str(folder / "out"))
    return subprocess.run([sys.executable, "-m", "ohlora_fixtures", "report", *args, *out], cwd=folder,
                          capture_output=True, text=True, timeout=timeout, env=_env(folder))


def text(done: Done) -> str:
    return done.stdout + done.stderr


def clean(done: Done) -> bool:
    return "Traceback" not in text(done)


def last(done: Done, word: str = "") -> str:
    """The output's last line holding `word` (its last line without one), cut to 110 characters."""
    lines = [line for line in text(done).splitlines() if word in line and line.strip()] or [""]
    return lines[-1].strip()[:110]


# --- A measured run to break: made once, copied into each case ---------------------------------------------------

BASE: Path | None = None


def base(folder: Path) -> Path:
    """A copy of one good run's report folder (results.jsonl, answers, plans) in `folder`/ohlora."""
    global BASE
    if BASE is None:
        BASE = Path(tempfile.mkdtemp(prefix="ohlora-adversarial-base-"))
        done = grid(BASE)
        if done.returncode != 0:
            raise SystemExit(f"the base run failed:\n{text(done)[-3000:]}")
        report(BASE, str(BASE / "ohlora" / "results.jsonl"), "--out", str(BASE / "ohlora"))  # plans.json stored
    shutil.copytree(BASE / "ohlora", folder / "ohlora")
    shutil.copytree(BASE / "cache", folder / "cache", dirs_exist_ok=True)
    log = folder / "ohlora" / "results.jsonl"
    log.write_text(log.read_text(encoding="utf-8").replace(str(BASE), str(folder)), encoding="utf-8")  # answers
    return log


def read_only(folder: Path) -> bool:
    """`folder` as a read-only file system: root ignores a folder's permission bits, not a read-only mount."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode == 0


def unmount_all(folder: Path) -> None:
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point.startswith(str(folder)):
            subprocess.run(["umount", point])


def lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def rewrite(log: Path, records: list[object], raw: str | None = None) -> None:
    body = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    log.write_text(body + (raw or ""), encoding="utf-8")


# --- Record cases: one field of the newest record set to a bad value; the report must warn and go on ------------

def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(record: dict) -> None:
        *parents, leaf = path.split(".")
        target = record
        for key in parents:
            target = target[key]
        target[leaf] = value
    return change


BAD_FIELDS: list[tuple[str, Callable[[dict], None]]] = [
    ("rank 10**400", _set("rank", 10**400)), ("rank 0", _set("rank", 0)), ("rank -3", _set("rank", -3)),
    ("rank 70000", _set("rank", 70000)), ("rank as a string", _set("rank", "16")),
    ("seconds -5", _set("seconds", -5.0)), ("seconds NaN", _set("seconds", float("nan"))),
    ("seconds Infinity", _set("seconds", float("inf"))), ("seconds as text", _set("seconds", "fast")),
    ("peak -1e308", _set("memory.peak_mib", -1e308)), ("peak 1e308", _set("memory.peak_mib", 1e308)),
    ("peak NaN", _set("memory.peak_mib", float("nan"))), ("memory as a list", _set("memory", [1, 2])),
    ("tokens -1", _set("finetune.tokens", -1)), ("schema 99", _set("schema", 99)),
    ("kind unknown", _set("kind", "training")), ("status unknown", _set("status", "great")),
    ("run missing", _set("run", None)), ("steps 1e20", _set("finetune.steps", 10**20)),
]


def bad_field(change: Callable[[dict], None]) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        log = base(folder)
        records = lines(log)
        newest = next(r for r in reversed(records) if r.get("kind") == "finetune")
        change(newest)
        rewrite(log, records)
        done = report(folder, str(log))
        warned = f"{log}:" in text(done) and "skipped" in text(done)
        ok = done.returncode == 0 and clean(done) and warned and (folder / "out" / "leaderboard.md").is_file()
        return ok, last(done, "skipped")
    return run


def odd_line(line: str, where: str, silent: bool = False) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        log = base(folder)
        records = [json.dumps(r) for r in lines(log)]
        if where == "middle":
            records.insert(1, line)
            rewrite(log, records)
        else:
            rewrite(log, records, raw=line)
        done = report(folder, str(log))
        warned = f"{log}:" in text(done)
        ok = (
            done.returncode == 0 and clean(done) and (warned != silent) and (folder / "out" / "leaderboard.md").exists()
        )
        return ok, last(done, str(log)) or "(silent)"

    return run


def escaped_name(name: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        log = base(folder)
        records = lines(log)
        for record in records:
            record["candidate"] = name
        rewrite(log, records)
        done = report(folder, str(log))
        outside = [p for p in folder.parent.rglob("*") if "passwd" in p.name or "<" in p.name]
        ok = clean(done) and done.returncode in (0, 2) and not outside and len(text(done).strip().splitlines()) < 20
        return ok, last(done) or "(no output)"

    return run


# --- File cases for the report command ---------------------------------------------------------------------------


def report_with(make: Callable[[Path], list[str]], code: int, word: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        done = report(folder, *make(folder), timeout=30)
        ok = done.returncode == code and clean(done) and word in text(done)
        return ok, f"exit {done.returncode}: {last(done, word)}"

    return run


def _fifo(folder: Path) -> list[str]:
    os.mkfifo(folder / "results.jsonl")
    return [str(folder / "results.jsonl")]


def _read_only_out(folder: Path) -> list[str]:
    log = base(folder)
    read_only(folder / "locked")
    return [str(log), "--out", str(folder / "locked")]


def _file_as_out(folder: Path) -> list[str]:
    log = base(folder)
    (folder / "afile").write_text("x")
    return [str(log), "--out", str(folder / "afile")]


def html_escaped(folder: Path) -> tuple[bool, str]:
    log = base(folder)
    registry = (REPO / "data" / "candidates.toml").read_text(encoding="utf-8")
    registry = registry.replace('params_label = "', 'params_label = "<img src=x onerror=alert(1)> ', 1)
    (folder / "evil.toml").write_text(registry, encoding="utf-8")
    answers = next((folder / "ohlora" / "answers").glob("*.csv"))
    answers.write_text(
        answers.read_text(encoding="utf-8-sig").replace("\n", "\n<script>x</script>", 1), encoding="utf-8-sig"
    )
    done = report(folder, str(log), "--candidates", str(folder / "evil.toml"))
    html = (folder / "out" / "leaderboard.html").read_text(encoding="utf-8") if done.returncode == 0 else ""
    ok = clean(done) and done.returncode == 0 and "<img src=x" not in html and "<script>x" not in html
    return ok, "escaped in leaderboard.html" if ok else last(done)


def grades(content: bytes, word: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        log = base(folder)
        answers = next((folder / "ohlora" / "answers").glob("*.csv"))
        answers.write_bytes(content)
        done = report(folder, str(log))
        ok = (
            done.returncode == 0 and clean(done) and word in text(done) and (folder / "out" / "leaderboard.md").exists()
        )
        return ok, last(done, word)

    return run


def kill_while_rendering(after: float) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        log = base(folder)
        first = report(folder, str(log))
        report(folder, str(log), "--lang", "ko", "--out", str(folder / "korean"))  # what a whole new one reads
        whole_reports = {_undated(folder / name / "leaderboard.md") for name in ("out", "korean")}
        process = started([sys.executable, "-m", "ohlora_fixtures", "report", str(log), "--lang", "ko", "--out",
                           str(folder / "out")], folder)
        time.sleep(after)
        process.kill()
        process.communicate()
        whole = _undated(folder / "out" / "leaderboard.md") in whole_reports  # the old one or the new, never half
        again = report(folder, str(log))
        staging = list((folder / "out").glob(".render-*"))
        ok = first.returncode == 0 and whole and again.returncode == 0 and not staging
        return ok, f"killed after {after} s: leaderboard.md whole, {len(staging)} staging folders after a re-render"

    return run


def _undated(leaderboard: Path) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", "DATE", leaderboard.read_text(encoding="utf-8"))


def full_disk_report(folder: Path) -> tuple[bool, str]:
    log = base(folder)
    small = folder / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]).returncode != 0:
        return False, "could not mount a 64 KiB tmpfs (needs root)"
    try:
        done = report(folder, str(log), "--out", str(small / "out"))
        ok = done.returncode != 0 and clean(done) and "no space left" in text(done).lower()
        return ok, last(done, "space")
    finally:
        subprocess.run(["umount", str(small)])


def concurrent_reports(folder: Path) -> tuple[bool, str]:
    log = base(folder)
    command = [sys.executable, "-m", "ohlora_fixtures", "report", str(log), "--out", str(folder / "out")]
    processes = [started(command, folder) for _ in range(3)]
    outputs = [p.communicate()[0] for p in processes]
    ok = all(p.returncode == 0 for p in processes) and not any("Traceback" in o for o in outputs)
    return ok, f"3 writers, exits {[p.returncode for p in processes]}"


def broken_plans(folder: Path) -> tuple[bool, str]:
    log = base(folder)
    (folder / "ohlora" / "plans.json").write_text("{not json", encoding="utf-8")
    done = report(folder, str(log), "--out", str(folder / "ohlora"))
    ok = done.returncode == 0 and clean(done) and "plans" in text(done)
    return ok, last(done, "plans")


# --- Live runs -----------------------------------------------------------------------------------------------------


def usage(*args: str, word: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        done = grid(folder, *args)
        errors = [line for line in text(done).splitlines() if line.startswith("ERROR:")]
        ok = done.returncode == 4 and clean(done) and len(errors) == 1 and word in errors[0]
        return ok, errors[0][:110] if errors else last(done)

    return run


def plan_usage(*args: str, word: str) -> Callable[[Path], tuple[bool, str]]:
    """`python -m ohlora_fixtures plan ARGS` refused: exit 2, one line naming `word`."""
    def run(folder: Path) -> tuple[bool, str]:
        done = subprocess.run([sys.executable, "-m", "ohlora_fixtures", "plan", "--models", MODEL, *args], cwd=folder,
                              capture_output=True, text=True, timeout=120, env=_env(folder))
        errors = done.stderr.strip().splitlines()
        ok = done.returncode == 2 and clean(done) and len(errors) == 1 and word in errors[0]
        return ok, f"exit {done.returncode}: {last(done)}"

    return run


def _dataset(folder: Path, body: bytes) -> str:
    path = folder / "rows.csv"
    path.write_bytes(body)
    return str(path)


def dataset_usage(body: bytes, word: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        return usage("--ohlora-dataset", _dataset(folder, body), word=word)(folder)

    return run


def finished(folder: Path, done: Done, passed: int = 2) -> tuple[bool, str]:
    log = folder / "ohlora" / "results.jsonl"
    ok = done.returncode == 0 and clean(done) and f"{passed} passed" in text(done) and log.is_file()
    return ok, last(done, "passed")


def resumed(folder: Path) -> tuple[bool, str]:
    grid(folder)
    done = grid(folder, "--ohlora-resume", "-rs")
    ok = clean(done) and "2 skipped" in text(done) and "already measured" in text(done)
    return ok, last(done, "skipped")


def stale_resume(folder: Path) -> tuple[bool, str]:
    grid(folder)
    done = grid(folder, "--ohlora-resume", "--ohlora-lr", "0.001")
    return finished(folder, done)


def xdist(*args: str) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        if "--ohlora-resume" in args:
            grid(folder)
        done = grid(folder, "-n", "2", "--ohlora-models", f"{MODEL},FinguAI-Chat-v1", *args)
        rows = [line for line in done.stdout.splitlines() if line.startswith((MODEL, "FinguAI-Chat-v1"))]
        ok = clean(done) and done.returncode == 0 and len(rows) >= 4
        return ok, f"{len(rows)} rows in the controller's summary"

    return run


def interrupted(sig: int) -> Callable[[Path], tuple[bool, str]]:
    # 4,000 epochs of the tiny grid run for minutes: the signal at 25 s always lands inside the timed region
    # (at 400 a quiet machine had finished both benchmarks by then).
    def run(folder: Path) -> tuple[bool, str]:
        process = started(
            grid_command(folder, "--ohlora-epochs", "4000", "--benchmark-json", str(folder / "bench.json")), folder
        )
        time.sleep(25)
        process.send_signal(sig)
        output = process.communicate(timeout=120)[0]
        log = folder / "ohlora" / "results.jsonl"
        statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()] if log.exists() else []
        ok = (
            "interrupted" in statuses
            and (folder / "bench.json").exists()
            and (folder / "ohlora" / "leaderboard.md").exists()
            and "Traceback" not in output
        )
        return ok, f"exit {process.returncode}, statuses {statuses}"

    return run


def read_only_storage(folder: Path) -> tuple[bool, str]:
    if not read_only(folder / "storage"):
        return False, "could not mount a read-only tmpfs (needs root)"
    done = grid(folder)
    errors = [line for line in text(done).splitlines() if line.startswith("ERROR:")]
    ok = done.returncode == 4 and clean(done) and errors and "storage" in errors[0]
    return ok, errors[0][:110] if errors else last(done)


def full_disk_run(folder: Path) -> tuple[bool, str]:
    small = folder / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(small)]).returncode != 0:
        return False, "could not mount a tmpfs (needs root)"
    try:
        command_dir = ("--ohlora-report-dir", str(small / "ohlora"))
        done = grid(folder, *command_dir)
        said = [line for line in text(done).splitlines() if "no space left on" in line]
        log = small / "ohlora" / "results.jsonl"
        whole = not log.exists() or all(line.endswith("}") for line in log.read_text().splitlines())
        summary = text(done).partition("= ohlora-bench =")[2]
        ok = clean(done) and said and whole and MODEL in summary and "results.jsonl" in summary
        return ok, said[0][:110] if said else last(done)
    finally:
        subprocess.run(["umount", str(small)])


def cache_case(content: str | None, word: str, locked: bool = False) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        cache = folder / "cache" / "ohlora-bench"
        cache.mkdir(parents=True)
        if content is not None:
            (cache / "peaks.json").write_text(content, encoding="utf-8")
        if locked and not read_only(cache):
            return False, "could not mount a read-only tmpfs (needs root)"
        done = grid(folder)
        ok, evidence = finished(folder, done)
        return ok and word in text(done), last(done, word) or evidence

    return run


def absurd_peaks(folder: Path) -> tuple[bool, str]:
    grid(folder)
    cache = folder / "cache" / "ohlora-bench" / "peaks.json"
    peaks = json.loads(cache.read_text())
    for entry in peaks.values():
        entry["tflops"] = 1e-300
    cache.write_text(json.dumps(peaks))
    done = grid(folder)
    records = lines(folder / "ohlora" / "results.jsonl")
    mfu = [r["finetune"]["utilisation"]["mfu"] for r in records if r.get("finetune") and r["finetune"]["utilisation"]]
    ok = clean(done) and max(mfu) <= 1.0 and "calibrat" in text(done)
    return ok, f"largest MFU {max(mfu):.3g}; {last(done, 'calibrat')[:60]}"


def remote_code(folder: Path) -> tuple[bool, str]:
    registry = (REPO / "data" / "candidates.toml").read_text(encoding="utf-8")
    registry = registry.replace('name = "TinyKo-v5-a"', 'name = "TinyKo-v5-a"\ntrust_remote_code = true', 1)
    (folder / "remote.toml").write_text(registry, encoding="utf-8")
    done = grid(folder, "--ohlora-candidates", str(folder / "remote.toml"), "--ohlora-weights", "pretrained")
    ok = done.returncode == 4 and clean(done) and "remote code" in text(done)
    return ok, last(done, "remote code")


def pickle_checkpoint(allow: bool) -> Callable[[Path], tuple[bool, str]]:
    def run(folder: Path) -> tuple[bool, str]:
        checkpoint = folder / "ckpt"
        checkpoint.mkdir()
        marker = folder / "pickle-ran"
        (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama"}))
        payload = ("cos\nsystem\n(S'touch " + str(marker) + "'\ntR.").encode()
        (checkpoint / "pytorch_model.bin").write_bytes(payload)
        registry = (REPO / "data" / "candidates.toml").read_text(encoding="utf-8")
        registry = registry.replace('name = "TinyKo-v5-a"', f'name = "TinyKo-v5-a"\npath = "{checkpoint}"', 1)
        (folder / "local.toml").write_text(registry, encoding="utf-8")
        args = ["--ohlora-candidates", str(folder / "local.toml"), "--ohlora-weights", "pretrained"]
        done = grid(folder, *args, *(["--ohlora-allow-pickle"] if allow else []))
        ok = clean(done) and not marker.exists() and len(text(done).splitlines()) < 200
        return ok, f"no code ran; {last(done, 'pickle')[:80]}"

    return run


def active_profiler(folder: Path) -> tuple[bool, str]:
    (folder / "conftest.py").write_text(
        "import torch\nPROFILE = torch.profiler.profile()\nPROFILE.__enter__()\n", encoding="utf-8"
    )
    done = grid(folder, "--rootdir", str(folder), "-c", os.devnull, "--confcutdir", str(folder))
    return clean(done) and done.returncode in (0, 1), last(done)


def concurrent_runs(folder: Path) -> tuple[bool, str]:
    processes = [started(grid_command(folder, storage=f"s{i}"), folder) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    records = lines(folder / "ohlora" / "results.jsonl")
    ok = all(p.returncode == 0 for p in processes) and len(records) == 4 and not any("Traceback" in o for o in outputs)
    return ok, f"{len(records)} whole records from 2 sessions"


def usdt_lines(folder: Path) -> tuple[bool, str]:
    done = grid(folder)
    leaks = [line for line in text(done).splitlines() if "USDT" in line or "profiler_start" in line]
    ok, evidence = finished(folder, done)
    return ok and not leaks, f"{len(leaks)} profiler lines in the output"


# --- Issue 31: what the fourth round tried from outside -------------------------------------------------------------


def _ini(folder: Path, key: str, value: str) -> str:
    (folder / "weights.cfg").write_text(f"[tool:pytest]\n{key} = {value}\n", encoding="utf-8")
    return str(folder / "weights.cfg")


def weights_refused(*args: str, shown: str, hidden: str = "") -> Callable[[Path], tuple[bool, str]]:
    """A session with these options stops at start-up: exit 4, one ERROR line holding `shown`, not `hidden`."""
    def run(folder: Path) -> tuple[bool, str]:
        done = grid(folder, *args)
        errors = [line for line in text(done).splitlines() if line.startswith("ERROR:")]
        ok = done.returncode == 4 and clean(done) and len(errors) == 1 and shown in errors[0]
        ok = ok and not (hidden and hidden in errors[0]) and not (folder / "ohlora" / "results.jsonl").exists()
        return ok, errors[0][:110] if errors else last(done)

    return run


def report_weights(make: Callable[[Path], list[str]], shown: str) -> Callable[[Path], tuple[bool, str]]:
    """`report` with these weights: exit 2 and one line naming `shown`, never a choice with score nan."""
    def run(folder: Path) -> tuple[bool, str]:
        done = report(folder, *make(folder))
        written = folder / "out" / "leaderboard.md"
        nan = written.exists() and "nan" in written.read_text(encoding="utf-8")
        ok = done.returncode == 2 and clean(done) and shown in text(done) and not nan
        return ok, f"exit {done.returncode}: {last(done, shown) or last(done)}"

    return run


LICENCE = "<script>alert(1)</script><img src=x onerror=alert(1)>|pipe|*bold*"


def markdown_escaped(folder: Path) -> tuple[bool, str]:
    """A registry licence full of markup: leaderboard.md shows it as text in the verdict, the caveats, the
    screening list and the candidates table, no raw tag, pipe or emphasis."""
    log = base(folder)
    registry = (REPO / "data" / "candidates.toml").read_text(encoding="utf-8")
    registry = registry.replace('license = "unknown"', f'license = "{LICENCE}"')
    (folder / "evil.toml").write_text(registry, encoding="utf-8")
    done = report(folder, str(log), "--candidates", str(folder / "evil.toml"))
    markdown = (folder / "out" / "leaderboard.md").read_text(encoding="utf-8") if done.returncode == 0 else ""
    outside_code = re.sub(r"`[^`]*`", "", markdown)
    raw = [line[:60] for line in outside_code.splitlines()
           if re.search(r"(?<!\\)<(script|img)|(?<!\\)\|pipe|(?<!\\)\*bold", line)]
    shown = markdown.count("alert(1)")
    ok = clean(done) and done.returncode == 0 and not raw and shown >= 4
    return ok, f"{len(raw)} raw lines, the licence shown {shown} times: {raw[:1]}"


def stale_code(module: str) -> Callable[[Path], tuple[bool, str]]:
    """A resumed run after an edit to a measuring module (a copy of the package, the module edited) measures
    again: no figure the edited code would measure differently is reused."""
    def run(folder: Path) -> tuple[bool, str]:
        copy = folder / "repo"
        for part in ("ohlora_fixtures", "benchmarks", "data", "setup.cfg"):
            (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(
                REPO / part, copy / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                             if (REPO / part).is_dir() else {}))
        command = [str(copy / "benchmarks") if part == str(REPO / "benchmarks") else part
                   for part in grid_command(folder)]
        env = _env(folder, PYTHONPATH=str(copy))
        subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=env)
        source = copy / "ohlora_fixtures" / (module.replace(".", "/") + ".py")
        source.write_text(source.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
        done = subprocess.run([*command, "--ohlora-resume"], cwd=folder, capture_output=True, text=True,
                              timeout=300, env=env)
        return finished(folder, done)

    return run


def special_file(where: str, make: Callable[[Path], None], *args: str) -> Callable[[Path], tuple[bool, str]]:
    """A FIFO or a device in place of one of the plugin's own files (`where`, under the case's folder): the run
    finishes within two minutes, says which file it ignored, and writes its report."""
    def run(folder: Path) -> tuple[bool, str]:
        if "--ohlora-resume" in args:
            grid(folder)
        path = folder / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        make(path)
        try:
            done = grid(folder, *args, timeout=120)
        except subprocess.TimeoutExpired:
            return False, "hung: killed after 120 s"
        said = "not a regular file" in text(done)
        ok = done.returncode == 0 and clean(done) and said and (folder / "ohlora" / "leaderboard.md").exists()
        return ok, last(done, "not a regular file") or last(done)

    return run


def _to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def mixed_devices(folder: Path) -> tuple[bool, str]:
    """One good run's records, and a copy of them as another candidate measured on a T4: the report ranks the
    two and its verdict must say that they come from unlike runs."""
    log = base(folder)
    other = [{**r, "candidate": "FinguAI-Chat-v1", "run": {**r["run"], "device": "cuda", "device_name": "Tesla T4",
                                                        "run_id": r["run"]["run_id"] + "-t4"}} for r in lines(log)]
    (folder / "t4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other), encoding="utf-8")
    done = report(folder, str(log), str(folder / "t4.jsonl"))
    markdown = (folder / "out" / "leaderboard.md").read_text(encoding="utf-8") if done.returncode == 0 else ""
    verdict = markdown.split("\n## ", 2)[1] if markdown.count("\n## ") >= 2 else ""
    ranked = "FinguAI-Chat-v1" in verdict and MODEL in verdict
    ok = clean(done) and done.returncode == 0 and ranked and "Tesla T4" in verdict
    return ok, f"exit {done.returncode}, both ranked: {ranked}; " + (last(done, "unlike") or last(done))


GPT2_AND_TINY = """
[[candidate]]
name = "gpt2-pad"
hub_id = "openai-community/gpt2"
params_label = "0.1 B"
leaderboard_average = 1.0
license = "mit"
korean = "none"
model_type = "gpt2"
architecture = "GPT2LMHeadModel"
target_modules = ["c_attn"]
[candidate.config]
n_layer = 2
pad_token_id = 50256
"""


def plan_gpt2(folder: Path) -> tuple[bool, str]:
    """A registry of a GPT-2 whose config names a pad token, beside the bundled TinyKo: `plan` plans both."""
    bundled = (REPO / "data" / "candidates.toml").read_text(encoding="utf-8")
    tiny = bundled[bundled.index(f'[[candidate]]\nname = "{MODEL}"'):]
    (folder / "gpt2.toml").write_text(GPT2_AND_TINY + "\n" + tiny, encoding="utf-8")
    command = [sys.executable, "-m", "ohlora_fixtures", "plan", "--candidates", str(folder / "gpt2.toml"),
               "--seq-len", "16"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=_env(folder))
    rows = list(dict.fromkeys(line.split()[0] for line in done.stdout.splitlines()
                              if line.strip().startswith(("gpt2-pad ", f"{MODEL} "))))
    ok = done.returncode == 0 and clean(done) and rows == ["gpt2-pad", MODEL]
    return ok, f"exit {done.returncode}, planned {rows}; {last(done, 'not planned') or last(done)}"


def installed_bench(folder: Path) -> tuple[bool, str]:
    """A copy installed by pip (not editable) and run as `ohlora-bench` (`python -m ohlora_fixtures bench`) from
    a folder without a checkout: no PytestAssertRewriteWarning."""
    source = folder / "source"
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for name in ("ohlora_fixtures", "data"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(folder / "site"), str(source)], check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "ohlora_fixtures", "bench", "--collect-only", "-q", "-p",
                           "no:cacheprovider"], cwd=folder, capture_output=True, text=True, timeout=300,
                          env=_env(folder, PYTHONPATH=str(folder / "site")))
    warned = "PytestAssertRewriteWarning" in text(done)
    ok = done.returncode == 0 and clean(done) and "collected" in text(done) and not warned
    return ok, f"exit {done.returncode}: {last(done, 'RewriteWarning') or last(done, 'collected')}"


SIGTERM_WHILE_SAVING = """
import os, signal
import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    benchmarks = session.config._benchmarksession
    save = benchmarks.handle_saving

    def saving():
        os.kill(os.getpid(), signal.SIGTERM)
        save()

    benchmarks.handle_saving = saving
"""


def sigterm_while_saving(folder: Path) -> tuple[bool, str]:
    """SIGTERM as pytest-benchmark starts saving its JSON: no traceback, the JSON and the report written."""
    (folder / "sigterm_while_saving.py").write_text(SIGTERM_WHILE_SAVING, encoding="utf-8")
    env = _env(folder, PYTHONPATH=f"{REPO}{os.pathsep}{folder}")
    done = grid(folder, "-p", "sigterm_while_saving", "--benchmark-json", str(folder / "bench.json"), env=env)
    saved = (folder / "bench.json").exists()
    ok = clean(done) and saved and (folder / "ohlora" / "leaderboard.md").exists() and "SIGTERM" in text(done)
    return ok, f"exit {done.returncode}, JSON {'written' if saved else 'missing'}; {last(done, 'SIGTERM')}"


def lying_index(folder: Path) -> tuple[bool, str]:
    """Each benchmark logged twice, an older copy at 999 s first; the stored index's offsets of the two copies
    swapped and its body hash made right again: a resume must still take the newest records."""
    grid(folder)
    log = folder / "ohlora" / "results.jsonl"
    newest = lines(log)
    older = [{**r, "finished": r["finished"] - 1000, "seconds": 999.0,
              "round_seconds": [999.0] * len(r["round_seconds"])} for r in newest]
    # 1 MiB of blank lines first: a log this long gets its index stored beside it
    log.write_text("\n" * (1 << 20) + "".join(json.dumps(r) + "\n" for r in [*older, *newest]), encoding="utf-8")
    indexer = ("import sys, pathlib; from ohlora_fixtures.records.log_index import LogIndex; "
               "LogIndex(pathlib.Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", indexer, str(log)], env=_env(folder), check=True, timeout=120)
    stored_at = log.with_name(".results.jsonl.index")
    header, body = stored_at.read_text(encoding="utf-8").splitlines()
    index = json.loads(body)
    offsets = array.array("q", base64.b64decode(index["columns"]["offset"]))
    count = len(newest)
    offsets[:count], offsets[count:] = offsets[count:], offsets[:count]
    index["columns"]["offset"] = base64.b64encode(offsets.tobytes()).decode("ascii")
    body = json.dumps(index, separators=(",", ":"), ensure_ascii=False)
    header = json.dumps({**json.loads(header), "body": hashlib.sha256(body.encode("utf-8")).hexdigest()})
    stored_at.write_text(f"{header}\n{body}\n", encoding="utf-8")
    done = grid(folder, "--ohlora-resume", "-rs")
    csvs = list((folder / "ohlora" / "runs").glob("*/results.csv"))
    rows = [row for path in csvs for row in csv.DictReader(path.open(encoding="utf-8"))]
    took_older = any(row["seconds"] and float(row["seconds"]) == 999.0 for row in rows)
    ok = done.returncode == 0 and clean(done) and "already measured" in text(done) and csvs and not took_older
    said = "has the older 999 s records" if took_older else "newest"
    return ok, f"exit {done.returncode}, the run's csv: {said}; {last(done, 'does not match')}"


def cases() -> list[Case]:
    listed = [
        Case(f"record: {label}", "warned with file:line, skipped, report written", bad_field(change))
        for label, change in BAD_FIELDS
    ]
    listed += [
        Case("record: broken middle line", "warned with file:line", odd_line('{"kind" "finetune"}', "middle")),
        Case("record: binary garbage line", "warned with file:line", odd_line("\x00\x01\x02garbage", "middle")),
        Case("record: a JSON array", "warned with file:line", odd_line("[1, 2, 3]", "middle")),
        Case("record: a bare number", "warned with file:line", odd_line("42", "middle")),
        Case("record: an empty object", "warned with file:line", odd_line("{}", "middle")),
        Case(
            "record: 20,000-character error",
            "warned or kept, no traceback",
            odd_line(json.dumps({"error": "x" * 20000}), "middle"),
        ),
        Case("record: cut last line", "silent, the rest rendered", odd_line('{"kind": "fine', "end", silent=True)),
    ]
    listed += [
        Case(f"name escape: {name!r}", "no file outside the report, no traceback", escaped_name(name))
        for name in ("../../etc/passwd", "<script>alert(1)</script>", "a/b", ".hidden", "x" * 300)
    ]
    listed += [
        Case("report: results is a folder", "exit 2, one line", report_with(lambda f: [str(f)], 2, "directory")),
        Case(
            "report: results missing",
            "exit 2, one line",
            report_with(lambda f: [str(f / "nope.jsonl")], 2, "not found"),
        ),
        Case("report: results is a FIFO", "exit 2, no hang", report_with(_fifo, 2, "not a regular file")),
        Case("report: /dev/null", "exit 2, one line", report_with(lambda f: ["/dev/null"], 2, "/dev/null")),
        Case(
            "report: --ini missing",
            "usage error",
            report_with(lambda f: [str(base(f)), "--ini", "nope.cfg"], 2, "nope.cfg"),
        ),
        Case(
            "report: --ranking-weights negative",
            "usage error",
            report_with(lambda f: [str(base(f)), "--ranking-weights", "quality=-1"], 2, "--ranking-weights"),
        ),
        Case("report: --lang xx", "usage error", report_with(lambda f: [str(base(f)), "--lang", "xx"], 2, "--lang")),
        Case(
            "report: --gpu unknown",
            "usage error naming the cards",
            report_with(lambda f: [str(base(f)), "--gpu", "nope"], 2, "A100-80GB"),
        ),
        Case("report: --out is a file", "usage error", report_with(_file_as_out, 2, "afile")),
        Case("report: --out read-only", "usage error", report_with(_read_only_out, 2, "locked")),
        Case(
            "report: registry missing",
            "usage error",
            report_with(lambda f: [str(base(f)), "--candidates", "nope.toml"], 2, "nope.toml"),
        ),
        Case("report: HTML injection in registry and answers", "escaped", html_escaped),
        Case(
            "grades: words that are not grades",
            "warned with file:line",
            grades(
                "prompt_line,prompt,reference,answer,new_tokens,seconds,grade\n1,q,r,a,3,0.1,great\n".encode(),
                "not a grade",
            ),
        ),
        Case(
            "grades: CP949 answers file",
            "read",
            grades(
                "prompt_line,prompt,reference,answer,new_tokens,seconds,grade\n1,질문,답,답변,3,0.1,상\n".encode(
                    "cp949"
                ),
                "report:",
            ),
        ),
        Case(
            "grades: neither UTF-8 nor CP949",
            "warned, grades ignored",
            grades(b"prompt,grade\n\xff\xfe\xfa,5\n", "neither UTF-8 nor CP949"),
        ),
        Case(
            "grades: 20,000-character answer",
            "read",
            grades(
                (
                    "prompt_line,prompt,reference,answer,new_tokens,seconds,grade\n1,q,r," + "가" * 20000 + ",3,0.1,4\n"
                ).encode("utf-8-sig"),
                "report:",
            ),
        ),
        Case("plans.json corrupted", "warned, planned again", broken_plans),
        Case("report: three writers at once", "all succeed", concurrent_reports),
        Case("report: full disk", "one line, no traceback", full_disk_report),
    ]
    listed += [
        Case(
            f"report killed after {t} s",
            "leaderboard whole; staging removed by the next render",
            kill_while_rendering(t),
        )
        for t in (0.3, 0.8, 1.2, 1.6, 2.0, 2.5)
    ]
    listed += [
        Case("option: rank 10**6", "usage error", usage("--ohlora-ranks", "1000000", word="--ohlora-ranks")),
        Case("option: rounds 0", "usage error", usage("--ohlora-rounds", "0", word="--ohlora-rounds")),
        Case("option: seed -1", "usage error", usage("--ohlora-seed", "-1", word="--ohlora-seed")),
        Case("option: unknown model", "usage error", usage("--ohlora-models", "nope", word="nope")),
        Case("option: unknown card", "usage error", usage("--ohlora-gpu", "nope", word="A100-80GB")),
        Case("option: dataset missing", "usage error", usage("--ohlora-dataset", "nope.csv", word="nope.csv")),
        Case("option: dataset is a folder", "usage error", usage("--ohlora-dataset", "/tmp", word="directory")),
        Case("option: dataset is /dev/null", "usage error", usage("--ohlora-dataset", "/dev/null", word="/dev/null")),
        Case("option: registry missing", "usage error", usage("--ohlora-candidates", "nope.toml", word="nope.toml")),
        Case("option: dtype unknown", "usage error", usage("--ohlora-dtype", "int3", word="--ohlora-dtype")),
        Case(
            "dataset: duplicate column",
            "usage error naming it",
            dataset_usage("data_type,input_data,output_data,output_data\n".encode(), "output_data"),
        ),
        Case(
            "dataset: mixed encodings",
            "usage error naming a line",
            dataset_usage(
                "data_type,input_data,output_data\ntrain,안녕,네\n".encode() + "train,안녕,네\n".encode("cp949"), "line"
            ),
        ),
        Case("dataset: no rows", "usage error", dataset_usage(b"data_type,input_data,output_data\n", "rows.csv")),
        Case("run: remote code without opt-in", "refused at start-up", remote_code),
        Case("run: pickle checkpoint without opt-in", "skipped, no code ran", pickle_checkpoint(False)),
        Case("run: refused pickle with --ohlora-allow-pickle", "one reason, no code ran", pickle_checkpoint(True)),
        Case("run: resume", "every benchmark skipped as measured", resumed),
        Case("run: stale resume (settings changed)", "measured again", stale_resume),
        Case("run: -n 2", "the controller's summary shows every benchmark", xdist()),
        Case("run: -n 2 --ohlora-resume", "the controller's summary shows every benchmark", xdist("--ohlora-resume")),
        Case("run: SIGINT in a timed region", "interrupted record, JSON and report kept", interrupted(signal.SIGINT)),
        Case("run: SIGTERM in a timed region", "as SIGINT", interrupted(signal.SIGTERM)),
        Case("run: read-only --benchmark-storage", "one line at start-up", read_only_storage),
        Case(
            "run: full disk for the report folder",
            "one line per benchmark, the summary, no partial line",
            full_disk_run,
        ),
        Case("cache: corrupted peaks", "warned, calibrated again", cache_case("{broken", "not readable")),
        Case("cache: read-only cache folder", "warned, run goes on", cache_case(None, "not written", locked=True)),
        Case("cache: absurd peaks (1e-300 TFLOP/s)", "discarded with a warning", absurd_peaks),
        Case("run: a profiler already active", "no traceback", active_profiler),
        Case("run: two sessions into one log", "both records whole", concurrent_runs),
        Case("run: no USDT profiler lines", "none in the output", usdt_lines),
    ]
    listed += [
        Case("31 weights: report leaderboard=inf", "exit 2 naming the pair", report_weights(
            lambda f: [str(base(f)), "--ranking-weights", "leaderboard=inf"], "leaderboard=inf")),
        Case("31 weights: report sum overflows (1e308 x3)", "exit 2 naming the option", report_weights(
            lambda f: [str(base(f)), "--ranking-weights", "quality=1e308,leaderboard=1e308,finetune_time=1e308"],
            "--ranking-weights")),
        Case("31 weights: report --ini ohlora_weight_leaderboard = inf", "exit 2 naming the key", report_weights(
            lambda f: [str(base(f)), "--ini", _ini(f, "ohlora_weight_leaderboard", "inf")],
            "ohlora_weight_leaderboard")),
        Case("31 weights: session quality=inf", "refused at start-up",
             weights_refused("--ohlora-ranking-weights", "leaderboard=2,quality=inf", shown="quality=inf",
                             hidden="leaderboard=2")),
        Case("31 weights: session quality=1e400", "refused at start-up",
             weights_refused("--ohlora-ranking-weights", "quality=1e400", shown="quality=1e400")),
        Case("31 weights: session all zero", "refused at start-up", weights_refused(
            "--ohlora-ranking-weights", ",".join(f"{n}=0" for n in ("quality", "leaderboard", "finetune_time",
                                                                   "finetune_memory", "inference_time",
                                                                   "inference_memory")),
            shown="--ohlora-ranking-weights")),
        Case("31 weights: session repeated key", "refused naming the pair",
             weights_refused("--ohlora-ranking-weights", "quality=1,quality=2", shown="quality=2")),
        Case("31 weights: session unknown name", "the bad pair only",
             weights_refused("--ohlora-ranking-weights", "quality=1,speed=2", shown="speed=2", hidden="quality=1")),
        Case("31 markdown: a registry licence full of markup", "escaped in leaderboard.md", markdown_escaped),
        Case("31 stale: resume after an edit to measure/torch_compat.py", "measured again",
             stale_code("measure.torch_compat")),
        Case("31 stale: resume after an edit to measure/machine_load.py", "measured again",
             stale_code("measure.machine_load")),
        Case("31 fifo: .results.jsonl.index a FIFO, resumed", "ignored with a line, no hang",
             special_file("ohlora/.results.jsonl.index", os.mkfifo, "--ohlora-resume")),
        Case("31 fifo: .results.jsonl.index a FIFO, a plain run", "ignored with a line, no hang",
             special_file("ohlora/.results.jsonl.index", os.mkfifo)),
        Case("31 fifo: .results.jsonl.index linked to /dev/zero", "ignored with a line, bounded",
             special_file("ohlora/.results.jsonl.index", _to_dev_zero, "--ohlora-resume")),
        Case("31 fifo: the cache's peaks.json a FIFO", "ignored with a line, no hang",
             special_file("cache/ohlora-bench/peaks.json", os.mkfifo)),
        Case("31 fifo: plans.json a FIFO", "ignored with a line, no hang",
             special_file("ohlora/plans.json", os.mkfifo)),
        Case("31 index: offsets swapped, body hash recomputed, resumed", "the newest records taken", lying_index),
        Case("31 plan --gpu ''", "exit 2 naming the option", plan_usage("--gpu", "", word="--gpu")),
        Case("31 verdict: a report ranking rows of two devices", "a caveat naming both", mixed_devices),
        Case("31 plan: a GPT-2 with a pad token beside TinyKo", "both planned", plan_gpt2),
        Case("31 signal: SIGHUP in a timed round", "interrupted record, JSON, report, no traceback",
             interrupted(signal.SIGHUP)),
        Case("31 installed: ohlora-bench from a pip-installed copy", "no PytestAssertRewriteWarning",
             installed_bench),
        Case("31 signal: SIGTERM as pytest-benchmark saves its JSON", "no traceback, JSON and report written",
             sigterm_while_saving),
    ]
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--only", default="", help="run the cases whose name holds this text")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args(argv)
    chosen = [case for case in cases() if args.only in case.name]
    if args.list:
        print("\n".join(f"{case.name}: {case.expect}" for case in chosen))
        return 0
    failed = 0
    print(f"{len(chosen)} cases")
    for number, case in enumerate(chosen, 1):
        folder = Path(tempfile.mkdtemp(prefix="ohlora-adversarial-"))
        started = time.monotonic()
        try:
            ok, evidence = case.run(folder)
        except Exception as error:  # noqa: BLE001 - a case that breaks the script is a failed case
            ok, evidence = False, f"{type(error).__name__}: {error}"[:110]
        finally:
            unmount_all(folder)
            shutil.rmtree(folder, ignore_errors=True)
        failed += not ok
        print(
            f"{number:3} | {case.name} | {case.expect} | {'PASS' if ok else 'FAIL'} | {evidence} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    print(f"{len(chosen) - failed} of {len(chosen)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
