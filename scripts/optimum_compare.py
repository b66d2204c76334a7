"""The plugin's inference timing against optimum-benchmark's, on one local checkpoint.

    .venv/bin/python scripts/optimum_compare.py [--pairs 5] [--optimum-python .venv-optimum/bin/python]
        [--candidate TinyKo-v5-a] [--prompt-tokens 32] [--new-tokens 80] [--iterations 5] [--out FILE]

It builds one checkpoint offline: the registry candidate's model at full size with seeded random weights and the
dataset tokenizer (build_random, experiment_tokenizer), saved as safetensors with save_pretrained into a temporary
folder. Then, `--pairs` times, it measures that checkpoint twice, each time in a fresh process, alternating which
goes first:

- project: load_pretrained of a candidate whose `path` is the checkpoint, the plugin's warm-up, then
  generate_answers over `--iterations` copies of one prompt of `--prompt-tokens` tokens, and latency_figures:
  time to first token (FirstTokenClock) and decode seconds per token (the rest of the call over the tokens after
  the first), medians over the prompts;
- optimum: optimum-benchmark's inference scenario (PyTorch backend, cpu, inline launcher, latency tracker only,
  batch 1, a random prompt of the same length, `--iterations` tracked generations, `duration` 0), run by the
  interpreter of its own virtual environment (scripts/requirements-optimum.txt): its prefill p50 and per-token p50,
  and its decode latency over the tokens after the first.

Both sides: float32, greedy, exactly `--new-tokens` new tokens (min_new_tokens = max_new_tokens, as
optimum-benchmark forces), one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), HF_HUB_OFFLINE=1. Printed: per
pair the ratios project / optimum for decode per token and for first token, their median and range, and the load
averages before and after. A script, not a test: it takes minutes and needs a second virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPTIMUM_PYTHON = ROOT / ".venv-optimum" / "bin" / "python"
# The checkout this script is in, before the one the project's venv installed in editable mode.
sys.path.insert(0, str(ROOT))
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# --- the checkpoint (project venv) ------------------------------------------------------------------


def build_checkpoint(folder: Path, candidate_name: str) -> dict[str, Any]:
    """The candidate at full size with the plugin's seeded random weights and dataset tokenizer, saved to `folder`."""
    import torch

    from ohlora_fixtures.inputs import defaults
    from ohlora_fixtures.inputs.dataset import load_experiment
    from ohlora_fixtures.inputs.registry import load_registry
    from ohlora_fixtures.inputs.resources import DATASET, bundled
    from ohlora_fixtures.inputs.tokenizer import experiment_tokenizer
    from ohlora_fixtures.measure.models import build_random

    candidate = _candidate(load_registry(), candidate_name)
    experiment = load_experiment(bundled(DATASET))
    tokenizer = experiment_tokenizer([candidate.prompt_template], experiment, folder / "tokenizer-cache")
    base = build_random(candidate, tokenizer, scale="full", seed=defaults.SEED, device=torch.device("cpu"),
                        dtype=torch.float32)
    checkpoint = folder / "checkpoint"
    base.model.save_pretrained(checkpoint, safe_serialization=True)
    tokenizer.save_pretrained(checkpoint)
    return {"candidate": candidate.name, "path": str(checkpoint), "parameters": base.total_params,
            "vocab": len(tokenizer), "config": base.model.config.to_diff_dict()}


def _candidate(candidates: Any, name: str) -> Any:
    found = [c for c in candidates if c.name == name]
    if not found:
        raise SystemExit(f"--candidate {name!r}: not in the registry ({', '.join(c.name for c in candidates)})")
    return found[0]


# --- one measurement, in a child process ---------------------------------------------------------------


