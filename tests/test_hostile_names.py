"""Any name the file system accepts, end to end: extract, report, inspect, finalize, logs, run.json, config.yaml.

Names are bytes here: a name that is not UTF-8 once stopped a whole run at its first Parquet write. Every file must
get exactly one row, with an id that is valid UTF-8 and gives back the file's real bytes, and every name must be
escaped wherever it lands on the page (a real Chromium with an alert() trap stays quiet).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analysis.data.names import make_display, read_id_bytes
from analysis.store import contract, manifest
from jobs import cli, finalize, report
from jobs import inspect as inspect_job
from tests.browser import needs_chromium, page_data, parse, render_in_chromium
from tests.helpers import write_image
from tests.small_runs import SMALL, run

pytestmark = pytest.mark.slow  # extract, report and inspect end to end

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = [
    b"dog.9032.\xff\xfe.jpg",
    b"dog.9032.\xfe\xff.jpg",
    b"cat.new\nline.jpg",
    b"cat.tab\t.jpg",
    b"dog.'quote\".jpg",
    b"cat.<img src=x onerror=alert(1)>.jpg",
    b"dog.<\\script><script>alert(2)<\\script>.jpg",
    b"cat.&lt;<!--.jpg",
    b"-dash.jpg",
    b"--help.jpg",
    b"cat." + b"x" * 242 + b".jpg",
    "cat.caf\u00e9.jpg".encode(),
    "cat.cafe\u0301.jpg".encode(),
    b"Dog.Case.jpg",
    b"dog.case.jpg",
    b"cat.back\\xff.jpg",
    b"cat.back\xff.jpg",
    b"cat.\xe2\x80\xa8sep.jpg",
    b"dog.\x1b[31mred.jpg",
]
REPORT = [
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "top_channels=2",
    "--set",
    "top_images=4",
    "--set",
    "mistakes=2",
    "--set",
    "thumbnail=48",
]


def write_tree(data: bytes, files: list[bytes]) -> None:
    for i, rel in enumerate(files):
        path = data + b"/" + rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_image(Path(os.fsdecode(path)), seed=i, fmt="JPEG")


def run_both(data: bytes, out: Path) -> None:
    assert (
        run(
            os.fsdecode(data),
            out,
            "--weights",
            "random",
            "--layers",
            "conv4_3,conv5_3",
            "--attribution-layers",
            "conv5_3",
        )
        == 0
    )
    assert cli.run_main(report.parse, report.main, "report", ["--run", str(out), *REPORT]) == 0


def check_tables(out: Path, files: list[bytes]) -> pd.DataFrame:
    """One row per file, ids valid UTF-8 that give back the real bytes, every text output strict UTF-8."""
    preds = pd.read_parquet(out / "predictions")
    assert preds.image_id.is_unique
    visible = sorted(f for f in files if not os.path.basename(f).startswith(b"."))
    assert sorted(read_id_bytes(i) for i in preds.image_id) == visible
    meta = json.loads((out / "run.json").read_bytes().decode("utf-8"))
    assert meta["counts"]["found"] == len(visible)
    assert meta["counts"]["skipped"] == len(files) - len(visible)  # hidden files: counted, not lost
    for name in ("run.json", manifest.MANIFEST_JSON, "config.yaml"):
        text = (out / name).read_bytes().decode("utf-8")  # strict: no lone surrogate anywhere
        assert "\\udc" not in text.lower() or name == "config.yaml"
    yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    ok = sorted(preds.image_id[preds.status == "ok"])
    for cls in ("cat", "dog"):  # the contribution tables carry the same ids
        assert sorted(pd.read_parquet(out / "attributions" / cls / "conv5_3").image_id) == ok
    return preds


def check_page(out: Path, tmp_path: Path, preds: pd.DataFrame, browser: bool) -> None:
    text, c = parse(out / contract.REPORT_DIR / contract.INDEX_HTML)
    for tag, attrs in c.tags:
        assert not [a for a in attrs if a.lower().startswith("on")], (tag, attrs)
        assert not (tag == "img" and attrs.get("src") == "x")
    # 2 data blobs (map, browser) and 4 scripts (sections, map, cards, browser): no other
    assert [t for t, _ in c.tags].count("script") == 6
    ids = page_data(out / contract.REPORT_DIR / contract.INDEX_HTML, "explorer")["ids"]
    assert sorted(ids) == sorted(preds.image_id[preds.status == "ok"])  # every ok image, intact through the JSON
    alts = {a["alt"] for tag, a in c.tags if tag == "img" and a.get("class") != "fig"}
    assert alts and alts <= set(ids)  # the answer's and the mistakes' tiles name their images intact
    if browser:
        console, _ = render_in_chromium(out / contract.REPORT_DIR / contract.INDEX_HTML, tmp_path)
        assert console == [], console


def test_hostile_names_in_every_output(tmp_path):
    data = os.fsencode(tmp_path / "data")
    files = [b"train/" + n for n in HOSTILE] + [
        b"train/extra/cat.1.jpg",
        b"train/.hidden.jpg",
        b"train/x</script><script>alert(3)</script>.jpg",
    ]
    write_tree(data, files)
    out = tmp_path / "out"
    run_both(data, out)
    preds = check_tables(out, files).set_index("image_id")
    assert preds.loc["train/dog.9032.\\xff\\xfe.jpg", "label"] == "dog"
    assert preds.loc["train/cat.back\\xff.jpg", "label"] == "cat"
    assert preds.loc["train/cat.back\\\\xff.jpg", "status"] == "ok"
    assert preds.loc["train/extra/cat.1.jpg", "label"] == "cat"
    assert (preds.status == "ok").all()
    check_page(out, tmp_path, preds.reset_index(), browser=os.path.exists("/usr/bin/chromium"))
    # finalize on the finished run, and inspect of the worst name against it: exit 0, one page per image
    assert cli.run_main(finalize.parse, finalize.main, "finalize", ["--run", str(out)]) == 0
    pages = tmp_path / "pages"
    for name in HOSTILE[:2]:
        image = os.fsdecode(data + b"/train/" + name)
        assert (
            cli.run_main(
                inspect_job.parse,
                inspect_job.main,
                "inspect",
                [
                    "--image",
                    image,
                    "--out",
                    str(pages),
                    "--weights",
                    "random",
                    "--run",
                    str(out),
                    "--image-size",
                    "64",
                    "--layers",
                    "conv5_3",
                ],
            )
            == 0
        )
    made = list((pages / "inspect").iterdir())
    assert len(made) == 2  # two names alike once sanitized: two pages
    for page in made:
        (page / "index.html").read_bytes().decode("utf-8")
        json.loads((page / "inspect.json").read_bytes().decode("utf-8"))


def test_the_log_is_one_line_per_record_and_print_out_gives_the_real_bytes(tmp_path):
    data = os.fsencode(tmp_path / "caf\udce9")
    write_tree(data, [b"dog.new\nline\xff.jpg", b"cat.1.jpg", b"notes\n.txt"])
    cmd = [
        sys.executable,
        "-m",
        "jobs.extract",
        "--data",
        os.fsdecode(data),
        *SMALL,
        "--weights",
        "random",
        "--layers",
        "conv5_3",
    ]
    result = subprocess.run(cmd + ["--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode("utf-8").splitlines()  # strict UTF-8, whatever the names hold
    assert lines and all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line) for line in lines), lines
    assert any("caf\\xe9" in line for line in lines)
    # The default OUT is named as the id escape writes DATA's name, a path Parquet readers can open.
    printed = subprocess.run(cmd + ["--print-out"], cwd=ROOT, capture_output=True, timeout=120)
    assert printed.stdout == b"runs/caf\\xe9\n"


def test_an_out_or_run_that_is_not_utf8_fails_at_start_in_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    write_tree(os.fsencode(data), [b"cat.1.jpg"])
    bad = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")
    assert run(data, bad, "--weights", "random") == 2
    assert cli.run_main(report.parse, report.main, "report", ["--run", bad]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("out\\xff': the path holds bytes that are not UTF-8" in line for line in lines)
    assert not os.path.exists(bad)


PART = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b)
FILE = st.tuples(st.sampled_from([b"", b"cat.", b"dog."]), PART, st.sampled_from([b".jpg", b".PNG", b".jpeg"]))
FOLDER = PART.filter(lambda b: not b.startswith(b".") and b.lower() not in (b"__macosx",))
TREES = st.dictionaries(
    FOLDER, st.lists(FILE.map(b"".join), min_size=1, max_size=3, unique=True), min_size=1, max_size=2
)


@needs_chromium
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=TREES)
@example(tree={b"Cat": [b"\xff.jpg", b"<\\script>.jpg"], b"D\xf6g": [b"dog.\n.jpg", b"\x80'\".jpg"]})
def test_any_bytes_as_names_through_extract_and_report(tmp_path_factory, tree):
    tmp_path = tmp_path_factory.mktemp("names")
    data = os.fsencode(tmp_path / "data")
    files = [folder + b"/" + name for folder, names in tree.items() for name in names]
    write_tree(data, files)
    out = tmp_path / "out"
    run_both(data, out)
    check_page(out, tmp_path, check_tables(out, files), browser=True)


@pytest.mark.parametrize("name", [b"\xff.jpg", b"a\nb <i>.jpg"])
def test_inspect_of_a_lone_file_shows_its_name(tmp_path, name):
    path = os.fsencode(tmp_path) + b"/" + name
    write_image(Path(os.fsdecode(path)), seed=3, fmt="JPEG")
    assert (
        cli.run_main(
            inspect_job.parse,
            inspect_job.main,
            "inspect",
            [
                "--image",
                os.fsdecode(path),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                "random",
                "--image-size",
                "64",
                "--layers",
                "conv1_1",
            ],
        )
        == 0
    )
    page = next((tmp_path / "o" / "inspect").iterdir()) / "index.html"
    assert html.escape(make_display(os.fsdecode(name))) in page.read_bytes().decode("utf-8")
