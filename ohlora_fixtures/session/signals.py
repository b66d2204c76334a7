"""The signals that end a run as Ctrl-C does: SIGTERM (what `timeout`, CI runners and `kill` send) and SIGHUP (a
closed terminal or SSH session). Each raises KeyboardInterrupt, so the benchmark in flight is recorded as
interrupted and pytest-benchmark's JSON, the report and the summary are written; the default kills the run
with none of them."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def interrupt_on_termination(add_cleanup: Callable[[Callable[[], object]], None]) -> None:
    """Make each of TERMINATING a KeyboardInterrupt, where nobody has claimed it already (a SIGHUP ignored by
    `nohup` stays ignored) and only from the main thread (where signals arrive); `add_cleanup` gets the undoing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in TERMINATING:
        if signal.getsignal(number) != signal.SIG_DFL:
            continue
        signal.signal(number, _interrupt)
        add_cleanup(lambda number=number: signal.signal(number, signal.SIG_DFL))


def _interrupt(number: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signal.Signals(number).name}")


def finish_before_termination(add_cleanup: Callable[[Callable[[], object]], None]) -> None:
    """After the benchmarks (pytest-benchmark's JSON, the report, the plots, the clean-up), a terminating signal
    is said in one line and the run finishes what it writes instead of leaving it half done (`noted` tells it);
    from the main thread only, and only for the signals `interrupt_on_termination` took."""
    NOTED.clear()
    if threading.current_thread() is not threading.main_thread():
        return
    for number in TERMINATING:
        if signal.getsignal(number) is _interrupt:
            signal.signal(number, _note)
            add_cleanup(lambda number=number: signal.signal(number, signal.SIG_DFL))


NOTED: list[str] = []


def noted() -> list[str]:
    """The terminating signals received while the run was finishing."""
    return list(NOTED)


def _note(number: int, frame: Any) -> None:
    name = signal.Signals(number).name
    NOTED.append(name)
    print(f"\n{name} received after the benchmarks: finishing pytest-benchmark's JSON and the report first",
          file=sys.stderr, flush=True)
