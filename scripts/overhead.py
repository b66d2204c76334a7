"""What the harness costs: inside the timed regions, and around them.

    .venv/bin/python scripts/overhead.py harness [--repeats 7] [--candidate llama1B] [--out FILE] [--ohlora-... options]
    .venv/bin/python scripts/overhead.py session [--out FILE] [pytest options for `pytest benchmarks`]

`harness` runs, in one pytest process, the same fine-tuning steps and the same
generations of one candidate twice per repetition: through the plugin
(run_finetune / run_inference with pytest-benchmark's real fixture) and as a
bare hand-written loop (peft + AdamW; model.generate), alternating which goes
first. Both start from the same weights, batches, seeds and warm-up, so they do
the same work; the ratio plugin / bare of the timed seconds should be 1.

`session` runs `pytest benchmarks` and sets its wall time against the sum of the
timed regions the records report: the rest is set-up, model building, warm-up,
eval loss, report and imports.

This is a script, not a benchmark under benchmarks/, because repetitions are
what make the ratio trustworthy and they would double the default grid's time.
When pytest runs this file (the script does that itself) its tests below are the measurement.
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

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPEATS_ENV = "OHLORA_OVERHEAD_REPEATS"


# --- the measurement, run by pytest -------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "repetition" in metafunc.fixturenames:
        metafunc.parametrize("repetition", range(int(os.environ.get(REPEATS_ENV, "5"))))


def bare_finetune(study: Any, candidate: Any, rank: int) -> float:
    """The plugin's fine-tuning work as a plain loop: plain peft, plain AdamW, the clock around it."""
    import peft
    import torch

    from ohlora_fixtures.measure.devices import synchronize
    from ohlora_fixtures.measure.finetune import encode, step_batches

    settings = study.finetune_settings(rank)
    base = study.models.get(candidate)
    batches = step_batches(
        encode(base.tokenizer, candidate, study.experiment.train), settings, base.tokenizer.pad_token_id, study.device
    )
    config = peft.LoraConfig(
        r=rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, init_lora_weights=settings.init,
        target_modules=list(candidate.target_modules), task_type=peft.TaskType.CAUSAL_LM,
    )
    torch.manual_seed(settings.seed)
    model = peft.get_peft_model(base.model, config)
    try:
        model.train()
        model(**batches[0]).loss.backward()  # the same one-off warm-up the plugin does
        model.zero_grad(set_to_none=True)
        torch.manual_seed(settings.seed)
        synchronize(study.device)
        started = time.perf_counter()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
        for batch in batches:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(study.device)
        return time.perf_counter() - started
    finally:
        model.unload()
        base.model.zero_grad(set_to_none=True)


def bare_inference(study: Any, candidate: Any) -> tuple[float, int]:
    """The plugin's generations as a plain model.generate loop; returns seconds and new tokens."""
    import torch

    from ohlora_fixtures.measure.devices import synchronize

    base, generation = study.models.get(candidate), study.generation_settings
    pad_id = base.tokenizer.pad_token_id
    prompts = [
        base.tokenizer(candidate.prompt(pair.question), return_tensors="pt").input_ids.to(study.device)
        for pair in study.experiment.prompts
    ]
    base.model.eval()
    new_tokens = 0
    with torch.no_grad():
        base.model.generate(input_ids=prompts[0], attention_mask=torch.ones_like(prompts[0]), max_new_tokens=2,
                            do_sample=False, pad_token_id=pad_id)  # the plugin's warm-up
        eos = base.tokenizer.eos_token_id
        synchronize(study.device)
        started = time.perf_counter()
        for pair, input_ids in zip(study.experiment.prompts, prompts):
            torch.manual_seed((generation.seed + pair.line) % 2**64)  # the plugin's seed for this answer
            output = base.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pad_token_id=pad_id,
                **generation.generate_kwargs(),
            )
            new_ids = output[0, input_ids.shape[1]:].tolist()
            new_tokens += new_ids.index(eos) + 1 if eos in new_ids else len(new_ids)  # as the plugin counts
        synchronize(study.device)
        seconds = time.perf_counter() - started
    return seconds, new_tokens


