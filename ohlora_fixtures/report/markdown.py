"""The Markdown renderer: leaderboard.md."""

from __future__ import annotations

from typing import Sequence

from .blocks import Block, Bullets, Heading, Image, Paragraph, Table


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images as relative links to the PNG files beside it."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(f"> **⚠ {block.text}**" if block.style == "banner" else
                       f"_{block.text}_" if block.style == "note" else block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
                     "|" + "---|" * len(block.columns)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({block.path.name})")
    return "\n\n".join(out) + "\n"
