"""Benchmark of the report's dataset checks (report_qa) on a synthetic run: time and peak memory at 25,000 images.

    python -m benchmarks.bench_checks [--images 25000] [--dir .bench/checks-N] [--memory-mb 256]

The run has conv5_3 (512 channel means) for --images images, written with analysis/store/synthetic.py and reused
when its parameters match. Each measurement is a child process (reading the table, the checks, writing
dataset_issues.parquet: jobs.report.write_dataset_issues with the default config), so its peak resident memory is
its own;
the cost of importing the job is measured apart. The default (approximate above report_qa.exact_max_images) runs
before and after the exact search, so the machine's drift shows as the spread of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.store import contract

ROOT = Path(__file__).resolve().parents[1]


def make_run(folder: Path, images: int, seed: int = 0) -> float:
    """The synthetic run in `folder`, reused only when written with the same parameters; seconds spent writing."""
    from analysis.store.synthetic import SyntheticRun, write_synthetic_run  # noqa: PLC0415  (the tests' helper)

    params = {"images": images, "layers": {"conv5_3": 512}, "seed": seed, "format": contract.FORMAT_VERSION}
    stamp = folder / "bench-params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params and (folder / contract.RUN_JSON).is_file():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_run(
        folder,
        SyntheticRun(
            n_images=images, layers={"conv5_3": 512}, unit_size=2048, seed=seed, n_errors=min(100, images // 100)
        ),
    )
    stamp.write_text(json.dumps(params))
    return time.perf_counter() - t


def child(run: Path, sets: list[str]) -> None:
    """In the child: the report's checks step alone, as the report runs it; prints its figures as JSON."""
    from analysis.config import make_config, parse_override, read_config_section  # noqa: PLC0415
    from analysis.store import tables  # noqa: PLC0415
    from analysis.store.run import read_finished_run  # noqa: PLC0415
    from jobs import report  # noqa: PLC0415
    from jobs.config import DatasetIssuesConfig  # noqa: PLC0415

    qa = make_config(DatasetIssuesConfig, {**read_config_section(None, "report_qa"), **dict(map(parse_override, sets))})
    meta = read_finished_run(run).meta
    t = time.perf_counter()
    found = report.write_dataset_issues(
        qa, read_finished_run(run), tables.read_predictions(run, meta["classes"]), run / contract.REPORT_DIR
    )
    print(
        json.dumps({"seconds": time.perf_counter() - t, "search": found.meta["search"], "counts": found.meta["counts"]})
    )


def hamming_child(run: Path, memory_mb: int) -> None:
    """In the child: the near-duplicate search alone (analysis.stats.hamming) over the run's pHashes."""
    import pandas as pd  # noqa: PLC0415

    from analysis.config import read_config_section  # noqa: PLC0415
    from analysis.stats.hamming import compute_hamming_pairs  # noqa: PLC0415

    radius = read_config_section(None, "report_qa")["near_duplicate_bits"]
    hashes = pd.read_parquet(run / contract.PREDICTIONS, columns=[contract.PHASH], dtype_backend="numpy_nullable")[
        contract.PHASH
    ].dropna()  # Int64: never float64
    t = time.perf_counter()
    a, _, _ = compute_hamming_pairs(hashes.to_numpy("int64"), radius, memory_mb << 20)
    print(json.dumps({"seconds": time.perf_counter() - t, "hashes": len(hashes), "pairs": len(a), "radius": radius}))


def run_child(cmd: list[str]) -> tuple[float, str]:
    """Peak RSS (MiB, of this child alone: os.wait4; Linux counts KiB) and stdout of a child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
        return usage.ru_maxrss / 1024, out.read()


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_checks", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--images", type=int, default=25_000, help="images in the synthetic run (default 25000)")
    p.add_argument("--dir", type=Path, default=None, help="where the synthetic run lives (default .bench/checks-N)")
    p.add_argument("--memory-mb", type=int, default=256, help="report_qa.memory_mb (default 256)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--hamming-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--set", dest="sets", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.sets)
        return 0
    if args.hamming_child:
        hamming_child(args.hamming_child, args.memory_mb)
        return 0
    folder = args.dir or ROOT / ".bench" / f"checks-{args.images}"
    write_s = make_run(folder, args.images)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        f"(shared: other work moves these figures)"
    )
    print(
        f"synthetic run: {args.images:,} images, conv5_3 (512 channel means) in {folder}"
        + (f" (written in {write_s:.0f} s)" if write_s else " (reused)")
    )
    base, _ = run_child([sys.executable, "-c", "import jobs.report, cleanlab.filter, cleanlab.outlier"])
    me = [
        sys.executable,
        "-m",
        "benchmarks.bench_checks",
        "--child",
        str(folder),
        "--set",
        f"memory_mb={args.memory_mb}",
    ]
    rows = []
    for name, extra in (
        ("default", []),
        ("exact search", ["--set", f"exact_max_images={args.images}"]),
        ("default, again", []),
    ):
        peak, out = run_child(me + extra)
        rows.append((name, peak, json.loads(out.strip().splitlines()[-1])))
    for name, peak, fig in rows:
        print(
            f"  {name:15s} {fig['seconds']:6.1f} s, peak RSS {peak:5.0f} MiB ({peak - base:+.0f} MiB over "
            f"importing the job and cleanlab, {base:.0f} MiB); {fig['search']}; "
            + ", ".join(f"{v} {k}" for k, v in fig["counts"].items())
        )
    base_np, _ = run_child([sys.executable, "-c", "import pandas, pyarrow.parquet, analysis.stats.hamming"])
    peak, out = run_child(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_checks",
            "--hamming-child",
            str(folder),
            "--memory-mb",
            str(args.memory_mb),
        ]
    )
    fig = json.loads(out.strip().splitlines()[-1])
    n = fig["hashes"]
    print(
        f"  near-duplicate search alone (blocked XOR + bitwise_count, {args.memory_mb} MiB blocks): {n:,} pHashes, "
        f"{n * (n - 1) // 2:,} pairs in {fig['seconds']:.2f} s, {fig['pairs']} within {fig['radius']} bits (random "
        f"hashes); peak RSS {peak:.0f} MiB ({peak - base_np:+.0f} MiB over importing pandas and pyarrow)"
    )
    default = [fig["seconds"] for name, _, fig in rows if name.startswith("default")]
    print(
        f"  default: {min(default):.1f}-{max(default):.1f} s (spread {max(default) / min(default):.2f}x); "
        f"exact / default {rows[1][2]['seconds'] / (sum(default) / 2):.2f}x (target: under 60 s at 25,000)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
