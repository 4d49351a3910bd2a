"""A test hook: SIGKILL this process at a named point, to prove that a kill there loses at most one unit.

    CNN_BLACKBOX_CRASH_AT=after-unit:0 python -m jobs.extract ...

Points: `mid-unit:K` (some parts of unit K written, not all), `before-manifest:K` (every part of unit K written,
its manifest not yet), `after-unit:K` (unit K committed), `before-finalize` (every unit done, run.json not yet).
CNN_BLACKBOX_CRASH_SIGNAL=SIGTERM sends that signal instead of SIGKILL (a preemption at that point).
Unset (always, outside the tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CNN_BLACKBOX_CRASH_AT"
SIGNAL_ENV = "CNN_BLACKBOX_CRASH_SIGNAL"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), getattr(signal, os.environ.get(SIGNAL_ENV, "SIGKILL")))
