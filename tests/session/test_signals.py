"""session/signals.py: SIGTERM and SIGHUP end a run as Ctrl-C does; a signal claimed elsewhere is left alone."""

from __future__ import annotations

import os
import signal
from typing import Callable

import pytest

from ohlora_fixtures.session.signals import finish_before_termination, interrupt_on_termination, noted


@pytest.fixture
def cleanups() -> list[Callable[[], object]]:
    undo: list[Callable[[], object]] = []
    yield undo
    for step in undo:
        step()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_terminating_signal_is_a_keyboard_interrupt_naming_it_and_undone_at_cleanup(
    cleanups: list[Callable[[], object]], number: signal.Signals
) -> None:
    before = signal.signal(number, signal.SIG_DFL)
    try:
        interrupt_on_termination(cleanups.append)
        with pytest.raises(KeyboardInterrupt, match=f"terminated by signal {number.name}"):
            os.kill(os.getpid(), number)
        for step in cleanups:
            step()
        cleanups.clear()
        assert signal.getsignal(number) == signal.SIG_DFL
    finally:
        signal.signal(number, before)


def test_a_sighup_ignored_by_nohup_stays_ignored(cleanups: list[Callable[[], object]]) -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        interrupt_on_termination(cleanups.append)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_after_the_benchmarks_a_terminating_signal_is_said_and_the_run_finishes(
    cleanups: list[Callable[[], object]], capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        interrupt_on_termination(cleanups.append)
        finish_before_termination(cleanups.append)
        os.kill(os.getpid(), signal.SIGTERM)  # no KeyboardInterrupt: the JSON and the report are being written
        assert noted() == ["SIGTERM"]
        assert "SIGTERM received after the benchmarks: finishing" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, before)
