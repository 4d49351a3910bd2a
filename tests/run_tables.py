"""Helpers of the cluster tests: a small dataset, the job's flags, and the tables of a run compared exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.store import contract, tables
from tests.helpers import write_image

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("conv1_1",)
ATTRIBUTED = ("conv5_3",)  # the contribution tables are compared like the others
# 8 files in units of 3 (3 units) and batches of 2: batches 2+1 in every unit, whatever the shards.
FLAGS = [
    "--weights",
    "random",
    "--image-size",
    "64",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--no-progress",
    "--layers",
    ",".join(LAYERS),
    "--unit-size",
    "3",
    "--attribution-layers",
    ",".join(ATTRIBUTED),
]


def make_dataset(root: Path) -> Path:
    for i in range(7):
        write_image(root / f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg", seed=i)
    (root / "dog.7.jpg").write_bytes(b"")  # a bad file: a row with its error, no activations
    return root


def run_job(
    data: Path, out: Path, *extra: str, env: dict | None = None, launcher: list[str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """The extract job in a child process (so that it can be killed): `python -m jobs.extract` or a launcher."""
    cmd = (launcher or [sys.executable]) + [
        "-m",
        "jobs.extract",
        "--data",
        str(data),
        "--out",
        str(out),
        *FLAGS,
        *extra,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CNN_BLACKBOX_"))}
    child_env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(cmd, cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=timeout)


def read_tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every table of a run, rows sorted by image_id."""
    dirs = {"predictions": out / contract.PREDICTIONS}
    for layer in LAYERS:
        dirs[f"mean/{layer}"] = contract.activation_dir(out, layer, "mean")
        dirs[f"max/{layer}"] = contract.activation_dir(out, layer, "max")
        dirs[f"peak/{layer}"] = contract.activation_dir(out, layer, contract.STAT_PEAK)
    for cls in ("cat", "dog"):
        for layer in ATTRIBUTED:
            dirs[f"contrib/{cls}/{layer}"] = contract.attribution_dir(out, cls, layer)
        dirs[f"gradcam/{cls}"] = contract.gradcam_dir(out, cls, ATTRIBUTED[-1])
    return {name: pd.read_parquet(d).sort_values(contract.IMAGE_ID).reset_index(drop=True) for name, d in dirs.items()}


def assert_same_tables(out: Path, reference: Path) -> None:
    """The same rows and bit-identical values: batches are the same in both runs (see analysis/store/shards.py)."""
    got, want = read_tables(out), read_tables(reference)
    for name in want:
        assert got[name][contract.IMAGE_ID].is_unique, f"{name}: an image appears twice"
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)
    assert len(tables.list_parts(out / contract.PREDICTIONS)) == len(
        tables.list_parts(reference / contract.PREDICTIONS)
    )
