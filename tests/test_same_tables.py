"""A run's tables and its report's tables are, bit for bit, those that the baseline commit writes from the same data.

The baseline is the last commit whose outputs the team accepted (before the structure work of issue #19). Both trees
run in child processes with this interpreter, on one dataset written here: labeled cats and dogs in class folders, a
bad file, and an image in a subfolder. Every Parquet file under OUT (the extract's parts and report/*.parquet) must
exist in both, with equal schemas, equal key-value metadata (wall times, pids and dates aside) and equal values;
run.json, manifest.json and the unit manifests likewise. A change meant to alter a table moves BASELINE to the
commit that makes it, in the same commit, saying why.

One deliberate exception, without moving BASELINE: since issue #20 top_examples.parquet also holds each class's
strongest drivers at the deepest attributed layer (the page's first screen shows their images), after its most
selective channels. Its rows are compared restricted to the rows the baseline has (by layer, class, scope, channel
and image rank, in the table's order), which must be there, equal, and in the same order; the rows it adds must
be of channels the baseline's table does not show for that layer and class.

And one addition (issue #20): the extract also writes activations_peak/<layer>/ and gradcam/<class>/<layer>/, and
the metadata (every table's, run.json, manifest.json's meta) gains "peak_grid" and "gradcam". Those folders, keys,
and the unit manifests' parts in them (and their count in run.json) are set aside, each checked present; so is the
report's new report/channel_tops.parquet (every channel's top images, tested in test_channel_tops.py). The new tree's
report runs with top_images 9, the baseline's default (8 since issue #20); everything else is compared as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import write_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "77c17ba784798277cc8ff05d1c2a604716fdad52"
# Keys whose values are wall times, dates, processes or this tree's paths: they differ between any two runs.
VOLATILE = {
    "seconds",
    "finished",
    "created",
    "created_unix",
    "timings",
    "extract_seconds",
    "pid",
    "host",
    "images_per_s",
}
EXTRACT = [
    "--weights",
    "random",
    "--image-size",
    "64",
    "--batch-size",
    "3",
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--no-progress",
    "--unit-size",
    "4",
    "--layers",
    "conv1_1,conv4_3,conv5_3",
]


def make_dataset(root: Path) -> Path:
    for i in range(5):
        write_image(root / "cat" / f"c{i}.jpg", size=(72, 60), seed=i)
        write_image(root / "dog" / f"d{i}.jpg", size=(60, 80), seed=10 + i)
    write_image(root / "cat" / "more" / "c9.png", seed=9, fmt="PNG")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def export_baseline(dest: Path) -> Path | None:
    """The baseline's tracked files in dest (git archive: the repository is left as it is); None without it."""
    have = subprocess.run(["git", "cat-file", "-e", f"{BASELINE}^{{commit}}"], cwd=ROOT, capture_output=True)
    if have.returncode != 0:
        return None
    dest.mkdir()
    archive = subprocess.run(["git", "archive", BASELINE], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_both_stages(tree: Path, data: Path, out: Path, report_args: tuple[str, ...] = ()) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CNN_BLACKBOX_"))}
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    for cmd in (
        ["-m", "jobs.extract", "--data", str(data), "--out", str(out), *EXTRACT],
        ["-m", "jobs.report", "--run", str(out), "--no-progress", "--device", "cpu", *report_args],
    ):
        done = subprocess.run([sys.executable, *cmd], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{tree.name}: {' '.join(cmd[:2])} failed:\n{done.stderr[-3000:]}"


ADDED_TABLES = (
    "activations_peak/",
    "gradcam/",
    "report/channel_tops.parquet",
    "report/concept_images.parquet",  # issue #21: tested in tests/test_concepts*.py
    "report/concepts.parquet",
)
ADDED_KEYS = ("peak_grid", "gradcam")
# Issue #23: how each process ran (tests/test_compiled_reductions.py, tests/test_device_decode_extract.py check them).
EXECUTION_KEYS = ("reductions", "compile_seconds", "decode")


def drop_additions(doc: dict) -> dict:
    """A table's metadata, run.json or a manifest less what issues #20 and #23 add (checked there first)."""
    doc = dict(doc)
    for key in ("meta",) if "meta" in doc else ():
        doc[key] = drop_additions(doc[key])
    if "layers" in doc and "format_version" in doc:  # a run's metadata
        assert all(key in doc for key in ADDED_KEYS), sorted(doc)
        doc = {k: v for k, v in doc.items() if k not in ADDED_KEYS}
    if "timings" in doc:  # run.json
        doc["timings"] = {k: v for k, v in doc["timings"].items() if k not in EXECUTION_KEYS}
    doc = {k: v for k, v in doc.items() if k not in EXECUTION_KEYS}
    if "parts" in doc:  # a unit manifest
        added = [p for p in doc["parts"] if p.startswith(ADDED_TABLES)]
        assert added, "a unit without the peak and Grad-CAM parts"
        doc["parts"] = [p for p in doc["parts"] if p not in added]
    return doc


def drop_volatile(value):
    if isinstance(value, dict):
        return {k: drop_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [drop_volatile(v) for v in value]
    return value


def read_metadata(path: Path) -> dict:
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): drop_volatile(json.loads(v)) if v[:1] in (b"{", b"[") else v.decode() for k, v in raw.items()}


def list_outputs(out: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob(pattern) if not p.name.startswith("."))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("same_tables")
    baseline = export_baseline(tmp / "baseline")
    if baseline is None:
        pytest.skip(f"baseline commit {BASELINE[:10]} is not in this clone (a shallow clone): fetch the history")
    data = make_dataset(tmp / "data")
    run_both_stages(baseline, data, tmp / "before")
    run_both_stages(ROOT, data, tmp / "after", ("--set", "top_images=9"))  # the baseline's default
    return tmp / "before", tmp / "after"


def test_every_parquet_file_is_the_baseline_s_bit_for_bit(runs):
    before, after = runs
    files = list_outputs(before, "*.parquet")
    added = [f for f in list_outputs(after, "*.parquet") if f.startswith(ADDED_TABLES)]
    assert {f.split("/")[0] for f in added} == {"activations_peak", "gradcam", "report"}
    assert files == [f for f in list_outputs(after, "*.parquet") if f not in added]
    assert any(f.startswith("attributions/") for f in files) and "report/dataset_issues.parquet" in files
    for rel in files:
        old, new = pq.read_table(before / rel), pq.read_table(after / rel)
        if rel == "report/top_examples.parquet":
            new = restrict_to_baseline_rows(old, new)
        assert new.schema.remove_metadata() == old.schema.remove_metadata(), rel
        assert new.replace_schema_metadata().equals(old.replace_schema_metadata()), f"{rel}: values differ"
        new_meta = {k: drop_additions(v) if isinstance(v, dict) else v for k, v in read_metadata(after / rel).items()}
        assert new_meta == read_metadata(before / rel), f"{rel}: metadata differs"


def restrict_to_baseline_rows(old, new):
    """`new`'s rows whose key is one of `old`'s, in `new`'s order; the others must be of channels `old` does not
    show for their layer and class (the drivers that issue #20 adds)."""
    key = ["layer", "class", "scope", "channel", "image_rank"]
    had = set(zip(*(old.column(k).to_pylist() for k in key)))
    shown = set(zip(*(old.column(k).to_pylist() for k in key[:2] + ["channel"])))
    rows = list(zip(*(new.column(k).to_pylist() for k in key)))
    keep = [row in had for row in rows]
    assert all(k or (r[0], r[1], r[3]) not in shown for k, r in zip(keep, rows)), "added rows of a shown channel"
    return new.filter(keep)


def test_run_json_and_manifests_are_the_baseline_s(runs):
    before, after = runs
    files = list_outputs(before, "*.json")
    assert files == list_outputs(after, "*.json") and "run.json" in files and "units/part-00000.json" in files
    added = len([f for f in list_outputs(after, "*.parquet") if f.startswith(ADDED_TABLES[:2])])
    for rel in files:
        old, new = (drop_volatile(json.loads((d / rel).read_text())) for d in (before, after))
        new = drop_additions(new)
        if rel == "run.json":
            new["tables"]["files"] -= added
        assert new == old, rel
