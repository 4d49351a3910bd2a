"""Benchmark of the report stage on a synthetic run written straight to Parquet: time and peak memory.

    python -m benchmarks.bench_report [--images 200000] [--dir .bench/report] [--memory-mb 256]

The run has VGG16's 13 layers (4,224 channels, means and maxima) for --images images, written with
analysis/store/synthetic.py and reused on the next call when its parameters match. The report
runs in a child process (`python -m jobs.report --no-overlays`: the synthetic run has no image files to re-run),
so its peak resident memory is measured alone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis.store import contract
from analysis.config import LAYER_NAMES

VGG16_CHANNELS = dict(zip(LAYER_NAMES, (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)))
ROOT = Path(__file__).resolve().parents[1]


def make_run(folder: Path, images: int, seed: int = 0) -> float:
    """The synthetic run in `folder`, reused only when written with the same parameters; seconds spent writing."""
    from analysis.store.synthetic import write_synthetic_run  # noqa: PLC0415  (the tests' helper, also used here)

    params = {"images": images, "layers": VGG16_CHANNELS, "seed": seed, "unit_size": 2048,
              "planted": ["conv5_3", 7, "dog"], "format": contract.FORMAT_VERSION}
    stamp = folder / "bench-params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params and (folder / contract.RUN_JSON).is_file():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_run(folder, n_images=images, layers=VGG16_CHANNELS, planted=("conv5_3", 7, "dog"),
                        unit_size=2048, seed=seed, n_errors=min(100, images // 100))
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


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_report", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200_000, help="images in the synthetic run (default 200000)")
    p.add_argument("--dir", type=Path, default=None, help="where the synthetic run lives (default .bench/report-N)")
    p.add_argument("--memory-mb", type=int, default=256, help="report.stats_memory_mb (default 256)")
    args = p.parse_args()
    folder = args.dir or ROOT / ".bench" / f"report-{args.images}"
    write_s = make_run(folder, args.images)
    parquet_bytes = sum(f.stat().st_size for f in folder.rglob("*.parquet") if "report" not in f.parts)
    _, base, _ = run_child([sys.executable, "-c", "import jobs.report"])  # torch, pandas, matplotlib loaded
    seconds, peak, log = run_child([sys.executable, "-m", "jobs.report", "--run", str(folder), "--no-overlays",
                                    "--no-progress", "--set", f"stats_memory_mb={args.memory_mb}"])
    channels = sum(VGG16_CHANNELS.values())
    values = args.images * channels * 2
    print(f"synthetic run: {args.images:,} images x 13 layers ({channels:,} channels, means and maxima) = "
          f"{values / 1e9:.2f} G values, {parquet_bytes / 2**30:.2f} GiB of Parquet in {folder}"
          + (f" (written in {write_s:.0f} s)" if write_s else " (reused)"))
    print(f"report stage: {seconds:.1f} s wall, {values / seconds / 1e6:.1f} M values/s; peak RSS {peak:.0f} MiB "
          f"(stats_memory_mb={args.memory_mb}), of which {base:.0f} MiB is importing the job (torch, pandas, ...)")
    print("  " + log.strip().splitlines()[-1])
    page = folder / contract.REPORT_DIR
    files = sum(f.stat().st_size for f in page.rglob("*") if f.is_file() and f.suffix != ".parquet")
    print(f"  page: index.html {(page / contract.INDEX_HTML).stat().st_size / 2**20:.1f} MiB, with its figures and "
          f"tiles {files / 2**20:.1f} MiB (budget for 25,000 images: 20 MiB)")
    stats = pd.read_parquet(folder / contract.REPORT_DIR / contract.CHANNEL_STATS,
                            filters=[(contract.LAYER, "==", "conv5_3"), (contract.STAT, "==", contract.STAT_MEAN),
                                     (contract.CLASS, "==", "dog"), (contract.RANK_SELECTIVITY, "==", 1)])
    print(f"  check: conv5_3 channel ranked first for dog = c{int(stats[contract.CHANNEL].iloc[0])} (planted: c7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
