"""The GPU choices of jobs/runtime.py, on a CPU machine: torch.cuda's answers are faked, and
torch.cuda.set_device's own argument check (pure Python) is what judges the device string."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.cuda._utils import _get_device_index

from analysis.config import ConfigError
from jobs import runtime


@pytest.fixture
def gpus(monkeypatch):
    """A machine with `n` fake GPUs of compute capability `major`; returns the devices set_device was given."""
    chosen: list[int] = []

    def make(n: int = 1, major: int = 9):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(_get_device_index(d)))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: SimpleNamespace(major=major))
        for key in ("LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(key, raising=False)
        return chosen

    return make


def test_auto_on_a_gpu_machine_is_cuda_with_its_index(gpus):
    chosen = gpus(1)
    assert runtime.pick_device("auto") == torch.device("cuda:0")  # a bare `cuda` makes set_device raise
    assert runtime.pick_device("cuda") == torch.device("cuda:0")
    assert chosen == [0, 0]
    with pytest.raises(ValueError, match="specified index"):
        _get_device_index(torch.device("cuda"))  # the check above is the real one


@pytest.mark.parametrize(
    "world, n_gpus, name, share, expected",
    [
        ("2", 2, "auto", False, ["cuda:0", "cuda:1"]),  # one GPU per process
        ("2", 2, "cuda", False, ["cuda:0", "cuda:1"]),
        ("2", 1, "cuda", True, ["cuda:0", "cuda:0"]),  # asked to share one GPU
        ("3", 2, "auto", True, ["cuda:0", "cuda:1", "cuda:0"]),
    ],
)
def test_torchrun_local_rank_picks_its_gpu(gpus, monkeypatch, world, n_gpus, name, share, expected):
    chosen = gpus(n_gpus)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    got = []
    for rank in range(int(world)):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", world)
        got.append(str(runtime.pick_device(name, share_gpus=share)))
    assert got == expected
    assert chosen == [int(d.split(":")[1]) for d in expected]


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_more_processes_than_gpus_is_refused_in_one_line_never_a_cpu_fallback(gpus, monkeypatch, name):
    chosen, threads = gpus(1), []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # what a CPU process on a shared node does
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("LOCAL_RANK", rank)
        with pytest.raises(ConfigError) as e:
            runtime.pick_device(name)
        msg = str(e.value)
        assert "\n" not in msg and "2 processes on this node" in msg and "1 GPU" in msg
        assert "share_gpus=true" in msg and "--device cpu" in msg
    assert chosen == [] and threads == []
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert runtime.pick_device("cpu") == torch.device("cpu")  # asked for the CPU: no GPU is counted


def test_the_extract_refuses_before_it_loads_a_model(gpus, monkeypatch, tmp_path, capsys):
    """Through the job: exit 2 and one line, the model never loaded."""
    from jobs import cli, extract

    gpus(1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(extract, "load_chosen_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cat.0.jpg").write_bytes(b"")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--weights", "random", "--shard", "0/1"]
    assert cli.run_main(extract.parse, extract.main, "extract", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 processes on this node" in err[0], err


@pytest.mark.parametrize("major, native", [(7, False), (8, True), (9, True)])
def test_native_bf16_on_cuda_is_ampere_or_later(gpus, major, native):
    """A T4 or V100 (7.x) only emulates bf16: auto picks fp32 there, bf16 from an A100 (8.0) on."""
    gpus(1, major)
    assert runtime.has_native_bf16(torch.device("cuda:0")) is native
    assert runtime.pick_precision("auto", torch.device("cuda:0")) == ("bf16" if native else "fp32")


def test_gpu_workers_share_the_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr(runtime, "count_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    gpu, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert runtime.pick_workers("auto", gpu) == 14  # two cores left to the main process (pinning, unit writer)
    assert runtime.pick_workers("auto", gpu, processes=2) == 6  # 8 cores each
    assert runtime.pick_workers("auto", gpu, processes=16) == 1
    assert runtime.pick_workers("auto", cpu, processes=4) == 0  # 4 cores each: no room beside the forward
    assert runtime.pick_workers(3, gpu, processes=2) == 3  # a number is taken as given
    monkeypatch.setattr(runtime, "count_cores", lambda: 128)
    assert runtime.pick_workers("auto", gpu) == 16  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.pick_workers("auto", gpu) == 16  # processes: torchrun's LOCAL_WORLD_SIZE (64 cores each)


def test_batch_size_auto_is_larger_on_a_gpu():
    assert runtime.pick_batch_size("auto", torch.device("cuda:0")) == 128
    assert runtime.pick_batch_size("auto", torch.device("cpu")) == 32
    assert runtime.pick_batch_size(7, torch.device("cuda:0")) == 7


def test_fp32_on_cuda_turns_tf32_off_and_nothing_else_does(monkeypatch):
    conv = torch.backends.cudnn.conv
    saved = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    try:
        for device, precision in (("cpu", "fp32"), ("cuda:0", "bf16")):
            runtime.use_exact_fp32(torch.device(device), precision)
            assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == saved
        runtime.use_exact_fp32(torch.device("cuda:0"), "fp32")
        assert conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
