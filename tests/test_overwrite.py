"""--overwrite: every entry of the previous run leaves OUT (analysis/store/layout.py lists them once), whatever its
layers, attribution folders, units or report; a user's own files stay. And OUT's lock: a live holder is waited for,
saying whom for, then refused in one line; a dead one's lock is broken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.config import LAYER_NAMES, ConfigError
from analysis.store import contract, layout, manifest
from jobs import cli, extract, out_folder
from tests.faults import one_error_line
from tests.run_tables import FLAGS, ROOT, make_dataset

pytestmark = pytest.mark.usefixtures("one_model")  # the random model loaded once


def make_run(identity: dict) -> dict:
    return {"identity": identity, "identity_sha256": manifest.compute_identity_digest(identity)}


FOREIGN = {"notes.txt": b"mine", "photos-kept.zip": b"PK", "predictions.csv": b"id,label\n"}

trees = st.fixed_dictionaries(
    {
        "identity": st.none() | st.dictionaries(st.sampled_from(["layers", "seed", "labels"]), st.integers(0, 9)),
        "layers": st.lists(st.sampled_from(LAYER_NAMES), unique=True, max_size=3),
        "classes": st.lists(st.text("abcxyzCD_-0", min_size=1, max_size=6), unique=True, max_size=3),
        "attributed": st.lists(st.sampled_from(LAYER_NAMES), unique=True, max_size=2),
        "units": st.integers(0, 3),
        "run_json": st.booleans(),
        "config": st.booleans(),
        "report": st.booleans(),
        "killed_overwrite": st.booleans(),
        "foreign": st.lists(st.sampled_from(sorted(FOREIGN)), unique=True),
    }
)


def write_tree(out: Path, tree: dict) -> None:
    """An earlier run's OUT as a kill could leave it: parts, unit manifests, stale temps, a report, trash."""
    out.mkdir(parents=True)
    attribution = (
        layout.Attribution(tuple(tree["attributed"]), tuple(tree["classes"]), dict.fromkeys(tree["attributed"], 1), "")
        if tree["classes"]
        else None
    )
    values = layout.ValueLayout(dict.fromkeys(tree["layers"], 1), attribution)
    if tree["identity"] is not None:
        manifest.write_json_exclusive(make_run(tree["identity"]), out / layout.MANIFEST_JSON)
    for k in range(tree["units"]):
        for folder in layout.unit_dirs(out, values):
            folder.mkdir(parents=True, exist_ok=True)
            name = contract.part_name(k)
            (folder / (name if folder.name != layout.UNITS else name.replace(".parquet", ".json"))).write_bytes(b"old")
            (folder / f".part-{k:05d}.x.tmp").write_bytes(b"half")
    for wanted, name in ((tree["run_json"], contract.RUN_JSON), (tree["config"], contract.CONFIG_YAML)):
        if wanted:
            (out / name).write_text("{}")
    if tree["report"]:
        (out / contract.REPORT_DIR / "thumbs").mkdir(parents=True)
        (out / contract.REPORT_DIR / contract.INDEX_HTML).write_text("old page")
    if tree["killed_overwrite"]:
        (out / f"{out_folder.TRASH_PREFIX}0123456789ab" / contract.PREDICTIONS).mkdir(parents=True)
    for name in tree["foreign"]:
        (out / name).write_bytes(FOREIGN[name])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_after_overwrite_nothing_of_any_earlier_run_is_left(tree):
    new = make_run({"layers": ["conv5_3"], "new": True})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        write_tree(out, tree)
        assert out_folder.open_run(out, new, overwrite=True)
        assert sorted(os.listdir(out)) == sorted([layout.MANIFEST_JSON, *tree["foreign"]])
        assert manifest.read_run_manifest(out)["identity_sha256"] == new["identity_sha256"]
        assert all((out / name).read_bytes() == FOREIGN[name] for name in tree["foreign"])


