"""leaderboard.html in a real browser (headless Chromium at 1280 px): the answer on the first screen, nothing
wider than the window, every image loaded and readable, no Hangul drawn as boxes.

Needs a Chromium build (Debian: `apt-get install chromium-headless-shell fonts-noto-cjk`); skipped with the
reason where none is found. OHLORA_BROWSER names another binary. `make browser-test` runs this file.
Screenshots for a person: `python tests/e2e/test_browser.py REPORT.html OUT.png` (the whole page, sections closed).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WIDTH = 1280
FIRST_SCREEN = 900  # px: where the verdict card must end
MIN_LABEL_PX = 10  # the smallest word on a plot, as shown
BROWSERS = ("chromium-headless-shell", "chrome-headless-shell", "chromium", "google-chrome")

# Runs after the page (and its images) loaded; writes what it measured into the page, which --dump-dom prints.
# Hangul: each syllable on the page is drawn in the page's font on a canvas and compared with a code point no
# font has (plane 16 private use): a syllable drawn like it is a box; and syllables that all look alike are too.
PROBE = """
<script>
window.addEventListener("load", () => {
  const width = window.innerWidth;
  const closedHeight = document.documentElement.scrollHeight;
  const card = document.getElementById("verdict");
  const verdict = card ? card.getBoundingClientRect() : null;
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const overflow = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.parentElement.closest(".scroll")) continue;  // wide tables scroll inside their own box
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > width + 1 || r.left < -1))
      overflow.push(el.tagName + " " + el.className + " " + Math.round(r.right));
  }
  const images = [...document.images].map(img => ({alt: img.alt, loaded: img.complete && img.naturalWidth > 0,
    shown: img.getBoundingClientRect().width, natural: img.naturalWidth,
    link: img.parentElement.tagName === "A" ? img.parentElement.getAttribute("href") : null}));
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 48;
  const g = canvas.getContext("2d");
  const font = getComputedStyle(document.body).fontFamily;
  const draw = ch => { g.clearRect(0, 0, 48, 48); g.font = "32px " + font; g.fillText(ch, 4, 38);
                       return g.getImageData(0, 0, 48, 48).data.join(""); };
  const box = draw("\\u{10FFFD}");
  const hangul = [...new Set(document.body.innerText.match(/[\\uac00-\\ud7a3]/g) || [])];
  const drawn = hangul.map(draw);
  document.body.setAttribute("data-probe", JSON.stringify({
    width, closedHeight, verdictTop: verdict && verdict.top + window.scrollY,
    verdictBottom: verdict && verdict.bottom + window.scrollY, overflow, images,
    scrollWidth: document.documentElement.scrollWidth, hangul: hangul.length,
    boxes: hangul.filter((ch, i) => drawn[i] === box), distinctHangul: new Set(drawn).size,
    boxesLookAlike: draw("\\u{10FFFE}") === box,
  }));
});
</script>
"""


def browser() -> str | None:
    """The Chromium binary to drive: OHLORA_BROWSER, else the first of BROWSERS on PATH."""
    return os.environ.get("OHLORA_BROWSER") or next(filter(None, map(shutil.which, BROWSERS)), None)


def _run(page: Path, *args: str) -> str:
    command = [
        browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{FIRST_SCREEN}",
        "--virtual-time-budget=10000",
        *args,
        page.resolve().as_uri(),  # the README's `python tests/e2e/test_browser.py .benchmarks/...` is relative
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def measure(report_html: Path) -> dict:
    """Load a copy of the page (beside the original, so its links to the PNG files resolve) with the probe."""
    probed = report_html.with_name(".probe-" + report_html.name)
    probed.write_text(report_html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _run(probed, "--dump-dom")
    finally:
        probed.unlink()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the probe did not run: " + dom[:500]
    return json.loads(html.unescape(found[1]))


def screenshot(report_html: Path, png: Path) -> dict:
    """The whole page (sections closed) as a PNG; returns the page's measurements."""
    figures = measure(report_html)
    height = int(figures["closedHeight"])
    command = [
        browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{height}",
        f"--screenshot={png.resolve()}",
        report_html.resolve().as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    return figures


needs_browser = pytest.mark.skipif(
    browser() is None,
    reason="no Chromium found (apt-get install chromium-headless-shell fonts-noto-cjk, or set OHLORA_BROWSER)",
)


@needs_browser
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_the_report_reads_in_a_real_browser_at_1280_px(tmp_path: Path, lang: str) -> None:
    from ohlora_fixtures.report.plots import DPI, MIN_FONT_PT
    from tests.report.test_tables import render
    from tests.report.test_verdict import busy_run

    render(tmp_path, busy_run(tmp_path), "--lang", lang)
    figures = measure(tmp_path / "out" / "leaderboard.html")

    assert figures["width"] == WIDTH
    assert figures["verdictTop"] is not None and figures["verdictBottom"] <= FIRST_SCREEN, figures
    assert figures["overflow"] == [] and figures["scrollWidth"] <= WIDTH, figures["overflow"]
    assert len(figures["images"]) == 5
    smallest_label = MIN_FONT_PT * DPI / 72  # px in the PNG
    for image in figures["images"]:
        assert image["loaded"], image["alt"]
        assert image["link"] and image["link"].endswith(".png") and (tmp_path / "out" / image["link"]).is_file()
        assert image["shown"] / image["natural"] * smallest_label >= MIN_LABEL_PX, image
    if lang == "ko":
        assert figures["boxesLookAlike"]  # two glyphs no font has draw the same: the comparison can see a box
        assert figures["hangul"] > 50 and figures["boxes"] == [], figures["boxes"]
        assert figures["distinctHangul"] == figures["hangul"]


def test_a_relative_page_is_opened_by_its_absolute_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OHLORA_BROWSER", "chromium")
    commands: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda command, **_: commands.append(command)
                        or subprocess.CompletedProcess(command, 0, "dom", ""))
    assert _run(Path("out/leaderboard.html"), "--dump-dom") == "dom"
    assert commands[0][-1] == (tmp_path / "out" / "leaderboard.html").as_uri()


if __name__ == "__main__":
    if len(sys.argv) != 3 or browser() is None:
        sys.exit("usage: python tests/e2e/test_browser.py REPORT.html OUT.png (needs chromium-headless-shell)")
    measured = screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
    print(
        json.dumps(
            {
                key: measured[key]
                for key in ("closedHeight", "verdictTop", "verdictBottom", "scrollWidth", "overflow", "boxes", "hangul")
            }
        )
    )
