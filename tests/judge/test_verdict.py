"""A verdict noise cannot flip: stand-ins never decide, measured figures carry their spread, busy ones never decide."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import warnings
from pathlib import Path

import pytest

from ohlora_fixtures.inputs import policy
from ohlora_fixtures.inputs.options import parse
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.judge import selection
from ohlora_fixtures.records.figures import MachineLoad
from ohlora_fixtures.records.record import Kind
from ohlora_fixtures.report.gather import gather
from ohlora_fixtures.report.stored import Stored, read_stored

CANDIDATES = {c.name: c for c in load_registry()}
SCHEMA1 = Path(__file__).parents[1] / "fixtures" / "schema1" / "results.jsonl"
COSTS = ("finetune_time", "finetune_memory", "inference_time", "inference_memory")
BUSY = MachineLoad(2, 3.0, 3.1, 1.0, None, 0.4, 0.5, busy=True, why_busy="other processes used 1.0 of 2 cores")


def rules(**weights: float) -> selection.Rules:
    return selection.Rules(max_params=3.0, min_params=0.0, vram_budget_mib=12288.0,
                           weights={**policy.resolve_weights(), **weights}, licences=policy.load_licences())


def evidence(name: str, spreads: dict | None = None, busy: dict | None = None, **figures: float) -> selection.Evidence:
    costs = {"finetune_time": 10.0, "finetune_memory": 3000.0, "inference_time": 1.0, "inference_memory": 2500.0}
    return selection.Evidence(
        candidate=CANDIDATES[name], largest_rank=64, finetune_peak_mib=3000.0, finetune_peak_source="test",
        figures={**costs, **figures}, sources={key: "test" for key in costs}, measured=True,
        spreads=spreads or {}, busy=busy or {},
    )


ONLY_TIME = dict(quality=0.0, leaderboard=0.0, finetune_time=1.0, finetune_memory=0.0, inference_time=0.0,
                 inference_memory=0.0)


def test_with_exact_figures_the_margin_is_the_score_difference() -> None:
    chosen = selection.recommend([evidence("llama1B", finetune_time=8.0), evidence("polyglot-ko-1.3b"),
                                  evidence("TinyKo-v5-a", finetune_time=30.0, inference_time=0.5)], rules())
    first, second = chosen.scores[0], chosen.scores[1]
    raw = {s.name: s.raw for s in chosen.scores}
    assert selection.margin(first.name, second.name, raw, {}, chosen.effective_weights) == pytest.approx(
        first.score - second.score)
    assert chosen.final == first.name and chosen.final_tie == ()


def test_a_lead_within_one_rounds_noise_is_a_tie_broken_by_the_leaderboard_average() -> None:
    noisy = {"finetune_time": selection.time_spread([10.0], busy=False)}  # one round: +-NOISE_FLOOR
    chosen = selection.recommend([
        evidence("llama1B", noisy, finetune_time=10.0),
        evidence("polyglot-ko-1.3b", noisy, finetune_time=10.5),
    ], rules(**ONLY_TIME))

    assert chosen.scores[0].name == "llama1B"  # ahead on the raw figures...
    higher = max(("llama1B", "polyglot-ko-1.3b"), key=lambda n: CANDIDATES[n].leaderboard_average)
    assert chosen.final == higher  # ...but within the noise: the leaderboard average decides
    assert set(chosen.final_tie) == {"llama1B", "polyglot-ko-1.3b"} and chosen.final_tie[0] == higher
    if higher != "llama1B":
        assert "chosen by the tie-break (place 2 of 2" in chosen.final_reason


def test_a_lead_beyond_the_noise_wins_and_more_rounds_narrow_it() -> None:
    noisy = {"finetune_time": selection.time_spread([10.0], busy=False)}
    clear = selection.recommend([evidence("polyglot-ko-1.3b", noisy, finetune_time=10.0),
                                 evidence("llama1B", noisy, finetune_time=20.0)], rules(**ONLY_TIME))
    assert (clear.final, clear.final_tie) == ("polyglot-ko-1.3b", ())

    tight = {"finetune_time": selection.time_spread([10.0, 10.1, 10.2], busy=False)}
    assert selection.time_spread([10.0, 10.1, 10.2], busy=False) == selection.Spread.relative(
        max(selection.ROUNDS_FLOOR, 0.1 / 10.1))
    narrow = selection.recommend([evidence("TinyKo-v5-a", tight, finetune_time=10.0),
                                  evidence("polyglot-ko-1.3b", tight, finetune_time=10.9)], rules(**ONLY_TIME))
    assert (narrow.final, narrow.final_tie) == ("TinyKo-v5-a", ())


def _scenario(seed: int) -> tuple[list[selection.Evidence], list[tuple[int, str]]]:
    """Four candidates with random figures, one round each, some time figures busy."""
    rng = random.Random(seed)
    names = ["gemma-2-2b-it", "polyglot-ko-1.3b", "llama1B", "TinyKo-v5-a"]
    found, busy_slots = [], []
    for index, name in enumerate(names):
        figures = {"finetune_time": rng.uniform(5, 50), "finetune_memory": rng.uniform(2000, 9000),
                   "inference_time": rng.uniform(0.5, 5), "inference_memory": rng.uniform(1000, 6000)}
        spreads, busy = {}, {}
        for criterion in ("finetune_time", "inference_time"):
            flagged = rng.random() < 0.3
            spreads[criterion] = selection.time_spread([figures[criterion]], busy=flagged)
            if flagged:
                busy[criterion] = "probe at 40% of its calibrated speed"
                busy_slots.append((index, criterion))
        found.append(evidence(name, spreads, busy, **figures))
    return found, busy_slots


@pytest.mark.parametrize("seed", range(12))
def test_busy_figures_multiplied_by_0_2_to_20_never_change_the_verdict(seed: int) -> None:
    found, busy_slots = _scenario(seed)
    weights = rules()
    before = selection.recommend(found, weights)
    for (index, criterion), factor in itertools.product(busy_slots, (0.2, 0.5, 2.0, 5.0, 20.0)):
        changed = list(found)
        figures = dict(changed[index].figures)
        figures[criterion] *= factor
        changed[index] = dataclasses.replace(changed[index], figures=figures)
        after = selection.recommend(changed, weights)
        assert (after.final, after.final_tie, after.backup, after.backup_tie) == (
            before.final, before.final_tie, before.backup, before.backup_tie), (index, criterion, factor)
    if busy_slots:
        assert before.busy_figures  # and the verdict says it rests on them


def _stored(
    scale: str, factors: dict[tuple[str, str], float], busy: set[tuple[str, str]] = frozenset()
) -> list[Stored]:
    """The schema-1 run's records at `scale`, each (candidate, kind) time multiplied by its factor and, where
    named in `busy`, flagged busy."""
    out = []
    for item in read_stored(SCHEMA1):
        record = dataclasses.replace(item.record, run=dataclasses.replace(item.record.run, scale=scale))
        key = (record.candidate, record.kind.value)
        factor = factors.get(key, 1.0)
        record.seconds *= factor
        record.round_seconds = tuple(s * factor for s in record.round_seconds)
        if record.kind is Kind.INFERENCE:
            record.inference = dataclasses.replace(
                record.inference, mean_seconds_per_prompt=record.inference.mean_seconds_per_prompt * factor
            )
        if key in busy:
            record.load = BUSY
        out.append(Stored(record, item.source))
    return out


def _verdict(stored: list[Stored], tmp_path: Path) -> tuple:
    with warnings.catch_warnings():  # the fixture's dataset path is of the machine that ran it: the plan says so
        warnings.simplefilter("ignore")
        report = gather(
            stored, list(CANDIDATES.values()), parse({"report_dir": str(tmp_path)}), policy.resolve_weights()
        )
        chosen = report.recommendation
    return chosen.final, chosen.final_tie, chosen.backup, chosen.backup_tie, chosen.busy_figures


@pytest.mark.parametrize("factor", [0.05, 0.2, 5.0, 20.0])
def test_a_stand_in_runs_times_never_decide(factor: float, tmp_path: Path) -> None:
    base = _verdict(_stored("tiny", {}), tmp_path)
    for key in [("polyglot-ko-1.3b", "finetune"), ("llama1B", "inference")]:
        assert _verdict(_stored("tiny", {key: factor}), tmp_path) == base


def test_stored_full_size_run_with_busy_times_multiplied_keeps_its_verdict_and_says_so(tmp_path: Path) -> None:
    busy = {("polyglot-ko-1.3b", "finetune"), ("llama1B", "inference")}
    base = _verdict(_stored("full", {}, busy), tmp_path)
    assert {(name, criterion) for name, criterion, _ in base[4]} == {
        ("polyglot-ko-1.3b", "finetune_time"),
        ("llama1B", "inference_time"),
    }
    for factors in (
        {("polyglot-ko-1.3b", "finetune"): 0.2},
        {("polyglot-ko-1.3b", "finetune"): 20.0},
        {("llama1B", "inference"): 0.2, ("polyglot-ko-1.3b", "finetune"): 20.0},
    ):
        assert _verdict(_stored("full", factors, busy), tmp_path) == base


def test_a_busy_spread_is_unbounded_and_a_quiet_one_is_not() -> None:
    assert selection.time_spread([1.0, 2.0], busy=True).bounds(3.0) == (0.0, math.inf)
    low, high = selection.time_spread([1.0], busy=False).bounds(1.0)
    assert (low, high) == pytest.approx((1 - selection.NOISE_FLOOR, 1 + selection.NOISE_FLOOR))
