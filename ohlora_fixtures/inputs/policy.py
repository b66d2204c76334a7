"""The ranking policy as the user gives it: the criteria and their weights, and the licence allow-list.

The defaults follow the study (answer quality first, then the leaderboard average, then the costs);
`ohlora_weight_*` ini keys and `--ohlora-ranking-weights` change the weights, a TOML file like
data/licenses.toml the licences. judge/selection.py applies them.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ohlora_fixtures.errors import UsageError
from ohlora_fixtures.inputs.resources import LICENCES, bundled
from ohlora_fixtures.words.message import Message

DEFAULT_LICENCES = bundled(LICENCES)
INI_PREFIX = "ohlora_weight_"


@dataclass(frozen=True)
class Criterion:
    """One ranking criterion: what it reads and which way is better."""

    name: str
    label: str
    higher_is_better: bool
    default_weight: float
    unit: str = ""

    def show(self, value: float | None) -> Message:
        """A raw figure with its unit; memory in whole MiB."""
        if value is None:
            return Message("missing")
        figure = f"{value:,.0f}" if self.unit == "MiB" else f"{value:,.2f}"
        return Message(f"unit_{self.name}", value=figure)

    @property
    def title(self) -> Message:
        """The criterion's name, as the report shows it in any language."""
        return Message(f"criterion_{self.name}")


# The study's priorities: answer quality first, then the leaderboard average, then the costs.
CRITERIA: tuple[Criterion, ...] = (
    Criterion("quality", "answer quality", True, 4.0),
    Criterion("leaderboard", "leaderboard average", True, 2.0),
    Criterion("finetune_time", "fine-tuning time", False, 0.5, "s"),
    Criterion("finetune_memory", "fine-tuning peak memory", False, 0.5, "MiB"),
    Criterion("inference_time", "inference time", False, 0.5, "s/prompt"),
    Criterion("inference_memory", "inference peak memory", False, 0.5, "MiB"),
)
CRITERION_NAMES = tuple(criterion.name for criterion in CRITERIA)


class BadWeight(ValueError):
    """One NAME=WEIGHT pair that is not valid: `part` is the pair as given, `why` what is wrong with it."""

    def __init__(self, part: str, why: str) -> None:
        super().__init__(f"{part}: {why}")
        self.part, self.why = part, why


def _weight(text: str) -> float:
    # float() takes "inf", "nan" and "1e400" (inf): none is a weight, and a score would come out nan.
    weight = float(text)
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(text)
    return weight


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """`quality=4,leaderboard=2` -> (("quality", 4.0), ("leaderboard", 2.0)); BadWeight (a ValueError)
    naming the first bad pair: an unknown or repeated name, a weight that is not a finite number >= 0."""
    pairs: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in CRITERION_NAMES:
            raise BadWeight(part.strip(), "expected " + parse_weights.expected)  # type: ignore[attr-defined]
        if name in pairs:
            raise BadWeight(part.strip(), f"{name} is given twice; give each criterion once")
        try:
            pairs[name] = _weight(value)
        except ValueError:
            raise BadWeight(part.strip(), "expected a finite number >= 0 as the weight") from None
    if not math.isfinite(sum(pairs.values())):
        raise BadWeight(text, "the weights' sum is not a finite number; use smaller weights")
    return tuple(pairs.items())


parse_weights.expected = (  # type: ignore[attr-defined]
    "NAME=WEIGHT pairs separated by commas, weights >= 0, names from " + ", ".join(CRITERION_NAMES)
)


def ini_keys() -> dict[str, str]:
    """The `ohlora_weight_*` ini keys and their help texts."""
    return {
        INI_PREFIX + c.name: f"recommendation weight of {c.label} (default {c.default_weight:g})" for c in CRITERIA
    }


def resolve_weights(
    ini: Callable[[str], object] | None = None,
    override: Sequence[tuple[str, float]] | None = None,
    option: str = "--ohlora-ranking-weights",
) -> dict[str, float]:
    """The ranking weights: defaults, then ini values (`ini(key)`; blank = unset), then the command line
    (`option`, named where the weights together are refused)."""
    weights = {c.name: c.default_weight for c in CRITERIA}
    if ini is not None:
        for name in CRITERION_NAMES:
            raw = ini(INI_PREFIX + name)
            if raw is None or not str(raw).strip():
                continue
            try:
                weights[name] = _weight(str(raw))
            except ValueError:
                raise UsageError(f"ini key {INI_PREFIX}{name} = {raw!r} is not a finite number >= 0") from None
    weights.update(dict(override or ()))
    total = sum(weights.values())
    if not math.isfinite(total):
        raise UsageError(
            f"{option} and the ohlora_weight_* ini keys: the ranking weights' sum is not a finite number "
            f"({', '.join(f'{name}={weight:g}' for name, weight in weights.items() if weight)}); use smaller weights"
        )
    if not total > 0:
        raise UsageError(
            f"{option} and the ohlora_weight_* ini keys: the ranking weights are all zero; "
            "give at least one criterion a positive weight"
        )
    return weights


@dataclass(frozen=True)
class LicencePolicy:
    """Which licences pass the screening (allowed), which exclude (refused); the rest are flagged."""

    allowed: tuple[str, ...]
    refused: tuple[str, ...]
    notes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def judge(self, licence: str) -> tuple[str, Message]:
        """("allowed" | "flagged" | "refused", a short note)."""
        key = licence.strip().lower()
        if any(fnmatch(key, pattern) for pattern in self.allowed):
            return "allowed", Message("licence_allowed", licence=licence)
        if any(fnmatch(key, pattern) for pattern in self.refused):
            return "refused", Message("licence_refused", licence=licence)
        if key in self.notes:
            return "flagged", Message.literal(self.notes[key])
        return "flagged", Message("licence_unlisted", licence=licence)


def load_licences(path: Path = DEFAULT_LICENCES) -> LicencePolicy:
    """The licence policy from a TOML file like data/licenses.toml."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"licence policy {path}: cannot be read: {error}") from None
    return LicencePolicy(
        allowed=tuple(p.lower() for p in document.get("allowed", ())),
        refused=tuple(p.lower() for p in document.get("refused", ())),
        notes={key.lower(): _note_texts(value) for key, value in document.get("notes", {}).items()},
    )


def _note_texts(value: str | Mapping[str, str]) -> dict[str, str]:
    # A note is one string (every language) or a table of strings per language: {en = "...", ko = "..."}.
    return dict(value) if isinstance(value, Mapping) else {"en": str(value)}
