"""`python -m ohlora_fixtures report FILE...`: render the report from stored runs."""

from __future__ import annotations

import argparse
import configparser
from pathlib import Path
from typing import Callable

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import policy, registry
from ohlora_fixtures.inputs.options import REPORT, add_options, parse
from ohlora_fixtures.records.storage import not_a_file
from ohlora_fixtures.report.render import render
from ohlora_fixtures.report.stored import Merged, iter_stored

DEFAULT_INI = Path("setup.cfg")


def _ini_from(path: Path | None) -> Callable[[str], object] | None:
    """`ohlora_weight_*` keys of a setup.cfg's [tool:pytest] section, as pytest would read them.

    `path` None (no --ini): ./setup.cfg where there is one; `--ini ''`: none. A file named that cannot be
    read is a usage error: its weights would otherwise be dropped without a word.
    """
    if path is None:
        path = DEFAULT_INI
        if not_a_file(path):
            return None
    elif str(path) in ("", "."):
        return None
    elif problem := not_a_file(path):
        raise UsageError(f"--ini {path}: {problem}; give a setup.cfg with a [tool:pytest] section, "
                         "or --ini '' to read none")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0]
        raise UsageError(f"--ini {path}: not an INI file ({first}); give a setup.cfg with a [tool:pytest] "
                         "section, or --ini '' to read none") from None
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
    add_options(parser.add_argument, REPORT)
    parser.add_argument(
        "--ini",
        type=Path,
        default=None,
        help=f"read ohlora_weight_* keys from this file's [tool:pytest] section (default: {DEFAULT_INI} "
        "where there is one; '' reads none)",
    )
    args = parser.parse_args(argv)
    settings = parse(vars(args), REPORT)
    # Checked before any log is read: bad weights are a usage error, not a report of nan scores.
    weights = policy.resolve_weights(_ini_from(args.ini), settings.ranking_weights, REPORT.flag("ranking_weights"))
    stored = Merged(item for path in args.files for item in iter_stored(path))
    if not stored.kept:
        raise UsageError(f"no ohlora records in {', '.join(str(p) for p in args.files)}")
    names = {item.record.candidate for item in stored.kept.values()}
    candidates = [c for c in registry.load_registry(settings.candidates) if c.name in names]
    try:
        files = render(stored, candidates, settings, weights)
    except OSError as error:
        raise UsageError(
            f"report not written: {error.strerror or error} ({error.filename or settings.report_dir}); "
            "the previous report, if any, is unchanged"
        ) from None
    print("\n".join(files.lines()))
    return 0
