"""The timing protocol: timed rounds through pytest-benchmark, each in a memory meter, with the machine's load.

What is timed is the region a benchmark body hands to `measure` (runner.py says what each body times);
the rounds run inside pytest-benchmark's `pedantic`, a fresh state prepared before each round outside the
clock. A busy attempt (machine_load.py) is measured again, up to --ohlora-busy-retries times, where its times
decide something and the session's re-measure budget allows (remeasure.py); else it is kept, marked. On the CPU
the memory headline comes from one untimed profiled pass after the rounds (`tensor_peak`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

from ohlora_fixtures.measure.devices import synchronize
from ohlora_fixtures.measure.hardware import probe_fraction
from ohlora_fixtures.measure.machine_load import LoadWatch
from ohlora_fixtures.measure.memory import MemoryMeter, TensorPeak, TensorPeakMeter, needs_tensor_pass, with_tensor_peak
from ohlora_fixtures.records.figures import MachineLoad, MemoryFigures
from ohlora_fixtures.records.record import BenchmarkRecord
from ohlora_fixtures.session.remeasure import BUDGET
from ohlora_fixtures.session.study import Study
from ohlora_fixtures.words.message import Message


@dataclass(frozen=True)
class Measured:
    """What one timed round returned, how long it took by its own clock, and the memory it used."""

    value: Any
    seconds: float
    memory: MemoryFigures


@dataclass(frozen=True)
class Rounds:
    """Every timed round of one benchmark, and the machine's load around them."""

    rounds: tuple[Measured, ...]
    load: MachineLoad

    @property
    def median(self) -> Measured:
        """The median round by time (the lower middle one for an even count): the record's figures come from it,
        so that time, tokens per second, MFU and the answers all belong to one round."""
        return sorted(self.rounds, key=lambda r: r.seconds)[(len(self.rounds) - 1) // 2]

    @property
    def peak_memory(self) -> MemoryFigures:
        """The highest round's memory: what must fit is the worst round."""
        return max((r.memory for r in self.rounds), key=lambda m: m.peak_mib)

    def with_tensor_peak(self, tensors: TensorPeak | None) -> "Rounds":
        """The rounds with the profiled pass's tensor peak as every round's headline (None: as they are)."""
        if tensors is None:
            return self
        return Rounds(tuple(dataclasses.replace(r, memory=with_tensor_peak(r.memory, tensors)) for r in self.rounds),
                      self.load)

    def fill(self, record: BenchmarkRecord) -> Measured:
        """Put the rounds' time, memory and load into `record`; returns the median round."""
        median = self.median
        record.seconds, record.memory, record.load = median.seconds, self.peak_memory, self.load
        record.round_seconds = tuple(r.seconds for r in self.rounds)
        record.round_peak_mib = tuple(round(r.memory.peak_mib, 2) for r in self.rounds)
        return median


class _Settled(BaseException):
    """Raised from pytest-benchmark's setup to end `pedantic` once an attempt's rounds are kept. A BaseException,
    so that pytest-benchmark does not mark the benchmark as failed (it does so for any Exception)."""


def measure(
    study: Study,
    benchmark: Any,
    function: Callable[..., Any],
    prepare: Callable[..., tuple],
    warm_up: Callable[..., None],
) -> Rounds:
    """Run `function(*prepare())` for --ohlora-rounds timed rounds of pytest-benchmark, each inside a MemoryMeter;
    while the machine was busy during an attempt's rounds, measure them again, up to --ohlora-busy-retries times,
    where `study.remeasure` allows (each re-measure is said on `study.progress`, with its reason).

    Before each round, untimed (pytest-benchmark's `setup`): `prepare` (a fresh
    adapter), the meter's start, then `warm_up(*args)`. The meter starts before
    the warm-up because on the CPU it hands freed heap back to the system: after
    the warm-up it would undo the allocator growth the warm-up is there to pay,
    and the first timed step would fault it in again (4-5 ms of a 16 ms step, tiny
    llama, 100 pairs). The warm-up runs the round's first step without the
    optimizer, so its peak is never above the round's. The meter stops before the
    next round, so each round's memory is its own. The kept attempt is the first
    quiet one, else the last; pytest-benchmark's statistics keep its rounds only
    (for `--benchmark-compare-fail`), and the record keeps each round's own
    perf_counter reading, how many attempts there were and, for busy figures,
    why they were kept. Memory figures are rounded to 0.01 MiB, as they are
    stored.
    """
    per_attempt = study.settings.rounds
    attempts_allowed = 1 + study.settings.busy_retries
    budget, progress = study.remeasure, study.progress
    progress.attempts = attempts_allowed
    attempt_began = budget.clock()
    kept_busy = ""
    done: list[Measured] = []
    loads: list[MachineLoad] = []
    meter: MemoryMeter | None = None
    finished: tuple[Any, float] | None = None  # the round just timed: its value and seconds

    def probe() -> float | None:
        return probe_fraction(study.device, study.dtype, study.peaks)

    watch = LoadWatch(probe)

    def end_round() -> None:
        # Outside the timed region: at the next round's setup, or once pedantic has returned.
        nonlocal meter, finished
        if meter is not None:
            meter.__exit__(None, None, None)
            if finished is not None:
                done.append(Measured(finished[0], finished[1], MemoryFigures(**meter.figures.as_dict())))
        meter, finished = None, None

    def attempt_ended() -> None:
        # Outside the timed region: the attempt's load, and whether its busy figures are kept (and why).
        nonlocal attempt_began, kept_busy
        loads.append(watch.finish())
        now = budget.clock()
        if len(loads) > 1:
            budget.charge(now - attempt_began)
        kept_busy = budget.why_keep(len(loads), attempts_allowed, now - attempt_began) if loads[-1].busy else ""
        attempt_began = now
        if kept_busy == "" and loads[-1].busy:
            progress.note(Message("remeasure_again", why=loads[-1].why_busy, retry=len(loads),
                                  retries=attempts_allowed - 1))
            progress.attempt = len(loads) + 1
        elif kept_busy == BUDGET and budget.first_time_spent():
            progress.note(Message("remeasure_budget_spent", spent=f"{budget.spent:.0f}",
                                  elapsed=f"{now - budget.started:.0f}", share=f"{budget.share:.0%}"))

    def setup() -> tuple[tuple, dict]:
        nonlocal meter, watch
        end_round()
        if done and len(done) % per_attempt == 0:  # an attempt has ended: keep it, or measure again
            attempt_ended()
            if not loads[-1].busy or kept_busy:
                raise _Settled
            watch = LoadWatch(probe)
        args = prepare()
        if not watch.started:
            watch.start()  # after the model is built: the load of the rounds, not of loading the model
        synchronize(study.device)
        meter = MemoryMeter(study.device).__enter__()
        warm_up(*args)
        synchronize(study.device)
        return args, {}

    def timed(*args: Any) -> Any:
        nonlocal finished
        started = time.perf_counter()
        value = function(*args)
        finished = value, time.perf_counter() - started
        return value

    try:
        benchmark.pedantic(timed, setup=setup, rounds=per_attempt * attempts_allowed, iterations=1, warmup_rounds=0)
    except _Settled:
        pass
    finally:
        end_round()  # the last round, or the sampler of one that raised
    if len(loads) * per_attempt < len(done):  # the last attempt ran its rounds to the end of pedantic's
        attempt_ended()
    kept = done[-per_attempt:]
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        del stats.data[:-per_attempt]  # pytest-benchmark's own timings of the kept attempt only
    progress.attempt = 1
    return Rounds(tuple(kept), dataclasses.replace(loads[-1], attempts=len(loads), kept_busy=kept_busy))


def tensor_peak(
    study: Study, function: Callable[..., Any], prepare: Callable[..., tuple], warm_up: Callable[..., None]
) -> TensorPeak | None:
    """The CPU's memory headline (None on a device with an allocator peak): one untimed run of the region under
    a TensorPeakMeter, which takes the progress callback's place, `prepare(hook)` giving its arguments and
    `warm_up(*args)` run before, as before a timed round; the region's own result is dropped."""
    if not needs_tensor_pass(study.device):
        return None
    meter = TensorPeakMeter()
    args = prepare(meter.window)
    warm_up(*args)
    with meter.measuring(args[0]):
        function(*args)
    del args
    assert meter.peak is not None
    return meter.peak
