"""How busy the machine was while a benchmark's rounds ran, and whether that makes its figures suspect.

Three readings, each taken before the first timed round and after the last:

- the 1-minute load average against the cores this process may use. Recorded,
  but not used to judge: it counts this process's own threads too, and it lags;
- the CPU time other processes used meanwhile (all CPUs' busy time in
  /proc/stat minus this process's own CPU time), as a number of cores, and the
  share of CPU time the hypervisor stole, where the kernel reports steal;
- a short probe: a small matmul on the benchmark's device, best of a few runs,
  as a fraction of the same probe's speed when the machine's peaks were
  calibrated (hardware.py caches both).

A benchmark ran on a busy machine (`MachineLoad.busy`) when another process
kept at least BUSY_OTHER_CORES cores busy on average, or steal reached
BUSY_STEAL, or the probe ran below BUSY_PROBE of its calibrated speed both
before and after the rounds. (One slow probe is not enough: right after a
benchmark's own work a probe of milliseconds can stall for reasons of its own,
which flagged a third of a quiet grid; load from other processes that comes or
goes during the rounds shows in their CPU time, which covers the whole span.)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from ohlora_fixtures.records.figures import MachineLoad
from ohlora_fixtures.words.message import Message

BUSY_OTHER_CORES = 0.5
BUSY_STEAL = 0.05
BUSY_PROBE = 0.75
_PROC_STAT = "/proc/stat"


@dataclass(frozen=True)
class CpuTimes:
    """One reading of the clock, every CPU's busy and steal time, and this process's own CPU time (seconds)."""

    wall: float
    busy: float | None
    steal: float | None
    own: float
    load: float | None

    @classmethod
    def now(cls) -> "CpuTimes":
        busy, steal = _proc_stat()
        own = os.times()
        try:
            load: float | None = os.getloadavg()[0]
        except OSError:
            load = None
        return cls(time.monotonic(), busy, steal, own.user + own.system, load)


def _proc_stat() -> tuple[float | None, float | None]:
    """All CPUs' busy seconds (user, nice, system, irq, softirq) and steal seconds; None where unreadable."""
    try:
        with open(_PROC_STAT, encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None, None
    if not fields or fields[0] != "cpu":
        return None, None
    ticks = [int(value) for value in fields[1:]]
    hertz = os.sysconf("SC_CLK_TCK")
    busy = sum(ticks[i] for i in (0, 1, 2, 5, 6) if i < len(ticks)) / hertz
    steal = ticks[7] / hertz if len(ticks) > 7 else None  # steal since Linux 2.6.11
    return busy, steal


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_load(
    before: CpuTimes, after: CpuTimes, probe_before: float | None, probe_after: float | None
) -> MachineLoad:
    """The readings between `before` and `after`, and the verdict."""
    cores = usable_cores()
    wall = max(after.wall - before.wall, 1e-9)
    other = steal = None
    if before.busy is not None and after.busy is not None:
        other = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    if before.steal is not None and after.steal is not None:
        steal = (after.steal - before.steal) / (wall * cores)
    reasons = busy_reasons(cores, other, steal, probe_before, probe_after)
    return MachineLoad(
        cores=cores,
        load_before=before.load,
        load_after=after.load,
        other_cores=other,
        steal=steal,
        probe_before=probe_before,
        probe_after=probe_after,
        busy=bool(reasons),
        why_busy="; ".join(reasons),
    )


def busy_reasons(
    cores: int, other_cores: float | None, steal: float | None, probe_before: float | None, probe_after: float | None
) -> list[Message]:
    """Why these readings make a machine busy, one sentence each (empty when quiet); a report re-reads a stored
    MachineLoad's figures through this to word them in its own language."""
    reasons = []
    if other_cores is not None and other_cores >= BUSY_OTHER_CORES:
        reasons.append(Message("busy_other_cores", used=f"{other_cores:.1f}", cores=cores))
    if steal is not None and steal >= BUSY_STEAL:
        reasons.append(Message("busy_steal", share=f"{steal:.0%}"))
    fastest = max((p for p in (probe_before, probe_after) if p is not None), default=None)
    if fastest is not None and fastest < BUSY_PROBE:
        reasons.append(Message("busy_probe", share=f"{fastest:.0%}"))
    return reasons


class LoadWatch:
    """Readings before the first round and after the last: `start()`, then `finish()` gives the MachineLoad.

    `probe` returns the short probe's speed as a fraction of its calibrated speed (or None).
    """

    def __init__(self, probe: Callable[[], float | None]) -> None:
        self._probe = probe
        self._before: CpuTimes | None = None
        self._probe_before: float | None = None

    def start(self) -> None:
        self._probe_before = self._probe()
        self._before = CpuTimes.now()

    @property
    def started(self) -> bool:
        return self._before is not None

    def finish(self) -> MachineLoad:
        after = CpuTimes.now()
        assert self._before is not None, "LoadWatch.finish before start"
        return machine_load(self._before, after, self._probe_before, self._probe())
