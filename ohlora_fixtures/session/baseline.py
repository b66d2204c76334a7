"""The CI gate's baseline: which of a stored pytest-benchmark run's figures were taken on a busy machine."""

from __future__ import annotations

from typing import Any, Mapping


def busy_in_baseline(stored: Mapping[str, Any]) -> list[str]:
    """The names of the stored run's benchmarks whose figures were marked busy (their extra_info's `load`), with
    why, e.g. "test_finetune[qwen-r16] (other processes used 1.5 of 2 cores)"."""
    named = []
    for bench in stored.get("benchmarks") or ():
        load = (bench.get("extra_info") or {}).get("load") or {}
        if load.get("busy"):
            why = load.get("why_busy") or "busy"
            named.append(f"{bench.get('name') or bench.get('fullname', '?')} ({why})")
    return named


def baseline_warning(stored: Mapping[str, Any], where: str) -> str | None:
    """One line naming the busy figures of the stored run at `where`; None when it has none."""
    named = busy_in_baseline(stored)
    if not named:
        return None
    return (
        f"--benchmark-compare baseline {where}: {len(named)} benchmark(s) were measured on a busy machine, their "
        f"times are suspect as a baseline: {'; '.join(named)}; save a new baseline on a quiet machine"
    )
