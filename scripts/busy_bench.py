"""`make bench` on a quiet and on a busy machine, from a fresh clone, in the same hour (issue 30's check).

    python scripts/busy_bench.py [--repo .] [--args "--ohlora-models X --ohlora-ranks 16"] [--kill-after 3]

Clones `--repo` (git clone) into a temporary folder and runs `make setup` there, then `make bench ARGS=...`:
quiet, with one CPU hog and with two (a hog is a bounded busy loop in a process of its own: it stops by itself
after --hog-seconds, and is killed when its run ends); then, under one hog, a run SIGKILLed after
--kill-after results and resumed with --ohlora-resume, which must complete; then a fully resumed session. It
prints each run's wall time and ratio to quiet, its final choice and backup (from the report's leaderboard.md),
its re-measure attempts and busy figures kept (from its results.jsonl), and the load average around it. Each
run writes its own report folder and pytest-benchmark storage, so no run resumes another by accident.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_CHOICE = re.compile(r"^\*\*(final choice|backup): (.+?)\*\*", re.MULTILINE)
_HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@dataclass
class Run:
    """One `make bench` run: what it was, how long it took, what it chose and what the load cost it."""

    name: str
    seconds: float
    returncode: int
    load_before: str
    load_after: str
    choice: dict[str, str] = field(default_factory=dict)
    records: int = 0
    remeasures: int = 0
    kept: dict[str, int] = field(default_factory=dict)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


class Hogs:
    """`count` bounded busy loops, each in a process of its own; killed on exit whatever happens."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds, self.processes = count, seconds, []

    def __enter__(self) -> "Hogs":
        code = _HOG.format(seconds=self.seconds)
        self.processes = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def _outcome(report_dir: Path) -> tuple[dict[str, str], int, int, dict[str, int]]:
    """The final choice and backup (leaderboard.md), and from results.jsonl: records, re-measure attempts,
    busy figures kept by why."""
    board = report_dir / "leaderboard.md"
    choice = dict(_CHOICE.findall(board.read_text(encoding="utf-8"))) if board.exists() else {}
    records = remeasures = 0
    kept: dict[str, int] = {}
    log = report_dir / "results.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else ():
        record = json.loads(line)
        load = record.get("load") or {}
        records += 1
        remeasures += max(0, int(load.get("attempts", 1)) - 1)
        if load.get("busy"):
            why = load.get("kept_busy") or "?"
            kept[why] = kept.get(why, 0) + 1
    return choice, records, remeasures, kept


def _results(report_dir: Path) -> int:
    log = report_dir / "results.jsonl"
    return len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


class Bench:
    """`make bench` in the clone, each run with a report folder and storage of its own under `runs`."""

    def __init__(self, clone: Path, runs: Path, args: list[str], timeout: float) -> None:
        self.clone, self.runs, self.args, self.timeout = clone, runs, args, timeout

    def command(self, folder: Path, *extra: str) -> list[str]:
        args = [*self.args, "--ohlora-report-dir", str(folder / "ohlora"),
                "--benchmark-storage", f"file://{folder / 'storage'}", *extra]
        return ["make", "-s", "bench", f"ARGS={shlex.join(args)}"]

    def run(self, name: str, folder: str, *extra: str) -> Run:
        where = self.runs / folder
        where.mkdir(parents=True, exist_ok=True)
        before, started = _loadavg(), time.monotonic()
        with (where / f"{name.replace(' ', '-')}.log").open("w") as log:
            done = subprocess.run(self.command(where, *extra), cwd=self.clone, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=self.timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.monotonic() - started
        choice, records, remeasures, kept = _outcome(where / "ohlora")
        run = Run(name, seconds, done.returncode, before, _loadavg(), choice, records, remeasures, kept)
        print(_line(run, None), flush=True)
        return run

    def killed(self, folder: str, after: int) -> tuple[int, float]:
        """Start a run and SIGKILL it (its whole process group) once `after` results are stored: the results
        stored and the seconds it ran."""
        where = self.runs / folder
        where.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with (where / "killed.log").open("w") as log:
            process = subprocess.Popen(self.command(where), cwd=self.clone, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            try:
                while _results(where / "ohlora") < after and process.poll() is None:
                    if time.monotonic() - started > self.timeout:
                        break
                    time.sleep(0.5)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return _results(where / "ohlora"), time.monotonic() - started


def _line(run: Run, quiet: Run | None) -> str:
    ratio = f" ({run.seconds / quiet.seconds:.2f}x quiet)" if quiet and quiet.seconds else ""
    kept = ", ".join(f"{count} {why}" for why, count in sorted(run.kept.items())) or "none"
    return (f"{run.name:<22} {run.seconds:8.1f} s{ratio:<16} rc {run.returncode}  "
            f"final choice {run.choice.get('final choice', '?')}, backup {run.choice.get('backup', '?')}; "
            f"{run.records} results, {run.remeasures} re-measure attempt(s), busy kept: {kept}; "
            f"load {run.load_before} -> {run.load_after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="git repository to clone")
    parser.add_argument("--args", default="", help="extra `make bench` ARGS, e.g. a small model/rank subset")
    parser.add_argument("--hog-seconds", type=float, default=3600, help="a hog stops by itself after this long")
    parser.add_argument("--kill-after", type=int, default=5, help="SIGKILL the interrupted run after N results")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    options = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="busy-bench-"))
    clone = root / "clone"
    print(f"clone: {clone} (from {options.repo}); load {_loadavg()}", flush=True)
    subprocess.run(["git", "clone", "--quiet", options.repo, str(clone)], check=True)
    started = time.monotonic()
    subprocess.run(["make", "-s", "setup"], cwd=clone, check=True)
    print(f"make setup: {time.monotonic() - started:.0f} s", flush=True)
    bench = Bench(clone, root / "runs", shlex.split(options.args), options.timeout)
    try:
        quiet = bench.run("quiet", "quiet")
        with Hogs(1, options.hog_seconds):
            one = bench.run("one hog", "one-hog")
        with Hogs(2, options.hog_seconds):
            two = bench.run("two hogs", "two-hogs")
        with Hogs(1, options.hog_seconds):
            stored, ran = bench.killed("killed", options.kill_after)
            print(f"SIGKILL after {stored} result(s), {ran:.1f} s (one hog)", flush=True)
            resumed = bench.run("resumed, one hog", "killed", "--ohlora-resume")
        full = bench.run("fully resumed", "killed", "--ohlora-resume")
        print("\nsummary (same clone, same hour):")
        for run in (quiet, one, two, resumed, full):
            print(_line(run, quiet))
        same = [run.name for run in (one, two) if run.choice == quiet.choice]
        print(f"same final choice and backup as quiet: {', '.join(same) or 'none'}")
        failed = [run.name for run in (quiet, one, two, resumed, full) if run.returncode != 0]
        if failed:
            print(f"runs that did not pass: {', '.join(failed)} (logs under {root / 'runs'})")
        return 1 if failed or resumed.returncode != 0 else 0
    finally:
        if options.keep:
            print(f"kept: {root}")
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    sys.exit(main())
