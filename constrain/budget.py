"""Compile budgets: limits on time and automaton size that refuse a compile early, naming the place.

A :class:`CompileBudget` is a deadline (and a state limit) held in a context variable while a compile
runs (:func:`budget_scope`). The loops that can blow up call :func:`check`, which raises
:class:`~constrain.exceptions.CompileBudgetExceeded` naming the JSON pointer (and keyword) that spent
the time: each JSON Schema subschema, each subset construction and minimisation, and, inside the numba
kernels that run long on large automata (subset construction, Hopcroft's refinement), every few
hundred rounds through :func:`time_up` (one object-mode call), so a refusal comes within a fraction of
a second of the deadline even on automata of 100,000+ states.

Where no scope is open, JSON Schema compiles open one with :data:`DEFAULT_BUDGET`, so every compile is
bounded without the caller asking.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .exceptions import CompileBudgetExceeded, InvalidInputError

__all__ = [
    "DEFAULT_BUDGET",
    "UNLIMITED",
    "CompileBudget",
    "as_budget",
    "budget_scope",
    "check",
    "check_states",
    "pointer_scope",
    "state_limit",
    "time_up",
]


@dataclass(frozen=True)
class CompileBudget:
    """Limits on one compile.

    ``seconds``: CPU time of the compiling thread (``time.thread_time``: other processes' load does
    not count, so a compile that fits on a quiet machine is not refused on a busy one) for the whole
    compile (schema stages, automata and the first masks), less the time numba's JIT compiler takes
    on a kernel's first use in a process with a cold cache; ``None`` for no limit. The default, 7 s,
    keeps a refused compile under 10 s on a 2-core machine (JSONSchemaBench's ``cloudify`` and
    ``o13020`` are refused 7-8 s after the start).

    ``max_states``: the most states one automaton built on the way may have (subset construction and
    products); ``None`` for the library's own ceiling (:data:`constrain.automata.MAX_DFA_STATES`).
    A smaller value refuses large schemas sooner and bounds the memory of a compile (an automaton of
    ``n`` states over ``k`` byte classes holds about ``n * (k + 256) * 4`` bytes).

    ``wall_seconds``: a wall-clock limit as well (``None``, the default: none), for a service that must
    answer in time whatever the machine's load; a refusal then depends on the load.
    """

    seconds: float | None = 7.0
    max_states: int | None = None
    wall_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("seconds", "wall_seconds"):
            v = getattr(self, name)
            if v is not None and not (
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
            ):
                raise InvalidInputError(f"CompileBudget.{name} must be a positive number or None, got {v!r}")
        m = self.max_states
        if m is not None and not (isinstance(m, int) and not isinstance(m, bool) and m > 0):
            raise InvalidInputError(f"CompileBudget.max_states must be a positive int or None, got {m!r}")


DEFAULT_BUDGET = CompileBudget()
UNLIMITED = CompileBudget(seconds=None)
"""No time limit (the size ceiling of the automata still holds)."""
_NAMED = frozenset(
    ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
)
_BLAME_SHARE = 0.5
"""A refusal blames the innermost subschema that spent at least this share of the time so far: one
costly subschema is named itself, many cheap ones the subschema that holds them all."""


def as_budget(budget: CompileBudget | float | None, where: str = "budget") -> CompileBudget | None:
    """``budget`` as a :class:`CompileBudget`: a number is seconds of CPU time, ``None`` stays ``None``
    (the open or default budget).

    Raises:
        InvalidInputError: anything else, or a number that is not positive.
    """
    if budget is None or isinstance(budget, CompileBudget):
        return budget
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        try:
            return CompileBudget(seconds=float(budget))
        except InvalidInputError:
            raise InvalidInputError(f"{where} must be a positive number of seconds, got {budget!r}") from None
    raise InvalidInputError(
        f"{where} must be a constrain.CompileBudget, a number of seconds or None, got {type(budget).__name__}"
    )


class _JitClock:
    """Per-thread CPU seconds spent in numba's JIT compiler (outermost ``numba:compile`` events only).

    A kernel's first call in a process with a cold numba cache compiles it (seconds each); that is
    installing the library, not compiling the user's grammar, so the budget's clock leaves it out.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            self._installed = True
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - numba is a dependency; without its events, count JIT
            return
        clock = self

        class _Listener(event.Listener):
            def on_start(self, ev: object) -> None:
                local = clock._local
                depth = getattr(local, "depth", 0)
                if depth == 0:
                    local.started = time.thread_time()
                local.depth = depth + 1

            def on_end(self, ev: object) -> None:
                local = clock._local
                local.depth = max(0, getattr(local, "depth", 1) - 1)
                if local.depth == 0 and hasattr(local, "started"):
                    local.jit = getattr(local, "jit", 0.0) + time.thread_time() - local.started

        event.register("numba:compile", _Listener())

    def seconds(self) -> float:
        return float(getattr(self._local, "jit", 0.0))


