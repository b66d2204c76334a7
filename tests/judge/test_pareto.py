"""Pareto dominance: a graded set gives the expected front, ties and equal points are not dominance."""

from __future__ import annotations

import pytest

from ohlora_fixtures.judge.pareto import dominated_by, dominates, front

QUALITY_VS_COST = (True, False)  # grade: higher is better; seconds: lower is better


def test_a_graded_set_gives_the_expected_front() -> None:
    # Grades on the study's 1-5 scale against fine-tuning seconds.
    graded = {
        "gemma-2-2b-it": (5.0, 67.0),        # best answers, slowest: on the front
        "polyglot-ko-1.3b": (4.0, 26.2),     # good and cheap: on the front
        "koquality-polyglot-1.3b": (3.0, 28.4),  # worse and slower than polyglot
        "llama1B": (3.0, 28.7),              # the same, and slower than koquality too
        "FinguAI-Chat-v1": (1.0, 17.0),      # worst but cheapest: on the front
        "KoAlpaca-KoRWKV-1.5B": (2.0, 79.8),  # beaten by everything above it
    }

    by = dominated_by(graded, QUALITY_VS_COST)

    assert front(graded, QUALITY_VS_COST) == ["gemma-2-2b-it", "polyglot-ko-1.3b", "FinguAI-Chat-v1"]
    assert by["koquality-polyglot-1.3b"] == ("polyglot-ko-1.3b",)
    assert by["llama1B"] == ("polyglot-ko-1.3b", "koquality-polyglot-1.3b")
    assert by["KoAlpaca-KoRWKV-1.5B"] == ("gemma-2-2b-it", "polyglot-ko-1.3b", "koquality-polyglot-1.3b", "llama1B")


def test_equal_points_do_not_dominate_each_other_and_one_better_axis_is_enough() -> None:
    assert not dominates((3.0, 10.0), (3.0, 10.0), QUALITY_VS_COST)
    assert dominates((3.0, 9.0), (3.0, 10.0), QUALITY_VS_COST)
    assert not dominates((4.0, 11.0), (3.0, 10.0), QUALITY_VS_COST)  # a trade-off, not dominance
    assert front({"a": (3.0, 10.0), "b": (3.0, 10.0)}, QUALITY_VS_COST) == ["a", "b"]


def test_more_cost_axes_can_only_shrink_what_is_dominated() -> None:
    two = {"a": (4.0, 10.0), "b": (3.0, 12.0)}
    four = {"a": (4.0, 10.0, 900.0), "b": (3.0, 12.0, 500.0)}  # b needs less memory
    assert front(two, QUALITY_VS_COST) == ["a"]
    assert front(four, (True, False, False)) == ["a", "b"]


def test_points_and_axes_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        dominates((1.0, 2.0), (1.0,), QUALITY_VS_COST)
