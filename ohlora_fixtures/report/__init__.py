"""The leaderboard report and the recommendation: leaderboard.md, leaderboard.html, PNG plots, results.csv.

Rendered at the end of `pytest benchmarks` from this run's records, and on
demand with `python -m ohlora_fixtures report FILE...` from stored runs:
pytest-benchmark JSON files (their `extra_info`) and results.jsonl logs, merged
into one table where the latest measurement of each benchmark wins.

The pipeline, one module per step: stored (read and merge) → gather (the
`Report`: records, grades, plans, evidence) → document (blocks, the answer
first from verdict, then sections built from tables and cells, each figure
with its marks and each table with its legend from marks, words from
translations.toml via language) → markdown / html / table_csv → render
(writes the files); cli is the command line.
"""

from ohlora_fixtures.report.cli import main
from ohlora_fixtures.report.gather import Report, gather
from ohlora_fixtures.report.render import ReportFiles, SessionReport, render, render_session
from ohlora_fixtures.report.stored import Stored, merge, read_stored

__all__ = [
    "Report",
    "ReportFiles",
    "SessionReport",
    "Stored",
    "gather",
    "main",
    "merge",
    "read_stored",
    "render",
    "render_session",
]
