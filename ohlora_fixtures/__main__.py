"""Command line: `python -m ohlora_fixtures plan|report ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Callable

from .errors import UsageError


def _argument(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse `type` that says what it expected, not the parser's function name."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected {expected}") from None

    return convert


def _plan(argv: list[str]) -> int:
    from . import registry
    from .devices import DTYPES
    from .models import check_candidate
    from .plan import format_plans, plan_candidate
    from .settings import _names, _positive_int, _ranks

    parser = argparse.ArgumentParser(
        prog="python -m ohlora_fixtures plan",
        description="Exact parameter counts and estimated memory of every candidate at full size, "
        "without allocating weights.",
    )
    parser.add_argument("--candidates", default=str(registry.DEFAULT_REGISTRY), help="registry TOML file")
    parser.add_argument("--models", type=_argument(_names, "comma-separated names"), default=None, help="comma-separated candidate names")
    parser.add_argument("--ranks", type=_argument(_ranks, "comma-separated positive integers"), default=(16, 32, 64), help="comma-separated LoRA ranks")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="weights dtype")
    parser.add_argument("--batch-size", type=_argument(_positive_int, "a positive integer"), default=4)
    parser.add_argument("--seq-len", type=_argument(_positive_int, "a positive integer"), default=64, help="tokens per training row (estimate input)")
    parser.add_argument("--max-new-tokens", type=_argument(_positive_int, "a positive integer"), default=80)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    candidates = registry.select(registry.load_registry(args.candidates), list(args.models or []), option="--models")
    for candidate in candidates:
        check_candidate(candidate, "full")
    plans = [
        plan_candidate(candidate, args.ranks, args.dtype, args.batch_size, args.seq_len, args.max_new_tokens)
        for candidate in candidates
    ]
    if args.json:
        print(json.dumps({"estimate": True, "plans": [plan.as_dict() for plan in plans]}, indent=2))
    else:
        print(format_plans(plans))
    return 0


def _report(argv: list[str]) -> int:
    from .report import main

    return main(argv)


COMMANDS = {"plan": _plan, "report": _report}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; user errors print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ohlora_fixtures {{{','.join(COMMANDS)}}} [options]  (--help after a command)", file=sys.stderr)
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
