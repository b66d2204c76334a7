"""The document model: the report as a list of blocks, which each renderer turns into its format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    style: str = "p"  # "p", "banner" or "note"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # What the marks in the cells mean, kept beside the table so that a table copied alone still says it.
    legend: str = ""


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str
    wide: bool = False


@dataclass(frozen=True)
class Card:
    """The answer, first on the page: its lines (final choice, backup, what decided) and its caveats."""

    title: str
    lines: tuple[str, ...]
    caveats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    """A titled part of the report after the answer: collapsed in the HTML (`open` shows it), expanded in Markdown."""

    title: str
    blocks: tuple["Block", ...]
    open: bool = False


Block = Heading | Paragraph | Bullets | Table | Image | Card | Section
