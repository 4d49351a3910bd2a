"""Files changed between discovery and decoding (deleted, truncated, emptied, replaced by a folder, a FIFO or a
symlink leading outside DATA; a symlink re-pointed outside; a folder swapped for a symlink leading outside; a zip
archive rewritten, deleted or truncated): each gets its own row with its reason, the run finishes, nothing outside
DATA is opened, and every other file keeps its own values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from analysis.data import sources
from analysis.store import contract
from jobs import extract
from tests.faults import run
from tests.helpers import write_image
from tests.run_tables import LAYERS, read_tables

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_cached_zips", "one_model")]


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

    def find_images(*args, **kwargs):
        found = real(*args, **kwargs)
        change(Path(found.root))
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
    "symlink outside": (None, "replaced by a symlink"),  # None: a link to the test's `outside` image
}


# cat.0.jpg leads its batch, so its neighbours move up a place; without dog.5.jpg the last batch has no image.
@pytest.mark.parametrize("change, victim", [(c, "cat.0.jpg") for c in CHANGES] + [("vanished", "dog.5.jpg")])
def test_a_file_changed_after_discovery_gets_its_reason_and_the_others_keep_their_values(
    reference, tmp_path, monkeypatch, outside, change, victim
):
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
    reference, tmp_path, monkeypatch, outside
):
    outside_path, opened = outside
    src = shutil.copytree(reference[0], tmp_path / "src")
    (src / "cat.9.jpg").symlink_to("cat.0.jpg")  # relative: still inside DATA once copied

    def re_point(data):
        (data / "cat.9.jpg").unlink()
        (data / "cat.9.jpg").symlink_to(outside_path)

    got = run_changed_after_discovery(src, tmp_path, monkeypatch, re_point)
    for name, table in got.items():
        rows = table.set_index(contract.IMAGE_ID)
        pd.testing.assert_series_equal(
            rows.loc["cat.9.jpg"], rows.loc["cat.0.jpg"], rtol=1e-5, atol=1e-6, check_names=False, obj=name
        )
    assert not any(opened)


def test_a_folder_replaced_by_a_symlink_outside_after_discovery_is_not_followed(
    reference, tmp_path, monkeypatch, outside
):
    outside_path, opened = outside
    src = shutil.copytree(reference[0], tmp_path / "src")
    write_image(src / "extra" / "cat.10.jpg", seed=10)
    os.link(outside_path, outside_path.parent / "cat.10.jpg")  # the outside file, under the name DATA had

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
