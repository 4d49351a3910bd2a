"""benchmarks/bench_gpu.py, which is meant to run once on a GPU machine: its --smoke run takes every code path on
the CPU, a failing or overrunning section does not stop the others, and its table comparison is checked against
planted differences."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from analysis.store import contract
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from benchmarks import bench_gpu
from benchmarks.gpu_jobs import compare_runs

ROOT = bench_gpu.Path(__file__).resolve().parents[1]


# What a stock CUDA image holds (issue #22), besides the standard library and this repository's packages. The
# guard below makes anything else unimportable from our code, in the bench and in every Python process it starts
# (sitecustomize on PYTHONPATH): torchrun's launcher and shards, DataLoader workers.
STOCK = "torch torchvision numpy scipy PIL pandas pyarrow yaml tqdm matplotlib jinja2 safetensors sklearn".split()
OURS = ("analysis", "jobs", "benchmarks", "reports")
GUARD = f"""
import builtins, sys
_real = builtins.__import__
_allowed = set({STOCK!r}) | set({OURS!r}) | set(sys.stdlib_module_names)
def _guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {{}}).get("__name__") or ""
    top = name.split(".")[0]
    if level == 0 and importer.split(".")[0] in {OURS!r} and top not in _allowed:
        print(f"import-guard: {{importer}} imports {{top}}, which a stock GPU machine lacks", file=sys.stderr)
        raise ModuleNotFoundError(f"No module named {{top!r}} (import guard)", name=top)
    return _real(name, globals, locals, fromlist, level)
