"""Recursive schemas: DFAs with *holes* -> a network run with a stack, or a context-free grammar for
the Earley engine.

:func:`build_automaton` first tries the network as it is (:mod:`constrain.masks.pushdown`: a stack of
return states, no parser), which works where the next byte decides every push and pop (a JSON value's
first byte, the byte after it); the rest of this module is the Earley translation, for the others.

The schema compiler (:mod:`constrain.json_schema.compiler`) builds one DFA per place in the
instance. Where a ``$ref`` cycle returns to a place still being compiled, it emits a *hole*: the
two bytes ``0xFF idx``, which no UTF-8 text contains, standing for "a value of place ``idx``". The
result is a set of DFAs over bytes and holes (a recursive transition network): the root's DFA and
one DFA per hole. This module turns that network into a CFG over DFA terminals and builds the
Earley configuration automaton of :mod:`constrain.cfg.earley` from it.

Translation. In DFA ``d``, a *cut* is a state with a hole edge. Nonterminal ``N(d, q)`` is "the rest
of ``d``'s language from state ``q``", for ``q`` the start, each cut and each state after a hole:

* ``N(d, q) -> ε`` when ``q`` is accepting;
* ``N(d, q) -> N(h, start of h) N(d, r)`` for each hole edge ``q --0xFF h--> r``;
* ``N(d, q) -> SEG(d, q, c) N(d, c)`` for each cut ``c`` reachable from ``q`` by bytes alone, where
  ``SEG(d, q, c)`` is the terminal of byte paths from ``q`` to ``c`` that pass no other cut; and
* ``N(d, q) -> SEG(d, q, F)``: byte paths from ``q`` to acceptance that pass no cut.

Why the segments stop at cuts: the Earley engine ends a lexeme only where the next byte cannot
continue it (maximal munch). A segment that runs into a cut has no way on, so it always ends there;
a segment that ends in acceptance ends a JSON value, and the bytes that may follow a value (``,``
``}`` ``]``, whitespace, the end) never continue one. So maximal munch loses no string and the
grammar's language is exactly the network's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from ..automata import DFA, column_classes, dfa_columns, dfa_from_class_arrays
from ..automata.counted import CountedDFA, ImpureCountMark, counted_dfa
from ..exceptions import UnsupportedSchemaFeature
from ..limits import DEFAULT_LIMITS, current_limits

if TYPE_CHECKING:
    from ..cfg.earley import EarleyAutomaton
    from ..masks.pushdown import PushdownAutomaton

HOLE = 0xFF  # never occurs in UTF-8: a hole is this byte, then the hole's index
MAX_HOLES = DEFAULT_LIMITS.max_holes
#: total DFA states of all segment terminals; past this the grammar is refused (compile time, memory)
MAX_SEGMENT_STATES = DEFAULT_LIMITS.max_segment_states
#: how many times a hole is inlined one level where the next byte does not decide (see build_automaton)
UNFOLD_ROUNDS = 3
#: ... and only in a DFA of at most this many states (MCPspec ServerResult: 14,834 states, about 1 s)
UNFOLD_MAX_STATES = 16_000
#: a DFA with this many cut states also stops its segments at junctions (see _boundaries)
_JUNCTION_MIN_CUTS = 4


@dataclass(frozen=True)
class RecursiveLanguage:
    """A schema's language as DFAs with holes: ``root`` and the DFA of each hole index."""

    root: DFA
    holes: dict[int, DFA]
    pointers: dict[int, str]  # hole index -> the JSON pointer of the subschema it stands for
    #: (pointer, bound) of each maxLength counted beside the automaton (count marks in the DFAs)
    counted: tuple[tuple[str, int], ...] = ()


def has_holes(dfa: DFA) -> bool:
    """True when ``dfa`` refers to a place still being compiled (a recursive ``$ref``)."""
    return bool((dfa_columns(dfa, HOLE) >= 0).any())


def hole_edges(dfa: DFA, state: int) -> list[tuple[int, int]]:
    """``(hole index, state after the hole)`` for each hole edge out of ``state``."""
    mid = int(dfa.transitions[state, HOLE])
    if mid < 0:
        return []
    row = dfa.transitions[mid]
    return [(int(i), int(row[i])) for i in np.flatnonzero(row >= 0)]