def measure_project(args: argparse.Namespace) -> dict[str, Any]:
    """The plugin's own path: load_pretrained, warm_up, generate_answers, latency_figures."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from ohlora_fixtures.inputs.dataset import load_experiment
    from ohlora_fixtures.inputs.registry import load_registry
    from ohlora_fixtures.inputs.resources import DATASET, bundled
    from ohlora_fixtures.measure.inference import (
        EncodedPrompt,
        GenerationSettings,
        encode_prompts,
        generate_answers,
        latency_figures,
        warm_up,
    )
    from ohlora_fixtures.measure.models import load_pretrained

    device = torch.device("cpu")
    candidate = dataclasses.replace(_candidate(load_registry(), args.candidate), path=Path(args.checkpoint))
    base = load_pretrained(candidate, device=device, dtype=torch.float32, allow_download=False,
                           trust_remote_code=False, allow_pickle=False)
    # One prompt of exactly --prompt-tokens tokens: the dataset's prompts, encoded as the plugin encodes them,
    # end to end and cut to length.
    encoded = encode_prompts(base.tokenizer, candidate, load_experiment(bundled(DATASET)).prompts, device)
    ids = torch.cat([prompt.input_ids for prompt in encoded], dim=1)[:, : args.prompt_tokens]
    if ids.shape[1] != args.prompt_tokens:
        raise SystemExit(f"the dataset's prompts give only {ids.shape[1]} tokens; lower --prompt-tokens")
    prompt = EncodedPrompt(encoded[0].pair, ids)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, greedy=True, min_new_tokens=args.new_tokens)
    warm_up(base.model, prompt, base.tokenizer.pad_token_id)
    answers = generate_answers(base.model, base.tokenizer, [prompt] * args.iterations, settings, device)
    if any(a.generated_tokens != args.new_tokens for a in answers):
        raise SystemExit(f"generated {[a.generated_tokens for a in answers]} tokens, not {args.new_tokens}")
    figures = latency_figures(answers)
    return {
        "first_token_s": figures["first_token_median_s"],
        "decode_token_s": figures["decode_token_median_s"],
        "first_token_values": [a.first_token_seconds for a in answers],
        "generate_values": [a.seconds for a in answers],
        "threads": torch.get_num_threads(),
        "dtype": str(base.model.dtype),
    }


def measure_optimum(args: argparse.Namespace) -> dict[str, Any]:
    """optimum-benchmark's inference scenario, in-process (inline launcher), latency only."""
    import logging

    import torch

    torch.set_num_threads(1)
    import transformers

    if not hasattr(transformers, "SpecialTokensMixin"):
        # optimum-benchmark 0.6.0 imports this name, gone in transformers 5, only to spell a type hint
        # (backends/transformers_utils.py). Set on the lazy module's class, not the module: while optimum-benchmark
        # imports, sys.modules["transformers"] is replaced by a new _LazyModule, which loses a module attribute.
        type(transformers).SpecialTokensMixin = transformers.PreTrainedTokenizerBase
    from optimum_benchmark import Benchmark, BenchmarkConfig, InferenceConfig, InlineConfig, PyTorchConfig

    logging.getLogger().setLevel(logging.WARNING)
    backend = PyTorchConfig(
        model=args.checkpoint, device="cpu", no_weights=False, torch_dtype="float32", task="text-generation",
        library="transformers", inter_op_num_threads=1,  # optimum-benchmark passes this to torch.set_num_threads
    )
    scenario = InferenceConfig(
        latency=True, memory=False, energy=False, iterations=args.iterations, duration=0, warmup_runs=2,
        input_shapes={"batch_size": 1, "sequence_length": args.prompt_tokens},
        generate_kwargs={"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens},
    )
    config = BenchmarkConfig(name="optimum_compare", launcher=InlineConfig(), scenario=scenario, backend=backend)
    report = Benchmark.launch(config)
    decode = report.decode.latency.values
    return {
        "first_token_s": float(report.prefill.latency.p50),
        # Its headline. optimum-benchmark 0.6.0's per-token list repeats every earlier generation's gaps and holds one
        # gap across each boundary between generations (docs/performance.md): the p50 barely moves, the mean does.
        "decode_token_s": float(report.per_token.latency.p50),
        # The same definition as the project's: the generation after the first token over the tokens after it.
        "decode_over_tokens_s": statistics.median(v / (args.new_tokens - 1) for v in decode),
        "per_token_count": report.per_token.latency.count,
        "per_token_mean_s": float(report.per_token.latency.mean),
        "first_token_values": list(report.prefill.latency.values),
        "generate_values": list(report.generate.latency.values),
        "threads": torch.get_num_threads(),
    }


# --- the comparison (project venv) ------------------------------------------------------------------


def child(side: str, args: argparse.Namespace, checkpoint: str) -> dict[str, Any]:
    """One measurement in a fresh process; its figures are the last line of its output."""
    python = sys.executable if side == "project" else str(args.optimum_python)
    command = [python, __file__, side, "--checkpoint", checkpoint, "--candidate", args.candidate,
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
               "--iterations", str(args.iterations)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} measurement failed ({done.returncode}):\n{done.stdout[-3000:]}"
                         f"{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall_s"] = time.perf_counter() - started
    return figures


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp), args.candidate)
        pairs = []
        for number in range(args.pairs):
            order = ("project", "optimum") if number % 2 == 0 else ("optimum", "project")
            measured = {side: child(side, args, checkpoint["path"]) for side in order}
            project, optimum = measured["project"], measured["optimum"]
            pair = {
                "first": order[0],
                "decode_ratio": project["decode_token_s"] / optimum["decode_token_s"],
                "decode_ratio_same_definition": project["decode_token_s"] / optimum["decode_over_tokens_s"],
                "first_token_ratio": project["first_token_s"] / optimum["first_token_s"],
                "project": project,
                "optimum": optimum,
                "load": os.getloadavg(),
            }
            pairs.append(pair)
            print(f"pair {number + 1}/{args.pairs} ({order[0]} first): decode/token project "
                  f"{project['decode_token_s'] * 1e3:.3f} ms, optimum {optimum['decode_token_s'] * 1e3:.3f} ms "
                  f"(decode/(n-1) {optimum['decode_over_tokens_s'] * 1e3:.3f} ms), ratio {pair['decode_ratio']:.4f} "
                  f"({pair['decode_ratio_same_definition']:.4f}); first token project "
                  f"{project['first_token_s'] * 1e3:.2f} ms, optimum {optimum['first_token_s'] * 1e3:.2f} ms, "
                  f"ratio {pair['first_token_ratio']:.4f}; load {pair['load'][0]:.2f}", flush=True)
    del checkpoint["path"]
    return {
        "checkpoint": checkpoint,
        "settings": {"pairs": args.pairs, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                     "iterations": args.iterations, "dtype": "float32", "threads": 1, "greedy": True},
        "decode_ratio": _spread([p["decode_ratio"] for p in pairs]),
        "decode_ratio_same_definition": _spread([p["decode_ratio_same_definition"] for p in pairs]),
        "first_token_ratio": _spread([p["first_token_ratio"] for p in pairs]),
        "project_decode_token_s": _spread([p["project"]["decode_token_s"] for p in pairs]),
        "optimum_decode_token_s": _spread([p["optimum"]["decode_token_s"] for p in pairs]),
        "project_first_token_s": _spread([p["project"]["first_token_s"] for p in pairs]),
        "optimum_first_token_s": _spread([p["optimum"]["first_token_s"] for p in pairs]),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", nargs="?", choices=("compare", "project", "optimum"), default="compare",
                        help="compare (default); project and optimum are the child processes' single measurements")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs of measurements (default 5)")
    parser.add_argument("--optimum-python", type=Path, default=OPTIMUM_PYTHON,
                        help=f"the interpreter of optimum-benchmark's venv (default {OPTIMUM_PYTHON})")
    parser.add_argument("--candidate", default="TinyKo-v5-a", help="registry candidate to build (default TinyKo-v5-a)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="prompt length in tokens (default 32)")
    parser.add_argument("--new-tokens", type=int, default=80, help="new tokens per generation (default 80)")
    parser.add_argument("--iterations", type=int, default=5, help="timed generations per measurement (default 5)")
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.update(ONE_THREAD)
    if args.side != "compare":
        figures = measure_project(args) if args.side == "project" else measure_optimum(args)
        print(json.dumps(figures))
        return 0
    figures = compare(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    shown = {key: value for key, value in figures.items() if key != "pairs"}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
