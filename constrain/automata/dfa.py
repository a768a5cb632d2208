"""The byte-level DFA type and the ways to make one from a transition table.

A :class:`DFA` is minimal and trimmed: start state 0 (for tables built here), every state can reach an
accepting state, no two states are equivalent. :func:`dfa_from_arrays` and :func:`dfa_from_class_arrays`
bring a hand-built table to that form; :func:`column_classes` and :func:`equivalent_states` are the
byte-class and state-equivalence helpers other engines (the Earley lexer, recursive schemas) reuse.
"""

from __future__ import annotations

import numpy as np

from ..limits import DEFAULT_LIMITS
from .minimize import expand_columns, prune_and_minimize, refine

DEAD = -1
"""The transition target of a dead walk."""

MAX_DFA_STATES = DEFAULT_LIMITS.max_dfa_states
"""Upper bound on DFA states produced by the subset construction or a product automaton."""


class DFA:
    """A minimal deterministic automaton over bytes.

    ``transitions[s, b]`` is the state after reading byte ``b`` in state ``s``, or ``-1`` (dead). Every
    state can reach an accepting state (dead ends are pruned), so a prefix is viable exactly when
    its walk never hits ``-1``. The start state is ``start``.

    A DFA built over byte classes (``classes`` given: ``transitions[s, classes[b]]`` is the next state)
    keeps that table (:func:`class_table`) and expands it to 256 columns only when ``transitions`` is
    first read: the compile pipeline reads classes (a nested schema's automata are copied into their
    parents level by level), the token masks read bytes. The expansion replaces the class table (the
    largest automata would otherwise hold both; :func:`class_table` derives it again if asked).
    Immutable; equality is identity.
    """

    accepting: np.ndarray  # bool[num_states]
    start: int
    pattern: str
    _n: int  # states
    _table: np.ndarray | None  # int32[num_states, classes] until expanded (None for a full table)
    _classes: np.ndarray | None  # the column of each byte, for a DFA built over classes
    _full: np.ndarray | None  # int32[num_states, 256], once expanded (or as given)

    def __init__(
        self,
        transitions: np.ndarray,
        accepting: np.ndarray,
        start: int = 0,
        pattern: str = "",
        *,
        classes: np.ndarray | None = None,
    ) -> None:
        put = object.__setattr__
        if classes is not None:
            # One kind of argument for the expansion kernel (numba compiles per kind: read-only or not)
            transitions.setflags(write=False)
            classes = np.array(classes, dtype=np.int64).reshape(-1)
        put(self, "accepting", accepting)
        put(self, "start", start)
        put(self, "pattern", pattern)
        put(self, "_n", int(transitions.shape[0]))
        put(self, "_table", None if classes is None else transitions)
        put(self, "_classes", classes)
        put(self, "_full", transitions if classes is None else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DFA is immutable (cannot set {name!r})")

    def __repr__(self) -> str:
        return f"DFA({self.num_states} states, pattern={self.pattern!r})"

    def __reduce__(self) -> tuple[object, tuple[object, ...], dict[str, object]]:
        table, classes = self._table, self._classes
        if table is None or classes is None:  # expanded, or built full
            table, classes = self.transitions, None
        return (_restore_dfa, (table, self.accepting, self.start, self.pattern, classes), {})

    @property
    def transitions(self) -> np.ndarray:
        """``int32[num_states, 256]`` (read-only where built here), expanded from the class table on
        first use."""
        full = self._full
        if full is None:
            table, classes = self._table, self._classes
            assert table is not None and classes is not None  # one of the two tables is always held
            full = expand_columns(table, classes)
            full.setflags(write=False)
            object.__setattr__(self, "_full", full)  # first: a reader that finds no class table
            object.__setattr__(self, "_table", None)  # finds the full one
        return full

    @property
    def num_states(self) -> int:
        """Number of live states."""
        return self._n

    def step(self, state: int, data: bytes) -> int:
        """The state after reading ``data`` from ``state`` (``-1`` if the walk dies)."""
        t = self.transitions
        for b in data:
            if state < 0:
                return DEAD
            state = int(t[state, b])
        return state

    def matches(self, data: bytes) -> bool:
        """True when ``data`` is in the language."""
        s = self.step(self.start, data)
        return s >= 0 and bool(self.accepting[s])


def _restore_dfa(
    table: np.ndarray, accepting: np.ndarray, start: int, pattern: str, classes: np.ndarray | None
) -> DFA:
    return DFA(table, accepting, start, pattern, classes=classes)


def class_table(dfa: DFA) -> tuple[np.ndarray, np.ndarray]:
    """``(table, classes)``: ``dfa``'s transitions over byte classes (``table[s, classes[b]]``), the
    table it was built with, or its 256 columns grouped by :func:`dfa_byte_classes` (cached)."""
    table, classes = dfa._table, dfa._classes
    if table is not None and classes is not None:
        return table, classes
    got = dfa.__dict__.get("_class_table")
    if got is None:
        if classes is None:
            classes = dfa_byte_classes(dfa)
        # its classes' columns of the full table (classes are numbered 0..k-1, each with a byte)
        _u, reps = np.unique(classes, return_index=True)
        table = np.ascontiguousarray(dfa.transitions[:, reps], dtype=np.int32)
        table.setflags(write=False)  # as a built class table is: one kind of argument for the kernels
        got = (table, classes)
        dfa.__dict__["_class_table"] = got
    return got


def dfa_columns(dfa: DFA, columns: np.ndarray | int) -> np.ndarray:
    """``dfa.transitions[:, columns]`` (a byte, or an array of bytes), read from the class table
    without expanding it."""
    table, classes = dfa._table, dfa._classes
    if table is not None and classes is not None:
        return np.asarray(table[:, classes[columns]])
    return np.asarray(dfa.transitions[:, columns])


_EMPTY_DFA_TRANSITIONS = np.full((1, 256), -1, dtype=np.int32)
_IDENTITY = np.arange(256, dtype=np.int64)


def empty_dfa(label: str = "<empty>") -> DFA:
    """The DFA of the empty language: one non-accepting state with no way out."""
    return DFA(_EMPTY_DFA_TRANSITIONS.copy(), np.zeros(1, dtype=bool), 0, label)


_COLUMN_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**62, size=1 << 20, dtype=np.int64)


