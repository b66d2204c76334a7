"""The recommendation: the study's screening, the VRAM budget, the weighted ranking, the final and backup."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs import policy
from ohlora_fixtures.inputs.options import REPORT, parse
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.judge import selection

CANDIDATES = {c.name: c for c in load_registry()}
POLICY = policy.load_licences()


def rules(**overrides) -> selection.Rules:
    values = dict(max_params=3.0, min_params=0.0, vram_budget_mib=12288.0,
                  weights=policy.resolve_weights(), licences=POLICY)
    return selection.Rules(**{**values, **overrides})


def evidence(name: str, peak: float | None = 3000.0, grade: float | None = None, failures: tuple[str, ...] = (),
             **figures: float | None) -> selection.Evidence:
    costs = {"finetune_time": 10.0, "finetune_memory": peak, "inference_time": 1.0, "inference_memory": 2500.0}
    return selection.Evidence(
        candidate=CANDIDATES[name], largest_rank=64, finetune_peak_mib=peak,
        finetune_peak_source="plan estimate at full size, bfloat16", figures={**costs, **figures},
        sources={key: "test" for key in costs}, human_grade=grade, failures=failures, measured=True,
    )


def test_the_budget_excludes_a_candidate_whose_fine_tuning_peak_is_over_it() -> None:
    result = selection.recommend(
        [evidence("gemma-2-2b-it", peak=13000.0), evidence("polyglot-ko-1.3b", peak=3244.0)], rules()
    )

    verdict = result.verdicts["gemma-2-2b-it"]
    assert not verdict.eligible
    assert "13,000 MiB (plan estimate at full size, bfloat16) exceeds the 12,288 MiB budget" in verdict.reasons[0]
    assert [score.name for score in result.scores] == ["polyglot-ko-1.3b"]
    assert result.final == "polyglot-ko-1.3b" and result.backup is None


def test_a_bigger_budget_lets_it_back_in() -> None:
    result = selection.recommend([evidence("gemma-2-2b-it", peak=13000.0)], rules(vram_budget_mib=16000.0))
    assert result.final == "gemma-2-2b-it"


def test_screening_follows_the_study() -> None:
    tiny = rules(min_params=0.25)
    assert "below the 0.25 B minimum" in selection.screen(CANDIDATES["TinyKo-v5-a"], tiny)[0][0]
    assert "above the 2 B maximum" in selection.screen(CANDIDATES["gemma-2-2b-it"], rules(max_params=2.0))[0][0]
    no_korean = dataclasses.replace(CANDIDATES["llama1B"], korean="none")
    assert selection.screen(no_korean, rules())[0] == ["no Korean support"]


@pytest.mark.parametrize(("licence", "status"), [
    ("apache-2.0", "allowed"), ("MIT", "allowed"), ("bsd-3-clause", "allowed"), ("cc-by-4.0", "allowed"),
    ("gemma", "flagged"), ("unknown", "flagged"), ("llama3.2", "flagged"), ("cc-by-nc-4.0", "refused"),
])
def test_licences_are_allowed_flagged_or_refused(licence: str, status: str) -> None:
    assert POLICY.judge(licence)[0] == status


def test_gemma_and_unknown_licences_are_flagged_not_excluded_and_a_refused_one_excludes() -> None:
    reasons, flags = selection.screen(CANDIDATES["gemma-2-2b-it"], rules())
    assert reasons == [] and "not fully free" in flags[0]
    reasons, flags = selection.screen(CANDIDATES["llama1B"], rules())
    assert reasons == [] and "not verified" in flags[0]
    non_commercial = dataclasses.replace(CANDIDATES["llama1B"], license="cc-by-nc-4.0")
    assert "does not allow free use" in selection.screen(non_commercial, rules())[0][0]


def test_a_failed_benchmark_excludes_the_candidate() -> None:
    result = selection.recommend([evidence("llama1B", failures=("inference failed: boom",))], rules())
    assert result.verdicts["llama1B"].reasons == ("inference failed: boom",) and result.final is None


def test_scores_are_min_max_normalised_then_weighted() -> None:
    weights = {name: 0.0 for name in policy.CRITERION_NAMES} | {"leaderboard": 1.0, "inference_time": 1.0}
    result = selection.recommend([
        evidence("koquality-polyglot-1.3b", inference_time=3.0),  # leaderboard 31.07: best
        evidence("polyglot-ko-1.3b", inference_time=1.0),         # 29.95
        evidence("FinguAI-Chat-v1", inference_time=2.0),          # 28.09: worst
    ], rules(weights=weights))

    scores = {score.name: score for score in result.scores}
    leaderboard = (29.95 - 28.09) / (31.07 - 28.09)
    assert scores["polyglot-ko-1.3b"].normalised["leaderboard"] == pytest.approx(leaderboard)
    assert scores["polyglot-ko-1.3b"].score == pytest.approx((leaderboard + 1.0) / 2)
    assert scores["koquality-polyglot-1.3b"].score == pytest.approx(0.5)
    assert scores["FinguAI-Chat-v1"].score == pytest.approx(0.25)
    # Equal figures cannot tell candidates apart; a missing one counts as the worst.
    assert {s.normalised["finetune_time"] for s in result.scores} == {1.0}
    missing = selection.recommend([evidence("llama1B", inference_time=None), evidence("polyglot-ko-1.3b")], rules())
    assert {s.name: s.normalised["inference_time"] for s in missing.scores}["llama1B"] == 0.0


def test_human_grades_drive_quality_only_when_every_eligible_candidate_has_one() -> None:
    graded = selection.recommend(
        [evidence("gemma-ko-v01", grade=3.0), evidence("polyglot-ko-1.3b", grade=4.0)], rules()
    )
    assert graded.quality_source.startswith("human grade")
    assert graded.final == "polyglot-ko-1.3b"  # a better grade beats a better leaderboard average

    partly = selection.recommend([evidence("gemma-ko-v01", grade=3.0), evidence("polyglot-ko-1.3b")], rules())
    assert partly.quality_source.startswith("no evidence")
    assert partly.final == "gemma-ko-v01"


def test_without_grades_quality_weighs_nothing_and_the_leaderboard_counts_once() -> None:
    weights = {name: 0.0 for name in policy.CRITERION_NAMES} | {"quality": 4.0, "leaderboard": 2.0,
                                                                   "inference_time": 2.0}
    result = selection.recommend([
        evidence("koquality-polyglot-1.3b", inference_time=2.0),  # best leaderboard average
        evidence("FinguAI-Chat-v1", inference_time=1.0),          # worst leaderboard average, fastest
    ], rules(weights=weights))

    assert result.weights["quality"] == 4.0 and result.effective_weights["quality"] == 0.0
    assert result.effective_weights["leaderboard"] == 2.0
    # Leaderboard 2 against inference time 2: a tie at 0.5 each, not 6 against 2 as when quality echoed it.
    assert {s.name: s.score for s in result.scores} == pytest.approx(
        {"koquality-polyglot-1.3b": 0.5, "FinguAI-Chat-v1": 0.5})
    assert all(s.raw["quality"] is None for s in result.scores)


def test_a_criterion_nobody_has_a_figure_for_weighs_nothing() -> None:
    result = selection.recommend([evidence("llama1B", inference_time=None), evidence("polyglot-ko-1.3b",
                                                                                     inference_time=None)], rules())
    assert result.effective_weights["inference_time"] == 0.0 and result.weights["inference_time"] == 0.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_figure_never_normalises_to_the_best(bad: float) -> None:
    result = selection.recommend([evidence("llama1B", inference_time=bad),
                                  evidence("polyglot-ko-1.3b", inference_time=2.0)], rules())
    normalised = {s.name: s.normalised["inference_time"] for s in result.scores}
    assert normalised == {"llama1B": 0.0, "polyglot-ko-1.3b": 1.0}
    assert "inference time" in result.final_reason and "inference time" not in result.backup_reason


def test_a_candidate_with_nothing_measured_is_never_ranked() -> None:
    unmeasured = dataclasses.replace(evidence("polyglot-ko-1.3b"), measured=False)
    result = selection.recommend([evidence("gemma-2-2b-it"), unmeasured], rules())
    assert [s.name for s in result.scores] == ["gemma-2-2b-it"] and result.backup is None
    assert "nothing measured" in result.verdicts["polyglot-ko-1.3b"].reasons[0]
    nothing = selection.recommend([dataclasses.replace(e, measured=False) for e in (evidence("llama1B"),)], rules())
    assert nothing.final is None and "nothing was measured" in nothing.final_reason


def test_the_backup_of_a_final_with_a_flagged_licence_is_the_best_with_a_free_one() -> None:
    everyone = [evidence(name) for name in CANDIDATES if name != "TinyKo-v5-a"]
    result = selection.recommend(everyone, rules())

    assert (result.final, result.backup) == ("gemma-2-2b-it", "polyglot-ko-1.3b")  # the study's choice
    assert "licence" in result.final_reason and "(apache-2.0) is on the allow-list" in result.backup_reason
    free = dataclasses.replace(CANDIDATES["gemma-2-2b-it"], license="apache-2.0")
    result = selection.recommend([dataclasses.replace(everyone[0], candidate=free), *everyone[1:]], rules())
    assert result.backup == "koquality-polyglot-1.3b"  # otherwise simply the runner-up


def test_weights_come_from_defaults_then_ini_then_the_command_line() -> None:
    ini = {"ohlora_weight_quality": "7", "ohlora_weight_leaderboard": " ", "ohlora_weight_inference_time": "1"}
    weights = policy.resolve_weights(ini.get, policy.parse_weights("inference_time=3"))
    assert weights["quality"] == 7.0 and weights["leaderboard"] == 2.0 and weights["inference_time"] == 3.0
    with pytest.raises(UsageError, match="ohlora_weight_quality"):
        policy.resolve_weights({"ohlora_weight_quality": "lots"}.get)
    with pytest.raises(UsageError, match="all zero"):
        policy.resolve_weights(override=[(name, 0.0) for name in policy.CRITERION_NAMES])


def test_the_ranking_weights_option_is_checked_like_every_option() -> None:
    assert parse({"ranking_weights": "quality=3,leaderboard=2"}).ranking_weights == (
        ("quality", 3.0),
        ("leaderboard", 2.0),
    )
    with pytest.raises(UsageError, match="--ohlora-ranking-weights: 'speed=1' is not valid; expected NAME=WEIGHT"):
        parse({"ranking_weights": "speed=1"})


@pytest.mark.parametrize(
    "value, shown",
    [
        ("leaderboard=2,quality=inf", "'quality=inf' is not valid; expected a finite number >= 0"),
        ("quality=1e400", "'quality=1e400' is not valid"),
        ("quality=nan", "'quality=nan' is not valid"),
        ("quality=1,quality=2", "'quality=2' is not valid; quality is given twice"),
        ("quality=1,speed=2", "'speed=2' is not valid; expected NAME=WEIGHT"),
        ("quality=1e308,leaderboard=1e308,finetune_time=1e308", "sum is not a finite number"),
    ],
)
def test_a_weight_that_is_not_a_finite_number_is_refused_naming_the_pair(value: str, shown: str) -> None:
    with pytest.raises(UsageError, match="--ranking-weights: ") as refused:
        parse({"ranking_weights": value}, REPORT)
    assert shown in str(refused.value)
    if value.startswith(("leaderboard=2", "quality=1,")):
        assert value not in str(refused.value)  # the bad pair, not the whole value


def test_the_weights_together_and_the_ini_keys_must_be_finite() -> None:
    with pytest.raises(UsageError, match="ohlora_weight_leaderboard = 'inf' is not a finite number"):
        policy.resolve_weights({"ohlora_weight_leaderboard": "inf"}.get)
    ini = {"ohlora_weight_quality": "1e308", "ohlora_weight_leaderboard": "1e308"}.get
    with pytest.raises(UsageError, match="--ranking-weights and the ohlora_weight_.*sum is not a finite number"):
        policy.resolve_weights(ini, policy.parse_weights("finetune_time=1e308"), "--ranking-weights")


def test_a_score_that_is_not_a_number_never_names_a_choice() -> None:
    overflowing = rules(weights={**policy.resolve_weights(), "inference_time": 1e308, "leaderboard": 1e308,
                                 "finetune_time": 1e308})
    result = selection.recommend([evidence("gemma-2-2b-it"), evidence("polyglot-ko-1.3b")], overflowing)
    assert all(math.isnan(score.score) for score in result.scores)
    assert result.final is None and result.backup is None


def test_ini_keys_are_declared_for_setup_cfg(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nohlora_weight_quality = 6\n")
    config = pytester.parseconfig()
    assert policy.resolve_weights(config.getini)["quality"] == 6.0
