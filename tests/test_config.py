"""Config: defaults from YAML only, unknown keys and bad values fail in one line naming what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.config import LAYER_NAMES, ConfigError, make_config, read_config_section
from jobs.config import ExtractConfig
from jobs.extract import parse

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_load_and_cover_every_field():
    cfg = make_config(ExtractConfig, read_config_section(None, "extract"))
    assert cfg.layers == LAYER_NAMES
    assert cfg.weights == "imagenet" and cfg.preprocess == "imagenet" and cfg.image_size == 224
    assert dict((n, (a, b)) for n, a, b in cfg.imagenet_classes) == {"cat": (281, 285), "dog": (151, 268)}


def test_flags_file_and_set_override_in_order(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("extract:\n  batch_size: 7\n  layers: [conv5_3, conv1_1]\n  precision: bf16\n")
    cfg = parse(["--data", "x", "--config", str(yml), "--precision", "fp32", "--set", "batch_size=3"])
    assert cfg.batch_size == 3  # --set beats the file
    assert cfg.precision == "fp32"  # a flag beats the file
    assert cfg.layers == ("conv1_1", "conv5_3")  # network order, whatever the order given


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "x", "--set", "batchsize=3"], ["batchsize", "batch_size"]),
        (["--data", "x", "--precision", "fp8"], ["fp8", "auto, fp32, bf16, fp16"]),
        (["--data", "x", "--layers", "conv6_1"], ["conv6_1", "conv5_3"]),
        (["--data", "x", "--image-size", "8"], ["image_size", ">= 32"]),
        (["--data", "x", "--device", "tpu"], ["tpu", "cuda:N"]),
        (["--data", "x", "--workers", "many"], ["many", "integer"]),
        (["--data", "x", "--preprocess", "caffe"], ["caffe", "classification-pytorch"]),
        ([], ["--data"]),
    ],
)
def test_bad_values_fail_naming_value_and_allowed(argv, words):
    with pytest.raises(ConfigError) as e:
        parse(argv)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_in_config_file_lists_valid_keys(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("extract:\n  batch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'batch'; valid keys: .*batch_size"):
        parse(["--data", "x", "--config", str(yml)])


@pytest.mark.slow
def test_command_line_failure_is_one_line_and_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "jobs.extract", "--data", "x", "--precision", "fp8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "fp8" in lines[0], r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "jobs.extract", "--batch-size", "two"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "two" in r.stderr
