"""Where a session is: each progress line says which benchmark of how many, the time so far and an estimate of
the time left, and which measuring attempt a line belongs to.

The terminal conventions pytest users know: on a terminal one updating line per benchmark; in a log or under CI
(not a terminal, or a CI variable set) plain lines; under -q no progress at all. A note (why a benchmark is
measured again) is a line of its own wherever progress shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

TTY, PLAIN, QUIET = "tty", "plain", "quiet"


def progress_mode(verbosity: int, isatty: bool, environ: Mapping[str, str]) -> str:
    """How progress shows: QUIET under -q, PLAIN in a log or under CI, TTY on a terminal."""
    if verbosity < 0:
        return QUIET
    return PLAIN if not isatty or environ.get("CI") else TTY


def clock_text(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour)."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(
    index: int, total: int, elapsed: float, left: float | None, text: str, attempt: int = 1, attempts: int = 1
) -> str:
    """e.g. "[ohlora] 3/32 0:41 elapsed, ~2:10 left (est.) | qwen r16: step 10/50 loss 2.31 (attempt 2 of 3)"."""
    where = f"{index}/{total}" if total else f"{index}"
    eta = f", ~{clock_text(left)} left (est.)" if left is not None else ""
    again = f" (attempt {attempt} of {attempts})" if attempt > 1 else ""
    return f"[ohlora] {where} {clock_text(elapsed)} elapsed{eta} | {text}{again}"


@dataclass
class Progress:
    """The session's progress: `begin` each benchmark, `say` its progress, `note` an event, `end` it."""

    write: Callable[[str, bool], None] = lambda line, rewrite: None  # the terminal: a line, updating or not
    mode: str = QUIET
    total: int = 0  # benchmarks collected in this session
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)
    index: int = 0
    attempt: int = 1
    attempts: int = 1
    measured: list[float] = field(default_factory=list)  # seconds of each benchmark measured (not resumed)
    _began: float = 0.0

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def begin(self) -> None:
        """A benchmark starts."""
        self.index, self.attempt, self._began = self.index + 1, 1, self.clock()

    def end(self) -> None:
        """The benchmark that began last was measured: its time feeds the estimate of the time left."""
        self.measured.append(self.clock() - self._began)

    def left(self) -> float | None:
        """The time left, estimated from the benchmarks measured so far (None before the first): their mean for
        each benchmark not yet ended, less the time the one in flight has run."""
        if not self.measured or not self.total:
            return None
        mean = sum(self.measured) / len(self.measured)
        return max(0.0, mean * max(0, self.total - self.index + 1) - (self.clock() - self._began))

    def say(self, text: str) -> None:
        """A progress line of the benchmark in flight."""
        if self.mode == QUIET:
            return
        line = progress_line(
            self.index, self.total, self.clock() - self.started, self.left(), text, self.attempt, self.attempts
        )
        self.write(line, self.mode == TTY)

    def note(self, text: str) -> None:
        """An event worth its own line (why a benchmark is measured again, a budget spent)."""
        if self.mode != QUIET:
            self.write(f"[ohlora] {text}", False)