_JIT = _JitClock()


def _cpu() -> float:
    """The budget's clock: this thread's CPU time less what numba's JIT compiler took of it."""
    return time.thread_time() - _JIT.seconds()


#: Wall seconds between two reads of the CPU clock in one scope. Reading it is a system call that took
#: 60 µs on average inside compiles on a 2-core VM (a quarter of a small schema's compile); in between,
#: the CPU time is bounded by the last read plus the wall time since (one thread cannot run faster).
_CPU_READ_EVERY_S = 0.002


def _cpu_bound(scope: _Scope) -> float:
    """An upper bound on :func:`_cpu` now, from the scope's last read of the clock (read again when
    that is :data:`_CPU_READ_EVERY_S` old)."""
    wall = time.perf_counter()
    if wall - scope.read_wall < _CPU_READ_EVERY_S:
        return scope.read_cpu + (wall - scope.read_wall)
    return _read_cpu(scope, wall)


def _read_cpu(scope: _Scope, wall: float | None = None) -> float:
    """:func:`_cpu`, kept as the scope's last read."""
    cpu = _cpu()
    scope.read_wall, scope.read_cpu = time.perf_counter() if wall is None else wall, cpu
    return cpu


@dataclass
class _Scope:
    budget: CompileBudget
    deadline: float  # on time.thread_time
    wall_deadline: float  # on time.monotonic
    start: float
    pointers: list[tuple[str, float]]  # (pointer, thread time when it was entered)
    # pointer -> (its finished part that took longest, seconds): named beside a blamed parent
    costliest: dict[str, tuple[str, float]] = field(default_factory=dict)
    read_wall: float = -math.inf  # time.perf_counter at the last read of the CPU clock (_cpu_bound)
    read_cpu: float = 0.0  # what that read gave


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "constrain_compile_budget", default=None
)


@contextlib.contextmanager
def budget_scope(budget: CompileBudget | float | None = None) -> Iterator[CompileBudget]:
    """Run a compile under ``budget`` (a :class:`CompileBudget` or seconds; ``None``: the one already
    open, else :data:`DEFAULT_BUDGET`). Nested scopes keep the outer limits where they are tighter.

    Raises:
        InvalidInputError: ``budget`` is not a budget (see :func:`as_budget`).
    """
    outer = _SCOPE.get()
    budget = as_budget(budget)
    if budget is None and outer is not None:
        yield outer.budget
        return
    budget = budget or DEFAULT_BUDGET
    _JIT.install()
    now = _cpu()
    deadline = now + budget.seconds if budget.seconds is not None else math.inf
    wall = time.monotonic() + budget.wall_seconds if budget.wall_seconds is not None else math.inf
    if outer is not None:
        deadline = min(deadline, outer.deadline)
        wall = min(wall, outer.wall_deadline)
        if outer.budget.max_states is not None and (
            budget.max_states is None or outer.budget.max_states < budget.max_states
        ):
            budget = CompileBudget(budget.seconds, outer.budget.max_states, budget.wall_seconds)
    pointers = list(outer.pointers) if outer else []
    token = _SCOPE.set(_Scope(budget, deadline, wall, now, pointers))
    try:
        yield budget
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def pointer_scope(pointer: str) -> Iterator[None]:
    """Name what is being compiled (a JSON pointer) for the error :func:`check` raises."""
    scope = _SCOPE.get()
    if scope is None:
        yield
        return
    entered = _cpu_bound(scope)  # blame needs no more precision than that
    scope.pointers.append((pointer, entered))
    try:
        yield
    finally:
        scope.pointers.pop()
        if scope.pointers:
            parent = scope.pointers[-1][0]
            spent = _cpu_bound(scope) - entered
            best = scope.costliest.get(parent)
            if best is None or spent > best[1]:
                scope.costliest[parent] = (pointer, spent)


