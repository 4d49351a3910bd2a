"""What a user meets when a report page opens, measured in Debian's chromium (issue #20's measures): the page's
height before any interaction at 1,400 x 900, its image elements (visible ones, and all in the DOM), the time to
the first screen (every image in the first 900 px decoded), the size of index.html and of the whole report folder,
and a random channel opened from its link: the images its galleries show.

    python -m benchmarks.page_measures PAGE [PAGE ...]     (each the index.html of a report)

bench_report calls `measure_page` on its 25,000-image page; `make bench` also on the 20 real photos' and the demo's.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.browser import CHROMIUM

WIDTH, HEIGHT = 1400, 900
FIRST_SCREEN = """() => {
  if (document.readyState === 'loading') { return false; }
  const shown = [...document.images].filter(i => i.getBoundingClientRect().top < innerHeight && i.checkVisibility());
  return shown.every(i => i.complete && i.naturalWidth > 0);
}"""  # the HTML parsed and every image of the first screen decoded (a page drawn without overlays may have none)


@dataclass(frozen=True)
class PageMeasures:
    height: int  # px, at 1,400 px wide, before any interaction
    visible_images: int  # <img> elements the user can see by scrolling, before any interaction
    images: int  # <img> elements in the DOM (a closed section's figures count here only)
    first_screen_ms: float  # navigation start -> the HTML parsed and every image of the first screen decoded
    index_bytes: int
    folder_bytes: int  # the report folder, its Parquet tables included
    channel: str  # the channel opened (a random one of a report layer)
    channel_images: int  # the images its galleries show
    problems: tuple[str, ...]  # console errors and warnings

    def lines(self) -> list[str]:
        return [
            f"page height {self.height:,} px at {WIDTH} px wide (target < 8,000); <img> before any interaction: "
            f"{self.visible_images} visible, {self.images} in the DOM",
            f"first screen in {self.first_screen_ms:.0f} ms (target < 2,000); index.html "
            f"{self.index_bytes / 2**20:.2f} MiB (target < 10), report folder {self.folder_bytes / 2**20:.1f} MiB "
            "(target < 60 at 25,000 images)",
            f"channel {self.channel} opened from its link: {self.channel_images} images"
            + (f"; problems: {list(self.problems)}" if self.problems else "; no console error"),
        ]


def measure_page(index: Path, seed: int = 0) -> PageMeasures | None:
    """The measures of the page at `index`; None without chromium on this machine."""
    from benchmarks.browser import open_in_playwright  # noqa: PLC0415  (playwright: a dev dependency)

    if not os.path.exists(CHROMIUM):
        return None
    with open_in_playwright(index, width=WIDTH, height=HEIGHT) as (tab, problems):
        tab.wait_for_function(FIRST_SCREEN, polling=10, timeout=60_000)
        first = tab.evaluate("performance.now()")
        height = tab.evaluate("document.documentElement.scrollHeight")
        visible = tab.evaluate("[...document.images].filter(i => i.checkVisibility()).length")
        images = tab.evaluate("document.images.length")
        tops = tab.evaluate(
            "() => { const b = JSON.parse(document.getElementById('browser-data').textContent);"
            " return Object.entries(b.tops.layers).map(([l, t]) => [l, t.length]); }"
        )
        rng = random.Random(seed)
        layer, channels = rng.choice(tops)
        channel = f"{layer}:{rng.randrange(channels)}"
        tab.evaluate("h => { location.hash = h; }", f"#channel={channel}")
        tab.wait_for_function("() => document.querySelector('#cb-detail h3') !== null")
        shown = tab.locator("#cb-detail .gtile").count()
        folder = index.parent
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        return PageMeasures(height, visible, images, first, index.stat().st_size, size, channel, shown, tuple(problems))


def main(argv: list[str]) -> int:
    for page in argv or ["runs/demo/run/report/index.html"]:
        m = measure_page(Path(page))
        print(page)
        for line in m.lines() if m else ["not measured: no chromium on this machine"]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
