"""torchrun: two processes on one machine (CPU, no process group needed) write exactly the one-process tables."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from analysis.store import contract, manifest
from tests.run_tables import assert_same_tables, make_dataset, run_job

pytestmark = pytest.mark.slow  # the extract job in child processes

TORCHRUN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "torchrun"


def test_torchrun_two_processes_equal_one_process(tmp_path):
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    data = make_dataset(tmp_path / "train")
    # Each of the two processes gets half the cores (jobs/runtime.py); the reference runs with as many threads.
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    ref = run_job(data, tmp_path / "one", env={"OMP_NUM_THREADS": threads})
    assert ref.returncode == 0, ref.stderr[-2000:]
    r = run_job(data, tmp_path / "two", launcher=[torchrun, "--standalone", "--nproc_per_node=2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(torchrun RANK/WORLD_SIZE)" in r.stderr
    manifest.check_complete(tmp_path / "two")
    assert_same_tables(tmp_path / "two", tmp_path / "one")
    meta = json.loads((tmp_path / "two" / contract.RUN_JSON).read_text())
    assert sorted(p["shard"] for p in meta["shards"]["processes"]) == ["0/2", "1/2"]  # units 0, 2 and unit 1
    assert meta["counts"]["found"] == 8 and meta["counts"]["ok"] == 7


def test_slurm_array_script_runs_one_shard_per_task(tmp_path):
    """jobs/slurm/extract-array-cpu.sbatch as two array tasks, with an `srun` that just runs its command."""
    import subprocess

    from tests.run_tables import FLAGS, ROOT

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (fake / "srun").chmod(0o755)
    data = make_dataset(tmp_path / "train")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CNN_BLACKBOX_"))}
    env.update(
        PATH=f"{fake}:{env['PATH']}",
        SLURM_SUBMIT_DIR=str(ROOT),
        SLURM_CPUS_PER_TASK="1",
        SLURM_ARRAY_TASK_COUNT="2",
        SLURM_ARRAY_TASK_MIN="0",
    )
    for task in ("1", "0"):
        r = subprocess.run(
            ["bash", str(ROOT / "jobs/slurm/extract-array-cpu.sbatch"), str(data), str(out), *FLAGS],
            env={**env, "SLURM_ARRAY_TASK_ID": task},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"shard {task}/2 (Slurm SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT)" in r.stderr
    manifest.check_complete(out)
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert sorted(p["shard"] for p in meta["shards"]["processes"]) == ["0/2", "1/2"]