def hole_indices(dfa: DFA) -> list[int]:
    """The hole indices ``dfa`` refers to, ascending."""
    mids = np.unique(dfa.transitions[:, HOLE])
    mids = mids[mids >= 0]
    if not mids.size:
        return []
    return np.flatnonzero((dfa.transitions[mids] >= 0).any(axis=0)).tolist()


def fill_hole(dfa: DFA, idx: int, language: DFA) -> DFA:
    """``dfa`` with each hole ``idx`` replaced by a copy of ``language`` (a DFA without that hole)."""
    from ..automata import splice

    trans = dfa.transitions.copy()
    edges: list[tuple[int, int]] = []
    for s in np.flatnonzero(trans[:, HOLE] >= 0).tolist():
        mid = int(trans[s, HOLE])
        if trans[mid, idx] >= 0:
            edges.append((s, int(trans[mid, idx])))
    if not edges:
        return dfa
    for s, _ in edges:
        trans[int(trans[s, HOLE]), idx] = -1
    # The hole edges are cut; splice joins their ends through copies of the language.
    cut = DFA(trans, dfa.accepting, dfa.start, dfa.pattern)
    return splice(cut, [(s, r, language) for s, r in edges], f"{dfa.pattern} with hole {idx} filled")


def _boundaries(dfa: DFA) -> np.ndarray:
    """The states where segments stop: the cuts, and in a DFA with several cuts also its *junctions*:
    the states after a structural ``,`` and those before a structural ``}`` (outside strings and
    number digits).

    Why junctions: in an object of optional properties, every value after a hole can be followed by
    any later key, so segments from each place to each later cut (through the plain properties
    between) number and weigh quadratically. Cut after each ``,`` as well, and a segment is one
    property (``"key":value,``), the same text from every place before it, so one terminal serves."""
    trans = dfa.transitions
    stop = trans[:, HOLE] >= 0
    if int(stop.sum()) >= _JUNCTION_MIN_CUTS:
        # A "," or "}" is structural where no letter, digit or the other one goes the same way
        # (inside a string they all do).
        comma, close = trans[:, ord(",")], trans[:, ord("}")]
        others = trans[:, [ord("a"), ord("0")]]
        structural_comma = (comma >= 0) & (comma != close) & (others != comma[:, None]).all(axis=1)
        structural_close = (close >= 0) & (close != comma) & (others != close[:, None]).all(axis=1)
        stop[comma[structural_comma]] = True  # after ",": the next member or item
        # Before "}": the end of a member's value (not where a loop is, as in a number's digits).
        loops = (trans == np.arange(trans.shape[0])[:, None]).any(axis=1)
        stop[structural_close & ~loops] = True
    return stop


class _SegmentTable:
    """One DFA's transitions for cutting segments: hole edges dropped, boundary states without
    edges out, over the DFA's byte classes; the last row is the segment's start (a copy of a place)."""

    def __init__(self, dfa: DFA, stop: np.ndarray) -> None:
        trans = dfa.transitions.copy()
        trans[:, HOLE] = -1
        reps, self.classes = column_classes(trans)
        trans[stop] = -1
        n = trans.shape[0]
        self.compact = np.vstack([trans[:, reps], np.full((1, len(reps)), -1, dtype=trans.dtype)])
        self.compact = np.ascontiguousarray(self.compact, dtype=np.int32)
        self.reps = reps
        self.dfa = dfa
        self.stop = stop
        self.end_states = np.append(dfa.accepting & ~stop, False)
        self.start = n

    def segments(self, q: int) -> dict[int | None, DFA]:
        """Byte-path terminals from ``q``: one per boundary reached (key: that state; see
        :func:`_boundaries`), one to acceptance (None)."""
        row = self.dfa.transitions[q].copy()
        row[HOLE] = -1
        self.compact[self.start] = row[self.reps]
        reached = _reached(self.compact, self.start)
        # Minimise within the region reached (closed: boundary rows have no edges out).
        keep = reached.copy()
        keep[self.start] = True
        idx = np.flatnonzero(keep)
        remap = np.full(keep.shape[0], -1, dtype=np.int32)
        remap[idx] = np.arange(idx.shape[0], dtype=np.int32)
        sub = self.compact[idx]
        sub = np.where(sub >= 0, remap[np.maximum(sub, 0)], -1).astype(np.int32)
        start = int(remap[self.start])
        out: dict[int | None, DFA] = {}
        acc = np.zeros(idx.shape[0], dtype=bool)
        for c in np.flatnonzero(reached[: self.start] & self.stop).tolist():
            acc[remap[c]] = True
            out[c] = dfa_from_class_arrays(sub, acc, start, self.classes, f"segment {q}->{c}")
            acc[remap[c]] = False
        ends = (reached & self.end_states)[idx]
        if ends.any():
            out[None] = dfa_from_class_arrays(sub, ends, start, self.classes, f"segment {q}->end")
        return out


