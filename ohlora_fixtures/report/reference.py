"""The reference study's published table (data/study_results.toml), for `--compare-study`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ohlora_fixtures.inputs.resources import STUDY_RESULTS, bundled

DEFAULT_STUDY_RESULTS = bundled(STUDY_RESULTS)


@dataclass(frozen=True)
class StudyResults:
    """The study's measured figures (T4, bf16), per candidate name."""

    device: str
    ranks: tuple[int, ...]
    final: str
    backup: str
    rows: Mapping[str, Mapping[str, Any]]

    def finetune(self, name: str, field: str, rank: int) -> float | None:
        """The study's fine-tuning `field` at `rank`, or None where it has none."""
        row = self.rows.get(name)
        if row is None or rank not in self.ranks:
            return None
        return row[field][self.ranks.index(rank)]


def load_study(path: Path = DEFAULT_STUDY_RESULTS) -> StudyResults:
    """data/study_results.toml."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    study = document["study"]
    return StudyResults(
        device=study["device"], ranks=tuple(study["ranks"]), final=study["final"], backup=study["backup"],
        rows={row["name"]: row for row in document["result"]},
    )
