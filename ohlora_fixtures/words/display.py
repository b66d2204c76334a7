"""Plain-text pieces every output shares: the approximate stand-in's label and aligned text tables."""

from __future__ import annotations

from typing import Sequence

APPROXIMATE = {"en": " (approx.)", "ko": " (근사)"}


def display_name(name: str, approximate: bool, lang: str = "en") -> str:
    """A candidate's name as shown anywhere: an approximate stand-in is marked, so its figures are never
    taken as the model's."""
    return name + (APPROXIMATE.get(lang, APPROXIMATE["en"]) if approximate else "")


def aligned(rows: Sequence[Sequence[str]], right: bool = False) -> list[str]:
    """Rows of cells as lines of columns two spaces apart; `right` aligns numbers' last digits."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    pad = str.rjust if right else str.ljust
    return ["  ".join(pad(cell, width) for cell, width in zip(row, widths)) for row in rows]