def test_finetune_overhead(ohlora_finetune, ohlora_study, ohlora_candidate, repetition, benchmark) -> None:
    rank = ohlora_study.settings.ranks[0]
    bare = bare_finetune(ohlora_study, ohlora_candidate, rank) if repetition % 2 else None
    record = ohlora_finetune(ohlora_candidate, rank)
    if bare is None:
        bare = bare_finetune(ohlora_study, ohlora_candidate, rank)
    assert record.ok
    benchmark.extra_info["bare_seconds"] = bare


def test_inference_overhead(ohlora_inference, ohlora_study, ohlora_candidate, repetition, benchmark) -> None:
    bare = bare_inference(ohlora_study, ohlora_candidate) if repetition % 2 else None
    record = ohlora_inference(ohlora_candidate)
    if bare is None:
        bare = bare_inference(ohlora_study, ohlora_candidate)
    benchmark.extra_info.update(bare_seconds=bare[0], bare_new_tokens=bare[1])
    assert bare[1] == record.inference.new_tokens, (
        "the bare loop generated a different number of tokens: not the same work"
    )


# --- the script -----------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(benchmarks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind: the plugin/bare ratio of each repetition (record seconds, and pytest-benchmark's own
    reading of the same call), their median and range, and the ratio of the two paths' median seconds."""
    summary = {}
    for kind in ("finetune", "inference"):
        runs = [b for b in benchmarks if b["extra_info"].get("kind") == kind and "bare_seconds" in b["extra_info"]]
        if not runs:
            continue
        plugin = [b["extra_info"]["seconds"] for b in runs]
        pedantic = [b["stats"]["min"] for b in runs]  # one round: min = the one reading
        bare = [b["extra_info"]["bare_seconds"] for b in runs]
        summary[kind] = {
            "repetitions": len(runs),
            "plugin_seconds": _spread(plugin),
            "bare_seconds": _spread(bare),
            "ratio": _spread([p / b for p, b in zip(plugin, bare)]),
            "ratio_of_medians": statistics.median(plugin) / statistics.median(bare),
            "pairs": [[p, b] for p, b in zip(plugin, bare)],
            "ratio_pytest_benchmark": _spread([p / b for p, b in zip(pedantic, bare)]),
        }
    return summary


def measure_harness(args: argparse.Namespace, pytest_args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[REPEATS_ENV] = str(args.repeats)
        out = Path(tmp) / "benchmarks.json"
        code = pytest.main(
            [
                __file__,
                "-q",
                "-p",
                "no:cacheprovider",
                f"--benchmark-storage=file://{tmp}/storage",
                f"--benchmark-json={out}",
                f"--ohlora-report-dir={tmp}/ohlora",
                f"--ohlora-models={args.candidate}",
                "--ohlora-ranks=16",
                *pytest_args,
            ]
        )
        if code != 0:
            raise SystemExit(f"the overhead run failed (pytest exit code {code})")
        report = json.loads(out.read_text(encoding="utf-8"))
    return {"candidate": args.candidate, "run": report["ohlora"], **summarise(report["benchmarks"])}


def measure_session(pytest_args: list[str]) -> dict[str, Any]:
    from ohlora_fixtures.records import results

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-storage=file://{tmp}/storage",
            f"--ohlora-report-dir={tmp}/ohlora",
            *pytest_args,
        ]
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        wall = time.perf_counter() - started
        records = list(results.read(Path(tmp) / "ohlora" / "results.jsonl"))
    timed = sum(record.seconds or 0.0 for record in records)
    return {
        "benchmarks": len(records),
        "wall_seconds": wall,
        "timed_seconds": timed,
        "outside_seconds": wall - timed,
        "outside_share": (wall - timed) / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="measure", required=True)
    harness = commands.add_parser("harness", help="plugin vs bare loop, same work, in one process")
    harness.add_argument("--repeats", type=int, default=5, help="repetitions of each path (default 5)")
    harness.add_argument("--candidate", default="llama1B", help="registry name of the candidate (default llama1B)")
    session = commands.add_parser("session", help="`pytest benchmarks` wall time vs the timed regions")
    for command in (harness, session):
        command.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args, pytest_args = parser.parse_known_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = measure_harness(args, pytest_args) if args.measure == "harness" else measure_session(pytest_args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    shown = {key: value for key, value in figures.items() if key != "run"}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