def equivalent_states(trans: np.ndarray, accepting: np.ndarray, reps: np.ndarray | None = None) -> np.ndarray:
    """Class id of each state of ``trans`` (``-1`` = dead), equal exactly where two states accept the
    same continuations (Hopcroft on the automaton made complete with a sink). The rows may come from
    several DFAs side by side (targets numbered over all rows). ``reps``: one byte per column class
    (:func:`column_classes`), if known."""
    n = trans.shape[0]
    if reps is None:
        reps, _ = column_classes(trans)
    t2 = np.where(trans[:, reps] >= 0, trans[:, reps], n).astype(np.int64)
    t2 = np.vstack([t2, np.full((1, t2.shape[1]), n, dtype=np.int64)])
    block = refine(t2, np.append(accepting, False).astype(np.bool_))
    return np.asarray(block[:n], dtype=np.int64)


def column_classes(trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal columns of ``trans``: (a representative column per class, class id per column),
    classes numbered in the order of their first column.

    Columns are hashed with random weights, then checked against their representative, so a hash
    collision can only split a class, never merge two different columns.
    """
    n = trans.shape[0]
    weights: np.ndarray = _COLUMN_WEIGHTS[:n]
    if n > _COLUMN_WEIGHTS.shape[0]:
        weights = np.random.default_rng(n).integers(1, 2**62, size=(n,), dtype=np.int64)
    with np.errstate(over="ignore"):
        hashes = (trans.astype(np.int64) + 2).T @ weights
    _uniq, first, classes = np.unique(hashes, return_index=True, return_inverse=True)
    classes = np.asarray(classes).reshape(-1)
    same = (trans == trans[:, first[classes]]).all(axis=0)
    if not same.all():  # pragma: no cover - a 64-bit collision: give the odd columns their own class
        extra = np.flatnonzero(~same)
        first = np.concatenate([first, extra])
        classes = classes.copy()
        classes[extra] = np.arange(len(first) - len(extra), len(first))
    # Number classes by their first byte: minimisation then numbers states in byte order (BFS), so
    # equal languages get equal tables whatever else the input table held.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return np.asarray(first)[order], rank[classes]


def numbered_by_first(ids: np.ndarray) -> np.ndarray:
    """``ids`` renumbered 0, 1, ... in the order each first occurs (byte classes numbered by their
    first byte, as :func:`column_classes` numbers them)."""
    _u, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[np.asarray(inverse).reshape(-1)]


def joint_byte_classes(*classes: np.ndarray) -> np.ndarray:
    """Class id per byte that every map of ``classes`` (a class id per byte each) treats alike: the
    tuples of their ids, numbered in sorted order."""
    joint = np.zeros(256, dtype=np.int64)
    for c in classes:
        _, inverse = np.unique(joint * 65536 + np.asarray(c, dtype=np.int64), return_inverse=True)
        joint = np.asarray(inverse, dtype=np.int64).reshape(-1)
    return joint


def dfa_byte_classes(dfa: DFA) -> np.ndarray:
    """Class id per byte: bytes in one class lead every state to the same place (cached on the DFA)."""
    got = dfa.__dict__.get("_byte_classes")
    if got is None:
        if dfa._classes is not None:
            # the class table's columns grouped, then by first byte (as column_classes numbers them)
            table, classes = class_table(dfa)
            _reps, by_column = column_classes(table)
            got = numbered_by_first(by_column[classes])
        else:
            _reps, got = column_classes(dfa.transitions)
        dfa.__dict__["_byte_classes"] = got
    return got


def minimal_dfa(
    compact: np.ndarray,
    accepting: np.ndarray,
    start: int,
    classes: np.ndarray,
    label: str,
    known_minimal: bool = False,
) -> DFA:
    """The trimmed, minimal :class:`DFA` of a table over byte classes (``compact[s, classes[byte]]`` is
    the next state or -1), or :func:`empty_dfa` for the empty language. ``known_minimal``: no two live
    states of the table are equivalent (see :func:`~.minimize.prune_and_minimize`)."""
    from ..budget import check

    check("minimization")  # the loops that blow up call this once per automaton (see constrain.budget)
    result = prune_and_minimize(compact, accepting, start, known_minimal)
    if result is None:
        return empty_dfa(label)
    table, acc = result
    table.setflags(write=False)
    acc.setflags(write=False)
    if table.shape[1] != 256 or not np.array_equal(classes, _IDENTITY):
        return DFA(table, acc, 0, label, classes=classes)
    return DFA(table, acc, 0, label)


def dfa_from_class_arrays(
    compact: np.ndarray,
    accepting: np.ndarray,
    start: int,
    classes: np.ndarray,
    label: str = "<dfa>",
    known_minimal: bool = False,
) -> DFA:
    """Like :func:`dfa_from_arrays` for transitions over byte classes (``classes[byte]`` = column).

    The result remembers ``classes`` as its byte classes (see :func:`dfa_byte_classes`).
    ``known_minimal``: no two live states of the table are equivalent; refinement is skipped.
    """
    dfa = minimal_dfa(compact, np.asarray(accepting, dtype=bool), int(start), classes, label, known_minimal)
    if dfa.accepting.any():
        dfa.__dict__["_byte_classes"] = classes
    return dfa


def dfa_from_arrays(transitions: np.ndarray, accepting: np.ndarray, start: int, label: str = "<dfa>") -> DFA:
    """Trim and minimise a hand-built automaton (``transitions[s, byte]`` = next state or -1).

    The result satisfies the :class:`DFA` invariants: start state 0, every state can reach acceptance,
    no two states equivalent. An empty language gives :func:`empty_dfa`.
    """
    trans = np.asarray(transitions)
    if trans.ndim != 2 or trans.shape[1] != 256:
        raise ValueError(f"transitions must be [states, 256], got {trans.shape}")
    # Work on byte classes (columns that agree everywhere) to keep minimisation cheap.
    reps, classes = column_classes(trans)
    compact = np.ascontiguousarray(trans[:, reps], dtype=np.int32)
    # The input's column classes hold for the minimised table too: remembered, so the masks need not
    # group the columns of a large table again (200 ms on a 38,000-state one, at a fill).
    return dfa_from_class_arrays(compact, accepting, start, np.asarray(classes).reshape(-1), label)
