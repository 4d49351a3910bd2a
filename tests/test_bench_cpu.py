"""The CPU benchmarks that time the job's own code run at tiny sizes, so that they cannot go stale unnoticed: each
prints every part it promises, with figures that add up."""

import re

import pytest
import torch

from benchmarks import bench_input, bench_reductions, profile_extract

pytestmark = pytest.mark.slow  # the benchmarks run the model


def test_profile_extract_prints_every_part_and_its_total_is_their_sum(capsys):
    assert (
        profile_extract.main(
            ["--images", "6", "--batch-size", "4", "--image-size", "32", "--precision", "fp32", "--repeats", "1"]
            + ["--reductions", "eager"]  # compiled: tests/test_compiled_reductions.py
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("cpu: ")
    figures = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\w+)\s+([\d.]+) \(", out, re.M)}
    assert set(profile_extract.PARTS + profile_extract.STEPS + ("total",)) <= set(figures), out
    assert abs(sum(figures[p] for p in profile_extract.PARTS) - figures["total"]) < 0.02 * len(profile_extract.PARTS)
    assert figures["forward"] > 0 and figures["load"] > 0 and figures["decode"] > 0 and figures["preprocess"] > 0


def test_bench_input_and_bench_reductions_compare_both_paths(capsys):
    assert bench_input.main(["--images", "4", "--batch-size", "2", "--image-size", "32", "--repeats", "1"]) == 0
    assert (
        bench_reductions.main(["--batch-size", "2", "--image-size", "32", "--precision", "fp32", "--repeats", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert re.search(
        r"float32 per image [\d.]+ .* uint8 \+ one normalization per batch [\d.]+ .* now / before "
        r"[\d.]+",
        out,
    ), out
    assert re.search(
        r"loading a batch .* one item after another [\d.]+ .* on \d+ threads [\d.]+ .* threads / one "
        r"[\d.]+",
        out,
    ), out
    assert "float32 0.0234 MiB, uint8 0.00586 MiB" in out  # 2 x 3 x 32 x 32 x 4 B = 24 KiB
    assert re.search(r"fp32 batch 2 size 32: .* pool / map only [\d.]+ .* with peaks / without [\d.]+", out), out


def test_bench_reductions_compares_the_forward_with_hooks_against_the_bare_one():
    """The in-model comparison bench_gpu runs on a GPU (there with Triton), here at one tiny size: every forward
    timed, the compiled reductions ran (no failure), and the shares are those of the times printed."""
    line = bench_reductions.compare_in_model(2, 32, "fp32", 2, torch.device("cpu"))
    times = {
        m[1]: float(m[2]) for m in re.finditer(r"(bare forward|eager hooks|compiled hooks) ([\d.]+) \(median", line)
    }
    assert set(times) == {"bare forward", "eager hooks", "compiled hooks"} and "FAILED" not in line, line
    for name in ("eager hooks", "compiled hooks"):
        share = float(re.search(rf"share of the bare forward: .*{name} ([+-][\d.]+)%", line)[1])
        expected = (times[name] - times["bare forward"]) / times["bare forward"] * 100
        rounding = 100 * 0.05 * (1 + times[name] / times["bare forward"]) / times["bare forward"]  # times print .1f
        assert abs(share - expected) < 0.1 + rounding, line
