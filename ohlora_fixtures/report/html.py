"""The HTML renderer: leaderboard.html, one self-contained page, the answer on its first screen."""

from __future__ import annotations

import base64
import html
from typing import Sequence

from ohlora_fixtures.report.blocks import Block, Bullets, Card, Heading, Image, Paragraph, Section, Table
from ohlora_fixtures.words.language import text

# Korean-capable fonts first: a browser whose system-ui lacks Hangul would draw boxes. Wide tables scroll inside
# their own box rather than widen the page; Korean words are not broken inside (keep-all), so a narrow column
# never stacks one syllable per line. Plots are shown at their own pixel size at most, so their words keep the
# size they were drawn at (plots.MIN_FONT_PT), and link to the PNG file.
_CSS = """
body { font-family: "Noto Sans KR", "Noto Sans CJK KR", "Nanum Gothic", "Apple SD Gothic Neo",
         "Malgun Gothic", system-ui, sans-serif;
       margin: 1em 1.5em; color: #222; max-width: 1800px; font-size: 15px; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.3em 0; }
h2 { font-size: 1.25em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0 0.2em; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 6px; vertical-align: top; word-break: keep-all;
         overflow-wrap: break-word; }
th { background: #eef1f5; text-align: left; min-width: 4em; }
tr:nth-child(even) td { background: #fafafa; }
.legend { font-size: 13px; color: #444; margin: 0.1em 0 0.8em; }
.banner { background: #fde2e1; border: 2px solid #c0392b; color: #7b1d16; padding: 0.5em 1em; font-weight: bold;
          margin: 0.5em 0; }
.note { color: #555; font-style: italic; }
.verdict { border: 2px solid #1f6f43; background: #eef8f1; padding: 0.4em 1em 0.6em; margin: 0.8em 0; }
.verdict h2 { margin: 0.3em 0; }
.verdict p { margin: 0.3em 0; }
.verdict ul { margin: 0.3em 0; padding-left: 1.2em; color: #7b4a00; }
details { border-top: 1px solid #ddd; padding: 0.2em 0; }
summary { cursor: pointer; }
summary h2 { display: inline; font-size: 1.15em; }
figure { margin: 0.6em 0; }
figcaption { font-size: 13px; color: #555; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
"""


def _inline(value: str) -> str:
    # The only markup the blocks use is **bold** and `code`; escape first, then apply it.
    escaped = html.escape(value)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        style = f' class="{block.style}"' if block.style != "p" else ""
        return f"<p{style}>{'⚠ ' if block.style == 'banner' else ''}{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        legend = f'<p class="legend">{_inline(block.legend)}</p>' if block.legend else ""
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{legend}'
    if isinstance(block, Image):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        name = html.escape(block.path.name)
        return (
            f'<figure><a href="{name}"><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
            f'</a><figcaption>{html.escape(block.caption)} (<a href="{name}">{name}</a>)</figcaption></figure>'
        )
    if isinstance(block, Card):
        caveats = "".join(f"<li>⚠ {_inline(c)}</li>" for c in block.caveats)
        return (
            f'<section class="verdict" id="verdict"><h2>{html.escape(block.title)}</h2>'
            + "".join(f"<p>{_inline(line)}</p>" for line in block.lines)
            + (f"<ul>{caveats}</ul>" if caveats else "")
            + "</section>"
        )
    if isinstance(block, Section):
        inner = "\n".join(_block(b) for b in block.blocks)
        return (
            f"<details{' open' if block.open else ''}><summary><h2>{html.escape(block.title)}</h2></summary>\n"
            f"{inner}\n</details>"
        )
    raise TypeError(block)


def to_html(blocks: Sequence[Block], lang: str) -> str:
    """A self-contained HTML page: plots embedded as base64 PNGs (each linking to its file beside the page), so
    the file can be sent on its own."""
    out = [
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(text('title', lang))}</title><style>{_CSS}</style></head><body>"
    ]
    out += [_block(block) for block in blocks]
    out.append("</body></html>\n")
    return "\n".join(out)
