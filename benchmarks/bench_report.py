"""Benchmark of the report stage on a synthetic run written straight to Parquet: time and peak memory.

    python -m benchmarks.bench_report [--images 200000] [--dir .bench/report] [--memory-mb 256]

The run has VGG16's 13 layers (4,224 channels, means and maxima) for --images images, written with
analysis/store/synthetic.py and reused on the next call when its parameters match. Its DATA holds a JPEG per ok
image (hard links to a few pictures: the 20 real photos of ../shared/data/real-photos scaled to 500 px, the size of
Kaggle's PetImages, where they are present; else synthetic pictures), so the report's thumbnails read and decode a
file per image. The report runs in a child process (`python -m jobs.report --no-overlays`, concepts off: their
forward over every image is bench_concepts'), so its peak resident memory is measured alone; once more with
thumbnails off, for their cost.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from analysis.config import LAYER_NAMES
from analysis.store import contract
from benchmarks.machine import describe_cpu
from benchmarks.page_measures import measure_page

VGG16_CHANNELS = dict(zip(LAYER_NAMES, (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)))
ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos" / "PetImages"


def make_pictures() -> tuple[list[bytes], str]:
    """JPEG bytes of the pictures the synthetic DATA repeats, and what they are."""
    out = []
    for path in sorted(PHOTOS.glob("*/*")) if PHOTOS.is_dir() else ():
        im = Image.open(path).convert("RGB")
        im.thumbnail((500, 500))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    if out:
        return out, f"{len(out)} real photos at 500 px"
    rng = np.random.default_rng(0)
    for _ in range(20):
        buf = io.BytesIO()
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out, "20 synthetic pictures at 500 x 375 (../shared/data/real-photos is absent)"


def make_run(folder: Path, images: int, pictures: list[bytes], seed: int = 0) -> float:
    """The synthetic run in `folder`, reused only when written with the same parameters; seconds spent writing."""
    from analysis.store.synthetic import SyntheticRun, write_synthetic_run  # noqa: PLC0415  (the tests' helper)

    params = {
        "images": images,
        "layers": VGG16_CHANNELS,
        "seed": seed,
        "unit_size": 2048,
        "planted": ["conv5_3", 7, "dog"],
        "format": contract.FORMAT_VERSION,
        "pictures": len(pictures),
        "image_size": 224,
    }
    stamp = folder / "bench-params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params and (folder / contract.RUN_JSON).is_file():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(folder.name + "-data"), ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_run(
        folder,
        SyntheticRun(
            n_images=images,
            layers=VGG16_CHANNELS,
            planted=("conv5_3", 7, "dog"),
            unit_size=2048,
            seed=seed,
            n_errors=min(100, images // 100),
            data=folder.with_name(folder.name + "-data"),
            pictures=pictures,
            image_size=224,  # VGG16's crop: conv5_3's 14 x 14 peak and Grad-CAM grids, as a real run's
        ),
    )
    stamp.write_text(json.dumps(params))
    return time.perf_counter() - t


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB, of this child alone: os.wait4) and stderr of a child process."""
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{text[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, text  # Linux: ru_maxrss in KiB


def measure_in_chromium(index: Path) -> str:
    """The page opened from disk in Debian's chromium: until its load event (HTML, the inline data, every script),
    and the map's own part (parse its data, index the points, first draw: explorer.js's 'explorer-ready')."""
    from benchmarks.browser import CHROMIUM, open_in_playwright  # noqa: PLC0415  (playwright: a dev dependency)

    if not os.path.exists(CHROMIUM):
        return "in the browser: not measured (no chromium on this machine)"
    with open_in_playwright(index) as (tab, problems):
        tab.wait_for_load_state("load")
        load = tab.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        ready = tab.evaluate("(performance.getEntriesByName('explorer-ready')[0] || {}).duration")
    return (
        f"in chromium: the page loaded in {load:.0f} ms; the map parsed, indexed and drawn in "
        + (f"{ready:.0f} ms" if ready is not None else "? ms (no map)")
        + (f"; problems: {problems}" if problems else "")
    )


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_report", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--images", type=int, default=200_000, help="images in the synthetic run (default 200000)")
    p.add_argument("--dir", type=Path, default=None, help="where the synthetic run lives (default .bench/report-N)")
    p.add_argument("--memory-mb", type=int, default=256, help="report.stats_memory_mb (default 256)")
    args = p.parse_args()
    folder = args.dir or ROOT / ".bench" / f"report-{args.images}"
    print(f"machine: {describe_cpu()}, load average {os.getloadavg()[0]:.1f} at start")
    pictures, what = make_pictures()
    write_s = make_run(folder, args.images, pictures)
    parquet_bytes = sum(f.stat().st_size for f in folder.rglob("*.parquet") if "report" not in f.parts)
    _, base, _ = run_child([sys.executable, "-c", "import jobs.report"])  # torch, pandas, matplotlib loaded
    job = [
        sys.executable,
        "-m",
        "jobs.report",
        "--run",
        str(folder),
        "--no-overlays",
        "--no-progress",
        "--set",
        f"stats_memory_mb={args.memory_mb}",
        "--set",
        "concepts.enabled=false",  # a forward of every image: benchmarks/bench_concepts.py measures it
    ]
    bare_s, _, _ = run_child(job + ["--set", "image_thumbnails=0"])  # before and after: the machine is shared
    seconds, peak, log = run_child(job)
    bare_s2, _, _ = run_child(job + ["--set", "image_thumbnails=0"])
    channels = sum(VGG16_CHANNELS.values())
    values = args.images * channels * 2
    print(
        f"synthetic run: {args.images:,} images x 13 layers ({channels:,} channels, means and maxima) = "
        f"{values / 1e9:.2f} G values, {parquet_bytes / 2**30:.2f} GiB of Parquet in {folder}"
        + (f" (written in {write_s:.0f} s)" if write_s else " (reused)")
    )
    print(
        f"report stage: {seconds:.1f} s wall, {values / seconds / 1e6:.1f} M values/s; peak RSS {peak:.0f} MiB "
        f"(stats_memory_mb={args.memory_mb}), of which {base:.0f} MiB is importing the job (torch, pandas, ...)"
    )
    print("  " + log.strip().splitlines()[-1])
    thumb_line = next((line for line in log.splitlines() if "thumbnails:" in line), "thumbnails: none")
    print(f"  {thumb_line.split('thumbnails:', 1)[1].strip()}; DATA: {what}")
    print(
        f"  report without thumbnails: {bare_s:.1f} s before, {bare_s2:.1f} s after; thumbnails add "
        f"{seconds - (bare_s + bare_s2) / 2:.1f} s, {(seconds - (bare_s + bare_s2) / 2) / args.images * 1e3:.2f} ms "
        f"per image ({os.cpu_count()} cores)"
    )
    page = folder / contract.REPORT_DIR
    files = sum(f.stat().st_size for f in page.rglob("*") if f.is_file() and f.suffix != ".parquet")
    sheets = sorted((page / "thumbs").glob("sheet-*.jpg"))
    sprite_bytes = sum(f.stat().st_size for f in sheets)
    cards = sum(f.stat().st_size for f in (page / contract.CARDS_DIR).glob("*.js"))
    print(
        f"  page: index.html {(page / contract.INDEX_HTML).stat().st_size / 2**20:.1f} MiB, with its figures, "
        f"tiles, cards and thumbnails {files / 2**20:.1f} MiB; thumbnails {sprite_bytes / 2**20:.1f} MiB in "
        f"{len(sheets)} sheets, {sprite_bytes / max(1, args.images):.0f} B each; cards (Grad-CAM and contributions) "
        f"{cards / 2**20:.1f} MiB, {cards / max(1, args.images):.0f} B each"
    )
    print("  " + measure_in_chromium(page / contract.INDEX_HTML))
    measures = measure_page(page / contract.INDEX_HTML)
    for line in measures.lines() if measures else []:
        print("  " + line)
    stats = pd.read_parquet(
        folder / contract.REPORT_DIR / contract.CHANNEL_STATS,
        filters=[
            (contract.LAYER, "==", "conv5_3"),
            (contract.STAT, "==", contract.STAT_MEAN),
            (contract.CLASS, "==", "dog"),
            (contract.RANK_SELECTIVITY, "==", 1),
        ],
    )
    print(f"  check: conv5_3 channel ranked first for dog = c{int(stats[contract.CHANNEL].iloc[0])} (planted: c7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
