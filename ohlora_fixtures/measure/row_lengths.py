"""Start-up check that every selected row fits each candidate's positions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ohlora_fixtures.errors import DatasetError
from ohlora_fixtures.inputs.dataset import ExperimentData
from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.finetune import encode, position_limit
from ohlora_fixtures.measure.models import build_config


class RowsTruncatedWarning(UserWarning):
    """Training or validation rows cut to fit a candidate's positions."""


def check_row_lengths(
    tokenizer: Any, candidates: Sequence[Candidate], experiment: ExperimentData, scale: str, max_new_tokens: int
) -> None:
    """Warn once per candidate whose training or validation rows must be cut to fit its positions
    (the answer is cut, the prompt kept); refuse a row whose prompt alone does not fit, and a
    prompt that leaves no room for --ohlora-max-new-tokens new tokens.

    Rows past a model's positions would otherwise index past its position table
    or, for rotary models, cost memory quadratic in a length it was never built for.
    """
    for candidate in candidates:
        limit = position_limit(build_config(candidate, scale, vocab_size=len(tokenizer)))
        if limit is None:
            continue
        try:
            examples = encode(tokenizer, candidate, (*experiment.train, *experiment.valid), limit)
        except DatasetError as error:
            raise DatasetError(f"{experiment.source}: {error}") from None
        cut = [example.line for example in examples if example.truncated]
        if cut:
            warnings.warn(RowsTruncatedWarning(
                f"{candidate.name}: {len(cut)} training/validation row(s) are longer than its {limit:,} positions; "
                f"their answers are cut to fit (first at {experiment.source} line {cut[0]})"
            ), stacklevel=2)
        for pair in experiment.prompts:
            needed = len(tokenizer(candidate.prompt(pair.question)).input_ids) + max_new_tokens
            if needed > limit:
                raise DatasetError(
                    f"{experiment.source}: line {pair.line}: the prompt plus --ohlora-max-new-tokens {max_new_tokens} "
                    f"needs {needed:,} positions, but {candidate.name} has {limit:,}; shorten the question or "
                    "lower --ohlora-max-new-tokens"
                )