@numba.njit(cache=True)
def _reached(table: np.ndarray, start: int) -> np.ndarray:  # pragma: no cover - numba
    """States reached from ``start`` by one byte or more."""
    seen = np.zeros(table.shape[0], dtype=np.bool_)
    stack = [start]
    while stack:
        s = stack.pop()
        for c in range(table.shape[1]):
            t = table[s, c]
            if t >= 0 and not seen[t]:
                seen[t] = True
                stack.append(t)
    return seen


def build_automaton(lang: RecursiveLanguage) -> EarleyAutomaton | PushdownAutomaton | CountedPushdown:
    """The automaton of a schema's language with holes: the network run with a stack where the next
    byte decides every push and pop (:mod:`constrain.masks.pushdown`; set ``CONSTRAIN_PUSHDOWN=0`` to
    turn it off), else the Earley configuration automaton (see the module docstring)."""
    from ..masks.pushdown import PushdownAutomaton, PushdownTables, pushdown_tables

    if os.environ.get("CONSTRAIN_PUSHDOWN", "1") != "0":
        root, holes = lang.root, dict(lang.holes)
        for _ in range(UNFOLD_ROUNDS + 1):
            if lang.counted:
                counted = {k: _without_marks(lang, d) for k, d in [(None, root), *holes.items()]}
                tables = pushdown_tables(counted[None].dfa, {k: counted[k].dfa for k in holes})
            else:
                tables = pushdown_tables(root, holes)
            if isinstance(tables, PushdownTables):
                if lang.counted:
                    parts = [counted[None], *(counted[k] for k in sorted(holes))]
                    return CountedPushdown.of(PushdownAutomaton(tables), parts)
                return PushdownAutomaton(tables)
            where, hole = tables.component, tables.hole
            target = root if where is None else holes.get(where)
            if hole is None or target is None or target.num_states > UNFOLD_MAX_STATES:
                break
            # A value that may start where the DFA's own bytes go on (an unconstrained value beside a
            # string branch): inline the hole's first level there, its nested values still holes, so
            # the determinised DFA merges the two ways; a level deeper they may meet again.
            if where is None:
                root = fill_hole(target, hole, holes[hole])
            else:
                holes[where] = fill_hole(target, hole, holes[hole])
    if lang.counted:
        raise count_refusal(
            lang.counted, "where the stack engine runs the schema (not the context-free parser)"
        )
    return build_earley(lang)


def _without_marks(lang: RecursiveLanguage, dfa: DFA) -> CountedDFA:
    """``dfa`` with its count marks taken out, or the refusal of the first counted ``maxLength``."""
    try:
        return counted_dfa(dfa)
    except ImpureCountMark:
        raise count_refusal(lang.counted, ONE_VALUE_AT_ITS_QUOTE) from None


ONE_VALUE_AT_ITS_QUOTE = (
    "where the string is the one value its opening quote can begin (not in a union with another string "
    "at the same place)"
)


def count_refusal(counted: Sequence[tuple[str, int]], where: str) -> UnsupportedSchemaFeature:
    """The refusal of the first ``maxLength`` of ``counted`` (pointer, bound): counted beside the
    automaton only ``where``."""
    ptr, bound = counted[0]
    return UnsupportedSchemaFeature(
        "maxLength",
        ptr,
        f"a length bound of {bound} is too large for automaton layers, and is counted beside the "
        f"automaton only {where}",
    )


