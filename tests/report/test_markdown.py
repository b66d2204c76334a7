"""leaderboard.md: a text from a user's file (a licence, a name, an answer) is shown, never read as markup."""

from __future__ import annotations

import re
from pathlib import Path

from ohlora_fixtures.report.blocks import Bullets, Card, Heading, Image, Paragraph, Section, Table
from ohlora_fixtures.report.markdown import to_markdown

EVIL = "<script>alert(1)</script><img src=x onerror=alert(1)>|pipe|*bold*_it_ [link](http://x) # &lt;"


def _unescaped(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def test_html_pipes_and_emphasis_from_a_users_file_are_escaped_in_every_block() -> None:
    blocks = [
        Card(f"verdict {EVIL}", (f"**{EVIL}** places first", f"licence `{EVIL}`"), caveats=(f"licence {EVIL}",)),
        Section(f"screening {EVIL}", (Bullets((f"excluded: {EVIL}",)), Paragraph(EVIL, "note"), Heading(EVIL, 3))),
        Table(("name", "licence"), (("a", EVIL), ("b", "mit")), legend=EVIL),
        Image(Path("pareto.png"), EVIL),
    ]
    markdown = to_markdown(blocks)

    # Outside code spans no tag opens, no emphasis or link is made; inside them a table cell still splits only
    # where the table's own pipes are.
    outside_code = re.sub(r"`[^`]*`", "", markdown)
    assert not re.search(r"(?<!\\)<[a-z/]", outside_code)
    assert not re.search(r"(?<!\\)[*_](?:bold|it)", outside_code)
    assert not re.search(r"(?<!\\)\]\(http", outside_code) and not re.search(r"(?<!\\)&lt;", outside_code)
    table = [line for line in markdown.splitlines() if line.startswith("| a ")][0]
    assert len(re.split(r"(?<!\\)\|", table)) == 4  # | a | licence |
    # What a reader sees is the text as it was, and the blocks' own **bold** and `code` still work.
    assert EVIL in _unescaped(markdown)
    assert "**\\<script\\>" in markdown and f"`{EVIL.replace('|', chr(92) + '|')}`" in markdown
