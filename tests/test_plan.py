"""The full-size plan: widths from the dataset's own batches, and peaks that meet measured ones."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ohlora_fixtures import plan, registry
from ohlora_fixtures.dataset import ExperimentData, QAPair
from ohlora_fixtures.finetune import IGNORE_INDEX, Example, FinetuneSettings
from ohlora_fixtures.memory import MIB

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = {candidate.name: candidate for candidate in registry.load_registry()}


class WordTokenizer:
    """One token per space-separated word, plus an end token: lengths anyone can count."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[1] * len(text.split()))


def _examples(*lengths: int) -> list[Example]:
    return [Example(tuple([1] * n), tuple([IGNORE_INDEX] * n)) for n in lengths]


def test_one_batch_is_as_wide_as_its_longest_row():
    widths = plan.batch_widths(_examples(2, 4, 10, 6, 8), FinetuneSettings(rank=1, batch_size=5, epochs=2))
    assert widths == [10, 10]


def test_every_step_has_a_width_of_one_of_its_rows_and_the_widest_is_the_longest_row():
    widths = plan.batch_widths(_examples(3, 3, 9, 9, 5), FinetuneSettings(rank=1, batch_size=2, epochs=4))
    assert len(widths) == 4 * 3  # 5 rows in batches of 2: three steps an epoch
    assert set(widths) <= {3, 5, 9} and max(widths) == 9
    # pairs of the two 9s or of a 9 with a shorter row: a 9 lands in at least one batch of each epoch
    assert all(9 in widths[epoch * 3:(epoch + 1) * 3] for epoch in range(4))


def test_dataset_widths_count_the_prompt_template_the_answer_and_the_end_token(monkeypatch):
    monkeypatch.setattr(plan, "own_tokenizer", lambda candidate: None)
    candidate = CANDIDATES["TinyKo-v5-a"]
    template = len(candidate.prompt("").split())
    train = (
        QAPair("one two", "a b c", 2),  # 2 + 3 words
        QAPair("one", "a", 3),  # 1 + 1
        QAPair("one two three four", "a b c d e f", 4),  # 4 + 6: the longest row
        QAPair("no answer here at all and longer still", None, 5),  # left out, as fine-tuning leaves it out
    )
    experiment = ExperimentData(Path("rows.csv"), "default", train, (), ())
    widths = plan.dataset_widths(candidate, experiment, FinetuneSettings(rank=1, batch_size=4, epochs=1), WordTokenizer())
    assert widths.widest == template + 4 + 6 + 1
    assert widths.batches == 1 and widths.mean == widths.widest
    assert widths.source == "rows.csv, dataset tokenizer"


def test_a_wider_batch_plans_more_activations_and_the_peak_adds_up():
    candidate = CANDIDATES["TinyKo-v5-a"]
    narrow = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(20))
    wide = plan.plan_candidate(candidate, (16,), "float32", 4, plan.fixed_widths(40))
    assert wide.ranks[0].activations_mib > 2 * narrow.ranks[0].activations_mib * 0.99
    rank = narrow.ranks[0]
    adapter_weights = rank.trainable_params * plan.ADAPTER_BYTES / MIB
    assert rank.finetune_increase_estimate_mib == pytest.approx(3 * adapter_weights + rank.activations_mib)
    assert rank.finetune_peak_estimate_mib == pytest.approx(narrow.weights_mib + adapter_weights + rank.finetune_increase_estimate_mib)


def test_plan_command_reads_widths_from_the_dataset_unless_seq_len_overrides(capsys):
    from ohlora_fixtures.__main__ import main

    assert main(["plan", "--models", "TinyKo-v5-a", "--ranks", "16", "--json"]) == 0
    from_data = json.loads(capsys.readouterr().out)["plans"][0]
    assert from_data["width_source"].endswith("tokenizer") and from_data["seq_len"] >= from_data["mean_seq_len"] > 0
    assert main(["plan", "--models", "TinyKo-v5-a", "--ranks", "16", "--json", "--seq-len", "333"]) == 0
    given = json.loads(capsys.readouterr().out)["plans"][0]
    assert (given["seq_len"], given["width_source"]) == (333, "--seq-len")


@pytest.mark.slow
def test_full_size_finguai_plan_meets_the_measured_cpu_peak_within_15_percent():
    """FinguAI-Chat-v1 at full size, float32, r16, one epoch, on this CPU (about 2 min, ~3 GiB)."""
    comparison = _calibrate_script().compare("FinguAI-Chat-v1", rank=16, epochs=1)
    print(comparison)
    assert abs(comparison.increase_error) <= 0.15, comparison
    assert abs(comparison.peak_error) <= 0.15, comparison


def _calibrate_script():
    spec = importlib.util.spec_from_file_location("calibrate_plan", REPO / "scripts" / "calibrate_plan.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up there
    spec.loader.exec_module(script)
    return script


def test_the_activation_fit_is_the_least_squares_fit_of_its_calibration_table():
    assert _calibrate_script().refit() == pytest.approx(plan.ACTIVATION_FIT, rel=0.01)
