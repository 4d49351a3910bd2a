"""`make analyze` as a user types it: the report stage follows the layers the extract recorded (conv5_3 alone works
end to end), and the Makefile gives the report what belongs to it (CONFIG, --no-progress, REPORT_ARGS); `make report`
and `make finalize` without RUN say that RUN is required."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from analysis.config import ConfigError
from analysis.store import contract
from jobs import cli, extract, report
from tests.run_tables import ROOT, make_dataset

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.mark.slow
def test_a_run_of_conv5_3_alone_is_reported_without_naming_layers(tmp_path, capsys):
    data, out = make_dataset(tmp_path / "train"), tmp_path / "out"
    assert (
        cli.run_main(
            extract.parse,
            extract.main,
            "extract",
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--weights",
                "random",
                "--image-size",
                "64",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--no-progress",
                "--layers",
                "conv5_3",
                "--shard",
                "0/1",
            ],
        )
        == 0
    )
    assert cli.run_main(report.parse, report.main, "report", ["--run", str(out), "--no-progress"]) == 0
    examples = pd.read_parquet(out / contract.REPORT_DIR / contract.TOP_EXAMPLES)
    assert set(examples[contract.LAYER]) == {"conv5_3"}
    assert (out / contract.REPORT_DIR / contract.INDEX_HTML).is_file()

    capsys.readouterr()  # a layer named that the run did not record: one line, at start, naming what it has
    assert (
        cli.run_main(
            report.parse,
            report.main,
            "report",
            ["--run", str(out), "--no-progress", "--layers", "conv4_3,conv5_3", "--out", str(tmp_path / "r2")],
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'conv4_3' was not recorded" in err and "it has conv5_3" in err, err
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize(
    "recorded, shown",
    [
        (
            (
                "conv1_1",
                "conv1_2",
                "conv2_1",
                "conv2_2",
                "conv3_1",
                "conv3_2",
                "conv3_3",
                "conv4_1",
                "conv4_2",
                "conv4_3",
                "conv5_1",
                "conv5_2",
                "conv5_3",
            ),
            ["conv5_3", "conv4_3"],
        ),
        (("conv5_3",), ["conv5_3"]),
        (("conv4_3", "conv5_1", "conv5_2"), ["conv5_2", "conv4_3"]),
        (("conv1_1",), ["conv1_1"]),
    ],
)
def test_auto_layers_are_the_deepest_of_the_two_deepest_blocks(recorded, shown):
    assert report.check_layers("auto", {"layers": dict.fromkeys(recorded, 8)}) == shown


def test_all_layers_are_every_recorded_layer_deepest_first_and_the_cli_takes_all():
    recorded = ("conv1_1", "conv3_3", "conv5_3", "conv4_3")
    assert report.check_layers("all", {"layers": dict.fromkeys(recorded, 8)}) == [
        "conv5_3",
        "conv4_3",
        "conv3_3",
        "conv1_1",
    ]
    assert report.parse(["--run", "r", "--layers", "all"]).layers == "all"


def make_n(*variables: str) -> str:
    """`make -n` of the Makefile: the commands it would run, continuation lines joined."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *variables], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.replace("\\\n", " ")


@needs_make
def test_make_analyze_gives_the_report_its_config_no_progress_and_report_args():
    lines = make_n(
        "analyze", "DATA=x", "ARGS=--no-progress --layers conv5_3", "CONFIG=my.yaml", "REPORT_ARGS=--no-overlays"
    ).splitlines()
    extract_line = next(line for line in lines if line.startswith(".venv/bin/python -m jobs.extract"))
    report_line = next(line for line in lines if "-m jobs.report" in line)
    assert "--no-progress" in extract_line and "--layers conv5_3" in extract_line
    assert "--no-overlays" not in extract_line
    after_run = re.sub(r'--run="\$\(.*?\)"', "", report_line)  # the flags the report itself gets
    assert after_run.split()[3:] == ['--config="my.yaml"', "--no-progress", "--no-overlays"], report_line


@needs_make
@pytest.mark.parametrize("target", ["report", "finalize"])
def test_make_report_and_finalize_without_run_say_that_run_is_required(target):
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"RUN is required: make {target} RUN=runs/<name>" in done.stderr, done.stderr
    assert "-m jobs." not in done.stdout


def test_report_without_run_says_that_run_is_required():
    for argv in ([], ["--run", ""]):
        with pytest.raises(ConfigError, match=r"RUN is required: pass --run runs/<name>"):
            report.parse(argv)
