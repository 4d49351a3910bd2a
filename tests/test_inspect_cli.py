"""The inspect job's command line without running a model: bad input is one clear line, the help names the flags,
page names are safe and distinct, the config's defaults come from the YAML and are checked, and the page numbers
its sections by their order."""

from __future__ import annotations

import hashlib
import os

import pytest

import jobs.inspect as inspect_job
from analysis.config import ConfigError
from jobs import cli
from reports.inspect.html import Page, render_page
from tests.helpers import write_image

HOSTILE = "cat.<img src=x onerror=alert(1)>.png"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such file"),
        ("directory", "not a file"),
        ("empty", "empty file"),
        ("text", "not an image"),
        ("layer", "unknown layer 'conv9_9'; valid layers: conv1_1, conv1_2"),
        ("run", "RUN must be a finished dataset run"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, case, expected):
    image = write_image(tmp_path / "ok.png", seed=1)
    extra = []
    if case == "missing":
        image = tmp_path / "nope.jpg"
    elif case == "directory":
        image = tmp_path
    elif case == "empty":
        image = tmp_path / "empty.jpg"
        image.write_bytes(b"")
    elif case == "text":
        image = tmp_path / "notes.jpg"
        image.write_text("this is not a picture\n")
    elif case == "layer":
        extra = ["--layers", "conv1_2,conv9_9"]
    elif case == "run":
        extra = ["--run", str(tmp_path)]
    argv = ["--image", str(image), "--out", str(tmp_path / "out"), "--weights", "random", "--image-size", "64", *extra]
    assert cli.run_main(inspect_job.parse, inspect_job.main, "inspect", argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("inspect: error: ") and expected in err, err
    assert not (tmp_path / "out").exists()


def test_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        inspect_job.parse(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--image", "--out", "--weights", "--layers", "--run", "--kernel", "--set"):
        assert flag in text


def test_page_name_is_safe():
    def digest(path: str) -> str:
        return hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:8]

    assert inspect_job.make_page_name("/x/cat.1.jpg") == f"cat.1.jpg-{digest('/x/cat.1.jpg')}"
    assert inspect_job.make_page_name(HOSTILE) == f"cat._img_src_x_onerror_alert_1__.png-{digest(HOSTILE)}"
    assert inspect_job.make_page_name("../..") == f"image-{digest('../..')}"
    # Names that sanitize alike never share a page: bytes that are not UTF-8, NFC/NFD twins, other punctuation.
    twins = [
        b"dog.\xff.jpg",
        b"dog.\xfe.jpg",
        "caf\u00e9.jpg".encode(),
        "cafe\u0301.jpg".encode(),
        b"a?b.jpg",
        b"a*b.jpg",
    ]
    made = [inspect_job.make_page_name(os.fsdecode(t)) for t in twins]
    assert len(set(made)) == len(made)
    assert len(inspect_job.make_page_name("x" * 250 + "?.jpg").encode()) <= 255


def test_config_defaults_come_from_the_yaml_and_are_checked(tmp_path):
    cfg = inspect_job.parse(["--image", "x.jpg"])
    assert cfg.layers == ("conv1_2", "conv3_3", "conv5_3") and cfg.kernel == "random" and cfg.out is None
    assert dict((c, (lo, hi)) for c, lo, hi in cfg.imagenet_classes) == {"cat": (281, 285), "dog": (151, 268)}
    cfg = inspect_job.parse(["--image", "x.jpg", "--layers", "conv5_3,conv1_1", "--set", "alpha=0.25"])
    assert cfg.layers == ("conv1_1", "conv5_3") and cfg.alpha == 0.25  # network order
    with pytest.raises(ConfigError, match=r"alpha: 1.5 is not allowed; a number between 0 and 1"):
        inspect_job.parse(["--image", "x.jpg", "--set", "alpha=1.5"])
    own = tmp_path / "c.yaml"
    own.write_text("extract:\n  max_file_bytes: 10\ninspect:\n  grid_channels: 16\n")
    cfg = inspect_job.parse(["--image", "x.jpg", "--config", str(own)])
    assert cfg.max_file_bytes == 10 and cfg.grid_channels == 16  # shared keys follow the extract section


def test_sections_are_numbered_by_the_order_they_are_added():
    page = Page("t")
    anchors = ["gradcam", "answer", "numbers", "image"]  # any order: the numbers follow it, none is typed
    for a in anchors:
        page.section(a, f"title of {a}")
        page.text("x")
    page.facts = [("weights", "random")]
    text = render_page(page)
    heads = [text.index(f'<section id="{a}"><h2>{k}. title of {a}</h2>') for k, a in enumerate(anchors, 1)]
    assert heads == sorted(heads) and text.index("<footer>") > heads[-1]
    assert f">{len(anchors)}. title of {anchors[-1]}</a></nav>" in text
    with pytest.raises(ValueError, match="used twice"):
        page.section("answer", "again")
