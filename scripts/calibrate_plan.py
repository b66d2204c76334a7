"""Measure full-size fine-tuning peaks on this CPU and print them beside the plan's ESTIMATE (no refit: the plan
counts what autograd saves, it fits nothing).

    .venv/bin/python scripts/calibrate_plan.py [--models FinguAI-Chat-v1,llama1B] [--rank 16] [--epochs 1]

Each candidate runs `pytest benchmarks -k finetune` at full size, float32, random
weights, in its own process (so one model's memory never counts in another's),
into a temporary report folder; its record's `peak_mib` / `peak_increase_mib`
(the CPU's tensor peak: the model's bytes plus the live tensors' peak in the region, memory.TensorPeakMeter) are set
against `plan.plan_candidate` at the dataset widths that run batched. The
figures and errors are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.inputs.dataset import load_experiment
from ohlora_fixtures.inputs.options import DEFAULT_DATASET
from ohlora_fixtures.measure.finetune import FinetuneSettings
from ohlora_fixtures.measure.plan import experiment_widths, plan_candidate
from ohlora_fixtures.records import results
from ohlora_fixtures.records.plans import RankPlan

REPO = Path(__file__).resolve().parent.parent
DTYPE = "float32"


@dataclass(frozen=True)
class Comparison:
    """One candidate's planned and measured fine-tuning memory, in MiB."""

    name: str
    widest: int
    planned: RankPlan
    measured_peak_mib: float
    measured_increase_mib: float

    @property
    def peak_error(self) -> float:
        return self.planned.finetune_peak_estimate_mib / self.measured_peak_mib - 1

    @property
    def increase_error(self) -> float:
        return self.planned.finetune_increase_estimate_mib / self.measured_increase_mib - 1


def measure(name: str, rank: int, epochs: int, report_dir: Path) -> tuple[float, float]:
    """(peak_mib, peak_increase_mib) of one full-size CPU fine-tune, run by the plugin in a fresh process."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-q", "-p", "no:cacheprovider", "-k", "finetune",
        "--ohlora-scale", "full", "--ohlora-dtype", DTYPE, "--ohlora-device", "cpu", "--ohlora-models", name,
        "--ohlora-ranks", str(rank), "--ohlora-epochs", str(epochs), "--ohlora-report-dir", str(report_dir),
        "--benchmark-storage", f"file://{report_dir / 'benchmarks'}",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: pytest exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    record = next(results.read(report_dir / "results.jsonl"))
    if record.memory is None:
        raise RuntimeError(f"{name}: the fine-tuning record has no memory figures ({record.status})")
    return record.memory.peak_mib, record.memory.peak_increase_mib


def compare(name: str, rank: int = 16, epochs: int = 1, report_dir: Path | None = None) -> Comparison:
    """Plan and measure one candidate at full size on the CPU, float32, the bundled dataset."""
    registered = registry.load_registry()
    candidate = registry.select(registered, [name])[0]
    batching = FinetuneSettings(rank=rank, epochs=epochs)
    widths = experiment_widths([candidate], load_experiment(DEFAULT_DATASET), batching, registered)[name]
    planned = plan_candidate(candidate, (rank,), DTYPE, batching.batch_size, widths).ranks[0]
    with tempfile.TemporaryDirectory(prefix="ohlora-calibrate-") as scratch:
        peak, increase = measure(name, rank, epochs, report_dir or Path(scratch))
    return Comparison(name, widths.widest, planned, peak, increase)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--models", default="FinguAI-Chat-v1", help="comma-separated candidate names")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    print("candidate  widest  increase plan/measured MiB (error)  peak plan/measured MiB (error)")
    for name in args.models.split(","):
        c = compare(name, args.rank, args.epochs)
        print(
            f"{c.name}  {c.widest}  {c.planned.finetune_increase_estimate_mib:,.1f}/{c.measured_increase_mib:,.2f} "
            f"({c.increase_error:+.1%})  {c.planned.finetune_peak_estimate_mib:,.1f}/{c.measured_peak_mib:,.2f} "
            f"({c.peak_error:+.1%})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
