"""The harness every runner shares: locating data, per-item time limits, worker processes, progress, logs.

Used by :mod:`constrain_tools.suites` (JSON Schema Test Suite, MaskBench),
:mod:`constrain_tools.jsonschemabench` (JSONSchemaBench with a model) and the ``bench/`` scripts (through
:mod:`constrain_tools.bench_common`).

Data: the tokenizers and data sets live in a ``shared`` folder (``data/``, ``tokenizers/``). It is the
folder named by ``$CONSTRAIN_SHARED``, else ``../shared`` beside this source checkout; every runner also takes
the path as an argument, and :func:`require_path` says which flag or variable to set when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from constrain.exceptions import InvalidInputError

__all__ = [
    "SHARED_ENV",
    "Alarm",
    "JsonlLog",
    "Progress",
    "Timeout",
    "can_fork",
    "checkout_root",
    "cpu_count",
    "deadline",
    "default_path",
    "map_in_workers",
    "require_path",
    "shared_dir",
    "stop_on_sigterm",
    "summarize_exception",
]

T = TypeVar("T")

# ==========================================================================================================
# Data
# ==========================================================================================================

#: The environment variable naming the shared data folder (the one holding ``data/`` and ``tokenizers/``).
SHARED_ENV = "CONSTRAIN_SHARED"


def checkout_root() -> Path | None:
    """The source checkout this package runs from (``tools/constrain_tools`` inside it), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "constrain").is_dir() and (root / "tools").is_dir() else None


