"""`python -m ohlora_fixtures report FILE...`: render the report from stored runs."""

from __future__ import annotations

import argparse
import configparser
from pathlib import Path
from typing import Callable

from .. import registry, selection
from ..errors import UsageError
from ..settings import parse
from .render import render
from .stored import read_stored


def _ini_from(path: Path | None) -> Callable[[str], object] | None:
    """`ohlora_weight_*` keys of a setup.cfg's [tool:pytest] section, as pytest would read them."""
    if path is None or not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    section = parser["tool:pytest"] if parser.has_section("tool:pytest") else {}
    return lambda key: section.get(key)


def main(argv: list[str]) -> int:
    """`python -m ohlora_fixtures report FILE...`: render the report from stored runs."""
    parser = argparse.ArgumentParser(
        prog="python -m ohlora_fixtures report",
        description="Merge stored runs (pytest-benchmark JSON files under .benchmarks/<machine>/ and/or "
        "results.jsonl logs) into one leaderboard; the latest measurement of each benchmark "
        "(candidate, kind, rank) wins.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="pytest-benchmark JSON or results.jsonl")
    parser.add_argument("--out", default=str(Path(".benchmarks") / "ohlora"), help="output directory (default: %(default)s)")
    parser.add_argument("--candidates", default=str(registry.DEFAULT_REGISTRY), help="candidate registry TOML")
    parser.add_argument("--lang", default="en", help="en or ko (Korean headers)")
    parser.add_argument("--compare-study", action="store_true", help="show the reference study's T4 figures beside ours")
    parser.add_argument("--max-params", default=None, help="screening: at most this many billion parameters (3.0)")
    parser.add_argument("--min-params", default=None, help="screening: at least this many billion parameters (0.0)")
    parser.add_argument("--vram-budget-mb", default=None, help="fine-tuning peak budget in MiB (12288)")
    parser.add_argument("--ranking-weights", default=None, metavar="NAME=W,...",
                        help="recommendation weights; names: " + ", ".join(selection.CRITERION_NAMES))
    parser.add_argument("--ini", type=Path, default=Path("setup.cfg"),
                        help="read ohlora_weight_* keys from this file's [tool:pytest] section (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = parse({
            "report_dir": args.out, "candidates": args.candidates, "lang": args.lang,
            "compare_study": args.compare_study, "max_params": args.max_params, "min_params": args.min_params,
            "vram_budget_mb": args.vram_budget_mb, "ranking_weights": args.ranking_weights,
        })
    except UsageError as error:
        # The options are checked by the plugin's own parsers, whose messages name the pytest flags.
        raise UsageError(str(error).replace("--ohlora-report-dir", "--out").replace("--ohlora-", "--")) from None
    stored = [item for path in args.files for item in read_stored(path)]
    if not stored:
        raise UsageError(f"no ohlora records in {', '.join(str(p) for p in args.files)}")
    names = {item.record.candidate for item in stored}
    candidates = [c for c in registry.load_registry(settings.candidates) if c.name in names]
    weights = selection.resolve_weights(_ini_from(args.ini), settings.ranking_weights)
    files = render(stored, candidates, settings, weights)
    print("\n".join(files.lines()))
    return 0