builtins.__import__ = _guarded
"""


@pytest.mark.slow
def test_smoke_run_takes_every_section_with_only_a_stock_gpu_machines_packages(tmp_path):
    """The system-Python mode: a clean environment whose PYTHONPATH is the repository (and the guard), every process
    refused any package outside STOCK; then every section runs and the verdict ends the output."""
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(GUARD)
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "OMP_NUM_THREADS") if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path / "guard")])
    # The guard first refuses a planted import (cleanlab, installed here) from our code, then the bench runs.
    code = (
        "import builtins, runpy, sys\n"
        "try:\n    builtins.__import__('cleanlab', {'__name__': 'jobs.planted'})\n"
        "except ModuleNotFoundError:\n    pass\nelse:\n    sys.exit('the import guard is off')\n"
        "sys.argv = ['bench_gpu', '--smoke']\nrunpy.run_module('benchmarks.bench_gpu', run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    refused = [line for line in r.stderr.splitlines() if "import-guard" in line]
    assert refused == ["import-guard: jobs.planted imports cleanlab, which a stock GPU machine lacks"], refused
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("versions: python ") and " torch " in lines[0] and " cuDNN " in lines[0]
    assert lines[1].startswith("/dev/shm: ") and " free" in lines[1]
    assert lines[2].startswith("gpu: ") and lines[3].startswith("cpu: ") and "bf16" in lines[3]
    for name in bench_gpu.SECTIONS:
        assert any(line.startswith(f"-- {name}: ok in") for line in lines), f"section {name}:\n{r.stdout[-4000:]}"
    assert "cudnn.benchmark=True" in r.stdout and "on a fresh thread" in r.stdout
    assert "timed after the first round of 2 batches" in r.stdout
    for what in ("attribution off: ", "attribution conv4_3,conv5_3: "):
        assert any(line.startswith("whole extract, default settings, " + what) for line in lines), r.stdout[-4000:]
    assert "torchrun 2 processes on one cpu: 4 images" in r.stdout
    assert (
        "(4 found, 2 processes)" in r.stdout and "jobs.finalize exit 0, run.json written by the shards True" in r.stdout
    )
    # the same device and precision twice give the same tables: the comparison read them and found no difference
    assert "cpu fp32 vs cpu fp32 on 4 images, max |diff| / max |cpu| per table: mean 0.00e+00  max 0.00e+00" in r.stdout
    assert lines[-1].startswith("RESULT: whole extract ") and " x attributed forward; without attribution " in lines[-1]
    assert " x bare forward; limited by " in lines[-1]


def test_a_failing_or_overrunning_section_is_reported_and_the_next_one_runs(tmp_path, capsys, monkeypatch):
    bench = bench_gpu.Bench(bench_gpu.SMOKE, tmp_path)
    monkeypatch.setitem(bench.s.budgets, "boom", 60)
    monkeypatch.setitem(bench.s.budgets, "slow", 6)
    monkeypatch.setitem(bench.s.budgets, "fine", 60)
    ran = []

    def boom():
        raise ValueError("no GPU here\nsecond line")

    def slow():
        time.sleep(30)

    bench.section_boom, bench.section_slow, bench.section_fine = boom, slow, lambda: ran.append(True)
    t = time.perf_counter()
    for name in ("boom", "slow", "fine"):
        bench.run(name)
    out = capsys.readouterr().out
    assert "-- boom: FAILED after" in out and "ValueError: no GPU here" in out
    assert "-- slow: FAILED after" in out and "stopped at its budget of 6 s" in out
    assert ran == [True] and "-- fine: ok in" in out
    assert time.perf_counter() - t < 20


def _perturb(out, folder, column, factor):
    part = sorted(folder.glob("*.parquet"))[0]
    df = pd.read_parquet(part)
    df[column] = (df[column] * factor).astype(np.float32)
    df.to_parquet(part, index=False)
    return pd.read_parquet(folder)


@pytest.mark.parametrize("kind", ["mean", "max"])
def test_compare_runs_reports_the_planted_difference(tmp_path, kind):
    a = write_synthetic_run(tmp_path / "a", SyntheticRun(n_images=40, unit_size=64))
    b = write_synthetic_run(tmp_path / "b", SyntheticRun(n_images=40, unit_size=64))
    assert all(v == 0 for v in compare_runs(a, b).values())
    folder = contract.activation_dir(b, "conv4_3", kind)
    ref = pd.read_parquet(contract.activation_dir(a, "conv4_3", kind))
    got = _perturb(b, folder, "c3", 1.5)
    expected = (got["c3"] - ref["c3"]).abs().max() / ref.drop(columns=contract.IMAGE_ID).abs().max().max()
    diff = compare_runs(a, b)
    assert diff[kind] == pytest.approx(expected, rel=1e-6) and diff[kind] > 0
    assert all(v == 0 for k, v in diff.items() if k != kind)


def test_the_verdict_names_the_slower_stage_and_each_runs_reference():
    from benchmarks.gpu_verdict import make_verdict

    common = dict(batch=128, workers=8, precision="bf16", layers=13, startup=4.0)
    on = dict(rate=900.0, reference=3000.0, reference_name="attributed forward", attribution=["conv4_3", "conv5_3"])
    off = dict(rate=2000.0, reference=4000.0, reference_name="bare forward", attribution=None)
    found = dict(extract_best_on={**common, **on}, extract_default_off={**common, **off})
    parts = dict(copy=0.05, forward=0.3, reductions=0.05, attribution=0.2, rows=0.02, parquet=0.01)  # 1.6 k img/s
    decode = make_verdict(dict(found, loader={8: 1000.0}, parts=parts), "cuda")
    assert decode.startswith(
        "RESULT: whole extract 900.0 img/s on cuda (attribution conv4_3,conv5_3, bf16, batch 128, 8 workers, "
        "13 layers; after start-up) = 0.30 x attributed forward; without attribution 2000.0 img/s = 0.50 x bare "
        "forward; limited by decode: the DataLoader alone gives 1000 img/s"
    )
    main = make_verdict(dict(found, loader={8: 5000.0}, parts=parts), "cuda")
    assert (
        "limited by the main process's serial work, 1587 img/s at most: forward 0.30 ms/img (48%), "
        "attribution 0.20 ms/img (32%)"
        in main
        and "reached only 57% of that" in main
    )
    alone = make_verdict(dict(extract_default_off={**common, **off}, parts=parts), "cuda")
    assert "(no attribution, bf16" in alone and "= 0.50 x bare forward; limited by" in alone
    assert "2326 img/s at most" in alone  # without attribution its part of the profile is left out
    assert make_verdict({}, "cuda").startswith("RESULT: the whole extract was not measured")