@dataclass(frozen=True, eq=False)
class CountedPushdown:
    """A :class:`~constrain.masks.pushdown.PushdownAutomaton` built without count marks, and where they
    were: reading byte ``b`` in global state ``g`` of its tables enters a counted string where
    ``(g << 8) | b`` is in ``entry_keys`` (sorted), bounded by the same position of ``entry_bounds`` (see
    :class:`constrain.automata.counted.CountedDFA`)."""

    pushdown: PushdownAutomaton
    entry_keys: np.ndarray
    entry_bounds: np.ndarray

    @property
    def start(self) -> int:
        """The start configuration."""
        return self.pushdown.start

    @staticmethod
    def of(pushdown: PushdownAutomaton, parts: list[CountedDFA]) -> CountedPushdown:
        """The entries of ``parts`` (the root's DFA, then the holes' by index, as
        :func:`~constrain.masks.pushdown.pushdown_tables` lays them out) at the global states of
        ``pushdown``'s tables."""
        keys: list[np.ndarray] = []
        bounds: list[np.ndarray] = []
        offset = 0
        for c in parts:
            g = (c.entry_keys >> 8) + offset
            keys.append((g << 8) | (c.entry_keys & 0xFF))
            bounds.append(c.entry_bounds)
            offset += c.dfa.num_states
        assert offset == pushdown.tables.num_states
        k = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        b = np.concatenate(bounds) if bounds else np.zeros(0, dtype=np.int64)
        order = np.argsort(k, kind="stable")
        return CountedPushdown(pushdown, k[order], b[order])


def build_earley(lang: RecursiveLanguage) -> EarleyAutomaton:
    """The Earley configuration automaton of a recursive schema's language (see the module docstring)."""
    from ..cfg.earley import EarleyAutomaton
    from ..cfg.lark_frontend import CFG, Terminal

    dfas: dict[int | None, DFA] = {None: lang.root}
    for idx, hole_dfa in lang.holes.items():
        dfas[idx] = hole_dfa
    terminals: list[Terminal] = []
    term_dfas: list[DFA] = []
    rules: list[tuple[str, tuple[tuple[str, int] | str, ...]]] = []  # resolved to ids below
    nts: dict[tuple[int | None, int], str] = {}
    pending: list[tuple[int | None, int]] = []
    seg_states = 0
    seen_segments: dict[tuple[int, bytes, bytes], str] = {}  # equal segments share one terminal
    tables = {d: _SegmentTable(dfa, _boundaries(dfa)) for d, dfa in dfas.items()}

    def nt(d: int | None, q: int) -> str:
        key = (d, q)
        if key not in nts:
            if d is not None and d not in dfas:  # pragma: no cover - the compiler fills every hole
                raise UnsupportedSchemaFeature("$ref", "#", f"hole {d} has no language")
            nts[key] = f"place{'' if d is None else d}_{q}"
            pending.append(key)
        return nts[key]

    start = nt(None, lang.root.start)
    while pending:
        d, q = pending.pop()
        dfa = dfas[d]
        me = nts[(d, q)]
        if dfa.accepting[q]:
            rules.append((me, ()))
        for h, r in hole_edges(dfa, q):
            rules.append((me, (nt(h, dfas[h].start), nt(d, r))))
        for target, seg in tables[d].segments(q).items():
            key = (seg.start, seg.accepting.tobytes(), seg.transitions.tobytes())
            name = seen_segments.get(key, "")
            if not name:
                seg_states += seg.num_states
                most = current_limits().max_segment_states
                if seg_states > most:
                    ptr = lang.pointers.get(d, "#") if d is not None else "#"
                    raise UnsupportedSchemaFeature(
                        "$ref", ptr, f"the recursive schema needs more than {most} lexer states"
                    )
                name = seen_segments[key] = f"SEG{len(terminals)}"
                terminals.append(Terminal(name, seg.pattern, 0, False))
                term_dfas.append(seg)
            rules.append((me, (name,) if target is None else (name, nt(d, target))))
    names = [t.name for t in terminals] + list(nts.values())
    index = {n: i for i, n in enumerate(names)}
    cfg = CFG(
        tuple(terminals),
        tuple(names),
        tuple((index[lhs], tuple(index[str(x)] for x in rhs)) for lhs, rhs in rules),
        index[start],
    )
    return EarleyAutomaton(cfg, tuple(term_dfas))
