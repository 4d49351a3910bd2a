"""The pages a user meets first, measured in Debian's chromium (issue #20's measures): the demo's and the 20 real
photos' report pages, each built here as a user builds it, then opened at 1,400 x 900.

    python -m benchmarks.bench_pages [--dir .bench/pages] [--reuse]

The demo is `python -m jobs.demo --out DIR/demo`; the real photos (../shared/data/real-photos, skipped where it is
absent) are extracted with random weights (no download here) and reported with the defaults, as `make analyze`
does. --reuse measures pages already built in DIR. What is printed per page: see benchmarks/page_measures.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from analysis.store import contract
from benchmarks.machine import describe_cpu
from benchmarks.page_measures import measure_page

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos"


def run(cmd: list[str]) -> float:
    """Seconds a job took; its error output when it fails."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def build_demo(folder: Path) -> tuple[Path, str]:
    seconds = run(["-m", "jobs.demo", "--out", str(folder)])
    return folder / "run" / contract.REPORT_DIR / contract.INDEX_HTML, f"make demo: {seconds:.0f} s"


def build_real_photos(folder: Path) -> tuple[Path, str]:
    extract = ["-m", "jobs.extract", "--data", str(PHOTOS), "--out", str(folder), "--weights", "random"]
    seconds = run([*extract, "--no-progress", "--overwrite"])
    seconds += run(["-m", "jobs.report", "--run", str(folder), "--no-progress"])
    return folder / contract.REPORT_DIR / contract.INDEX_HTML, f"extract and report: {seconds:.0f} s"


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_pages", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--dir", type=Path, default=ROOT / ".bench" / "pages", help="where the runs go")
    p.add_argument("--reuse", action="store_true", help="measure the pages already in --dir")
    args = p.parse_args()
    print(f"machine: {describe_cpu()}")
    pages = [("demo (48 synthetic images)", build_demo, args.dir / "demo")]
    if PHOTOS.is_dir():
        pages.append(("20 real photos, random weights", build_real_photos, args.dir / "real-photos"))
    else:
        print(f"real photos: not measured ({PHOTOS} is absent)")
    for name, build, folder in pages:
        if args.reuse:
            index, how = next(folder.rglob(contract.INDEX_HTML)), "reused"
        else:
            index, how = build(folder)
        m = measure_page(index)
        print(f"{name} ({how}): {index}")
        for line in m.lines() if m else ["not measured: no chromium on this machine"]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
