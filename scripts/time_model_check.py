"""The time model against measured time on this CPU, at full size: one fine-tuning step and one decoded token.

    .venv/bin/python scripts/time_model_check.py [--models a,b] [--width 64] [--steps 2] [--limit-gb 16]

Each default candidate whose planned float32 fine-tuning peak fits under --limit-gb
runs in its own process (one model's memory never counts in another's), at one
thread, float32, random weights: a LoRA r16 training step (batch 4, --width
tokens, AdamW; one untimed step first creates the optimizer's state) timed
--steps times, and --tokens decoded tokens after a --prompt-token prompt with the
KV cache, on the base model. Times are process CPU time, so other processes'
load does not enter. The estimate is measure/step_time.py's over the plan's
operation counts at the same shapes, with this machine's calibration at one
thread (hardware.py; cached per machine). Nothing is fitted: the figures and
errors are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.measure.finetune import FinetuneSettings, fresh_adapter
from ohlora_fixtures.measure.hardware import device_peaks
from ohlora_fixtures.measure.models import _from_config, build_config
from ohlora_fixtures.measure.plan import plan_candidate
from ohlora_fixtures.measure.step_time import cpu_rates, seconds, step_seconds
from ohlora_fixtures.records.plans import CandidatePlan, TokenWidths

BATCH = 4
RANK = 16


def planned(name: str, width: int, prompt: int, tokens: int) -> CandidatePlan:
    """The plan of `name` at the check's shapes (float32, batch 4, r16)."""
    candidate = registry.select(registry.load_registry(), [name])[0]
    widths = TokenWidths(width, float(width), 1, "check", tokens=BATCH * width, prompt_tokens=float(prompt))
    return plan_candidate(candidate, (RANK,), "float32", BATCH, widths, max_new_tokens=tokens)


def estimate(result: dict, width: int, prompt: int, tokens: int) -> dict:
    """`result` with the estimates beside the measurements, at this machine's calibration at one thread."""
    torch.set_num_threads(1)
    plan = planned(result["name"], width, prompt, tokens)
    peaks = device_peaks(torch.device("cpu"), torch.float32)
    rates = cpu_rates(peaks.tflops, peaks.gbps, peaks.overhead_us or 0.0, peaks.gemv_gbps)
    rank = plan.ranks[0]
    return result | {
        "step_estimate": step_seconds(rank, rates),
        "token_estimate": seconds(plan.decode_ops, rates),
        "step_ratio": step_seconds(rank, rates) / result["step_measured"],
        "token_ratio": seconds(plan.decode_ops, rates) / result["token_measured"],
        "launches_step": sum(n for *_, n in rank.step_ops) + sum(n for *_, n in rank.optimizer_ops),
        "launches_token": sum(n for *_, n in plan.decode_ops),
        "calibration": {"tflops": peaks.tflops, "gbps": peaks.gbps, "overhead_us": peaks.overhead_us,
                        "gemv_gbps": peaks.gemv_gbps, "taken": peaks.calibrated},
    }


def measure(name: str, width: int, steps: int, prompt: int, tokens: int, limit_gb: float) -> dict:
    """One candidate's measurement (run in a process of its own)."""
    torch.set_num_threads(1)
    candidate = registry.select(registry.load_registry(), [name])[0]
    plan = planned(name, width, prompt, tokens)
    peak_gb = plan.ranks[0].finetune_peak_estimate_mib / 1024
    if peak_gb > limit_gb:
        return {"name": name, "skipped": f"planned peak {peak_gb:.1f} GB above {limit_gb:g} GB"}
    torch.manual_seed(0)
    model = _from_config(candidate, build_config(candidate, "full"), dtype=torch.float32)
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (BATCH, width))
    step_times = []
    with fresh_adapter(model, candidate, FinetuneSettings(rank=RANK)) as adapted:
        adapted.train()
        optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-4)
        for step in range(steps + 1):
            started = time.process_time()
            adapted(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # the first creates AdamW's state
                step_times.append(time.process_time() - started)
        del optimizer
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, vocab, (1, prompt)), use_cache=True)
        carried = {"state": out.state} if getattr(out, "state", None) is not None else {
            "past_key_values": out.past_key_values}
        next_id = torch.zeros(1, 1, dtype=torch.long)
        started = time.process_time()
        for _ in range(tokens):
            out = model(input_ids=next_id, use_cache=True, **carried)
            carried = {"state": out.state} if getattr(out, "state", None) is not None else {
                "past_key_values": out.past_key_values}
        per_token = (time.process_time() - started) / tokens
    return {
        "name": name,
        "step_measured": statistics.median(step_times),
        "step_runs": step_times,
        "token_measured": per_token,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--limit-gb", type=float, default=16.0)
    parser.add_argument("--measured", default="",
                        help="re-estimate the JSON lines of an earlier run, measuring nothing")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.width, args.steps, args.prompt, args.tokens, args.limit_gb)))
        return 0
    if args.measured:
        for line in open(args.measured, encoding="utf-8"):
            result = json.loads(line)
            if "step_measured" in result:
                print(json.dumps(estimate(result, args.width, args.prompt, args.tokens)), flush=True)
        return 0
    names = [n for n in args.models.split(",") if n] or [c.name for c in registry.load_registry()]
    for name in names:
        command = [sys.executable, __file__, "--one", name, "--width", str(args.width), "--steps", str(args.steps),
                   "--prompt", str(args.prompt), "--tokens", str(args.tokens), "--limit-gb", str(args.limit_gb)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode:
            print(json.dumps({"name": name, "error": done.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(estimate(result, args.width, args.prompt, args.tokens) if "step_measured" in result
                         else result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
