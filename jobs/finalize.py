"""Finalize: mark a run whose units are all done as complete, by writing OUT/run.json once.

    python -m jobs.finalize --run OUT          (make finalize RUN=OUT)

The extract job does this itself in whichever shard finishes last; this command is for a run whose last shard was
killed after its last unit, or to check a run by hand. The counts come from every unit's manifest (summed over all
shards), checked against the Parquet parts on disk, never from one process's counters.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from analysis.config import ConfigError
from analysis.stats.summary import compute_accuracy
from analysis.store import contract, layout, manifest
from analysis.store.crashpoints import crash_point
from analysis.store.run import read_finished_run
from jobs import cli, run_metadata, runtime

log = logging.getLogger("cnn_blackbox")


def finalize_run(out: str | os.PathLike) -> tuple[dict, bool]:
    """(run.json's contents, whether this call wrote it). IncompleteRunError when a unit is missing."""
    out = Path(out)
    if (out / contract.RUN_JSON).is_file():
        return dict(read_finished_run(out, strict=False).meta), False
    run = manifest.read_run_manifest(out)
    if run is None:
        raise manifest.IncompleteRunError(
            f"run {str(out)!r}: no {manifest.MANIFEST_JSON}; RUN must be the OUT of an extract run"
        )
    missing = manifest.find_missing_units(out, run)
    if missing:
        raise manifest.IncompleteRunError(
            f"run {str(out)!r}: {len(missing)} of {run['n_units']} units missing; "
            f"{manifest.describe_missing(missing, run['shards'])}; rerun them (the same "
            "command resumes)"
        )
    units = manifest.read_unit_manifests(out, run["identity_sha256"])  # all there: their parts and counts
    check_parts(out, run, units)
    crash_point("before-finalize")
    summary = make_summary(run, units)
    if manifest.write_json_exclusive(summary, out / contract.RUN_JSON):
        return summary, True
    return dict(read_finished_run(out, strict=False).meta), False  # another shard finished at the same moment


def check_parts(out: Path, run: dict, units: dict[int, dict]) -> None:
    """Every unit has a part in every table of the run (analysis/store/layout.py), every part its manifest names is
    on disk, and each predictions part holds that unit's files."""
    listed: dict[Path, set[str]] = {}
    meta = run["meta"]
    for k, u in sorted(units.items()):
        expected = layout.list_unit_parts(layout.ValueLayout.from_meta(meta), k)
        lacking = [p for p in expected if p not in u["parts"]]
        if lacking:
            raise manifest.IncompleteRunError(
                f"run {str(out)!r}: unit {k} has no part in {len(lacking)} of the run's tables "
                f"({', '.join(lacking[:3])}{' ...' if len(lacking) > 3 else ''}); delete "
                f"{manifest.unit_manifest_path(out, k)} and rerun its shard to redo the unit"
            )
        for rel in u["parts"]:
            folder = (out / rel).parent
            if folder not in listed:
                listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
            if Path(rel).name not in listed[folder]:
                raise manifest.IncompleteRunError(
                    f"run {str(out)!r}: unit {k} names {rel}, which is missing; delete "
                    f"{manifest.unit_manifest_path(out, k)} and rerun its shard to redo the unit"
                )
        rows = pq.ParquetFile(out / contract.PREDICTIONS / contract.part_name(k)).metadata.num_rows
        if rows != u["counts"]["files"]:
            raise manifest.IncompleteRunError(
                f"run {str(out)!r}: unit {k}: predictions part has {rows} rows, its manifest {u['counts']['files']}"
            )
    files = sum(u["counts"]["files"] for u in units.values())
    if files != run["n_images"]:
        raise manifest.IncompleteRunError(
            f"run {str(out)!r}: units hold {files} files, the run found {run['n_images']}"
        )


def make_summary(run: dict, units: dict[int, dict]) -> dict:
    """run.json: the creator's metadata, counts summed over the units, timings, tables, who did the work."""
    c = manifest.sum_counts(units.values())
    d = run["discovery"]
    devices = sorted({u["device"] for u in units.values()})
    decodes = sorted({u.get("decode", "cpu") for u in units.values()})  # a unit written before --decode: cpu
    busy = sum(float(u["seconds"]) for u in units.values())
    wall = time.time() - float(run["created_unix"])
    processes = Counter((u["host"], u["shard"], u["device"]) for u in units.values())
    compiling = {(u["host"], u["shard"], u["device"]): float(u.get("compile_seconds", 0)) for u in units.values()}
    return {
        **run["meta"],
        "device": devices[0] if len(devices) == 1 else ", ".join(devices),
        "decode": ", ".join(decodes),
        "complete": True,
        "finished": manifest.now(),
        "counts": {
            "found": run["n_images"],
            "ok": c["ok"],
            "error": c["error"],
            "errors_by_reason": c["errors_by_reason"],
            "skipped": sum(d["skipped"].values()),
            "skipped_by_reason": d["skipped"],
            "skipped_examples": d["skipped_examples"],
            "labeled": c["labeled"],
            "correct": c["correct"],
            "accuracy": compute_accuracy(c["correct"], c["labeled"]),
        },
        # seconds: wall time from the run's creation (resumes included); extract_seconds: time spent on units,
        # summed over every process; images_per_s: per process, over that time.
        "timings": {
            "seconds": round(wall, 3),
            "extract_seconds": round(busy, 3),
            "images_per_s": round(run["n_images"] / busy, 3) if busy > 0 else None,
            "compile_seconds": round(sum(compiling.values()), 3),  # the reductions' (analysis/model/compiled.py)
        },
        "reductions": ", ".join(sorted({u.get("reductions", "eager") for u in units.values()})),
        "tables": {
            "units": run["n_units"],
            "unit_size": run["unit_size"],
            "files": sum(len(u["parts"]) for u in units.values()),
        },
        "shards": {
            "count": run["shards"],
            "processes": [
                {"host": h, "shard": s, "device": dev, "units": n} for (h, s, dev), n in sorted(processes.items())
            ],
        },
    }


def main(out: str) -> int:
    summary, wrote = finalize_run(out)
    if wrote:
        run_metadata.log_summary(Path(out), summary)
    else:
        log.info("%s was already complete (%s)", out, summary.get("finished"))
    return 0


def parse(argv: list[str] | None = None) -> str:
    p = cli.ArgumentParser(prog="python -m jobs.finalize", description=__doc__.splitlines()[0])
    p.add_argument("--run", help="the OUT of an extract run")
    args = p.parse_args(argv)
    if not args.run:
        raise ConfigError(
            "run: RUN is required: pass --run runs/<name>, the OUT of a sharded extract run (make "
            "finalize RUN=runs/<name>)"
        )
    return args.run


if __name__ == "__main__":
    runtime.setup_logging()
    sys.exit(cli.run_main(parse, main, "finalize"))
