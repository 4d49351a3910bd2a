"""The real extract job as bench_gpu runs it: in this process through jobs.extract's own parser and main (so a
section's time limit can stop it), or as a two-process torchrun; and two runs' tables compared value by value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def run_extract(args: list[str]) -> dict:
    """jobs.extract's parse + main in this process; run.json of the finished run (a failure raises)."""
    from analysis.store.run import read_finished_run  # noqa: PLC0415
    from jobs import extract  # noqa: PLC0415

    cfg = extract.parse(args)
    code = extract.main(cfg)
    if code:
        raise RuntimeError(f"jobs.extract exited with {code}")
    return dict(read_finished_run(cfg.out).meta)


def read_steady_rate(out: Path, wall: float) -> tuple[float, float]:
    """(images/s of a finished one-process run after its first unit, the seconds its wall time adds to that rate's
    time for every image: start-up, the first unit's warm-up, the finish). The unit manifests' `seconds` are the
    times between one unit's commit and the next's."""
    from analysis.store import manifest  # noqa: PLC0415

    run = manifest.read_run_manifest(out)
    units = manifest.read_unit_manifests(out, run["identity_sha256"])
    later = [units[k] for k in sorted(units)[1:]]
    seconds = sum(float(u["seconds"]) for u in later)
    if not later or seconds <= 0:
        raise ValueError(f"{len(units)} units: too few to time the run after its first one")
    rate = sum(u["counts"]["files"] for u in later) / seconds
    return rate, wall - run["n_images"] / rate


def link_subset(data: Path, dest: Path, n: int) -> Path:
    """The first n files of `data` (sorted, as the job sorts them) hard-linked into dest: a smaller dataset of the
    same files, without copying."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(data))[:n]:
        if not (dest / name).exists():
            os.link(data / name, dest / name)
    return dest


def _read_tables(out: Path) -> dict[str, pd.DataFrame]:
    """kind/name -> table sorted by image_id: every layer's means and maxima, contributions, the predictions."""
    from analysis.store import contract  # noqa: PLC0415

    found = {}
    for folder, kind in ((contract.ACTIVATIONS, "mean"), (contract.ACTIVATIONS_MAX, "max")):
        for d in sorted((out / folder).iterdir()):
            found[f"{kind}/{d.name}"] = d
    if (out / contract.ATTRIBUTIONS).is_dir():
        for d in sorted((out / contract.ATTRIBUTIONS).glob("*/*")):
            found[f"attribution/{d.parent.name}/{d.name}"] = d
    found["predictions"] = out / contract.PREDICTIONS
    return {k: pd.read_parquet(d).sort_values(contract.IMAGE_ID).reset_index(drop=True) for k, d in found.items()}


def compare_runs(reference: Path, other: Path) -> dict[str, float]:
    """Per kind of table (mean, max, attribution, logit, prob): the largest |other - reference| / max |reference|
    over its tables (each table scaled by its own largest value); `pred` is the share of images whose predicted
    class differs."""
    from analysis.store import contract  # noqa: PLC0415

    ref, got = _read_tables(reference), _read_tables(other)
    if sorted(ref) != sorted(got):
        raise ValueError(f"the runs hold different tables: {sorted(set(ref) ^ set(got))}")
    worst: dict[str, float] = {}
    for name, a in ref.items():
        b = got[name]
        if not a[contract.IMAGE_ID].equals(b[contract.IMAGE_ID]):
            raise ValueError(f"{name}: the runs hold different images")
        if name == "predictions":
            parts = {
                "logit": [c for c in a.columns if c.startswith("logit_")],
                "prob": [c for c in a.columns if c.startswith("prob_")],
            }
            worst["pred"] = float((a[contract.PRED] != b[contract.PRED]).mean())
        else:
            parts = {name.split("/")[0]: [c for c in a.columns if c != contract.IMAGE_ID]}
        for kind, cols in parts.items():
            x, y = a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64)
            scale = np.nanmax(np.abs(x)) if x.size else 0.0
            rel = float(np.nanmax(np.abs(y - x)) / scale) if scale > 0 else float(np.nanmax(np.abs(y - x), initial=0))
            worst[kind] = max(worst.get(kind, 0.0), rel)
    return worst


def run_torchrun(args: list[str], processes: int, timeout: float) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N -m jobs.extract ARGS` from the repository root; past `timeout`
    the launcher and the processes it started are killed together."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "jobs.extract",
        *args,
    ]
    return _run(cmd, timeout)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)  # its own session: the launcher and its workers, nothing else
        p.wait()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
