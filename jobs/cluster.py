"""What a process learns from its launcher (torchrun, Slurm, a person with --shard), and how it stops when told.

No process group is created: shards share nothing but the file system, so no process ever waits on another.
The run is marked complete by whichever shard finishes last (jobs/finalize.py), not at a barrier.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

import torch

from analysis.store.shards import Shard, read_shard
from jobs import runtime

log = logging.getLogger("cnn_blackbox")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def pick_shard(spec: str | None) -> Shard:
    return read_shard(spec, os.environ)


def pick_device(name: str) -> torch.device:
    """runtime.pick_device, but under torchrun (LOCAL_RANK) `auto` and `cuda` take GPU LOCAL_RANK: one process per
    GPU. With more processes on the node than GPUs, `auto` runs them on the CPU (and `cuda` shares the GPUs).
    A CUDA device always comes back with its index (cuda:N): torch.cuda.set_device refuses a bare `cuda`."""
    local_rank, local_world = os.environ.get("LOCAL_RANK"), os.environ.get("LOCAL_WORLD_SIZE")
    if local_rank is None or name not in ("auto", "cuda") or not torch.cuda.is_available():
        device = runtime.pick_device(name)
    else:
        gpus, rank = torch.cuda.device_count(), int(local_rank)
        enough = int(local_world or gpus) <= gpus
        if enough or name == "cuda":
            device = torch.device(f"cuda:{rank % gpus}")
        else:
            log.warning("%s processes on this node but %d GPUs: running on the CPU (pass --device cuda to share "
                        "the GPUs)", local_world, gpus)
            device = torch.device("cpu")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if device.type == "cpu" and count_local_processes() > 1:
        # torchrun sets OMP_NUM_THREADS=1; CPU processes on one node share its cores instead.
        torch.set_num_threads(max(1, runtime.count_cores() // count_local_processes()))
    return device


def count_local_processes() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE), 1 without a launcher."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))


def pick_workers(workers: int | str, device: torch.device) -> int:
    """runtime.pick_workers for this process: the node's cores are shared by its processes."""
    return runtime.pick_workers(workers, device, count_local_processes())


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: SIGINT/SIGTERM go to the whole process group (a terminal's Ctrl-C, Slurm's
    preemption); the workers keep feeding the main process until it has committed its unit, then it ends them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopSignals:
    """While inside: the first SIGINT/SIGTERM asks to stop at the next unit boundary (`requested`); a second one
    stops at once (KeyboardInterrupt), losing the unit in flight and nothing else."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: stopping after the unit in flight is committed (send it again to stop now and lose that "
                    "unit)", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def exit_code(self) -> int:
        return 128 + int(self.signum or 0)
