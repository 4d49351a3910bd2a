"""One background thread that runs a function on each item of a small bounded queue, in order: the unit writer
commits units on it while the main thread computes the next batches (pyarrow's encoding and the fsyncs release the
GIL, and a GPU needs no Python thread while its kernels run).

It keeps the guarantees of running the same calls in the main thread: items are done one at a time in the order they
were handed over; the first error stops the thread (nothing after it is begun) and is raised, the same exception,
in the main thread at its next `submit` or at `close`. `should_stop` is asked before each item is begun: when it
says yes the item is dropped, so a stop request lets the item in progress finish and begins none after it.
The main thread never blocks without waking every 0.2 s, so its signal handlers run while it waits.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
_END = object()
_WAKE_S = 0.2


class BackgroundWorker(Generic[T]):
    def __init__(
        self, run: Callable[[T], None], name: str, depth: int = 1, should_stop: Callable[[], bool] | None = None
    ):
        """run: called on the thread for each item; depth: items queued beyond the one in progress (the main thread
        blocks in `submit` while the queue is full)."""
        self._run = run
        self._should_stop = should_stop or (lambda: False)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._raised = False
        self.done = 0  # items run to the end
        self.dropped = 0  # items not begun: after a stop, a cancel or an error
        # Started by the first item, not here: a DataLoader forks its workers when the loop over it begins, and a
        # fork is safest while this process has no thread of ours.
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None or self._cancel.is_set() or self._should_stop():
                self.dropped += 1
                continue
            try:
                self._run(item)
                self.done += 1
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, raised there as it is
                self._error = e

    def submit(self, item: T) -> None:
        """Queue `item` (waits while the queue is full); raises the thread's error, if it stopped on one."""
        self._raise()
        self._put(item)
        self._raise()

    def _put(self, item) -> None:
        if self._thread.ident is None and item is not _END:
            self._thread.start()
        while True:
            try:
                self._queue.put(item, timeout=_WAKE_S)
                return
            except queue.Full:
                continue

    def close(self, cancel: bool = False, raise_error: bool = True) -> None:
        """Wait until the thread has done every queued item (cancel: drops those not begun, and the one in progress
        still finishes), then raise its error unless told not to. Idempotent."""
        if cancel:
            self._cancel.set()
        if self._thread.is_alive():
            self._put(_END)
            while self._thread.is_alive():
                self._thread.join(_WAKE_S)
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error
