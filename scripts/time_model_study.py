"""The time model against the reference study's T4 times (out of sample: nothing is fitted to them).

    .venv/bin/python scripts/time_model_study.py [--dataset ../shared/reference/OhLoRA_fine_tuning_2025-04-19.csv]

The study fine-tuned each candidate at ranks 16, 32 and 64 on a Colab T4 in bf16
(batch 4, 10 epochs of 20 rows: 50 steps) and timed generation with at most 80
tokens in all, prompt included. The plan here runs the same rows (`--preset
study`, token widths from the dataset tokenizer: no real checkpoint is on this
machine), in bf16, on data/gpus.toml's T4 with bf16 on its emulated path (the
study's), and prints estimate, study and error per cell as Markdown rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.inputs.dataset import load_experiment
from ohlora_fixtures.inputs.gpus import load_gpus
from ohlora_fixtures.measure.finetune import FinetuneSettings
from ohlora_fixtures.measure.plan import experiment_widths, plan_candidate
from ohlora_fixtures.measure.step_time import answer_seconds, finetune_seconds, gpu_rates, step_seconds
from ohlora_fixtures.report.reference import load_study

REPO = Path(__file__).resolve().parent.parent
STUDY_TOTAL_TOKENS = 80  # the study's max_length: prompt and answer together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/reference/OhLoRA_fine_tuning_2025-04-19.csv"))
    args = parser.parse_args()
    study = load_study()
    table = load_gpus()
    t4 = gpu_rates(table.select(["T4"])[0], table, run_dtype="bfloat16")
    registered = registry.load_registry()
    candidates = [c for c in registered if c.name in study.rows]
    experiment = load_experiment(Path(args.dataset), "study", 20, 5, 25)
    batching = FinetuneSettings(rank=1, batch_size=4, epochs=10, seed=0)
    widths = experiment_widths(candidates, experiment, batching, registered)
    print("| candidate | " + " | ".join(f"FT r{r} est. / study (s)" for r in study.ranks)
          + " | one step r16 (s) | one answer est. / study (s) |")
    print("|---|" + "---|" * (len(study.ranks) + 2))
    errors = []
    for candidate in candidates:
        row = study.rows[candidate.name]
        w = widths[candidate.name]
        new = max(1, STUDY_TOTAL_TOKENS - round(w.prompt_tokens))
        plan = plan_candidate(candidate, study.ranks, "bfloat16", 4, w, max_new_tokens=new)
        cells = []
        for rank, measured in zip(plan.ranks, row["finetune_seconds"]):
            estimate = finetune_seconds(plan, rank, t4)
            errors.append(estimate / measured - 1)
            cells.append(f"{estimate:.1f} / {measured:.1f} ({estimate / measured - 1:+.0%})")
        answer = answer_seconds(plan, t4)
        print(f"| {candidate.name} | " + " | ".join(cells) + f" | {step_seconds(plan.ranks[0], t4):.3f} | "
              f"{answer:.2f} / {row['inference_seconds']:.2f} ({answer / row['inference_seconds'] - 1:+.0%}) |")
        print(f"<!-- {candidate.name}: {plan.steps} steps, mean width {plan.mean_seq_len:.1f}, prompt "
              f"{plan.mean_prompt_tokens:.1f} tokens, {new} new -->")
    within = sum(abs(e) <= 0.35 for e in errors)
    print(f"\n{within} of {len(errors)} fine-tuning cells within 35 %; median |error| "
          f"{sorted(abs(e) for e in errors)[len(errors) // 2]:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
