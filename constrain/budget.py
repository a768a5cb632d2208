"""Compile budgets: a time limit that refuses a compile early, with the place it was compiling.

A :class:`CompileBudget` is a deadline held in a context variable while a compile runs
(:func:`budget_scope`); the loops that can blow up (subset construction, minimisation, each JSON
Schema subschema) call :func:`check`, which raises :class:`~constrain.exceptions.CompileBudgetExceeded`
naming the JSON pointer (and keyword) being compiled when the time ran out. Checks are cooperative:
one numba kernel call (a single determinisation or minimisation) runs to its end, so a refusal comes
within one such call of the deadline.

Where no scope is open, JSON Schema compiles open one with :data:`DEFAULT_BUDGET`, so every compile is
bounded without the caller asking.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .exceptions import CompileBudgetExceeded, InvalidInputError

__all__ = ["DEFAULT_BUDGET", "CompileBudget", "budget_scope", "check", "pointer_scope"]


@dataclass(frozen=True)
class CompileBudget:
    """Limits on one compile.

    ``seconds``: CPU time of the compiling thread (``time.thread_time``: other processes' load does
    not count, so a compile that fits on a quiet machine is not refused on a busy one) for the whole
    compile (schema stages, automata and the first masks);
    ``None`` for no limit. The default, 7 s, keeps a refused compile under 10 s on a loaded 2-core
    machine (the check runs between kernel calls, each well under a second).
    """

    seconds: float | None = 7.0

    def __post_init__(self) -> None:
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise InvalidInputError(
                f"CompileBudget.seconds must be a positive number or None, got {self.seconds!r}"
            )


DEFAULT_BUDGET = CompileBudget()
_NAMED = frozenset(
    ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
)
UNLIMITED = CompileBudget(seconds=None)


@dataclass
class _Scope:
    budget: CompileBudget
    deadline: float
    pointers: list[str]


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "constrain_compile_budget", default=None
)


@contextlib.contextmanager
def budget_scope(budget: CompileBudget | None = None) -> Iterator[CompileBudget]:
    """Run a compile under ``budget`` (``None``: the one already open, else :data:`DEFAULT_BUDGET`).
    Nested scopes keep the outer deadline when it is sooner."""
    outer = _SCOPE.get()
    if budget is None and outer is not None:
        yield outer.budget
        return
    budget = budget or DEFAULT_BUDGET
    if not isinstance(budget, CompileBudget):
        raise InvalidInputError(f"budget must be a constrain.CompileBudget, got {type(budget).__name__}")
    deadline = time.thread_time() + budget.seconds if budget.seconds is not None else float("inf")
    if outer is not None:
        deadline = min(deadline, outer.deadline)
    token = _SCOPE.set(_Scope(budget, deadline, list(outer.pointers) if outer else []))
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
    scope.pointers.append(pointer)
    try:
        yield
    finally:
        scope.pointers.pop()


def check(what: str = "") -> None:
    """Raise :class:`~constrain.exceptions.CompileBudgetExceeded` when the open budget's time is up
    (no-op outside a scope). ``what`` names the stage (``"determinization"``)."""
    scope = _SCOPE.get()
    if scope is None or time.thread_time() <= scope.deadline:
        return
    pointer = scope.pointers[-1] if scope.pointers else ""
    parts = pointer.split("/")
    # A subschema under a name ("properties/banner") is blamed on the keyword that holds it.
    keyword = parts[-2] if len(parts) > 2 and parts[-2] in _NAMED else parts[-1] if len(parts) > 1 else ""
    raise CompileBudgetExceeded(
        keyword,
        pointer,
        f"the compile ran past its budget of {scope.budget.seconds} s during {what or 'compilation'}; "
        "pass a larger CompileBudget(seconds=...) (budget=...) or simplify this subschema",
    )
