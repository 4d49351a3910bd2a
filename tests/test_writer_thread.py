"""The unit writer's background thread (analysis/store/writer.py, background.py): the same files as committing in
the caller's thread, byte for byte in every table; the first failure raised in the caller, the same exception, and
nothing begun after it; a stop request lets the unit being written finish and begins no other. The whole job under
faults (ENOSPC, SIGKILL, SIGTERM) is tests/test_faults_out.py's and tests/test_resume.py's, which run it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from analysis.store import contract, manifest, tables
from analysis.store.background import BackgroundWorker
from analysis.store.layout import ValueLayout
from analysis.store.writer import UnitSchemas, UnitWriter

LAYERS = {"conv1_1": 3, "conv5_3": 2}
CLASSES = ["cat", "dog"]


def make_writer(out, units=None) -> UnitWriter:
    values = ValueLayout(LAYERS)
    schemas = UnitSchemas.make(CLASSES, False, values, {"x": 1})
    return UnitWriter(out, values, schemas, 4, units=units, stamp={"identity_sha256": "abc"})


def batches(n_files: int, batch: int):
    rng = np.random.default_rng(0)
    for s in range(0, n_files, batch):
        ids = [f"img{i:03d}.jpg" for i in range(s, min(n_files, s + batch))]
        ok = [int(i[3:6]) % 5 != 0 for i in ids]
        rows = {f.name: [None] * len(ids) for f in contract.prediction_schema(CLASSES, False)}
        rows[contract.IMAGE_ID], rows[contract.STATUS] = ids, ["ok" if g else "error" for g in ok]
        yield rows, ok, rng.random((sum(ok), 2 * sum(LAYERS.values()))).astype(np.float32)


def table_bytes(out) -> dict[str, bytes]:
    """Every Parquet part of the run, by path (the unit manifests hold times and a pid, so they differ)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_the_thread_writes_the_same_tables_as_the_callers_thread(tmp_path):
    for how in ("inline", "thread"):
        w = make_writer(tmp_path / how)
        if how == "thread":
            w.commit_in_background()
        with w:
            for rows, ok, acts in batches(23, 3):  # units of 4 across batches of 3: pieces split at unit boundaries
                w.add(rows, ok, acts)
            w.close()
        assert w.unit == 6
    assert table_bytes(tmp_path / "thread") == table_bytes(tmp_path / "inline") != {}
    assert sorted(manifest.read_unit_manifests(tmp_path / "thread", "abc")) == list(range(6))
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_commit_is_raised_in_the_caller_and_nothing_after_it_is_begun(tmp_path, monkeypatch):
    real, written = tables.write_parquet_atomic, []

    def write(table, path):
        if "part-00001" in str(path) and contract.PREDICTIONS in str(path):
            raise tables.WriteError(f"cannot write {str(path)!r}: No space left on device [ENOSPC]")
        written.append(path)
        real(table, path)

    monkeypatch.setattr(tables, "write_parquet_atomic", write)
    w = make_writer(tmp_path).commit_in_background()
    with pytest.raises(tables.WriteError, match="ENOSPC") as e:
        with w:
            for rows, ok, acts in batches(40, 2):
                w.add(rows, ok, acts)  # the failure surfaces here, at a later add...
            w.close()  # ...or here
    assert "Traceback" not in str(e.value) and "\n" not in str(e.value)
    assert sorted(manifest.read_unit_manifests(tmp_path, "abc")) == [0]  # unit 1 failed; 2 and later never begun
    assert {p.name for p in written} <= {"part-00000.parquet", "part-00001.parquet"}
    assert w.unit == 1


def test_a_stop_request_finishes_the_unit_being_written_and_begins_no_other(tmp_path, monkeypatch):
    """The stop arrives while unit 1 is written (as the crash point's SIGTERM does): unit 1 is committed, the units
    queued behind it are dropped, and abandon() drops the files held."""
    stop = threading.Event()
    real, release = tables.write_parquet_atomic, threading.Event()

    def write(table, path):
        if "part-00001" in str(path) and not stop.is_set():
            stop.set()  # the request comes in the middle of unit 1
            release.wait(10)  # ...and unit 1 stays in progress until the caller has queued unit 2 behind it
        real(table, path)

    monkeypatch.setattr(tables, "write_parquet_atomic", write)
    w = make_writer(tmp_path).commit_in_background(should_stop=stop.is_set)
    with w:
        for k, (rows, ok, acts) in enumerate(batches(14, 2)):  # units 0-2 whole, unit 3 held in part
            w.add(rows, ok, acts)
            if k == 5:  # unit 2 is complete and queued
                release.set()
        w.abandon()
    assert sorted(manifest.read_unit_manifests(tmp_path, "abc")) == [0, 1]
    assert [p.name for p in tables.list_parts(tmp_path / contract.PREDICTIONS)] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert w.unit == 2 and w.at_unit_boundary


def test_the_worker_keeps_order_and_reports_what_it_dropped():
    done: list[int] = []
    worker = BackgroundWorker(done.append, "test", depth=2)
    for i in range(50):
        worker.submit(i)
    worker.close()
    assert done == list(range(50)) and worker.done == 50 and worker.dropped == 0
    worker.close()  # idempotent

    def fail(i):
        if i == 3:
            raise KeyError("three")
        done.append(i)

    done.clear()
    worker = BackgroundWorker(fail, "test", depth=1)
    with pytest.raises(KeyError, match="three"):
        for i in range(10):
            worker.submit(i)
        worker.close()
    worker.close(raise_error=False)
    assert done == [0, 1, 2] and worker.done == 3  # nothing after the failure ran
