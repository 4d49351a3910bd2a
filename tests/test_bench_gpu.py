"""benchmarks/bench_gpu.py, which is meant to run once on a GPU machine: its --smoke run takes every code path on
the CPU, a failing or overrunning section does not stop the others, and its table comparison is checked against
planted differences."""

from __future__ import annotations

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


@pytest.mark.slow
def test_smoke_run_takes_every_section_and_ends_with_the_verdict():
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_gpu", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("gpu: ") and lines[1].startswith("cpu: ") and "bf16" in lines[1]
    for name in bench_gpu.SECTIONS:
        assert any(line.startswith(f"-- {name}: ok in") for line in lines), f"section {name}:\n{r.stdout[-4000:]}"
    assert "torchrun 2 processes on one cpu: 4 images" in r.stdout
    assert (
        "(4 found, 2 processes)" in r.stdout and "jobs.finalize exit 0, run.json written by the shards True" in r.stdout
    )
    # the same device and precision twice give the same tables: the comparison read them and found no difference
    assert "cpu fp32 vs cpu fp32 on 4 images, max |diff| / max |cpu| per table: mean 0.00e+00  max 0.00e+00" in r.stdout
    assert lines[-1].startswith("RESULT: whole extract ") and " x bare forward; limited by " in lines[-1]


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


def test_the_verdict_names_the_slower_stage():
    from benchmarks.gpu_verdict import make_verdict

    run = dict(rate=900.0, bare=3000.0, batch=128, workers=8, precision="bf16", layers=13)
    parts = dict(copy=0.05, forward=0.3, reductions=0.05, attribution=0.2, rows=0.02, parquet=0.01)  # 1.6 k img/s
    decode = make_verdict(dict(extract_best=run, loader={8: 1000.0}, parts=parts), "cuda")
    assert decode.startswith(
        "RESULT: whole extract 900.0 img/s on cuda (bf16, batch 128, 8 workers, 13 layers) = "
        "0.30 x bare forward; limited by decode: the DataLoader alone gives 1000 img/s"
    )
    main = make_verdict(dict(extract_best=run, loader={8: 5000.0}, parts=parts), "cuda")
    assert (
        "limited by the main process's serial work, 1587 img/s at most: forward 0.30 ms/img (48%), "
        "attribution 0.20 ms/img (32%)"
        in main
        and "reached only 57% of that" in main
    )
    assert make_verdict({}, "cuda").startswith("RESULT: the whole extract was not measured")
