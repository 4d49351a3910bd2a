"""Disk and file faults, and what the user sees.

OUT unusable (a file, not writable): exit 2 in one line before any image is read. The disk filling up while a
unit's Parquet part or its manifest is written: exit 2 in one line naming OUT and ENOSPC, no temp file left, every
table still readable, no run.json, and the same command then resumes to the uninterrupted run's exact tables.
Files changed between discovery and decoding (deleted, truncated, emptied, replaced by a folder, a FIFO or a
symlink leading outside DATA; a symlink re-pointed outside; a folder swapped for a symlink leading outside; a zip
archive rewritten, deleted or truncated): each gets its own row with its reason, the run finishes, nothing outside
DATA is opened, and every other file keeps its own values.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from analysis.store import contract, tables
from analysis.data import dataset
from analysis.store import manifest
from analysis.data import sources
from jobs import cli, extract, outputs
from tests.conftest import write_image
from tests.run_tables import FLAGS, LAYERS, assert_same_tables, make_dataset, read_tables


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def run(data: Path, out: Path) -> int:
    # One batch per unit of 3 (fewer forwards). --shard 0/1: one whole process even where a launcher's variables
    # are set (the module fixtures run before conftest's no_launcher_env).
    return cli.run_main(extract.parse, extract.main, "extract",
                        ["--data", str(data), "--out", str(out), *FLAGS, "--batch-size", "3", "--shard", "0/1"])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(autouse=True)
def no_cached_zips():
    """read_bytes keeps zips open per (pid, path); a handle from before a fault would still read the old archive."""
    yield
    for zf in sources._ZIPS.values():
        zf.close()
    sources._ZIPS.clear()


@pytest.fixture(scope="module", autouse=True)
def one_model():
    """VGG16's random init is half of each small run, and every run here loads the same model: load it once."""
    real, loaded = extract.load_model, {}

    def load_model(weights, **kwargs):
        key = repr((weights, sorted(kwargs.items())))
        loaded[key] = loaded.get(key) or real(weights, **kwargs)
        return loaded[key]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "load_model", load_model)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(DATA, OUT) of an uninterrupted run: 8 files (dog.7.jpg empty) in units of 3, one batch per unit."""
    root = tmp_path_factory.mktemp("reference")
    data = make_dataset(root / "train")
    assert run(data, root / "out") == 0
    return data, root / "out"


# --- OUT unusable -------------------------------------------------------------------------------------------------

def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert run(make_dataset(tmp_path / "train"), out) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "is a file" in line
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["EACCES", "EROFS"])
def test_unwritable_out_stops_before_any_image_is_read(tmp_path, monkeypatch, capsys, code):
    def refuse(*args, **kwargs):   # tests run as root, where a chmod 0o500 folder stays writable
        raise OSError(code, os.strerror(code))

    read = []
    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", refuse)
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
    assert sorted(p.name for p in data.iterdir()) == sorted(f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg" for i in range(8))


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


# With one layer a unit writes 3 parts: mean, max, predictions; then its manifest. 8 files: 3 units.
DISK_FULL = {"unit0-first-activations": (fail_parquet_write(1), 0), "unit0-max": (fail_parquet_write(2), 0),
             "unit1-max": (fail_parquet_write(5), 1), "unit1-predictions": (fail_parquet_write(6), 1),
             "unit1-manifest": (fail_unit_manifest(1), 1), "run.json": (fail_run_json, 3)}


@pytest.mark.parametrize("where", DISK_FULL)
def test_a_full_disk_stops_in_one_line_and_the_rerun_resumes_exactly(reference, tmp_path, monkeypatch, capsys,
                                                                     where):
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
    for folder in manifest.table_dirs(out, LAYERS):
        if folder.name != manifest.UNITS and tables.list_parts(folder):
            pd.read_parquet(folder)
    assert len(list((out / manifest.UNITS).glob("part-*.json"))) == kept
    assert not (out / contract.RUN_JSON).exists()

    assert run(data, out) == 0
    assert_same_tables(out, ref)


# --- files changed between discovery and decoding -----------------------------------------------------------------

@pytest.fixture
def outside(tmp_path, monkeypatch):
    """An image outside DATA, and the list of whether each descriptor os.open gave was on it."""
    path = write_image(tmp_path / "outside" / "secret.jpg", seed=99)
    key, opened, real_open = (path.stat().st_dev, path.stat().st_ino), [], os.open

    def watched(name, flags, *args, **kwargs):
        fd = real_open(name, flags, *args, **kwargs)
        opened.append((os.fstat(fd).st_dev, os.fstat(fd).st_ino) == key)
        return fd
    monkeypatch.setattr(sources.os, "open", watched)
    return path, opened


@contextlib.contextmanager
def finishes_within(seconds: int):
    """A read that blocks (a FIFO opened without O_NONBLOCK) fails the test instead of hanging the suite; the
    error is not an OSError, which the readers would turn into a row."""
    def hung(*_):
        raise AssertionError(f"the run did not finish within {seconds} s")
    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def run_changed_after_discovery(src: Path, tmp_path: Path, monkeypatch, change) -> dict[str, pd.DataFrame]:
    """Copy DATA, run with `change(DATA)` applied right after discovery; the tables, sorted by image_id."""
    data = shutil.copytree(src, tmp_path / "data", symlinks=True)
    real = extract.find_images

    def find_images(path):
        found = real(path)
        change(Path(path))
        return found
    monkeypatch.setattr(extract, "find_images", find_images)
    with finishes_within(60):
        assert run(data, tmp_path / "out") == 0
    return read_tables(tmp_path / "out")


def replace_with(make):
    """Remove the file, then make(path) in its place."""
    return lambda p: (p.unlink(), make(p))


CHANGES = {
    "vanished": (Path.unlink, "vanished"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    "empty file": (lambda p: p.write_bytes(b""), "empty file"),
    "directory": (replace_with(Path.mkdir), "not a regular file"),
    "fifo": (replace_with(os.mkfifo), "not a regular file"),
    "symlink outside": (None, "replaced by a symlink"),   # None: a link to the test's `outside` image
}


# cat.0.jpg leads its batch, so its neighbours move up a place; without dog.5.jpg the last batch has no image.
@pytest.mark.parametrize("change, victim", [(c, "cat.0.jpg") for c in CHANGES] + [("vanished", "dog.5.jpg")])
def test_a_file_changed_after_discovery_gets_its_reason_and_the_others_keep_their_values(
        reference, tmp_path, monkeypatch, outside, change, victim):
    outside_path, opened = outside
    fn, reason = CHANGES[change]
    fn = fn or replace_with(lambda p: p.symlink_to(outside_path))
    got = run_changed_after_discovery(reference[0], tmp_path, monkeypatch, lambda data: fn(data / victim))
    want = read_tables(reference[1])
    row = got["predictions"].set_index(contract.IMAGE_ID).loc[victim]
    assert (row.status, row.error) == (contract.STATUS_ERROR, reason)
    for name in want:
        others = [t[t.image_id != victim].reset_index(drop=True) for t in (got[name], want[name])]
        # Not bit-exact: the victim's batch now runs one image fewer, and the CPU kernels round per batch shape.
        pd.testing.assert_frame_equal(*others, rtol=1e-5, atol=1e-6, obj=name)
    assert not any(opened)


def test_a_symlink_re_pointed_outside_after_discovery_is_read_through_its_checked_target(
        reference, tmp_path, monkeypatch, outside):
    outside_path, opened = outside
    src = shutil.copytree(reference[0], tmp_path / "src")
    (src / "cat.9.jpg").symlink_to("cat.0.jpg")   # relative: still inside DATA once copied

    def re_point(data):
        (data / "cat.9.jpg").unlink()
        (data / "cat.9.jpg").symlink_to(outside_path)
    got = run_changed_after_discovery(src, tmp_path, monkeypatch, re_point)
    for name, table in got.items():
        rows = table.set_index(contract.IMAGE_ID)
        pd.testing.assert_series_equal(rows.loc["cat.9.jpg"], rows.loc["cat.0.jpg"], rtol=1e-5, atol=1e-6,
                                       check_names=False, obj=name)
    assert not any(opened)


def test_a_folder_replaced_by_a_symlink_outside_after_discovery_is_not_followed(
        reference, tmp_path, monkeypatch, outside):
    outside_path, opened = outside
    src = shutil.copytree(reference[0], tmp_path / "src")
    write_image(src / "extra" / "cat.10.jpg", seed=10)
    os.link(outside_path, outside_path.parent / "cat.10.jpg")   # the outside file, under the name DATA had

    def swap(data):
        shutil.rmtree(data / "extra")
        (data / "extra").symlink_to(outside_path.parent)
    got = run_changed_after_discovery(src, tmp_path, monkeypatch, swap)
    row = got["predictions"].set_index(contract.IMAGE_ID).loc["extra/cat.10.jpg"]
    assert (row.status, row.error) == (contract.STATUS_ERROR, "replaced by a symlink")
    assert not any(opened)


# --- a zip archive changed after discovery ------------------------------------------------------------------------

ZIP_CHANGES = {
    "garbage": (lambda z: z.write_bytes(b"\x00not a zip any more" * 64), "unreadable zip"),
    "deleted": (Path.unlink, "vanished"),
    "truncated": (lambda z: os.truncate(z, z.stat().st_size // 2), "unreadable zip"),
}


@pytest.mark.parametrize("change", ZIP_CHANGES)
def test_a_zip_changed_after_discovery_gives_each_member_an_error_row(tmp_path, monkeypatch, change):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "train.zip", "w") as zf:
        for i in range(4):
            name = f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg"
            zf.write(write_image(tmp_path / "members" / name, seed=i), f"train/{name}")
    for i in range(2):
        write_image(src / "test1" / f"{i}.jpg", seed=10 + i)
    fn, reason = ZIP_CHANGES[change]
    got = run_changed_after_discovery(src, tmp_path, monkeypatch, lambda data: fn(data / "train.zip"))
    preds = got["predictions"]
    members = preds[preds.image_id.str.startswith("train.zip/")]
    assert len(members) == 4 and (members.status == contract.STATUS_ERROR).all()
    assert members.error.str.startswith(reason).all(), members.error.tolist()
    plain = preds[preds.image_id.str.startswith("test1/")]
    assert len(plain) == 2 and (plain.status == contract.STATUS_OK).all()
    assert sorted(got[f"mean/{LAYERS[0]}"].image_id) == sorted(plain.image_id)
