"""Benchmark of a run at cluster scale without the model: discovery, resume planning, finalize, the report's first pass.

    python -m benchmarks.bench_scale [--images 1000000] [--shards 64] [--unit-size 2048] [--dir .bench/scale-N]

1. discovery: `find_images` over a flat folder of --images empty files named cat.N.jpg / dog.N.jpg (names are all
   discovery reads; made once and reused);
2. a synthetic run written by the real UnitWriter in --shards shards (part files and unit manifests, one small layer
   of --channels channels to keep the disk small), with the last unit of every 8th shard left out: a preempted
   launch;
3. resume planning, as each process does it at start: its units, the manifests of the run, stale temp files;
4. the missing units written, then finalize (check every part, sum the counts, write run.json);
5. the report's first pass: the completeness check, the predictions columns the report reads and the class of
   every image (analysis/store/tables.read_predictions, groups.make_groups), and one activation table's
   image ids (blocks.read_image_ids, what every table's statistics start with).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from analysis.data.discovery import find_images
from analysis.stats.groups import make_groups
from analysis.store import blocks, contract, manifest, tables
from analysis.store.layout import ValueLayout
from analysis.store.shards import Shard, iter_unit_sizes, make_units, select_units
from analysis.store.writer import UnitSchemas, UnitWriter
from jobs import finalize

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog")
LAYER = "conv1_1"


def make_files(folder: Path, n: int) -> float:
    """n empty image files, made once (a stamp says how many); seconds spent."""
    stamp = folder.parent / "files.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"images": n}:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t = time.perf_counter()
    for i in range(n):
        open(folder / f"{CLASSES[i % 2]}.{i}.jpg", "wb").close()
    stamp.write_text(json.dumps({"images": n}))
    return time.perf_counter() - t


def make_rows(ids: list[str], labels: list[str], rng: np.random.Generator) -> tuple[dict, list[bool]]:
    n = len(ids)
    p = rng.random(n).astype(np.float32)
    pred = np.where(p > 0.5, "dog", "cat")
    rows = {
        contract.IMAGE_ID: ids,
        contract.SPLIT: [None] * n,
        contract.LABEL: labels,
        contract.STATUS: ["ok"] * n,
        contract.ERROR: [None] * n,
        contract.WIDTH: [500] * n,
        contract.HEIGHT: [375] * n,
        contract.FORMAT: ["JPEG"] * n,
        contract.logit_column("cat"): (-p).tolist(),
        contract.logit_column("dog"): p.tolist(),
        contract.prob_column("cat"): (1 - p).tolist(),
        contract.prob_column("dog"): p.tolist(),
        contract.PRED: pred.tolist(),
        contract.CONFIDENCE: np.maximum(p, 1 - p).tolist(),
        contract.CORRECT: (pred == np.array(labels)).tolist(),
    }
    return rows, [True] * n


def write_units(out: Path, records, units, shard: Shard, channels: int, identity_sha: str, seed: int) -> None:
    """What a shard's process writes for `units`, with random activations instead of the model's."""
    rng = np.random.default_rng(seed)
    values = ValueLayout({LAYER: channels})
    w = UnitWriter(
        out,
        values,
        UnitSchemas.make(CLASSES, False, values, {}),
        1,
        units=iter_unit_sizes(units),
        stamp={"identity_sha256": identity_sha, "shard": str(shard), "device": "synthetic", "batch_size": 0},
    )
    for u in units:
        recs = records[u.start : u.stop]
        rows, ok = make_rows([r.image_id for r in recs], [r.label for r in recs], rng)
        w.add(rows, ok, rng.random((len(recs), values.width), dtype=np.float32))
    w.close()


def make_run_manifest(found, unit_size: int, shards: int, channels: int) -> dict:
    meta = {
        "tool": "cnn-blackbox",
        "format_version": contract.FORMAT_VERSION,
        "model": "vgg16",
        "weights": {"id": "synthetic", "path": None, "sha256": None, "head": "classes", "random": True, "seed": 0},
        "classes": list(CLASSES),
        "class_map": None,
        "layers": {LAYER: channels},
        "preprocess": {"name": "synthetic"},
        "precision": "fp32",
        "device": "synthetic",
        "batch_size": 0,
        "workers": 0,
        "unit_size": unit_size,
        "data": {
            "path": found.root,
            "layout": found.layout,
            "labels_csv": None,
            "fingerprint": manifest.compute_ids_digest(r.image_id for r in found.records),
        },
    }
    identity = manifest.make_identity(meta, found.records, 0, 0)
    return {
        "tool": "cnn-blackbox",
        "identity": identity,
        "identity_sha256": manifest.compute_identity_digest(identity),
        "meta": meta,
        "created": manifest.now(),
        "created_unix": time.time(),
        "n_images": found.n_images,
        "unit_size": unit_size,
        "n_units": -(-found.n_images // unit_size),
        "shards": shards,
        "discovery": {"root": found.root, "layout": found.layout, "skipped": {}, "skipped_examples": []},
    }


def plan_shard(out: Path, run: dict, shard: Shard) -> int:
    """What jobs/extract.py does before its loop: this shard's units, less those committed; stale temps removed."""
    mine = select_units(make_units(run["n_images"], run["unit_size"]), shard)
    return len(manifest.plan_resume(out, mine, run["identity_sha256"], ValueLayout.from_meta(run["meta"])))


def timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=64)
    p.add_argument("--unit-size", type=int, default=2048)
    p.add_argument("--channels", type=int, default=8, help="channels of the one synthetic layer (default 8)")
    p.add_argument("--dir", type=Path, default=None, help="default .bench/scale-<images>")
    args = p.parse_args()
    folder = args.dir or ROOT / ".bench" / f"scale-{args.images}"
    data, out = folder / "data" / "train", folder / "run"

    made = make_files(data, args.images)
    found, t_discover = timed(find_images, data)
    print(
        f"discovery: {found.n_images:,} files in {t_discover:.2f} s"
        + (f" (made in {made:.0f} s)" if made else " (files reused)")
    )

    shutil.rmtree(out, ignore_errors=True)
    run = make_run_manifest(found, args.unit_size, args.shards, args.channels)
    manifest.write_json_exclusive(run, out / manifest.MANIFEST_JSON)
    sha, units = run["identity_sha256"], make_units(found.n_images, args.unit_size)
    shards = [Shard(i, args.shards, "bench") for i in range(args.shards)]
    left_out = {i: select_units(units, s)[-1:] for i, s in enumerate(shards) if i % 8 == 0}
    t = time.perf_counter()
    for i, s in enumerate(shards):
        mine = select_units(units, s)
        write_units(out, found.records, [u for u in mine if u not in left_out.get(i, [])], s, args.channels, sha, i)
    t_write = time.perf_counter() - t
    n_files = sum(1 for _ in out.rglob("*.parquet")) + sum(1 for _ in (out / manifest.UNITS).iterdir())
    print(
        f"synthetic run: {len(units)} units of {args.unit_size} in {args.shards} shards, {n_files:,} files, "
        f"{sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.0f} MiB, written in {t_write:.1f} s "
        f"({sum(len(v) for v in left_out.values())} units left out: preempted)"
    )

    todo, t_plan = timed(plan_shard, out, run, shards[0])
    t = time.perf_counter()
    todos = [plan_shard(out, run, s) for s in shards]
    t_plan_all = time.perf_counter() - t
    print(
        f"resume planning: {t_plan * 1000:.0f} ms for one shard ({todo} of its units to redo); "
        f"{t_plan_all:.2f} s for all {args.shards} one after the other ({sum(todos)} units to redo)"
    )

    for i, left in left_out.items():
        write_units(out, found.records, left, shards[i], args.channels, sha, 1000 + i)
    (summary, _), t_final = timed(finalize.finalize_run, out)
    print(
        f"finalize: {t_final:.2f} s (every part checked, counts summed over {len(units)} unit manifests; "
        f"found {summary['counts']['found']:,}, ok {summary['counts']['ok']:,})"
    )

    t = time.perf_counter()
    manifest.check_complete(out)
    predictions = tables.read_predictions(out, CLASSES)
    make_groups(predictions, CLASSES)  # timed: the report's first pass
    t_groups = time.perf_counter() - t
    ids, t_ids = timed(blocks.read_image_ids, contract.activation_dir(out, LAYER))
    print(
        f"report first pass: {t_groups:.2f} s for completeness + predictions ({len(predictions):,} rows) + groups; "
        f"{t_ids:.2f} s for one activation table's {len(ids):,} image ids"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
