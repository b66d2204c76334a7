"""The records of one session: what it measured or resumed, and what it read of the results log."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ohlora_fixtures.records.log_index import LogIndex
from ohlora_fixtures.records.record import BenchmarkRecord


@dataclass
class SessionRecords:
    """This session's records, in the order they finished, and its view of the results log.

    `warned` holds the unreadable lines of results.jsonl already warned about: the log is read for resumed
    benchmarks and for the report, and each line is reported once a session.
    """

    results_path: Path
    measured: list[BenchmarkRecord] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)

    @cached_property
    def log_index(self) -> LogIndex:
        """What each line of the results log holds: read once a session (from the index stored beside a long
        log), for --ohlora-resume; the report brings it up to the lines this session wrote (`refresh`)."""
        return LogIndex(self.results_path, self.warned)
