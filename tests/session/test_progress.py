"""Progress lines: where the session is, the time left, the attempt; one updating line on a terminal, plain lines
in a log or under CI, nothing under -q."""

from __future__ import annotations

from ohlora_fixtures.session.progress import PLAIN, QUIET, TTY, Progress, progress_line, progress_mode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_mode_follows_pytests_conventions() -> None:
    assert progress_mode(0, isatty=True, environ={}) == TTY
    assert progress_mode(1, isatty=True, environ={}) == TTY
    assert progress_mode(0, isatty=False, environ={}) == PLAIN  # a log
    assert progress_mode(0, isatty=True, environ={"CI": "true"}) == PLAIN
    assert progress_mode(-1, isatty=True, environ={}) == QUIET  # -q
    assert progress_mode(-1, isatty=False, environ={"CI": "1"}) == QUIET


def test_a_line_says_where_the_session_is_and_which_attempt() -> None:
    assert progress_line(3, 32, 41, 130, "qwen r16: step 10/50 loss 2.3100") == (
        "[ohlora] 3/32 0:41 elapsed, ~2:10 left (est.) | qwen r16: step 10/50 loss 2.3100"
    )
    assert progress_line(1, 2, 3725, None, "x", attempt=2, attempts=3) == (
        "[ohlora] 1/2 1:02:05 elapsed | x (attempt 2 of 3)"
    )


def run(mode: str) -> list[tuple[str, bool]]:
    clock, written = Clock(), []
    progress = Progress(write=lambda line, rewrite: written.append((line, rewrite)), mode=mode, total=4, clock=clock)
    progress.begin()
    progress.say("a r8: step 10/20")
    clock.now = 10.0
    progress.end()
    progress.begin()
    clock.now = 12.0
    progress.attempt, progress.attempts = 2, 3
    progress.note("machine busy: other processes used 1.5 of 2 cores; measuring again, 1 of 2")
    progress.say("a r16: step 10/20")
    return written


def test_on_a_terminal_progress_updates_one_line_and_a_note_has_its_own() -> None:
    assert run(TTY) == [
        ("[ohlora] 1/4 0:00 elapsed | a r8: step 10/20", True),
        ("[ohlora] machine busy: other processes used 1.5 of 2 cores; measuring again, 1 of 2", False),
        # three benchmarks to go at the 10 s measured so far, less the 2 s this one has run: an estimate
        ("[ohlora] 2/4 0:12 elapsed, ~0:28 left (est.) | a r16: step 10/20 (attempt 2 of 3)", True),
    ]


def test_in_a_log_the_same_lines_are_plain_and_under_q_there_are_none() -> None:
    assert [rewrite for _, rewrite in run(PLAIN)] == [False, False, False]
    assert run(QUIET) == []
