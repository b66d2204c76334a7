"""Command line: `python -m ohlora_fixtures plan|report|bench ...` (`ohlora-bench` is `bench`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Callable

from ohlora_fixtures.errors import UsageError


def _argument(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse `type` that says what it expected, not the parser's function name."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected {expected}") from None

    return convert


def _plan(argv: list[str]) -> int:
    from ohlora_fixtures.inputs import defaults, registry
    from ohlora_fixtures.inputs.dataset import load_experiment
    from ohlora_fixtures.inputs.gpus import load_gpus
    from ohlora_fixtures.inputs.options import PLAN, add_options, parse, positive_int
    from ohlora_fixtures.measure.devices import DTYPES
    from ohlora_fixtures.measure.finetune import FinetuneSettings
    from ohlora_fixtures.measure.gpu_fit import fits_as_dict, format_fits
    from ohlora_fixtures.measure.models import check_candidate
    from ohlora_fixtures.measure.plan import experiment_widths, fixed_widths, format_plans, plan_candidate
    from ohlora_fixtures.measure.quantize import guard_hub_kernels

    parser = argparse.ArgumentParser(
        prog="python -m ohlora_fixtures plan",
        description="Exact parameter counts and estimated memory of every candidate at full size, "
        "without allocating weights.",
    )
    add_options(parser.add_argument, PLAN)
    parser.add_argument("--dtype", choices=list(DTYPES), default=defaults.PLAN_DTYPE, help="weights dtype")
    parser.add_argument("--seq-len", type=_argument(positive_int, "a positive integer"), default=None,
                        help="tokens per training row, overriding the dataset's batch widths (estimate input)")
    parser.add_argument("--gpu", default=None, metavar="NAMES",
                        help="comma-separated GPUs of data/gpus.toml (e.g. T4,A100-80GB): does each run fit, at which "
                        "batch size, in which dtype (estimates)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    settings = parse(vars(args), PLAN)
    guard_hub_kernels(allow_remote_code=False)  # peft's import of bitsandbytes would fetch a kernel from the hub
    table = load_gpus()
    # An empty name ('' or "T4,") is refused as `report --gpu ''` is: it would plan with no card, saying nothing.
    cards = table.select([name.strip() for name in args.gpu.split(",")]) if args.gpu is not None else []
    registered = registry.load_registry(settings.candidates)
    candidates = registry.select(registered, list(settings.models or []), option="--models")
    for candidate in candidates:
        check_candidate(candidate, "full")
    if args.seq_len is not None:
        widths = {candidate.name: fixed_widths(args.seq_len, rows=settings.train_rows, epochs=settings.epochs)
                  for candidate in candidates}
    else:
        experiment = load_experiment(
            settings.dataset, settings.preset, settings.train_rows, settings.valid_rows, settings.prompts
        )
        batching = FinetuneSettings(rank=1, batch_size=settings.batch_size, epochs=settings.epochs, seed=settings.seed)
        widths = experiment_widths(candidates, experiment, batching, registered)
    failed: dict[str, str] = {}

    def plans_at(dtype: str) -> list:
        # Each precision of --quantization, candidate by candidate (none alone by default).
        plans = []
        for candidate in candidates:
            if candidate.name in failed:
                continue
            for precision in settings.quantization:
                try:
                    plans.append(plan_candidate(candidate, settings.ranks, dtype, settings.batch_size,
                                                widths[candidate.name], settings.max_new_tokens, precision))
                except Exception as error:  # noqa: BLE001 - one architecture the meta pass cannot build costs its row only
                    failed[candidate.name] = (f"{type(error).__name__}: "
                                              f"{str(error).splitlines()[0] if str(error) else ''}")
                    print(f"{candidate.name}: not planned, the full-size meta pass failed ({failed[candidate.name]})",
                          file=sys.stderr)
                    break
        return plans

    plans = plans_at(args.dtype)
    # Every card runs in a 2-byte dtype (bf16 or fp16: the same bytes), whatever --dtype the table shows.
    on_cards = plans if not cards or DTYPES[args.dtype].itemsize == 2 else plans_at("bfloat16")
    plans = [plan for plan in plans if plan.name not in failed]  # each beside its own plan on the cards
    if args.json:
        plain = [fits_as_dict(plan, cards, table, card) for plan, card in zip(plans, on_cards)]
        print(json.dumps({"estimate": True, "plans": plain}, indent=2))
    else:
        print(format_plans(plans))
        if cards:
            print()
            print(format_fits(on_cards, cards, table))
    return 1 if failed else 0


def _report(argv: list[str]) -> int:
    from ohlora_fixtures.report import main

    return main(argv)


# What `ohlora-bench` adds before the user's own pytest arguments: the packaged benchmarks, and
# pytest-benchmark's JSON saved as `pytest benchmarks` in a checkout does (its setup.cfg sets autosave).
BENCH_ARGS = ("--pyargs", "ohlora_fixtures.benchmarks", "--benchmark-autosave")


def _bench(argv: list[str]) -> int:
    """`python -m ohlora_fixtures bench [PYTEST ARGS]`: the study's benchmarks from an installed copy."""
    import pytest

    return int(pytest.main([*BENCH_ARGS, *argv]))


def bench() -> int:
    """The `ohlora-bench` console command: `pytest --pyargs ohlora_fixtures.benchmarks --benchmark-autosave ARGS`."""
    return _bench(sys.argv[1:])


COMMANDS = {"plan": _plan, "report": _report, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; user errors print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m ohlora_fixtures {{{','.join(COMMANDS)}}} [options]  (--help after a command)",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Library deprecation chatter would bury the one table the user asked for.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
