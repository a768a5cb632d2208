"""Recursive schemas: DFAs with *holes* -> a context-free grammar for the Earley engine.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import UnsupportedSchemaFeature
from ..regex import DFA, dfa_from_arrays

if TYPE_CHECKING:
    from ..cfg.earley import EarleyAutomaton

HOLE = 0xFF  # never occurs in UTF-8: a hole is this byte, then the hole's index
MAX_HOLES = 256
#: total DFA states of all segment terminals; past this the grammar is refused (compile time, memory)
MAX_SEGMENT_STATES = 400_000


@dataclass(frozen=True)
class RecursiveLanguage:
    """A schema's language as DFAs with holes: ``root`` and the DFA of each hole index."""

    root: DFA
    holes: dict[int, DFA]
    pointers: dict[int, str]  # hole index -> the JSON pointer of the subschema it stands for


def has_holes(dfa: DFA) -> bool:
    """True when ``dfa`` refers to a place still being compiled (a recursive ``$ref``)."""
    return bool((dfa.transitions[:, HOLE] >= 0).any())


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
    return splice(cut, edges, language, f"{dfa.pattern} with hole {idx} filled")


def _segments(dfa: DFA, q: int) -> dict[int | None, DFA]:
    """Byte-path terminals from ``q``: one per cut reached (key: the cut), one to acceptance (None)."""
    trans = dfa.transitions
    cut = trans[:, HOLE] >= 0
    local: dict[int, int] = {}  # state reached after >= 1 byte -> local id; 0 is a copy of q
    frontier = [q]
    expand_from: list[tuple[int, int]] = [(q, 0)]  # (DFA state, local id) whose byte edges we copy
    while frontier:
        s = frontier.pop()
        for b in np.flatnonzero(trans[s] >= 0).tolist():
            if b == HOLE:
                continue
            t = int(trans[s, b])
            if t not in local:
                local[t] = len(local) + 1
                if not cut[t]:
                    frontier.append(t)
                    expand_from.append((t, local[t]))
    n = len(local) + 1
    table = np.full((n, 256), -1, dtype=np.int32)
    for s, i in expand_from:
        row = trans[s]
        for b in np.flatnonzero(row >= 0).tolist():
            if b != HOLE:
                table[i, b] = local[int(row[b])]
    out: dict[int | None, DFA] = {}
    for c in [s for s in local if cut[s]]:
        acc = np.zeros(n, dtype=bool)
        acc[local[c]] = True
        out[c] = dfa_from_arrays(table, acc, 0, f"segment {q}->{c}")
    acc = np.zeros(n, dtype=bool)
    for s, i in local.items():
        acc[i] = bool(dfa.accepting[s]) and not cut[s]
    if acc.any():
        out[None] = dfa_from_arrays(table, acc, 0, f"segment {q}->end")
    return out


def build_automaton(lang: RecursiveLanguage) -> EarleyAutomaton:
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
        for target, seg in _segments(dfa, q).items():
            seg_states += seg.num_states
            if seg_states > MAX_SEGMENT_STATES:
                ptr = lang.pointers.get(d, "#") if d is not None else "#"
                raise UnsupportedSchemaFeature(
                    "$ref", ptr, f"the recursive schema needs more than {MAX_SEGMENT_STATES} lexer states"
                )
            name = f"SEG{len(terminals)}"
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
