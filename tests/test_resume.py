"""Resume: a run killed anywhere, or stopped by SIGTERM, and rerun, equals the uninterrupted run; shards run in any
order; a different run in OUT is refused; an incomplete run is refused by the report stage's check."""

from __future__ import annotations

import json
import shutil
import signal

import pyarrow.parquet as pq
import pytest
import torch

from analysis.config import ConfigError
from analysis.store import contract, manifest
from jobs import cli, finalize
from jobs.extract import main, parse
from tests.run_tables import FLAGS, assert_same_tables, make_dataset, run_job


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(data, out) of an uninterrupted one-process run."""
    root = tmp_path_factory.mktemp("reference")
    data = make_dataset(root / "train")
    r = run_job(data, root / "out")
    assert r.returncode == 0, r.stderr
    return data, root / "out"


@pytest.fixture
def one_thread():
    """In-process runs on one thread, like the child processes: the same kernels, so the same rounding."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_here(data, out, *extra) -> int:
    return cli.run_main(parse, main, "extract", ["--data", str(data), "--out", str(out), *FLAGS, *extra])


def unit_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / manifest.UNITS).glob("part-*.json"))}


@pytest.mark.slow
def test_sigkill_at_every_point_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    data, ref = reference
    out = tmp_path / "out"
    # Each kill loses at most the unit in flight; the units committed before it are never redone.
    for point, committed in [
        ("after-unit:0", ["part-00000.json"]),
        ("mid-unit:1", ["part-00000.json"]),  # unit 1 half on disk, no manifest
        ("before-manifest:1", ["part-00000.json"]),  # unit 1 whole on disk, no manifest
        ("before-finalize", ["part-00000.json", "part-00001.json", "part-00002.json"]),
    ]:
        before = unit_files(out) if out.exists() else {}
        r = run_job(data, out, env={"CNN_BLACKBOX_CRASH_AT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.stderr[-2000:])
        after = unit_files(out)
        assert sorted(after) == committed, point
        assert all(after[name] == blob for name, blob in before.items()), f"{point}: a committed unit was redone"
        assert not (out / contract.RUN_JSON).exists()
        if point == "mid-unit:1":  # a kill inside a file write leaves a hidden temp file: readers skip it
            (out / contract.PREDICTIONS / ".part-00001.parquet.x1y2.tmp").write_bytes(b"half a file")
    with pytest.raises(manifest.IncompleteRunError, match="every unit is done.*make finalize"):
        manifest.check_complete(out)
    assert finalize.main(str(out)) == 0  # make finalize RUN=OUT
    manifest.check_complete(out)
    assert_same_tables(out, ref)
    assert not list(out.rglob("*.tmp"))
    meta = json.loads((out / contract.RUN_JSON).read_text())
    want = json.loads((ref / contract.RUN_JSON).read_text())
    assert meta["counts"] == want["counts"] and meta["counts"]["found"] == 8 and meta["counts"]["error"] == 1


@pytest.mark.slow
def test_sigterm_commits_the_unit_in_flight_then_stops(reference, tmp_path):
    data, ref = reference
    out = tmp_path / "out"
    r = run_job(data, out, env={"CNN_BLACKBOX_CRASH_AT": "mid-unit:1", "CNN_BLACKBOX_CRASH_SIGNAL": "SIGTERM"})
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
    assert "rerun the same command to resume" in r.stderr
    assert sorted(unit_files(out)) == ["part-00000.json", "part-00001.json"]  # unit 1 finished, unit 2 not begun
    assert not (out / contract.RUN_JSON).exists()
    r = run_job(data, out)
    assert r.returncode == 0 and "2 done before, 1 to do" in r.stderr, r.stderr[-2000:]
    assert_same_tables(out, ref)


@pytest.mark.slow
def test_three_shards_in_any_order_one_twice_give_the_same_tables(reference, tmp_path, one_thread):
    data, ref = reference
    out = tmp_path / "out"
    assert run_here(data, out, "--shard", "1/3") == 0
    with pytest.raises(manifest.IncompleteRunError) as e:  # what the report stage will call
        manifest.check_complete(out)
    msg = str(e.value)
    assert "\n" not in msg and "0/3" in msg and "2/3" in msg and "1/3" not in msg and "2 of 3 units missing" in msg
    assert run_here(data, out, "--shard", "2/3") == 0
    first = unit_files(out)
    assert run_here(data, out, "--shard", "2/3") == 0  # again: nothing redone, nothing duplicated
    assert unit_files(out) == first and not (out / contract.RUN_JSON).exists()
    assert run_here(data, out, "--shard", "0/3") == 0  # the last one marks the run complete
    manifest.check_complete(out)
    assert_same_tables(out, ref)
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert meta["shards"]["count"] == 3 and sorted(p["shard"] for p in meta["shards"]["processes"]) == [
        "0/3",
        "1/3",
        "2/3",
    ]
    assert meta["counts"] == json.loads((ref / contract.RUN_JSON).read_text())["counts"]


def snapshot(out) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))}


