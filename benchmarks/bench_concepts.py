"""The concept stage against the extract on the same images (issue #21: at most 2x the extract's own time on the CPU,
attribution off): its fixed cost (the sample's forward and the NMF), its per-image cost, peak memory, and both
extrapolated to 25,000 images.

    python -m benchmarks.bench_concepts [--images 2000] [--images-per-class 2000] [--image-size 224]

Writes its own JPEGs (benchmarks/images.py: cat.0.jpg, dog.1.jpg, ...), random weights, fp32, CPU. The extract runs
as a user runs it (python -m jobs.extract, the default layers, --attribution-layers none); the stage runs as
`python -m jobs.concepts` runs it (its config's defaults but `images_per_class`), each in a fresh process that
reports its own peak RSS. Figures move with the machine: the first line says which CPU this is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_extract import whole_extract
from benchmarks.images import write_images
from benchmarks.machine import describe_cpu

ROOT = Path(__file__).resolve().parent.parent
TARGET_IMAGES = 25000


def run_stage(run: str, images_per_class: int) -> dict:
    """In this process: the concept stage over `run` as the job runs it; its metadata's figures and peak RSS."""
    import resource  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from analysis.concepts.stage import compute_concepts  # noqa: PLC0415
    from analysis.config import make_config, read_config_section  # noqa: PLC0415
    from analysis.stats.groups import make_groups  # noqa: PLC0415
    from analysis.store import tables  # noqa: PLC0415
    from analysis.store.run import read_finished_run  # noqa: PLC0415
    from jobs import runtime  # noqa: PLC0415
    from jobs.concepts import make_settings  # noqa: PLC0415
    from jobs.config import ConceptsConfig  # noqa: PLC0415

    runtime.keep_freed_memory()
    t = time.perf_counter()
    cfg = make_config(ConceptsConfig, {**read_config_section(None, "concepts"), "images_per_class": images_per_class})
    finished = read_finished_run(run)
    predictions = tables.read_predictions(finished.path, finished.meta["classes"])
    groups = make_groups(predictions, finished.meta["classes"])
    result = compute_concepts(finished, predictions, groups, make_settings(cfg), torch.device("cpu"))
    meta = result.meta
    return {
        "seconds": time.perf_counter() - t,
        "laps": meta["seconds"],
        "images": meta["images"],
        "iterations": {c: v["iterations"] for c, v in meta["classes"].items()},
        "errors": {c: v["reconstruction_error"] for c, v in meta["classes"].items()},
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "layer": cfg.layer,
        "k": cfg.concepts,
        "notes": list(result.notes),
    }


def run_stage_subprocess(run: Path, images_per_class: int) -> dict:
    code = (
        "import json; from benchmarks.bench_concepts import run_stage; "
        f"print(json.dumps(run_stage({str(run)!r}, {images_per_class})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract_rss_mb(data: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of the extract job in a fresh process, attribution off."""
    import resource  # noqa: PLC0415

    t = time.perf_counter()
    whole_extract(data, out, args.batch_size, args.image_size, "fp32", "none")
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--images-per-class", type=int, default=2000)  # the config's default
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    print(describe_cpu(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "train", Path(tmp) / "out"
        write_images(data, args.images)
        extract_s, extract_mb = extract_rss_mb(data, out, args)
        stage = run_stage_subprocess(out, args.images_per_class)
    laps, n = stage["laps"], stage["images"]
    sampled, streamed = n["sampled"], n["streamed"]
    per_sample = laps["sample_forward"] / max(1, sampled)  # forward below the layer, maps kept
    per_held = laps["project_sample"] / max(1, sampled)  # gradient above the layer, projection
    per_stream = laps["stream"] / streamed if streamed else per_sample + per_held  # both, for an image not sampled
    print(
        f"images={args.images} size={args.image_size} batch={args.batch_size} layer={stage['layer']} k={stage['k']} "
        f"images_per_class={args.images_per_class}: {sampled} sampled, {streamed} streamed"
    )
    print(f"extract (attribution off, fresh process)  {extract_s:8.1f} s  {args.images / extract_s:6.2f} img/s")
    print(f"concept stage (fresh process, in all)     {stage['seconds']:8.1f} s  (model load and reads included)")
    print(f"  fixed: sample forward                   {laps['sample_forward']:8.1f} s  ({per_sample * 1e3:.0f} ms/img)")
    print(f"  fixed: NMF of every class               {laps['fit']:8.1f} s  (iterations {stage['iterations']})")
    print(f"  per image: held maps -> concepts        {per_held * 1e3:8.1f} ms")
    print(f"  per image: streamed (forward + concepts) {per_stream * 1e3:7.1f} ms")
    print(f"reconstruction error per class            {stage['errors']}")
    print(f"peak RSS: extract {extract_mb:.0f} MB, concept stage {stage['rss_mb']:.0f} MB")
    print(f"stage / extract                           {stage['seconds'] / extract_s:8.2f}  (target <= 2)")
    # At 25,000 images (two classes) the default sample is 2 x images_per_class images; the NMF grows with its rows.
    big_sample = min(TARGET_IMAGES, 2 * args.images_per_class)
    fit = laps["fit"] * big_sample / max(1, sampled)
    stage_25k = big_sample * (per_sample + per_held) + fit + (TARGET_IMAGES - big_sample) * per_stream
    extract_25k = extract_s * TARGET_IMAGES / args.images
    print(
        f"extrapolated to {TARGET_IMAGES:,} images: extract {extract_25k / 60:.1f} min, stage {stage_25k / 60:.1f} min "
        f"(fixed {(big_sample * per_sample + fit) / 60:.1f} min), ratio {stage_25k / extract_25k:.2f}"
    )
    for note in stage["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
