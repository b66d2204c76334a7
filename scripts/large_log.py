"""What a long results log costs: `--ohlora-resume` and `report` over a results.jsonl of many lines.

    .venv/bin/python scripts/large_log.py [--lines 100000] [--repeats 3] [--keep DIR]

It measures two real benchmarks of one tiny candidate (a fine-tune at rank 16 and its inference run) into a
fresh report folder, then writes a log of `--lines` lines: older runs of the same benchmarks (same settings,
other run ids), benchmarks of other settings (other fingerprints) and the two real records last, as a log
grows over months of use. Then, each `--repeats` times, in a new process:

- resume: `pytest benchmarks ... --ohlora-resume` of the same two benchmarks (both must be resumed, skipped, none
  measured), which also renders the session's report over the whole log;
- report: `python -m ohlora_fixtures report results.jsonl`.

Wall time and peak RSS (the child's ru_maxrss) of each, and the median. A script, not a test: it takes
minutes and its figures belong in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = (
    "--ohlora-models", "TinyKo-v5-a", "--ohlora-ranks", "16", "--ohlora-epochs", "1", "--ohlora-train-rows", "4",
    "--ohlora-batch-size", "2", "--ohlora-valid-rows", "2", "--ohlora-prompts", "2", "--ohlora-max-new-tokens", "4",
)


def pytest_grid(folder: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
        "--benchmark-storage", f"file://{folder / 'storage'}", "--ohlora-report-dir", str(folder / "ohlora"),
        *GRID, *extra,
    ]


def timed(command: list[str], cwd: Path) -> tuple[float, float, str, int]:
    """(wall seconds, the child's own peak RSS in MiB, its output, its exit status)."""
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(child.pid, 0)  # this child's rusage alone, not a running maximum
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        return seconds, usage.ru_maxrss / 1024, output.read(), child.returncode


def write_log(log: Path, seed: list[dict], lines: int) -> None:
    """`lines` lines: half older runs of the seed's benchmarks, half other settings', then the seed itself.
    Written a line at a time: this process stays small, so a child's peak RSS (which counts the pages it
    shares with this process between fork and exec) is its own."""
    with log.open("w", encoding="utf-8") as stream:
        for number in range(lines - len(seed)):
            record = json.loads(json.dumps(seed[number % len(seed)]))
            record["run"]["run_id"] = f"20260101-000000-{number:06x}"
            if number % 2:  # another setting: a fingerprint no session of the seed's settings asks for
                record["fingerprint"] = f"{number:064x}"
                record["run"]["max_new_tokens"] = 5 + number % 7
            stream.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        for record in seed:
            stream.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ohlora-large-log-"))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ohlora" / "results.jsonl"
    try:
        print(f"seed: 2 benchmarks measured into {folder}", flush=True)
        seconds, _, said, code = timed(pytest_grid(folder), folder)
        seed = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        if code != 0 or len(seed) != 2:
            print(said[-3000:])
            return 1
        print(f"seed run: {seconds:.1f} s")
        # A 2-line log first, the baseline: the same commands over the seed alone.
        results: dict[str, dict[str, list[float]]] = {}
        for size in (2, args.lines):
            if size != len(seed):
                write_log(log, seed, size)
            print(f"log: {size} lines, {log.stat().st_size / 2**20:.1f} MiB", flush=True)
            for repeat in range(args.repeats):
                for name, command in (
                    ("resume", pytest_grid(folder, "--ohlora-resume")),
                    ("report", [sys.executable, "-m", "ohlora_fixtures", "report", str(log),
                                "--out", str(folder / "report")]),
                ):
                    seconds, peak, said, code = timed(command, folder)
                    if code != 0 or (name == "resume" and "2 skipped" not in said):
                        print(said[-3000:])
                        return 1
                    results.setdefault(f"{name} {size}", {}).setdefault("s", []).append(seconds)
                    results[f"{name} {size}"].setdefault("MiB", []).append(peak)
                    print(f"  {name} {repeat + 1}: {seconds:.2f} s, peak RSS {peak:.0f} MiB", flush=True)
        print(f"load average at the end: {os.getloadavg()}")
        for key, figures in results.items():
            spread = f"min {min(figures['s']):.2f}, max {max(figures['s']):.2f}"
            print(f"{key} lines: median {statistics.median(figures['s']):.2f} s ({spread}), "
                  f"peak RSS max {max(figures['MiB']):.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
