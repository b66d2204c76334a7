"""The Markdown renderer: leaderboard.md, every section expanded."""

from __future__ import annotations

import re
from typing import Sequence

from ohlora_fixtures.report.blocks import Block, Bullets, Card, Heading, Image, Paragraph, Section, Table

# What Markdown (GitHub's included) would read as markup or HTML in a text: escaped with a backslash. A name,
# licence or answer from a user's file reaches the report inside the blocks' texts, so every text is escaped.
# Only where a character can start markup: an underscore inside a word (cpu_peak_rss) is no emphasis in
# GitHub's Markdown, an ampersand only starts an entity, a hash a heading at a line's start, "!" an image.
_SPECIAL = re.compile(r"[\\`*\[\]<>|~]|(?<!\w)_|_(?!\w)|&(?=#?\w+;)|^#|!(?=\[)", re.MULTILINE)


def _escaped(value: str) -> str:
    return _SPECIAL.sub(lambda match: "\\" + match.group(0), value)


def _inline(value: str) -> str:
    """A block's text as Markdown: the only markup the blocks use, **bold** and `code` (as html.py's `_inline`
    reads them), kept; everything else literal, HTML tags, pipes and emphasis included (the one escaping
    function of this format)."""
    out = []
    for bold, outside in enumerate(value.split("**")):
        pieces = []
        for code, piece in enumerate(outside.split("`")):
            if code % 2:
                # A code span shows its text as it is (no HTML) except a pipe, which a table cell still splits on.
                pieces.append("`" + piece.replace("|", "\\|") + "`" if piece else "")
            else:
                pieces.append(_escaped(piece))
        text = "".join(pieces)
        out.append(f"**{text}**" if bold % 2 and text else text)
    return "".join(out)


def _cell(value: str) -> str:
    return _inline(value).replace("\n", "<br>")


def _block(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + _inline(block.text)]
    if isinstance(block, Paragraph):
        text = _inline(block.text)
        return [f"> **⚠ {text}**" if block.style == "banner" else f"_{text}_" if block.style == "note" else text]
    if isinstance(block, Bullets):
        return ["\n".join(f"- {_inline(item)}" for item in block.items)]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_cell(c) for c in block.columns) + " |", "|" + "---|" * len(block.columns)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        # The legend on the line right under the table: copied with it, it still says what the marks mean.
        return ["\n".join(lines) + (f"\n\n_{_inline(block.legend)}_" if block.legend else "")]
    if isinstance(block, Image):
        # The picture links to its own file: a click opens it at full size.
        return [f"[![{_inline(block.caption)}]({block.path.name})]({block.path.name})"]
    if isinstance(block, Card):
        out = [f"## {_inline(block.title)}", *(_inline(line) for line in block.lines)]
        if block.caveats:
            out.append("\n".join(f"- ⚠ {_inline(caveat)}" for caveat in block.caveats))
        return out
    if isinstance(block, Section):
        return [f"## {_inline(block.title)}", *(part for inner in block.blocks for part in _block(inner))]
    raise TypeError(block)


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images as relative links to the PNG files beside it."""
    return "\n\n".join(part for block in blocks for part in _block(block)) + "\n"
