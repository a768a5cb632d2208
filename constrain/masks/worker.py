"""The background thread that computes token masks ahead of use (see ``DFATokenMasks``).

Mask walks are numba kernels that release the GIL, so this thread fills masks while the model runs its
forward pass; it runs at the lowest priority so that threads serving requests win the CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable


class BackgroundWorker:
    """One daemon thread that runs queued jobs, newest first (mask precompute, see ``DFATokenMasks``).

    A job is a callable taking the worker's stop event; it should check the event between units of
    work (one trie walk each) and hold no strong reference to what it works on between units, so
    that dropping a compiled grammar ends its job. The thread starts on the first :meth:`submit` and
    exits by itself after ``idle_exit_s`` without work; :meth:`stop` ends it at once (and drops the
    queue); a later :meth:`submit` starts a fresh thread. At most ``max_jobs`` wait; a new job pushes
    out the oldest.
    """

    def __init__(self, idle_exit_s: float = 2.0, max_jobs: int = 8) -> None:
        self.idle_exit_s = idle_exit_s
        self._cond = threading.Condition()
        # newest first, and only the newest few: the grammar just compiled is the one decoding now
        self._jobs: deque[Callable[[threading.Event], None]] = deque(maxlen=max_jobs)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def submit(self, job: Callable[[threading.Event], None]) -> None:
        """Queue ``job``; start the thread if none is running."""
        with self._cond:
            self._jobs.appendleft(job)  # a full queue drops its oldest job
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="constrain-masks", daemon=True
                )
                self._thread.start()
            else:
                self._cond.notify()

    def stop(self, timeout: float = 10.0) -> bool:
        """Drop queued jobs, stop the running one after its current walk; True when the thread is gone."""
        with self._cond:
            self._jobs.clear()
            self._stop.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    def _run(self, stop: threading.Event) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                while not self._jobs and not stop.is_set():
                    if not self._cond.wait(self.idle_exit_s) and not self._jobs:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                if stop.is_set():
                    return
                job = self._jobs.popleft()
            job(stop)
            del job


def _lower_thread_priority() -> None:
    """Nice the calling thread (Linux: per-thread nice values), so that on a busy machine the threads
    that serve requests win the CPU over work done ahead of time. No-op elsewhere."""
    native_id = getattr(threading, "get_native_id", None)
    if native_id is None or not hasattr(os, "setpriority"):  # pragma: no cover - not Linux
        return
    with contextlib.suppress(OSError):  # not permitted here: keep the default priority
        os.setpriority(os.PRIO_PROCESS, native_id(), 19)


MASK_WORKER = BackgroundWorker()
atexit.register(MASK_WORKER.stop)
