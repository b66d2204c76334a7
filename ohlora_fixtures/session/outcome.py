"""What becomes of a benchmark: its record's status whatever happens, stored at once, then told to pytest.

A skip (weights unavailable, or already measured: --ohlora-resume), an out-of-memory failure, a full disk or
Ctrl-C is recorded and written before pytest hears of it, so that nothing measured is lost and only this
benchmark fails; `new_record` gives a record its identity and `resume_or_skip` the resume policy.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any, Callable, Iterator

import pytest
import torch

from ohlora_fixtures.errors import BenchmarkError
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.memory import release_cached_memory
from ohlora_fixtures.measure.models import WeightsUnavailable
from ohlora_fixtures.records import results
from ohlora_fixtures.records.record import BenchmarkRecord, Kind, Status
from ohlora_fixtures.records.storage import disk_full
from ohlora_fixtures.session.study import Study

Say = Callable[[str], None]


# What torch's allocators say when an allocation fails with a plain RuntimeError: the CPU allocator on Linux
# ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."), on Windows ("not enough memory"),
# and the MPS, XPU and older CUDA builds ("... out of memory").
_OUT_OF_MEMORY_TEXT = ("can't allocate memory", "not enough memory", "out of memory")


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OUT_OF_MEMORY_TEXT)


@contextlib.contextmanager
def recorded(study: Study, benchmark: Any, record: BenchmarkRecord) -> Iterator[BenchmarkRecord]:
    """Fills in `record`'s outcome, whatever happens, and writes it to disk at once.

    Weights that cannot be used skip the benchmark with the reason. Running out
    of memory fails it with the settings that caused it, after freeing what the
    failed step held; a BenchmarkError or a full disk fails it with one line;
    any other error fails it with its traceback. Either way only this
    benchmark fails and the run goes on.
    """
    try:
        yield record
        record.status = Status.OK
    except WeightsUnavailable as error:
        record.status, record.error = Status.SKIPPED, str(error)
    except (BenchmarkError, OSError) as error:
        record.status, record.error = (
            Status.FAILED,
            str(error) if isinstance(error, BenchmarkError) else disk_full(error),
        )
        if record.error is None:
            record.error = f"{type(error).__name__}: {error}"
            raise
    except pytest.skip.Exception as error:
        record.status, record.error = Status.SKIPPED, str(error)
        raise
    except KeyboardInterrupt:
        record.status, record.error = Status.INTERRUPTED, "interrupted before the benchmark finished"
        # pytest-benchmark's own mark for a benchmark whose rounds did not finish (it sets it on any other
        # error): left out of its JSON, whose statistics would otherwise end the session on an empty round list.
        benchmark.has_error = True
        raise
    except Exception as error:  # noqa: BLE001 - every failure is recorded, then reported
        record.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if not _is_out_of_memory(error):
            record.status = Status.FAILED
            raise
        record.status = Status.OOM
        # The failed step's tensors (activations, gradients, optimizer state, the adapter) live in the
        # traceback's frames: clear them and drop the traceback, so that release_cached_memory below
        # frees them before the next benchmark's memory is measured.
        traceback.clear_frames(error.__traceback__)
        error.__traceback__ = None
    finally:
        unstored = _store(study, benchmark, record)
    if record.status in (Status.SKIPPED, Status.OOM):
        release_cached_memory(study.device)
    if record.status is Status.FAILED or unstored:
        _fail(record.error if record.status is Status.FAILED else unstored)
    if record.status is Status.SKIPPED:
        pytest.skip(record.error)
    if record.status is Status.OOM:
        _fail(f"out of memory ({_settings_summary(record)}): {record.error}")
    if record.over_budget:
        pytest.fail(
            f"peak memory {record.peak_mib:.0f} MiB ({record.memory.metric}) exceeds "
            f"--ohlora-vram-budget-mb {study.settings.vram_budget_mb:.0f}",
            pytrace=False,
        )


def _fail(line: str) -> None:
    """Fail the benchmark with `line` alone: not the exception it replaces (pytest would print both)."""
    raise pytest.fail.Exception(line, pytrace=False) from None


def _settings_summary(record: BenchmarkRecord) -> str:
    run = record.run
    rank = f", rank {record.rank}" if record.rank else ""
    return f"{record.candidate}{rank}, {run.scale} {run.weights} weights, {run.dtype} on {run.device}"


def _store(study: Study, benchmark: Any, record: BenchmarkRecord) -> str | None:
    """Write the record to the log, the session and pytest-benchmark; on a full disk the log is left whole
    and the one line saying so is returned (the record still reaches the summary and pytest-benchmark)."""
    record.finished = time.time()
    record.over_budget = bool(record.peak_mib and record.peak_mib > study.settings.vram_budget_mb)
    unstored = None
    try:
        results.append(study.settings.results_path, record)
    except OSError as error:
        unstored = disk_full(error)
        if unstored is None:
            raise
    study.records.measured.append(record)
    benchmark.extra_info.update(record.flat())
    return unstored


def new_record(
    study: Study,
    kind: Kind,
    candidate: Candidate,
    rank: int | None,
    nodeid: str,
    detail: Any,
    quantization: str = "none",
) -> BenchmarkRecord:
    """A record's identity and context (`quantization`: the base weights' precision); the measurement fills in
    the rest."""
    return BenchmarkRecord(
        id=nodeid,
        kind=kind,
        candidate=candidate.name,
        rank=rank,
        approximate=candidate.approximate,
        fingerprint=study.fingerprint(kind.value, candidate, detail, quantization),
        run=study.describe(quantization),
    )


def resume_or_skip(study: Study, record: BenchmarkRecord, candidate: Candidate, say: Say) -> None:
    """With --ohlora-resume, skip the benchmark when the log holds a successful record of it with the same
    fingerprint and of the same weights as the candidate's now (a new hub snapshot or a changed checkpoint is
    measured again, with a line saying why)."""
    if not study.settings.resume:
        return
    path = study.settings.results_path
    newest, weights = None, ""
    for earlier in study.records.log_index.newest_first(record.fingerprint):
        if newest is None:  # the weights are named (a checkpoint hashed) only where there is a record to match
            newest, weights = earlier, study.weights_revision(candidate)
        if earlier.weights_revision == weights and not weights.endswith("@unknown"):
            break
    else:
        if newest is not None:
            what = f"{candidate.name} r{record.rank}" if record.rank else f"{candidate.name} inference"
            say(
                f"{what}: measured again, not resumed: {path} has it for weights "
                f"{newest.weights_revision or '(not recorded)'}, the weights now are {weights}"
            )
        return
    study.records.measured.append(earlier)  # under pytest-xdist, sent to the controller like a measured one
    pytest.skip(f"already measured with identical settings and weights in {path} (--ohlora-resume)")
