"""Pareto dominance: which candidates no other candidate beats on quality and cost at once.

A candidate is dominated by another that is at least as good on every axis
and strictly better on one; the non-dominated candidates form the front, the
trade-offs worth choosing between. Pure functions over plain numbers: the
report decides which figures are the axes.
"""

from __future__ import annotations

from typing import Mapping, Sequence


def dominates(a: Sequence[float], b: Sequence[float], higher_is_better: Sequence[bool]) -> bool:
    """Whether `a` is at least as good as `b` on every axis and strictly better on one."""
    if not len(a) == len(b) == len(higher_is_better):
        raise ValueError(f"points and axes differ in length: {len(a)}, {len(b)}, {len(higher_is_better)}")
    better = False
    for x, y, higher in zip(a, b, higher_is_better):
        gain = x - y if higher else y - x
        if gain < 0:
            return False
        better = better or gain > 0
    return better


def dominated_by(points: Mapping[str, Sequence[float]], higher_is_better: Sequence[bool]) -> dict[str, tuple[str, ...]]:
    """For each point, the points that dominate it, in the given order; empty for the front."""
    return {
        name: tuple(
            other for other, values in points.items() if other != name and dominates(values, point, higher_is_better)
        )
        for name, point in points.items()
    }


def front(points: Mapping[str, Sequence[float]], higher_is_better: Sequence[bool]) -> list[str]:
    """The non-dominated points' names, in the given order."""
    return [name for name, by in dominated_by(points, higher_is_better).items() if not by]
