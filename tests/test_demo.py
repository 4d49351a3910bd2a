"""`make demo` end to end (as `python -m jobs.demo`, small and at 64 px): synthetic data, extract, report, page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from analysis.store import contract, tables
from jobs import cli, demo
from jobs.demo import write_synthetic_images

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_images_are_labeled_cartoons(tmp_path):
    paths = write_synthetic_images(tmp_path, 3)
    assert sorted(p.name for p in paths) == sorted(
        [f"cat.{i}.png" for i in (0, 2, 4)] + [f"dog.{i}.png" for i in (1, 3, 5)]
    )
    assert all(Image.open(p).mode == "RGB" for p in paths)
    assert write_synthetic_images(tmp_path / "again", 3)[0].read_bytes() == paths[0].read_bytes()  # deterministic


@pytest.mark.slow
def test_demo_runs_extract_and_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.demo",
            "--out",
            str(out),
            "--images-per-class",
            "4",
            "--image-size",
            "64",
            "--weights",
            "random",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = out / "run" / contract.REPORT_DIR / contract.INDEX_HTML
    assert str(page.resolve()) in result.stderr  # it says where the page is
    html = page.read_text(encoding="utf-8")
    assert "SYNTHETIC DEMO DATA" in html and "RANDOM WEIGHTS" in html
    meta = tables.read_run_json(out / "run")
    assert meta["counts"]["ok"] == 8 and meta["weights"]["random"] is True
    stats = pd.read_parquet(page.parent / contract.CHANNEL_STATS)
    assert set(stats[contract.LAYER]) == set(meta["layers"]) and (stats[contract.N] == 4).all()
    assert list((page.parent / "tiles").glob("*.jpg"))


def test_demo_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    code = cli.run_main(
        demo.parse, lambda parsed: demo.main(*parsed), "demo", ["--out", str(tmp_path), "--weights", "bogus"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "demo: error: weights: 'bogus' is not allowed; auto, imagenet or random"
    ]
    assert not list(tmp_path.iterdir())  # nothing written
