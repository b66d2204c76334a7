"""The Markdown renderer: leaderboard.md, every section expanded."""

from __future__ import annotations

from typing import Sequence

from ohlora_fixtures.report.blocks import Block, Bullets, Card, Heading, Image, Paragraph, Section, Table


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", "<br>")


def _block(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + block.text]
    if isinstance(block, Paragraph):
        return [f"> **⚠ {block.text}**" if block.style == "banner" else
                f"_{block.text}_" if block.style == "note" else block.text]
    if isinstance(block, Bullets):
        return ["\n".join(f"- {item}" for item in block.items)]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |", "|" + "---|" * len(block.columns)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        # The legend on the line right under the table: copied with it, it still says what the marks mean.
        return ["\n".join(lines) + (f"\n\n_{block.legend}_" if block.legend else "")]
    if isinstance(block, Image):
        # The picture links to its own file: a click opens it at full size.
        return [f"[![{block.caption}]({block.path.name})]({block.path.name})"]
    if isinstance(block, Card):
        out = [f"## {block.title}", *block.lines]
        if block.caveats:
            out.append("\n".join(f"- ⚠ {caveat}" for caveat in block.caveats))
        return out
    if isinstance(block, Section):
        return [f"## {block.title}", *(part for inner in block.blocks for part in _block(inner))]
    raise TypeError(block)


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images as relative links to the PNG files beside it."""
    return "\n\n".join(part for block in blocks for part in _block(block)) + "\n"
