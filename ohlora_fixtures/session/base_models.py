"""The base model in memory: built or loaded once per candidate, one at a time, counted."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.memory import release_cached_memory
from ohlora_fixtures.measure.models import BaseModel


class BaseModels:
    """Holds the base model of the candidate being measured; `load` makes one (Study.load_base_model).

    Only one base is held at a time: benchmarks are ordered by candidate, so holding more would only cost
    memory. `load_counts` says how often each candidate was built or loaded (the CI gate reads it).
    """

    def __init__(self, load: Callable[[Candidate, str], BaseModel], device: torch.device) -> None:
        self._load = load
        self._device = device
        self._base: BaseModel | None = None
        self._precision = "none"
        self.load_counts: Counter[str] = Counter()

    def get(self, candidate: Candidate, precision: str = "none") -> BaseModel:
        """The candidate's base model in `precision` (--ohlora-quantization), loaded on first use and kept while
        its benchmarks run."""
        if self._base is not None and self._base.candidate.name == candidate.name and self._precision == precision:
            return self._base
        self.release()
        base = self._load(candidate, precision)
        self.load_counts[candidate.name] += 1
        self._base, self._precision = base, precision
        return base

    def release(self) -> None:
        """Drop the base model in memory and give cached memory back."""
        self._base = None
        release_cached_memory(self._device)
