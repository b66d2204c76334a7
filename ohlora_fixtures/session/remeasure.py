"""Whether a busy benchmark is measured again: only where its times decide something, and within a share of the
session's time. Otherwise its figures are kept as they are, marked busy, with the reason in the record
(`MachineLoad.kept_busy`).

Times decide something on full-size or pretrained runs, and when a baseline comparison (--benchmark-compare)
is asked for; on a stand-in run the verdict rests on the full-size estimates, so a second measurement of a busy
stand-in buys nothing. The budget: a re-measure starts only while the time already spent re-measuring, plus
the next attempt (taken as long as the last), stays within --ohlora-remeasure-share of the session so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

STAND_IN, BUDGET, RETRIES = "stand-in", "budget", "retries"  # MachineLoad.kept_busy's values


def times_decide(weights: str, scale: str, compare: bool) -> bool:
    """Whether this run's measured times decide something: full-size or pretrained weights, or a compare."""
    return compare or weights == "pretrained" or scale == "full"


@dataclass
class RemeasureBudget:
    """The session's re-measure account: what it may spend, what it spent, how many attempts it bought."""

    share: float  # of the session's time so far, at most, spent measuring again
    decides: bool  # times_decide(...): whether a busy benchmark is measured again at all
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)
    spent: float = 0.0
    attempts: int = 0  # re-measure attempts run
    spent_said: bool = False  # whether the terminal was told the budget is spent

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def why_keep(self, attempts: int, allowed: int, last_attempt: float) -> str:
        """Why a busy attempt's figures are kept ("" to measure again): `attempts` made of `allowed`, the last
        took `last_attempt` seconds."""
        if not self.decides:
            return STAND_IN
        if attempts >= allowed:
            return RETRIES
        elapsed = self.clock() - self.started
        if self.spent + last_attempt > self.share * (elapsed + last_attempt):
            return BUDGET
        return ""

    def charge(self, seconds: float) -> None:
        """One re-measure attempt, `seconds` long, was made."""
        self.spent += seconds
        self.attempts += 1

    def first_time_spent(self) -> bool:
        """True the first time it is asked after the budget ran out, so that the terminal says so once."""
        said, self.spent_said = self.spent_said, True
        return not said