def shared_dir() -> Path:
    """``$CONSTRAIN_SHARED`` when set, else ``../shared`` beside the checkout (it may not exist)."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env)
    root = checkout_root()
    return (root.parent if root is not None else Path.cwd()) / "shared"


def default_path(*parts: str) -> str | None:
    """``shared_dir()/parts`` as a string when it exists (an argparse default), else None."""
    path = shared_dir().joinpath(*parts)
    return str(path) if path.exists() else None


def require_path(path: str | Path | None, what: str, flag: str) -> Path:
    """``path`` as a Path; :class:`InvalidInputError` naming ``flag`` and ``$CONSTRAIN_SHARED`` when it is
    None or does not exist."""
    hint = f"pass {flag} PATH, or set {SHARED_ENV} to the shared folder holding data/ and tokenizers/"
    if path is None or str(path) == "":
        raise InvalidInputError(f"no {what}: {hint}")
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{what} not found: {p} ({hint})")
    return p


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ==========================================================================================================
# Time limits and failures
# ==========================================================================================================


class Timeout(BaseException):
    """Raised by :func:`deadline` inside a block that ran too long (a BaseException: no ``except
    Exception`` in the code under test can swallow it)."""


@dataclass
class Alarm:
    """Whether a :func:`deadline` fired (its exception may surface wrapped, e.g. in a SystemError)."""

    fired: bool = False


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[Alarm]:
    """Raise :class:`Timeout` in the block after ``seconds`` (main thread on POSIX; elsewhere a no-op).

    Native code (a numba loop) is interrupted only when it returns to Python, and numba may then
    report the exception as a ``SystemError``: check the yielded :class:`Alarm`, and the elapsed time
    afterwards.
    """
    alarm = Alarm()
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield alarm
        return
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            alarm.fired = True
            raise Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield alarm
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def summarize_exception(exc: BaseException, frames: int = 4, max_chars: int | None = None) -> str:
    """``Type: message``, the innermost ``frames`` frames as ``file:line in func``, cut to ``max_chars``."""
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tb = traceback.extract_tb(exc.__traceback__)[-frames:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(tb))
    text = f"{head} [{where}]" if where else head
    return text if max_chars is None else text[:max_chars]


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, which a background job may have ignored) into KeyboardInterrupt, so
    ``kill PID`` ends a run with what it has written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ==========================================================================================================
# Worker processes
# ==========================================================================================================

#: What forked workers run: set before the pool forks, so nothing is pickled but the index and the result.
_WORK: Callable[[int], Any] | None = None


def _run_item(index: int) -> Any:
    if _WORK is None:  # pragma: no cover - only if a pool outlives map_in_workers
        raise RuntimeError("worker started without work")
    return _WORK(index)


def can_fork() -> bool:
    """Whether :func:`map_in_workers` can fork (POSIX)."""
    return "fork" in multiprocessing.get_all_start_methods()


def map_in_workers(
    count: int,
    work: Callable[[int], T],
    jobs: int,
    on_done: Callable[[T, int, int], None],
    on_crash: Callable[[int, str], T],
) -> list[T]:
    """``[work(0), ..., work(count - 1)]``, computed in ``jobs`` forked worker processes.

    ``on_done(result, done, index)`` runs in this process as each item finishes (``done`` counts them).
    A result that cannot come back becomes ``on_crash(index, message)``. A worker that dies (segfault,
    out of memory) breaks the pool: the items in flight go back in the queue and run again one at a
    time, and one that kills its worker again becomes ``on_crash``.
    """
    global _WORK
    results: list[T | None] = [None] * count
    pending = deque(range(count))
    strikes: Counter[int] = Counter()
    done_count = 0

    def finish(i: int, outcome: T) -> None:
        nonlocal done_count
        results[i] = outcome
        done_count += 1
        on_done(outcome, done_count, i)

    _WORK = work
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a threaded process may deadlock; the workers only
            # compile and walk, and take no lock the parent might hold.
            warnings.filterwarnings(
                "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            while pending:
                ctx = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                    inflight: dict[Future[T], int] = {}
                    broken = False
                    while (pending or inflight) and not broken:
                        while pending and len(inflight) < jobs:
                            if inflight and (
                                strikes[pending[0]] or any(strikes[j] for j in inflight.values())
                            ):
                                break  # an item that was in flight when a worker died runs alone
                            i = pending.popleft()
                            inflight[pool.submit(_run_item, i)] = i
                        finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            i = inflight.pop(fut)
                            try:
                                outcome = fut.result()
                            except BrokenProcessPool:
                                broken = True
                                inflight[fut] = i  # handled with the others below
                                continue
                            except Exception as exc:  # noqa: BLE001 - e.g. a result that does not pickle
                                outcome = on_crash(i, f"worker: {summarize_exception(exc)}")
                            finish(i, outcome)
                    for i in sorted(inflight.values()):
                        strikes[i] += 1
                        if strikes[i] >= 2:
                            msg = "worker process died (killed, segfault or out of memory) on this item"
                            finish(i, on_crash(i, msg))
                        else:
                            pending.appendleft(i)
    finally:
        _WORK = None
    return [r if r is not None else on_crash(i, "lost") for i, r in enumerate(results)]


# ==========================================================================================================
# Progress and logs
# ==========================================================================================================


class Progress:
    """Progress on stderr: a redrawn bar on a terminal (at most ten redraws a second), one line per item
    otherwise when ``lines`` (a log), else nothing; silent when disabled."""

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        stream: IO[str] | None = None,
        *,
        unit: str = "",
        lines: bool = False,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and total > 0 and (self.tty or lines)
        self.unit = f" {unit}" if unit else ""
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, label: str) -> None:
        """Show that ``done`` of the items are finished, the last one being ``label``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        if self.tty:
            if done < self.total and now - self.last < 0.1:
                return
            self.last = now
            width = 30
            bar = "#" * int(width * done / self.total)
            line = (
                f"\r[{bar:<{width}}] {done}/{self.total}{self.unit} {elapsed:6.1f}s eta {eta:6.1f}s  "
                f"{label[:60]:<60}"
            )
        else:
            line = f"[{done}/{self.total}] {elapsed:.0f}s eta {eta:.0f}s  {label}\n"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class JsonlLog:
    """``--log OUT.jsonl``: one JSON line per finished item, flushed at once, so a run cut off part way
    still leaves what it did. A context manager; ``path=None`` writes nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> JsonlLog:
        if self.path is not None:
            self._file = open(self.path, "w", encoding="utf-8")
        return self

    def write(self, line: Any) -> None:
        """Append ``line`` (a JSON-ready value) as one line."""
        if self._file is not None:
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