@settings(max_examples=30, deadline=None)
@given(tree=trees)
def test_the_same_run_is_resumed_and_left_as_it_is(tree):
    if tree["identity"] is None:
        tree["identity"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        write_tree(out, tree)
        before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert not out_folder.open_run(out, make_run(tree["identity"]), overwrite=True)
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def run_here(data: Path, out: Path, *extra: str) -> int:
    return cli.run_main(
        extract.parse, extract.main, "extract", ["--data", str(data), "--out", str(out), *extra, "--shard", "0/1"]
    )


@pytest.mark.slow
def test_overwrite_without_attribution_leaves_no_attribution_of_the_earlier_run(tmp_path):
    """The issue's case: the default attribution, then --overwrite --attribution-layers none (64 px)."""
    data = make_dataset(tmp_path / "train")
    out = tmp_path / "out"
    plain = FLAGS[: FLAGS.index("--attribution-layers")]  # the default attribution: conv4_3 and conv5_3
    assert run_here(data, out, *plain) == 0
    assert contract.attribution_dir(out, "cat", "conv4_3").is_dir()
    (out / contract.REPORT_DIR).mkdir()
    (out / contract.REPORT_DIR / contract.INDEX_HTML).write_text("the first run's page")

    assert run_here(data, out, *plain, "--overwrite", "--attribution-layers", "none") == 0
    assert not (out / contract.ATTRIBUTIONS).exists() and not (out / contract.REPORT_DIR).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert meta["attribution"] is None
    for folder in layout.unit_dirs(out, layout.ValueLayout.from_meta(meta))[:-1]:
        assert len(pd.read_parquet(folder)) in (7, 8)  # 8 files, 7 decodable
    for part in out.rglob("*.parquet"):  # every table is the new run's
        written = json.loads(pq.read_schema(part).metadata[contract.METADATA_KEY])
        assert written["attribution"] is None, part


# ---------------------------------------------------------------------------------------------------------------
# The lock.

HOLD = """
import sys, time
from pathlib import Path
from jobs import out_folder
with out_folder._lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_refused_in_one_line_after_a_bounded_wait(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "train")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(out_folder, "LOCK_WAIT_S", 1.5)
        t0 = time.monotonic()
        assert run_here(data, out, *FLAGS, "--overwrite") == 2
        assert time.monotonic() - t0 < 30
    finally:
        holder.kill()
        holder.wait()
    line = one_error_line(capsys)
    assert f"process {holder.pid} on {socket.gethostname()}" in line and str(out / ".lock") in line, line
    assert "wait for it to finish" in line, line


def test_a_lock_held_by_a_thread_is_waited_for_saying_whom_for(tmp_path, caplog):
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()

    def hold():
        with out_folder._lock(out):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    threading.Timer(1.5, release.set).start()
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert out_folder.open_run(out, make_run({"layers": ["conv5_3"]}), overwrite=True)
    thread.join()
    waiting = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waiting) == 1 and f"process {os.getpid()} on {socket.gethostname()}" in waiting[0], waiting
    assert sorted(os.listdir(out)) == [layout.MANIFEST_JSON]


def test_a_lock_left_by_a_process_that_is_gone_is_broken_at_once(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(f"{socket.gethostname()} {int(gone.stdout)}\n")
    t0 = time.monotonic()
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert out_folder.open_run(out, make_run({"layers": ["conv5_3"]}), overwrite=False)
    assert time.monotonic() - t0 < 1
    assert any("breaking the lock" in r.getMessage() for r in caplog.records)


def test_a_lock_of_another_host_is_broken_only_when_old(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("elsewhere 12345\n")
    monkeypatch.setattr(out_folder, "LOCK_WAIT_S", 0.3)
    with pytest.raises(ConfigError, match="locked by process 12345 on elsewhere"):
        out_folder.open_run(out, make_run({}), overwrite=False)
    old = time.time() - 120
    os.utime(out / ".lock", (old, old))
    assert out_folder.open_run(out, make_run({}), overwrite=False)
