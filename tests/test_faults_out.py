"""OUT unusable (a file, not writable, inside DATA): exit 2 in one line before any image is read. The disk filling
up while a unit's Parquet part, its manifest or run.json is written: exit 2 in one line naming OUT and ENOSPC, no
temp file left, every table still readable, no run.json, and the same command then resumes to the uninterrupted
run's exact tables.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from analysis.data import dataset
from analysis.store import contract, layout, manifest, tables
from jobs import out_folder
from tests.faults import one_error_line, run
from tests.run_tables import assert_same_tables, make_dataset

pytestmark = pytest.mark.usefixtures("no_cached_zips", "one_model")


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert run(make_dataset(tmp_path / "train"), out) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "is a file" in line
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["EACCES", "EROFS"])
def test_unwritable_out_stops_before_any_image_is_read(tmp_path, monkeypatch, capsys, code):
    def refuse(*args, **kwargs):  # tests run as root, where a chmod 0o500 folder stays writable
        raise OSError(code, os.strerror(code))

    read = []
    monkeypatch.setattr(out_folder.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(dataset, "read_bytes", lambda *a: read.append(a))
    out = tmp_path / "out"
    assert run(make_dataset(tmp_path / "train"), out) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "not writable" in line and os.strerror(code) in line
    assert read == [] and list(out.iterdir()) == []


def test_out_inside_data_is_refused_in_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    for out in (data / "out", data):
        assert run(data, out) == 2
        line = one_error_line(capsys)
        assert f"OUT '{out}' is inside DATA '{data}'" in line
    want = sorted(f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg" for i in range(8))
    assert sorted(p.name for p in data.iterdir()) == want


# --- a full disk while a unit is committed ------------------------------------------------------------------------


def fail_parquet_write(nth: int):
    """The nth Parquet write leaves half a file behind, as a full disk does, and raises ENOSPC."""

    def inject(mp):
        real, calls = tables.pq.write_table, []

        def write_table(table, where, **kwargs):
            real(table, where, **kwargs)
            calls.append(where)
            if len(calls) == nth:
                os.truncate(where, os.path.getsize(where) // 2)
                raise enospc()

        mp.setattr(tables.pq, "write_table", write_table)

    return inject


def fail_unit_manifest(unit: int):
    """Renaming the unit's manifest into place fails with ENOSPC (its temp file is complete by then)."""

    def inject(mp):
        real = os.replace
        target = manifest.unit_manifest_path("", unit).name

        def replace(src, dst, *args, **kwargs):
            if Path(dst).parent.name == manifest.UNITS and Path(dst).name == target:
                raise enospc()
            return real(src, dst, *args, **kwargs)

        mp.setattr(tables.os, "replace", replace)

    return inject


def fail_run_json(mp):
    """The disk fills while run.json, the last file of all, is written: every unit is committed by then."""
    real = manifest.tempfile.mkstemp

    def mkstemp(*args, prefix="", **kwargs):
        if prefix.startswith(f".{contract.RUN_JSON}."):
            raise enospc()
        return real(*args, prefix=prefix, **kwargs)

    mp.setattr(manifest.tempfile, "mkstemp", mkstemp)


# With one layer and one attributed layer a unit writes 8 parts: mean, max, peaks, the contributions to cat and to
# dog, the Grad-CAMs of cat and dog, predictions; then its manifest. 8 files: 3 units.
DISK_FULL = {
    "unit0-first-activations": (fail_parquet_write(1), 0),
    "unit0-max": (fail_parquet_write(2), 0),
    "unit0-contributions": (fail_parquet_write(4), 0),
    "unit1-max": (fail_parquet_write(10), 1),
    "unit1-gradcam": (fail_parquet_write(14), 1),
    "unit1-predictions": (fail_parquet_write(16), 1),
    "unit1-manifest": (fail_unit_manifest(1), 1),
    "run.json": (fail_run_json, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("where", DISK_FULL)
def test_a_full_disk_stops_in_one_line_and_the_rerun_resumes_exactly(reference, tmp_path, monkeypatch, capsys, where):
    data, ref = reference
    inject, kept = DISK_FULL[where]
    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        inject(mp)
        assert run(data, out) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "No space left on device" in line and "ENOSPC" in line and "rerun" in line, line
    assert f"{kept} of 3 units are committed" in line
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    for folder in layout.unit_dirs(out, layout.ValueLayout.from_meta(manifest.read_run_manifest(out)["meta"])):
        if folder.name != manifest.UNITS and tables.list_parts(folder):
            pd.read_parquet(folder)
    assert len(list((out / manifest.UNITS).glob("part-*.json"))) == kept
    assert not (out / contract.RUN_JSON).exists()

    assert run(data, out) == 0
    assert_same_tables(out, ref)
