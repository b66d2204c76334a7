"""The signals that end a run as Ctrl-C does: SIGTERM (what `timeout`, CI runners and `kill` send) and SIGHUP (a
closed terminal or SSH session). Each raises KeyboardInterrupt, so the benchmark in flight is recorded as
interrupted and pytest-benchmark's JSON, the report and the summary are written; the default kills the run
with none of them."""

from __future__ import annotations

import signal
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