@pytest.mark.slow
def test_a_different_run_is_refused_naming_what_differs_and_left_untouched(reference, tmp_path, capsys, one_thread):
    data, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    before = snapshot(out)
    assert run_here(data, out) == 0  # the same run: already complete, nothing done
    assert snapshot(out) == before
    capsys.readouterr()
    assert run_here(data, out, "--layers", "conv1_2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "layers" in err and "conv1_2" in err and "--overwrite" in err, err
    more = tmp_path / "more"
    shutil.copytree(data, more)
    (more / "cat.8.jpg").write_bytes((data / "cat.0.jpg").read_bytes())
    assert run_here(more, out) == 2
    err = capsys.readouterr().err
    assert "dataset: 8 images" in err and "9 images" in err and "layers" not in err, err
    assert run_here(data, out, "--image-size", "96") == 2
    assert "preprocess" in capsys.readouterr().err
    assert snapshot(out) == before  # refused runs touch nothing
    assert run_here(data, out, "--layers", "conv1_2", "--overwrite") == 0
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert list(meta["layers"]) == ["conv1_2"] and not (out / "activations" / "conv1_1").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_resume_with_nothing_left_says_so_instead_of_an_empty_progress_bar(reference, tmp_path, capsys, caplog):
    data, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    (out / contract.RUN_JSON).unlink()  # every unit done, as a kill before finalize leaves it
    with_progress = [f for f in FLAGS if f != "--no-progress"]
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert cli.run_main(parse, main, "extract", ["--data", str(data), "--out", str(out), *with_progress]) == 0
    assert "img" not in capsys.readouterr().err  # no "0/0 [00:00, ?img/s]" bar
    said = [r.getMessage() for r in caplog.records]
    assert "nothing to extract: all 3 units of this shard were done already" in said, said
    assert (out / contract.RUN_JSON).is_file()


def test_many_processes_opening_one_out_at_once_create_or_replace_it_once(tmp_path):
    """Every shard of a launch opens OUT at the same moment, with the same flags (here --overwrite over another
    run): one replaces it, the others find the new run and resume it."""
    from concurrent.futures import ThreadPoolExecutor

    from jobs import out_folder

    def make(identity: dict) -> dict:
        return {"identity": identity, "identity_sha256": manifest.compute_identity_digest(identity)}

    out = tmp_path / "out"
    old, new = make({"layers": ["conv1_1"]}), make({"layers": ["conv5_3"]})
    assert out_folder.open_run(out, old, overwrite=False)
    (out / contract.PREDICTIONS).mkdir()
    (out / contract.PREDICTIONS / "part-00000.parquet").write_bytes(b"old")
    (out / contract.RUN_JSON).write_text("{}")
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: out_folder.open_run(out, new, overwrite=True), range(8)))
    assert sum(created) == 1
    assert manifest.read_run_manifest(out)["identity_sha256"] == new["identity_sha256"]
    assert sorted(p.name for p in out.iterdir()) == [manifest.MANIFEST_JSON]  # the old run gone, no lock, no trash
    with pytest.raises(ConfigError, match=r"layers: \[\"conv5_3\"\] there, \[\"conv1_1\"\] here"):
        out_folder.open_run(out, old, overwrite=False)


@pytest.mark.slow
def test_the_report_refuses_an_incomplete_run_naming_the_missing_shards(tmp_path, capsys, one_thread):
    from jobs import report

    data = make_dataset(tmp_path / "train")
    out = tmp_path / "out"
    assert run_here(data, out, "--shard", "1/3") == 0  # units 1 only; 0 and 2 are not done
    capsys.readouterr()
    assert cli.run_main(report.parse, report.main, "report", ["--run", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "incomplete" in err and "0/3" in err and "2/3" in err and "1/3" not in err
    assert not (out / "report").exists()


@pytest.mark.slow
def test_a_run_begun_before_the_peak_and_gradcam_tables_is_resumed_and_finalized_without_them(
    reference, tmp_path, one_thread
):
    """Its identity is the same (the new tables change no row): it resumes, and its last unit, like its first
    ones, has no peak or Grad-CAM part; finalize and run.json know none."""
    data, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    added = (contract.ACTIVATIONS_PEAK, contract.GRADCAM)
    for name in added:
        shutil.rmtree(out / name)
    run = json.loads((out / manifest.MANIFEST_JSON).read_text())
    run["meta"] = {k: v for k, v in run["meta"].items() if k not in ("peak_grid", "gradcam")}
    (out / manifest.MANIFEST_JSON).write_text(json.dumps(run))
    for path in (out / manifest.UNITS).glob("part-*.json"):
        unit = json.loads(path.read_text())
        path.write_text(json.dumps({**unit, "parts": [p for p in unit["parts"] if not p.startswith(added)]}))
    (out / contract.RUN_JSON).unlink()
    manifest.unit_manifest_path(out, 2).unlink()  # the last unit still to do
    assert run_here(data, out) == 0
    manifest.check_complete(out)
    assert not any((out / name).exists() for name in added)
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert "peak_grid" not in meta and "gradcam" not in meta
    redone = contract.activation_dir(out, "conv1_1") / contract.part_name(2)
    assert b"peak_grid" not in pq.read_schema(redone).metadata[contract.METADATA_KEY]
    assert pq.read_table(redone).equals(pq.read_table(contract.activation_dir(ref, "conv1_1") / contract.part_name(2)))