def time_up() -> bool:
    """True when the open budget's time is spent (False outside a scope). Never raises: the numba
    kernels call it from object mode every few hundred rounds and return early, and their Python
    caller then calls :func:`check`."""
    scope = _SCOPE.get()
    if scope is None:
        return False
    if time.monotonic() > scope.wall_deadline:
        return True
    return _cpu_bound(scope) > scope.deadline and _read_cpu(scope) > scope.deadline


def check(what: str = "") -> None:
    """Raise :class:`~constrain.exceptions.CompileBudgetExceeded` when the open budget's time is up
    (no-op outside a scope). ``what`` names the stage (``"determinization"``)."""
    scope = _SCOPE.get()
    if scope is None:
        return
    if time.monotonic() <= scope.wall_deadline and _cpu_bound(scope) <= scope.deadline:
        return
    now = _read_cpu(scope)
    if now <= scope.deadline and time.monotonic() <= scope.wall_deadline:
        return
    pointer, spent = _blame(scope, now)
    b = scope.budget
    limit = f"{b.seconds} s of CPU time" if now > scope.deadline else f"{b.wall_seconds} s of wall time"
    share = f" ({spent:.1f} s of it in this subschema" if pointer else ""
    part = scope.costliest.get(pointer) if pointer else None
    if part is not None:
        share += f"; its costliest part so far: {part[0]}, {part[1]:.1f} s"
    share += ")" if pointer else ""
    raise CompileBudgetExceeded(
        _keyword(pointer),
        pointer,
        f"ran past the compile budget of {limit}{share}, during {what or 'compilation'}; pass a "
        "larger budget (budget=CompileBudget(seconds=...), or --compile-budget on the command line) or "
        "simplify this subschema",
    )


def state_limit(ceiling: int) -> int:
    """The most states an automaton may have: ``ceiling`` (the library's own limit), or the open
    budget's ``max_states`` where that is smaller."""
    scope = _SCOPE.get()
    if scope is None or scope.budget.max_states is None:
        return ceiling
    return min(ceiling, scope.budget.max_states)


def check_states(ceiling: int, what: str) -> None:
    """Called where an automaton went past :func:`state_limit`: raise
    :class:`~constrain.exceptions.CompileBudgetExceeded` when the time is up or the budget's
    ``max_states`` (not ``ceiling``) was the limit; otherwise return, and the caller raises its own
    size error."""
    check(what)
    scope = _SCOPE.get()
    if scope is None or scope.budget.max_states is None or scope.budget.max_states >= ceiling:
        return
    # The automaton past the limit is the innermost open subschema's (time shares would blame the
    # one that spent the most, which a fast construction need not be).
    pointer = scope.pointers[-1][0] if scope.pointers else ""
    raise CompileBudgetExceeded(
        _keyword(pointer),
        pointer,
        f"built an automaton during {what} past the compile budget's max_states="
        f"{scope.budget.max_states}; pass a larger budget (CompileBudget(max_states=...)) or simplify "
        "this subschema",
    )


def _blame(scope: _Scope, now: float) -> tuple[str, float]:
    """The pointer to blame and the CPU time spent in it: the innermost open subschema that took at
    least :data:`_BLAME_SHARE` of the time since the compile began (the outermost one otherwise)."""
    if not scope.pointers:
        return "", now - scope.start
    total = max(now - scope.start, 1e-9)
    for pointer, entered in reversed(scope.pointers):
        if (now - entered) / total >= _BLAME_SHARE:
            return pointer, now - entered
    pointer, entered = scope.pointers[0]
    return pointer, now - entered


def _keyword(pointer: str) -> str:
    """The keyword a pointer's subschema sits under (``properties`` for ``#/properties/name``)."""
    parts = pointer.split("/")
    if len(parts) > 2 and parts[-2] in _NAMED:
        return parts[-2]
    return parts[-1] if len(parts) > 1 else ""
