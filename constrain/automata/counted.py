"""Strings whose length bound is too large for automaton layers, counted beside the DFA instead.

A ``maxLength`` of ``N`` code points is one layer of states per code point (:func:`length_dfa
<constrain.json_schema.strings.length_dfa>`): past a few thousand that is too large to build (32,767
and 65,535, common database limits, would be half a million states). Such a string is built with no
upper bound, and its content is preceded by a *count mark* right after the opening quote: the byte
``0xFD`` (never in UTF-8 text) and the bound as :data:`MARK_DIGITS` base-128 digits. The mark is part
of the language, so the automaton algebra carries it through sequences and unions unchanged.

:func:`counted_dfa` then takes the marks out of the final DFA: every edge into a mark is redirected
past it, and remembered as an *entry* (the edge and its bound). The token automaton
(:class:`constrain.masks.counted.CountedStringMasks`) counts the code points after each entry and
forbids those past the bound; every other state behaves as the DFA says.

This is exact only where the string is the one thing the DFA can be reading after its opening quote:
a state that reads a mark must read nothing else (:func:`counted_dfa` checks it, else refuses). A
product (intersection, difference) of a marked language would compare the marks as text, so
:func:`constrain.automata.algebra.intersect` and ``difference`` refuse marked operands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dfa import DFA, class_table, dfa_columns
from .minimize import bfs_order

COUNT_MARK = 0xFD
"""The first byte of a count mark (no UTF-8 text holds it; ``0xFF`` is the holes' byte)."""
MARK_DIGITS = 5
"""Base-128 digits of the bound after :data:`COUNT_MARK` (bytes ``0x00``-``0x7F``): bounds below 2**35."""
MAX_MARKED_BOUND = (1 << (7 * MARK_DIGITS)) - 1
_HOLE = 0xFF


def count_mark(bound: int) -> bytes:
    """The mark that precedes the content of a string of at most ``bound`` code points."""
    if not 0 <= bound <= MAX_MARKED_BOUND:
        raise ValueError(f"a counted bound must be in 0..{MAX_MARKED_BOUND}, got {bound}")
    return bytes([COUNT_MARK, *((bound >> (7 * i)) & 0x7F for i in reversed(range(MARK_DIGITS)))])


def mark_states(dfa: DFA) -> np.ndarray:
    """The states of ``dfa`` that read a count mark's first byte (not a hole's index byte ``0xFD``)."""
    marks = np.flatnonzero(dfa_columns(dfa, COUNT_MARK) >= 0)
    if marks.size:
        mids = dfa_columns(dfa, _HOLE)
        marks = marks[~np.isin(marks, mids[mids >= 0])]
    return marks


def has_count_marks(dfa: DFA) -> bool:
    """Whether ``dfa`` holds a count mark (see the module docstring)."""
    return bool(mark_states(dfa).size)


@dataclass(frozen=True, eq=False)
class CountedDFA:
    """A DFA without its count marks, and where they were.

    ``dfa`` is the automaton with every mark skipped; reading byte ``b`` in state ``s`` enters a counted
    string where ``(s << 8) | b`` is in ``entry_keys`` (sorted), whose bound is the same position of
    ``entry_bounds``: from there on, at most that many code points before the closing quote. ``dfa`` is
    what the masks walk; the bounds are enforced by :class:`constrain.masks.counted.CountedStringMasks`.
    """

    dfa: DFA
    entry_keys: np.ndarray  # int64, sorted
    entry_bounds: np.ndarray  # int64

    @property
    def start(self) -> int:
        """The start state."""
        return self.dfa.start

    @property
    def num_states(self) -> int:
        """Number of states of :attr:`dfa`."""
        return self.dfa.num_states

    def bound_after(self, state: int, byte: int) -> int:
        """The bound of the counted string that reading ``byte`` in ``state`` enters, or -1."""
        key = (state << 8) | byte
        i = int(np.searchsorted(self.entry_keys, key))
        if i < self.entry_keys.shape[0] and int(self.entry_keys[i]) == key:
            return int(self.entry_bounds[i])
        return -1


class ImpureCountMark(ValueError):
    """A state reads a count mark and something else (see :func:`counted_dfa`)."""


def counted_dfa(dfa: DFA) -> CountedDFA:
    """``dfa`` with its count marks taken out (see :class:`CountedDFA`).

    Raises:
        ImpureCountMark: a state that reads a mark also reads another byte, or a mark is not
            followed by exactly one bound: another language is read at the same place (a union of a
            counted string with another string), where one count cannot say which applies.
    """
    table, classes = class_table(dfa)
    marks = mark_states(dfa)
    n = dfa.num_states
    mark_class = int(classes[COUNT_MARK])
    if marks.size and np.count_nonzero(classes == mark_class) != 1:
        raise ImpureCountMark("a byte other than a count mark's is read where marks are")
    live = table >= 0
    if marks.size and not (live[marks].sum(axis=1) == 1).all():
        raise ImpureCountMark("a state reads a count mark beside other bytes")
    # Every mark's digits at once: each state on the way reads exactly one byte, a digit 0x00-0x7F.
    first_byte = np.full(table.shape[1], -1, dtype=np.int64)  # the byte of each one-byte class
    sizes = np.bincount(classes, minlength=table.shape[1])
    first_byte[classes[::-1]] = np.arange(255, -1, -1)
    s = table[marks, mark_class].astype(np.int64)
    bound_of_mark = np.zeros(marks.shape[0], dtype=np.int64)
    for _ in range(MARK_DIGITS):
        row = live[s]
        col = np.argmax(row, axis=1)
        digit = first_byte[col]
        if not ((row.sum(axis=1) == 1) & (sizes[col] == 1) & (digit >= 0) & (digit <= 0x7F)).all():
            raise ImpureCountMark("a count mark is not followed by exactly one bound")
        bound_of_mark = bound_of_mark * 128 + digit
        s = table[s, col].astype(np.int64)
    after = np.full(n, -1, dtype=np.int64)  # a mark state -> the content start past its mark
    after[marks] = s
    bound_of = np.zeros(n, dtype=np.int64)
    bound_of[marks] = bound_of_mark
    # Redirect every edge into a mark past it, and note it as an entry.
    new = np.array(table, dtype=np.int32)
    is_mark = np.zeros(n, dtype=bool)
    is_mark[marks] = True
    src, col = np.nonzero(is_mark[np.maximum(new, 0)] & (new >= 0))
    targets = new[src, col].astype(np.int64)
    new[src, col] = after[targets]
    # Keep the states the start still reaches (the marks' own paths drop out), in their order.
    keep = _reachable(new, dfa.start)
    renumber = np.full(n, -1, dtype=np.int64)
    renumber[keep] = np.arange(keep.shape[0])
    compact = np.where(new[keep] >= 0, renumber[np.maximum(new[keep], 0)], -1).astype(np.int32)
    out = DFA(compact, dfa.accepting[keep].copy(), int(renumber[dfa.start]), dfa.pattern, classes=classes)
    # Its byte classes are the marked DFA's (a column grouping of the same table), as dfa_from_class_arrays
    # keeps them: the masks ask, and deriving them from the 256 columns took 0.2 s at 36,000 states.
    out.__dict__["_byte_classes"] = classes
    # One entry per byte of each redirected edge's class.
    reached = renumber[src] >= 0
    src, col, targets = renumber[src[reached]], col[reached], targets[reached]
    by_class = np.argsort(classes, kind="stable")  # bytes grouped by class
    starts = np.concatenate([[0], np.cumsum(sizes)])
    per_edge = sizes[col]
    edge_of = np.repeat(np.arange(col.shape[0]), per_edge)
    offset = np.arange(edge_of.shape[0]) - np.repeat(np.cumsum(per_edge) - per_edge, per_edge)
    byte = by_class[starts[col[edge_of]] + offset]
    keys = (src[edge_of] << 8) | byte
    bounds = bound_of[targets[edge_of]]
    order = np.argsort(keys, kind="stable")
    return CountedDFA(out, keys[order].astype(np.int64), bounds[order].astype(np.int64))


def _reachable(table: np.ndarray, start: int) -> np.ndarray:
    """The states of ``table`` (over classes) reachable from ``start``, ascending (one kernel call: a
    breadth-first search level by level in numpy took a second on the 1,000-deep chains of ``maxItems``)."""
    return np.sort(bfs_order(np.ascontiguousarray(table, dtype=np.int32), int(start), -1))
