"""The CPU's memory pass profiles only the steps and prompts that reach the peak, and reads the same headline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ohlora_fixtures.measure.finetune import peak_batches
from ohlora_fixtures.measure.inference import peak_prompts
from ohlora_fixtures.records.answers import Answer
from tests.conftest import run_grid_inprocess

# Uneven widths and a short last batch (7 rows in batches of 3), two epochs, answers of different lengths.
VARIED = (
    "--ohlora-models",
    "TinyKo-v5-a",
    "--ohlora-ranks",
    "16",
    "--ohlora-train-rows",
    "7",
    "--ohlora-batch-size",
    "3",
    "--ohlora-epochs",
    "2",
    "--ohlora-valid-rows",
    "2",
    "--ohlora-prompts",
    "4",
    "--ohlora-max-new-tokens",
    "6",
    "--ohlora-busy-retries",
    "0",
)


def _batch(rows: int, width: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.zeros(rows, width, dtype=torch.long)}


def _shapes(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    return [tuple(b["input_ids"].shape) for b in batches]


def test_peak_batches_are_the_first_step_then_every_shape_no_other_covers() -> None:
    batches = [_batch(4, 30), _batch(4, 50), _batch(2, 70), _batch(4, 40), _batch(4, 50), _batch(2, 20)]
    # (4, 50) covers (4, 30), (4, 40) and (2, 20); (2, 70) is wider than any full batch.
    assert _shapes(peak_batches(batches)) == [(4, 30), (4, 50), (2, 70)]
    assert _shapes(peak_batches([_batch(4, 30)])) == [(4, 30), (4, 30)]  # the peak shape again, with AdamW's state
    assert peak_batches([]) == []


def test_peak_prompts_are_the_answers_no_other_covers() -> None:
    def answer(prompt: int, generated: int) -> Answer:
        return Answer(1, "q", "", "a", prompt, generated, 0.1, generated_tokens=generated)

    answers = [answer(10, 80), answer(30, 20), answer(12, 80), answer(30, 80), answer(5, 3)]
    assert peak_prompts(answers) == [3]  # 30 + 80 covers every other
    assert peak_prompts([answer(10, 80), answer(40, 10)]) == [0, 1]  # longest sequence, longest prompt


def _headlines(pytester: pytest.Pytester, directory: Path, *args: str) -> dict[str, tuple[float, float]]:
    directory.mkdir()
    result = run_grid_inprocess(pytester, directory, *VARIED, *args)
    assert result.ret == 0, result.stdout.str()[-3000:] + result.stderr.str()[-3000:]
    records = [json.loads(line) for line in (directory / "ohlora" / "results.jsonl").read_text().splitlines()]
    return {r["id"]: (r["memory"]["peak_mib"], r["memory"]["peak_increase_mib"]) for r in records}


def test_the_peak_steps_pass_reads_the_full_pass_headline(pytester: pytest.Pytester, tmp_path: Path) -> None:
    short = _headlines(pytester, tmp_path / "short")
    full = _headlines(pytester, tmp_path / "full", "--ohlora-memory-pass", "full")
    assert short.keys() == full.keys() and len(short) == 2
    for benchmark, (peak, increase) in full.items():
        assert short[benchmark][0] == pytest.approx(peak, rel=0.01), benchmark
        assert short[benchmark][1] == pytest.approx(increase, rel=0.01), benchmark
