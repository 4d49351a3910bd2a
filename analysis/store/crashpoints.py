"""A test hook: SIGKILL this process at a named point, to prove that a kill there loses at most one unit.

    CNN_BLACKBOX_CRASH_AT=after-unit:0 python -m jobs.extract ...

Points: `mid-unit:K` (some parts of unit K written, not all), `before-manifest:K` (every part of unit K written,
its manifest not yet), `after-unit:K` (unit K committed), `before-finalize` (every unit done, run.json not yet).
CNN_BLACKBOX_CRASH_SIGNAL=SIGTERM sends that signal instead of SIGKILL (a preemption at that point). On a thread
other than the main one (the unit writer's), a signal with a Python handler has that handler called right there,
as the main thread would run it: a real signal's handler runs there a moment later, which would make the point
where the stop is seen depend on timing.
Unset (always, outside the tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "CNN_BLACKBOX_CRASH_AT"
SIGNAL_ENV = "CNN_BLACKBOX_CRASH_SIGNAL"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    sig = getattr(signal, os.environ.get(SIGNAL_ENV, "SIGKILL"))
    handler = signal.getsignal(sig)
    if callable(handler) and threading.current_thread() is not threading.main_thread():
        handler(sig, None)
    else:
        os.kill(os.getpid(), sig)
