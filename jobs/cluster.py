"""What a process learns from its launcher (torchrun, Slurm, a person with --shard), and how it stops when told.

No process group is created: shards share nothing but the file system, so no process ever waits on another.
The run is marked complete by whichever shard finishes last (jobs/finalize.py), not at a barrier.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from analysis.store.shards import Shard, read_shard

log = logging.getLogger("cnn_blackbox")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def pick_shard(spec: str | None) -> Shard:
    return read_shard(spec, os.environ)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: SIGINT/SIGTERM go to the whole process group (a terminal's Ctrl-C, Slurm's
    preemption); the workers keep feeding the main process until it has committed its unit, then it ends them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopSignals:
    """While inside: the first SIGINT/SIGTERM asks to stop (`requested`): the extract lets the unit being written
    finish and begins no other; a second one stops at once (KeyboardInterrupt; the unit being written still
    finishes unless a third comes), losing nothing committed."""

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
        log.warning(
            "%s: stopping once the unit being written is committed; the rest is redone by a rerun (send it again to "
            "stop now)",
            signal.Signals(signum).name,
        )

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
