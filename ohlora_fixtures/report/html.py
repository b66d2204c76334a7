"""The HTML renderer: leaderboard.html, one self-contained page."""

from __future__ import annotations

import base64
import html
from typing import Sequence

from .blocks import Block, Bullets, Heading, Image, Paragraph, Table
from .language import text

# Korean-capable fonts first: a browser whose system-ui lacks Hangul would draw boxes.
_CSS = """
body { font-family: "Noto Sans KR", "Noto Sans CJK KR", "Nanum Gothic", "Apple SD Gothic Neo", "Malgun Gothic", system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1800px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
th, td { border: 1px solid #bbb; padding: 3px 6px; vertical-align: top; }
th { background: #eef1f5; text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.banner { background: #fde2e1; border: 2px solid #c0392b; color: #7b1d16; padding: 0.7em 1em; font-weight: bold; }
.note { color: #555; font-style: italic; }
figure { display: inline-block; width: 48%; margin: 0.5em 1% 0.5em 0; vertical-align: top; }
figure.wide { width: 97%; }
figcaption { font-size: 12px; color: #555; }
img { width: 100%; border: 1px solid #ddd; }
"""


def _inline(value: str) -> str:
    # The only markup the blocks use is **bold** and `code`; escape first, then apply it.
    escaped = html.escape(value)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: Sequence[Block], lang: str) -> str:
    """A self-contained HTML page: plots embedded as base64 PNGs, so the file can be sent on its own."""
    out = [f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
           f"<title>{html.escape(text('title', lang))}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            style = f' class="{block.style}"' if block.style != "p" else ""
            out.append(f"<p{style}>{'⚠ ' if block.style == 'banner' else ''}{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            wide = ' class="wide"' if block.wide else ""
            out.append(f'<figure{wide}><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(block.caption)} ({html.escape(block.path.name)})</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)
