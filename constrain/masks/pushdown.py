"""Pushdown token masks: DFAs with holes (a recursive transition network) walked with a stack.

A JSON Schema with recursion, or with values no schema constrains compiled exactly
(``max_any_depth=None``), compiles to a root DFA and one DFA per *hole*
(:mod:`constrain.json_schema.recursion`): a hole edge ``q --0xFF h--> r`` reads one value of hole
``h``'s language and goes on at ``r``. When the network is *deterministic* (checked here, once),
it is run directly, with no parser:

* one global byte table ``T`` holds every DFA's byte edges (hole bytes removed);
* at a byte ``b`` that ``T`` rejects, a hole edge whose value may start with ``b`` (``FIRST(h)``)
  pushes the return state ``r`` and enters ``h``'s start; else, where ``h``'s value may end, the
  return state is popped and ``b`` is read from there.

Deterministic means each of these choices is forced by the byte: at every state, the byte edges and
the ``FIRST`` sets of its hole edges are pairwise disjoint, and where a hole's value may end, neither
meets ``FOLLOW(h)`` (the bytes that may come after a value of ``h``). JSON values satisfy this: a value
starts with one of ``{["-0123456789tfn`` and is followed by ``,`` ``}`` ``]``, whitespace or the end,
and no value goes on with those. A network that is not deterministic (or has a hole with no value,
or a left-recursive one) is left to the Earley engine: :func:`pushdown_tables` says why.

A configuration is a stack of return states and a state, interned as one int
(:class:`PushdownAutomaton`), so :class:`~constrain.GrammarMatcher` walks it like any automaton. Its
token mask is the union of two exact parts:

* the tokens that stay on ``T`` from the state: a :class:`~constrain.masks.dfa_masks.DFATokenMasks`
  over ``T``, with everything that makes DFA masks fast (shared classes, split walks, sparse first
  visits), shared by every configuration with that state whatever its stack;
* the tokens that push or pop on the way (:func:`pushdown_walk`), only from states where a push or
  a pop is at most a token's length away (``cross_dist``); they depend on the top of the stack, and are
  cached by the state and the top :data:`STACK_KEY_DEPTH` return states.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from ..automata import DFA
from .handle import Tables, new_tables, tables_of
from .store import MaskStore
from .walks import (
    ASCII_BYTES,
    BYTE,
    DEPTH,
    DUP_END,
    DUP_START,
    MAXLEN,
    ROOT_NODE,
    SKIP,
    SORTED_IDS,
    TOK,
    TOK_LO,
    on_chain,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .trie import TokenTrie

HOLE = 0xFF  # a hole edge is this byte, then the hole's index (never in UTF-8 text)
STACK_KEY_DEPTH = 24
"""Masks that push or pop are cached by the state and this many return states from the top of the
stack (the whole stack when it is shallower). A walk that would pop below them is redone with the whole
stack and keyed by it."""
_FAR = 1 << 20
CROSSING_AHEAD_SECONDS = 0.02
"""Time :meth:`PushdownTokenMasks.precompute_ahead` may spend on the root's crossing tokens at compile."""


@dataclass(frozen=True, eq=False)
class PushdownTables:
    """A deterministic network of DFAs with holes, as flat tables over global state ids.

    ``transitions[g, b]``: the byte edges of every DFA (hole bytes removed), ``-1`` where none.
    ``hole_lo[g]:hole_hi[g]``: the hole edges out of ``g``; hole edge ``e`` enters
    ``edge_start[e]`` on the bytes of ``edge_first[e]`` and returns to ``edge_ret[e]``.
    ``pop_ok[g]``: a hole's value may end at ``g``; ``root_final[g]``: the whole input may end there.
    ``cross_dist[g]``: the fewest bytes read from ``g`` on ``T`` before a byte that may push or pop;
    ``necessary[g]``: bytes every such path reads (:func:`_necessary_bytes`).
    ``component[g]``: the DFA ``g`` belongs to (0: the root, ``1 + i``: ``holes[i]``).
    """

    transitions: np.ndarray
    start: int
    root_final: np.ndarray
    pop_ok: np.ndarray
    hole_lo: np.ndarray
    hole_hi: np.ndarray
    edge_first: np.ndarray
    edge_start: np.ndarray
    edge_ret: np.ndarray
    cross_dist: np.ndarray
    necessary: np.ndarray
    component: np.ndarray
    #: class id per byte: bytes in one class lead every state alike (the DFAs' classes joined)
    byte_classes: np.ndarray | None = None

    @property
    def need_index(self) -> np.ndarray:
        """Per state: the set of :data:`NECESSARY_CANDIDATES` that every way to a crossing reads, as a
        bit set (bit ``i``: candidate ``i``), the index into :func:`suffix_candidate_sets`' rows."""
        out = np.zeros(self.num_states, dtype=np.int32)
        for i, c in enumerate(NECESSARY_CANDIDATES):
            has = (self.necessary[:, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)
            out |= has.astype(np.int32) << i
        return out

    @property
    def num_states(self) -> int:
        """Global states over all the DFAs."""
        return int(self.transitions.shape[0])


@dataclass(frozen=True)
class NotDeterministic:
    """Why a network cannot run with a stack alone (:func:`pushdown_tables`). Where a byte may both
    enter ``hole`` and go on in the DFA of ``component`` (a hole key; ``None``: the root), unfolding that
    hole there one level (its first level inlined, its nested values still holes) may decide it."""

    reason: str
    component: int | None = None
    hole: int | None = None

    def __str__(self) -> str:
        return self.reason


def pushdown_tables(root: DFA, holes: Mapping[int, DFA]) -> PushdownTables | NotDeterministic:
    """The tables of the network ``root`` + ``holes`` (hole index -> DFA), or why it cannot run without a
    parser: a hole with no DFA, a hole whose value may be empty, left recursion, a hole with no value
    at all, a state that cannot reach acceptance, or a choice the next byte does not decide."""
    keys = sorted(holes)
    dfas = [root] + [holes[k] for k in keys]
    comp_of_hole = {k: i + 1 for i, k in enumerate(keys)}
    sizes = [d.num_states for d in dfas]
    offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offset[-1])
    trans = np.empty((total, 256), dtype=np.int32)
    accepting = np.zeros(total, dtype=np.bool_)
    component = np.empty(total, dtype=np.int32)
    edges: dict[int, list[tuple[int, int]]] = {}  # g -> [(hole component, return g)], sources only
    for c, dfa in enumerate(dfas):
        lo = int(offset[c])
        t = dfa.transitions
        _place(trans[lo : lo + dfa.num_states], t, lo)
        accepting[lo : lo + dfa.num_states] = dfa.accepting
        component[lo : lo + dfa.num_states] = c
        for q in np.flatnonzero(t[:, HOLE] >= 0).tolist():
            mid = int(t[q, HOLE])
            for idx in np.flatnonzero(t[mid] >= 0).tolist():
                h = comp_of_hole.get(idx)
                if h is None:
                    return NotDeterministic(f"hole {idx} has no language")
                edges.setdefault(lo + q, []).append((h, lo + int(t[mid, idx])))
    trans[:, HOLE] = -1
    starts = [int(offset[c]) + d.start for c, d in enumerate(dfas)]

    def live(g: int) -> np.ndarray:  # the bytes state g reads (rows on demand: the table may be 100s of MB)
        row: np.ndarray = trans[g] >= 0
        return row

    # FIRST(h): the bytes a value of hole h may start with (through holes at its start, in order).
    first: dict[int, np.ndarray] = {}
    visiting: set[int] = set()

    def first_of(h: int) -> np.ndarray | None:
        got = first.get(h)
        if got is not None:
            return got
        if h in visiting:
            return None  # left recursion
        visiting.add(h)
        g = starts[h]
        acc = live(g)
        for h2, _ in edges.get(g, ()):
            sub = first_of(h2)
            if sub is None:
                return None
            acc |= sub
        visiting.discard(h)
        first[h] = acc
        return acc

    for h in range(1, len(dfas)):
        if accepting[starts[h]]:
            return NotDeterministic(f"the value of hole {keys[h - 1]} may be empty")
        if first_of(h) is None:
            return NotDeterministic(f"hole {keys[h - 1]} is left-recursive")

    # Every hole has a value, and every state reached can end (through the holes).
    coreach, productive = _coreachable(trans, accepting, edges, starts)
    if not coreach[starts[0]]:
        return NotDeterministic("the root has no value")
    reached = _reached(trans, edges, starts, starts[0])
    if not (coreach | ~reached).all():
        return NotDeterministic("a state cannot reach acceptance")
    if (reached & (component != 0) & ~np.asarray(productive, dtype=np.bool_)[component]).any():
        return NotDeterministic("a hole has no value")

    # FOLLOW(h): the bytes that may come after a value of hole h.
    def begins(g: int, follow: list[np.ndarray]) -> np.ndarray:
        acc = live(g)
        for h, _ in edges.get(g, ()):
            acc |= first[h]
        if accepting[g] and component[g] != 0:
            acc |= follow[component[g]]
        return acc

    follow = [np.zeros(256, dtype=np.bool_) for _ in dfas]
    all_edges = [(h, r) for out in edges.values() for h, r in out]
    changed = True
    while changed:
        changed = False
        for h, r in all_edges:
            add = begins(r, follow) & ~follow[h]
            if add.any():
                follow[h] |= add
                changed = True

    # The next byte decides: edges and hole entries disjoint, and neither meets the follow of a pop
    # (only states with a hole edge, or where a hole's value may end, have a choice to make).
    has_edges = np.zeros(total, dtype=np.bool_)
    has_edges[list(edges)] = True
    choosing = reached & (has_edges | (accepting & (component != 0)))
    for g in np.flatnonzero(choosing).tolist():
        seen = live(g)
        for h, _ in edges.get(g, ()):
            if (seen & first[h]).any():
                where = None if component[g] == 0 else keys[int(component[g]) - 1]
                why = f"state {g}: a byte may both enter hole {keys[h - 1]} and go on"
                return NotDeterministic(why, where, keys[h - 1])
            seen |= first[h]
        c = int(component[g])
        if accepting[g] and c != 0 and (seen & follow[c]).any():
            return NotDeterministic(f"state {g}: a byte may both end a value of hole {keys[c - 1]} and go on")

    num_edges = sum(len(e) for e in edges.values())
    counts = np.zeros(total, dtype=np.int32)
    for g, out in edges.items():
        counts[g] = len(out)
    hole_hi = np.cumsum(counts, dtype=np.int32)
    hole_lo = hole_hi - counts
    edge_first = np.zeros((num_edges, 256), dtype=np.bool_)
    edge_start = np.zeros(num_edges, dtype=np.int32)
    edge_ret = np.zeros(num_edges, dtype=np.int32)
    for g in sorted(edges):
        e = int(hole_lo[g])
        for h, r in edges[g]:
            edge_first[e] = first[h]
            edge_start[e] = starts[h]
            edge_ret[e] = r
            e += 1
    pop_ok = accepting & (component != 0)
    crossing = pop_ok | (hole_hi > hole_lo)
    root_final = accepting & (component == 0)
    for a in (trans, pop_ok, root_final, hole_lo, hole_hi, edge_first, edge_start, edge_ret, component):
        a.setflags(write=False)  # read-only, as a DFA's tables: the kernels see one kind of array
    return PushdownTables(
        transitions=trans,
        start=starts[0],
        root_final=root_final,
        pop_ok=pop_ok,
        hole_lo=hole_lo,
        hole_hi=hole_hi,
        edge_first=edge_first,
        edge_start=edge_start,
        edge_ret=edge_ret,
        cross_dist=_cross_dist(trans, crossing),
        necessary=_necessary_bytes(trans, crossing, np.frombuffer(NECESSARY_CANDIDATES, dtype=np.uint8)),
        component=component,
        byte_classes=_joint_byte_classes(dfas),
    )


@numba.njit(cache=True, nogil=True)
def _place(out: np.ndarray, t: np.ndarray, lo: int) -> None:  # pragma: no cover - numba
    """``out[:] = t + lo`` where ``t >= 0``, else -1: one pass, no temporaries (a DFA of a
    ``maxLength: 8192`` string is 115,000 x 256 entries)."""
    for s in range(t.shape[0]):
        for b in range(t.shape[1]):
            x = t[s, b]
            out[s, b] = x + lo if x >= 0 else -1


def _joint_byte_classes(dfas: Sequence[DFA]) -> np.ndarray:
    """Class id per byte that every DFA of ``dfas`` treats alike (each DFA's classes refined by the
    others'), the hole byte in a class of its own (its edges are gone from the byte table)."""
    from ..automata.dfa import dfa_byte_classes, joint_byte_classes

    joint = joint_byte_classes(*[dfa_byte_classes(d) for d in dfas])
    joint[HOLE] = joint.max() + 1
    return joint


def _edge_arrays(edges: dict[int, list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hole edges as ``(source, hole component, return state)`` arrays, by source."""
    flat = [(g, h, r) for g in sorted(edges) for h, r in edges[g]]
    arr = np.array(flat, dtype=np.int64).reshape(-1, 3)
    return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, off)``: the positions of ``keys`` sorted, and where each key's run starts (``n + 1``)."""
    order = np.argsort(keys, kind="stable")
    off = np.searchsorted(keys[order], np.arange(n + 1)).astype(np.int64)
    return order.astype(np.int64), off


def _coreachable(
    trans: np.ndarray, accepting: np.ndarray, edges: dict[int, list[tuple[int, int]]], starts: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The states that can reach acceptance in their DFA (through byte edges, and hole edges whose hole
    has a value), and per component whether it has a value: one backward search, a hole edge joining
    it once its hole's start is reached."""
    off, src, _ = _reverse_edges(trans)
    e_g, e_h, e_r = _edge_arrays(edges)
    by_ret, ret_off = _csr(e_r, trans.shape[0])
    by_hole, hole_off = _csr(e_h, len(starts))
    return _coreach_search(
        off, src, accepting, e_g, e_h, e_r, by_ret, ret_off, by_hole, hole_off, np.array(starts)
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _visit(g: int, seen: np.ndarray, todo: np.ndarray, top: int) -> int:  # pragma: no cover - numba
    """Mark ``g`` and push it on the ``todo`` stack if it is new; returns the new stack size."""
    if not seen[g]:
        seen[g] = True
        todo[top] = g
        top += 1
    return top


@numba.njit(cache=True, nogil=True)
def _coreach_search(
    off: np.ndarray,
    src: np.ndarray,
    accepting: np.ndarray,
    e_g: np.ndarray,
    e_h: np.ndarray,
    e_r: np.ndarray,
    by_ret: np.ndarray,
    ret_off: np.ndarray,
    by_hole: np.ndarray,
    hole_off: np.ndarray,
    starts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """:func:`_coreachable`'s search (edges indexed by return state and by hole, as :func:`_csr`)."""
    n = accepting.shape[0]
    comp_of_start = np.full(n, -1, dtype=np.int64)
    for c in range(starts.shape[0]):
        comp_of_start[starts[c]] = c
    productive = np.zeros(starts.shape[0], dtype=np.bool_)
    seen = accepting.copy()
    todo = np.empty(n, dtype=np.int64)
    top = 0
    for g in range(n):
        if seen[g]:
            todo[top] = g
            top += 1
    while top > 0:
        top -= 1
        x = todo[top]
        for i in range(off[x], off[x + 1]):
            top = _visit(src[i], seen, todo, top)
        for k in range(ret_off[x], ret_off[x + 1]):
            e = by_ret[k]
            if productive[e_h[e]]:
                top = _visit(e_g[e], seen, todo, top)
        c = comp_of_start[x]
        if c >= 0 and not productive[c]:
            productive[c] = True
            for k in range(hole_off[c], hole_off[c + 1]):
                e = by_hole[k]
                if seen[e_r[e]]:
                    top = _visit(e_g[e], seen, todo, top)
    return seen, productive


def _reached(
    trans: np.ndarray, edges: dict[int, list[tuple[int, int]]], starts: list[int], start: int
) -> np.ndarray:
    """The states reachable from ``start`` by byte edges, hole entries (a hole's start) and returns."""
    e_g, e_h, e_r = _edge_arrays(edges)
    by_src, src_off = _csr(e_g, trans.shape[0])
    return _reach_search(trans, e_h, e_r, by_src, src_off, np.array(starts), start)


@numba.njit(cache=True, nogil=True)
def _reach_search(
    trans: np.ndarray,
    e_h: np.ndarray,
    e_r: np.ndarray,
    by_src: np.ndarray,
    src_off: np.ndarray,
    starts: np.ndarray,
    start: int,
) -> np.ndarray:  # pragma: no cover - numba
    """:func:`_reached`'s search (hole edges indexed by source, as :func:`_csr`)."""
    n = trans.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    todo = np.empty(n, dtype=np.int64)
    seen[start] = True
    todo[0] = start
    top = 1
    while top > 0:
        top -= 1
        g = todo[top]
        for b in range(256):
            t = trans[g, b]
            if t >= 0 and not seen[t]:
                seen[t] = True
                todo[top] = t
                top += 1
        for k in range(src_off[g], src_off[g + 1]):
            e = by_src[k]
            for t in (starts[e_h[e]], e_r[e]):
                if not seen[t]:
                    seen[t] = True
                    todo[top] = t
                    top += 1
    return seen


@numba.njit(cache=True, nogil=True)
def _reverse_edges(trans: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The edges of ``trans`` by target, CSR: state ``t``'s are ``src[off[t]:off[t + 1]]`` (their
    sources) with bytes ``lab[...]``; returns ``(off, src, lab)``."""
    n = trans.shape[0]
    off = np.zeros(n + 1, dtype=np.int64)
    for g in range(n):
        for b in range(256):
            t = trans[g, b]
            if t >= 0:
                off[t + 1] += 1
    for i in range(n):
        off[i + 1] += off[i]
    src = np.empty(off[n], dtype=np.int32)
    lab = np.empty(off[n], dtype=np.uint8)
    fill = off[:n].copy()
    for g in range(n):
        for b in range(256):
            t = trans[g, b]
            if t >= 0:
                src[fill[t]] = g
                lab[fill[t]] = b
                fill[t] += 1
    return off, src, lab


@numba.njit(cache=True, nogil=True)
def _cross_dist(trans: np.ndarray, crossing: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Per state: the fewest bytes read on ``trans`` before reaching a ``crossing`` state (0 there)."""
    n = trans.shape[0]
    indeg, src, _ = _reverse_edges(trans)
    dist = np.full(n, _FAR, dtype=np.int32)
    queue = np.empty(n, dtype=np.int32)
    head = 0
    tail = 0
    for g in range(n):
        if crossing[g]:
            dist[g] = 0
            queue[tail] = g
            tail += 1
    while head < tail:
        t = queue[head]
        head += 1
        for i in range(indeg[t], indeg[t + 1]):
            g = src[i]
            if dist[g] == _FAR:
                dist[g] = dist[t] + 1
                queue[tail] = g
                tail += 1
    return dist


NECESSARY_CANDIDATES = b'"{}[],:'
"""Bytes tested as *necessary* before a push or pop (:func:`_necessary_bytes`): JSON's structure."""


@numba.njit(cache=True, nogil=True)
def _necessary_bytes(
    trans: np.ndarray, crossing: np.ndarray, candidates: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """Per state ``q``: the candidate bytes that every path on ``trans`` from ``q`` to a ``crossing``
    state reads (128-bit ASCII form, as ``TrieSummary.ascii_bytes``). Inside a string, the quote: a
    subtree of the trie without one cannot push or pop. Per candidate ``c``, a backward search from the
    crossing states over the edges not labelled ``c``: the states it misses need ``c``."""
    n = trans.shape[0]
    indeg, src, lab = _reverse_edges(trans)
    out = np.zeros((n, 2), dtype=np.uint64)
    seen = np.zeros(n, dtype=np.bool_)
    queue = np.empty(n, dtype=np.int32)
    for c in candidates:
        seen[:] = False
        head = 0
        tail = 0
        for g in range(n):
            if crossing[g]:
                seen[g] = True
                queue[tail] = g
                tail += 1
        while head < tail:
            t = queue[head]
            head += 1
            for i in range(indeg[t], indeg[t + 1]):
                g = src[i]
                if not seen[g] and lab[i] != c:
                    seen[g] = True
                    queue[tail] = g
                    tail += 1
        for g in range(n):
            if not seen[g]:
                out[g, c >> 6] |= np.uint64(1) << np.uint64(c & 63)
    return out


@numba.njit(cache=True, nogil=True)
def _suffix_sets(nodes: np.ndarray, candidates: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Per trie node ``n``: bit ``s`` (of 128, as two uint64) is set when some token in ``n``'s subtree
    has every candidate of the set ``s`` among its bytes from ``n`` on. Reverse preorder: a node's
    children come just before it, gathered per depth."""
    total = nodes.shape[0]
    index = np.full(256, -1, dtype=np.int64)
    for i in range(candidates.shape[0]):
        index[candidates[i]] = i
    max_depth = 0
    for n in range(total):
        max_depth = max(max_depth, nodes[n, 1])
    acc = np.zeros((max_depth + 2, 2), dtype=np.uint64)
    out = np.zeros((total, 2), dtype=np.uint64)
    one = np.uint64(1)
    for n in range(total - 1, -1, -1):
        d = nodes[n, 1]
        x0 = acc[d + 1, 0]
        x1 = acc[d + 1, 1]
        acc[d + 1, 0] = 0
        acc[d + 1, 1] = 0
        if nodes[n, 3] != -1:  # a token ends here: the empty set
            x0 |= one
        k = index[nodes[n, 0]]
        if k >= 0:
            for sub in range(128):
                if (sub >> k) & 1 == 0:
                    has = (x0 >> np.uint64(sub)) & one if sub < 64 else (x1 >> np.uint64(sub - 64)) & one
                    if has:
                        up = sub | (1 << k)
                        if up < 64:
                            x0 |= one << np.uint64(up)
                        else:
                            x1 |= one << np.uint64(up - 64)
        out[n, 0] = x0
        out[n, 1] = x1
        acc[d, 0] |= x0
        acc[d, 1] |= x1
    return out


_SUFFIX_SETS: weakref.WeakKeyDictionary[TokenTrie, np.ndarray] = weakref.WeakKeyDictionary()
_SUFFIX_LOCK = threading.Lock()


def suffix_candidate_sets(trie: TokenTrie) -> np.ndarray:
    """:func:`_suffix_sets` of ``trie`` for :data:`NECESSARY_CANDIDATES`, computed once per trie."""
    got = _SUFFIX_SETS.get(trie)
    if got is None:
        with _SUFFIX_LOCK:
            got = _SUFFIX_SETS.get(trie)
            if got is None:
                got = _suffix_sets(trie.nodes, np.frombuffer(NECESSARY_CANDIDATES, dtype=np.uint8))
                got.setflags(write=False)
                _SUFFIX_SETS[trie] = got
    return got


@numba.njit(cache=True, nogil=True, inline="always")
def _step(
    g: int,
    b: int,
    top: int,
    size: int,
    vals: np.ndarray,
    parent: np.ndarray,
    trans: np.ndarray,
    pop_ok: np.ndarray,
    hole_lo: np.ndarray,
    hole_hi: np.ndarray,
    edge_first: np.ndarray,
    edge_start: np.ndarray,
    edge_ret: np.ndarray,
    truncated: bool,
) -> tuple[int, int, int]:  # pragma: no cover - numba
    """One byte with pushes and pops: ``(state, top, size)``; state ``-1`` dead, ``-2`` the stack
    below the snapshot was needed. Pushes go to ``vals``/``parent`` from ``size`` on (an arena: a
    sibling in the trie starts again from the size its parent had)."""
    for _ in range(64):
        t = trans[g, b]
        if t >= 0:
            return t, top, size
        entered = False
        for e in range(hole_lo[g], hole_hi[g]):
            if edge_first[e, b]:
                if size >= vals.shape[0]:
                    return -2, top, size
                vals[size] = edge_ret[e]
                parent[size] = top
                top = size
                size += 1
                g = edge_start[e]
                entered = True
                break
        if entered:
            continue
        if not pop_ok[g]:
            return -1, top, size
        if top < 0:
            return (-2 if truncated else -1), top, size
        g = vals[top]
        top = parent[top]
    return -1, top, size


# Positions in a network's walk handle (:meth:`PushdownTokenMasks._net`).
(
    N_TRANS, N_CROSS_DIST, N_NECESSARY, N_POP_OK, N_HOLE_LO, N_HOLE_HI, N_EDGE_FIRST, N_EDGE_START,
    N_EDGE_RET, N_CHAIN_BYTES, N_CHAIN_LEN, N_NEED_INDEX, N_SUFFIX_SETS,
) = range(13)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def pushdown_walk(
    state: int, tables: Any, net: Any, stack: np.ndarray, truncated: bool, ids_out: np.ndarray
) -> int:  # pragma: no cover - numba
    """Write to ``ids_out`` (room for every token) the ids of the tokens that push or pop on their way
    from ``state`` and stay alive; returns how many, or ``-1`` when a token pops below ``stack``
    (return states, bottom first) and ``truncated`` says the real stack goes on below it. ``tables``:
    the trie's walk handle; ``net``: the network's (one unboxing each from Python).

    A preorder walk of the trie as in :func:`constrain.masks.walks.walk_trie`, each depth keeping its
    state, stack top and arena size. Before its path has pushed or popped, a subtree is skipped where no
    byte of it can push or pop: its tokens are too short to reach a crossing (``cross_dist``), it lacks
    a byte every way to a crossing reads (``necessary``), or all its bytes stay on a chain of ``T``
    (:func:`~constrain.masks.walks.state_chains`). After, a subtree on a chain has all its tokens set
    at once.
    """
    w = tables_of(net)
    trans, cross_dist, necessary, pop_ok = w[N_TRANS], w[N_CROSS_DIST], w[N_NECESSARY], w[N_POP_OK]
    hole_lo, hole_hi, edge_first, edge_start = w[N_HOLE_LO], w[N_HOLE_HI], w[N_EDGE_FIRST], w[N_EDGE_START]
    edge_ret, chain_bytes, chain_len = w[N_EDGE_RET], w[N_CHAIN_BYTES], w[N_CHAIN_LEN]
    need_index, suffix_sets = w[N_NEED_INDEX], w[N_SUFFIX_SETS]
    t = tables_of(tables)
    node_byte, node_depth, node_skip, node_tok = t[BYTE], t[DEPTH], t[SKIP], t[TOK]
    dup_start, dup_end, sorted_ids = t[DUP_START], t[DUP_END], t[SORTED_IDS]
    ascii_bytes, maxlen, tok_lo, root_node = t[ASCII_BYTES], t[MAXLEN], t[TOK_LO], t[ROOT_NODE]
    max_depth = 0
    for n in range(256):
        r = root_node[n]
        if r >= 0 and maxlen[r] > max_depth:
            max_depth = maxlen[r]
    k = stack.shape[0]
    cap = k + 4 * (max_depth + 1) + 16
    vals = np.empty(cap, dtype=np.int32)
    parent = np.empty(cap, dtype=np.int32)
    for i in range(k):
        vals[i] = stack[i]
        parent[i] = i - 1
    fg = np.empty(max_depth + 2, dtype=np.int32)
    ftop = np.empty(max_depth + 2, dtype=np.int32)
    fsize = np.empty(max_depth + 2, dtype=np.int32)
    fcross = np.zeros(max_depth + 2, dtype=np.bool_)
    fg[0] = state
    ftop[0] = k - 1
    fsize[0] = k
    count = 0
    r = 0
    n = 0
    end = 0
    while True:
        if n >= end:
            while r < 256 and (root_node[r] < 0 or (trans[state, r] < 0 and cross_dist[state] > 0)):
                r += 1
            if r >= 256:
                break
            n = root_node[r]
            end = node_skip[n]
            r += 1
        d = node_depth[n]
        q = fg[d]
        crossed = fcross[d]
        if not crossed:
            need0 = necessary[q, 0]
            need1 = necessary[q, 1]
            # every path to a push or pop reads each necessary byte: a subtree without one of them has none
            if (
                cross_dist[q] >= maxlen[n] - d
                or ((need0 & ~ascii_bytes[n, 0]) | (need1 & ~ascii_bytes[n, 1])) != 0
            ):
                n = node_skip[n]
                continue
            # ... and one of its tokens must have them all (from here on), not only the subtree's union
            need = need_index[q]
            if need != 0:
                word = suffix_sets[n, 0] if need < 64 else suffix_sets[n, 1]
                if (word >> np.uint64(need & 63)) & np.uint64(1) == 0:
                    n = node_skip[n]
                    continue
        if on_chain(n, d, q, ascii_bytes, maxlen, chain_bytes, chain_len):
            skip = node_skip[n]
            if crossed:
                for i in range(tok_lo[n], tok_lo[skip]):
                    ids_out[count] = sorted_ids[i]
                    count += 1
            n = skip
            continue
        b = node_byte[n]
        nxt, top, size = _step(
            q, b, ftop[d], fsize[d], vals, parent, trans, pop_ok, hole_lo, hole_hi, edge_first, edge_start,
            edge_ret, truncated,
        )  # fmt: skip
        if nxt == -2:
            return -1
        if nxt < 0:
            n = node_skip[n]
            continue
        now = crossed or trans[q, b] < 0
        fg[d + 1] = nxt
        ftop[d + 1] = top
        fsize[d + 1] = size
        fcross[d + 1] = now
        if now:
            tid = node_tok[n]
            if tid >= 0:
                ids_out[count] = tid
                count += 1
            elif tid <= -2:
                for i in range(dup_start[-2 - tid], dup_end[-2 - tid]):
                    ids_out[count] = sorted_ids[i]
                    count += 1
        n += 1
    return count


@numba.njit(cache=True, nogil=True)
def pushdown_walk_batch(
    states: np.ndarray, tables: Any, net: Any, scratch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """:func:`pushdown_walk` from each of ``states`` over an empty stack (the root's DFA), in one call:
    ``(offsets, ids)``, the ids of ``states[i]`` being ``ids[offsets[i]:offsets[i + 1]]``."""
    empty = np.zeros(0, dtype=np.int32)
    offsets = np.zeros(states.shape[0] + 1, dtype=np.int64)
    ids = np.empty(1024, dtype=np.int32)
    used = 0
    for i in range(states.shape[0]):
        count = pushdown_walk(states[i], tables, net, empty, False, scratch)
        if count > 0:
            while used + count > ids.shape[0]:
                grown = np.empty(2 * ids.shape[0], dtype=np.int32)
                grown[:used] = ids[:used]
                ids = grown
            ids[used : used + count] = scratch[:count]
            used += count
        offsets[i + 1] = used
    return offsets, ids[:used].copy()


@numba.njit(cache=True, nogil=True)
def or_ids(ids: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """Set the bits of the token ``ids`` in the bitmask row ``out`` (int32 words), keeping the others."""
    words = out.view(np.uint32)
    for t in ids:
        words[t >> 5] |= np.uint32(1) << np.uint32(t & 31)


class PushdownAutomaton:
    """Configurations of a :class:`PushdownTables` network, interned as ints (what matchers hold).

    A stack is a node of a persistent list (``_parent``, ``_value``; node 0 is the empty stack), so a
    push or a pop is O(1) and equal stacks are one node; a configuration is ``(stack node, state)``.
    Interning is thread-safe; nothing is freed (a configuration is a few dozen bytes).
    """

    def __init__(self, tables: PushdownTables) -> None:
        self.tables = tables
        self._parent: list[int] = [0]
        self._value: list[int] = [-1]
        self._depth: list[int] = [0]
        self._nodes: dict[tuple[int, int], int] = {}
        self._cfg_node: list[int] = []
        self._cfg_state: list[int] = []
        self._configs: dict[tuple[int, int], int] = {}
        self._derived()
        self.start = self.config(0, tables.start)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled: the tables and every interned stack and configuration (the ids matchers hold)."""
        keep = (
            "tables",
            "_parent",
            "_value",
            "_depth",
            "_nodes",
            "_cfg_node",
            "_cfg_state",
            "_configs",
            "start",
        )
        return {k: getattr(self, k) for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._derived()

    def _derived(self) -> None:
        """The lock and the Python-level lookups of :meth:`step` (rebuilt after unpickling)."""
        tables = self.tables
        for a in vars(tables).values():
            if isinstance(a, np.ndarray):
                a.setflags(write=False)  # unpickled arrays are writable: the kernels' one kind is not
        self._lock = threading.Lock()
        self._trans = tables.transitions.data.cast("B").cast("i")
        self._pop_ok = tables.pop_ok.tobytes()
        self._final = tables.root_final.tobytes()
        self._enter: dict[int, list[tuple[bytes, int, int]]] = {}
        for g in np.flatnonzero(tables.hole_hi > tables.hole_lo).tolist():
            self._enter[g] = [
                (tables.edge_first[e].tobytes(), int(tables.edge_start[e]), int(tables.edge_ret[e]))
                for e in range(int(tables.hole_lo[g]), int(tables.hole_hi[g]))
            ]

    @property
    def num_configs(self) -> int:
        """Configurations interned so far."""
        return len(self._cfg_state)

    def config(self, node: int, state: int) -> int:
        """The id of configuration ``(stack node, state)``."""
        key = (node, state)
        got = self._configs.get(key)
        return got if got is not None else self._intern(self._configs, key, self._new_config)

    @property
    def state_list(self) -> list[int]:
        """The state of every configuration, by id (the list itself, which grows; do not modify)."""
        return self._cfg_state

    def parts(self, config: int) -> tuple[int, int]:
        """``(stack node, state)`` of a configuration."""
        return self._cfg_node[config], self._cfg_state[config]

    def push(self, node: int, value: int) -> int:
        """The stack node ``node`` with ``value`` on top."""
        key = (node, value)
        got = self._nodes.get(key)
        return got if got is not None else self._intern(self._nodes, key, self._new_node)

    def _intern(
        self, table: dict[tuple[int, int], int], key: tuple[int, int], new: Callable[[int, int], int]
    ) -> int:
        """``table[key]``, made by ``new(*key)`` under the lock when missing (racing threads agree)."""
        with self._lock:
            got = table.get(key)
            if got is None:
                got = table[key] = new(*key)
        return got

    def _new_config(self, node: int, state: int) -> int:
        self._cfg_node.append(node)
        self._cfg_state.append(state)
        return len(self._cfg_state) - 1

    def _new_node(self, parent: int, value: int) -> int:
        self._parent.append(parent)
        self._value.append(value)
        self._depth.append(self._depth[parent] + 1)
        return len(self._value) - 1

    def stack(self, node: int, most: int | None = None) -> tuple[list[int], bool]:
        """The return states of stack ``node``, bottom first: the top ``most`` of them (all by default),
        and whether there are more below."""
        out: list[int] = []
        parent, value = self._parent, self._value
        while node and (most is None or len(out) < most):
            out.append(value[node])
            node = parent[node]
        out.reverse()
        return out, node != 0

    def step(self, config: int, data: bytes) -> int:
        """The configuration after ``data``, or -1 where a byte is rejected."""
        node, g, _ = self._advance(self._cfg_node[config], self._cfg_state[config], data)
        return -1 if g < 0 else self.config(node, g)

    def step_read(self, config: int, b: int) -> tuple[int, int]:
        """The configuration after byte ``b`` and the global state whose table read it (after the pushes
        and pops before it), or ``(-1, -1)`` where it is rejected; for callers that watch particular edges
        (:class:`constrain.masks.counted.CountedStringMasks`)."""
        node, g, read = self._advance(self._cfg_node[config], self._cfg_state[config], bytes((b,)))
        return (-1, -1) if g < 0 else (self.config(node, g), read)

    def _advance(self, node: int, g: int, data: bytes) -> tuple[int, int, int]:
        """``(stack node, state, state that read the last byte)`` after ``data``; ``g`` is -1 where a
        byte is rejected."""
        trans, pop_ok, enter = self._trans, self._pop_ok, self._enter
        read = g
        for b in data:
            while True:
                t = trans[(g << 8) | b]
                if t >= 0:
                    read, g = g, t
                    break
                for first, start, ret in enter.get(g, ()):
                    if first[b]:
                        node = self.push(node, ret)
                        g = start
                        break
                else:
                    if not pop_ok[g] or not node:
                        return node, -1, -1
                    g = self._value[node]
                    node = self._parent[node]
        return node, g, read

    def accepts(self, data: bytes) -> bool:
        """Whether ``data`` is a whole member of the language."""
        config = self.step(self.start, data)
        return config >= 0 and self.is_final(config)

    def is_final(self, config: int) -> bool:
        """Whether the input may end here: the values in progress may all end (popping the stack
        empty) and the root DFA accepts where that leaves it."""
        node = self._cfg_node[config]
        g = self._cfg_state[config]
        while node:
            if not self._pop_ok[g]:
                return False
            g = self._value[node]
            node = self._parent[node]
        return bool(self._final[g])

    def live_bytes(self, config: int) -> np.ndarray:
        """The bytes that may follow, ascending."""
        return np.array([b for b in range(256) if self.step(config, bytes((b,))) >= 0], dtype=np.int64)


class PushdownTokenMasks(MaskStore):
    """Token masks of a :class:`PushdownAutomaton` (see the module docstring); a ``TokenAutomaton``.

    ``inner`` is the :class:`~constrain.masks.dfa_masks.DFATokenMasks` of the global byte table (EOS
    where the root accepts, which is only ever at an empty stack). A configuration's mask is ``inner``'s
    row of its state plus the ids of the tokens that push or pop from it (:func:`pushdown_walk`, and
    EOS where the values in progress may all end), kept per configuration and cached by state and
    stack top; most have none, and a fill is then ``inner``'s (sparse states stay token ids there).
    """

    def __init__(self, automaton: PushdownAutomaton, trie: TokenTrie, eos_ids: Iterable[int]) -> None:
        from .dfa_masks import DFATokenMasks

        super().__init__(trie, eos_ids)
        self.pushdown = automaton
        tabs = automaton.tables
        dfa = DFA(tabs.transitions, tabs.root_final, tabs.start, "<pushdown byte table>")
        if tabs.byte_classes is not None:  # saves dfa_byte_classes a pass over the whole table
            object.__setattr__(dfa, "_byte_classes", tabs.byte_classes)
        self.inner = DFATokenMasks(dfa, trie, eos_ids)
        self.start = automaton.start
        self.step = automaton.step
        self.is_final = automaton.is_final
        self.live_bytes = automaton.live_bytes
        self._extra: dict[int, np.ndarray] = {}  # configuration -> ids of its crossing tokens
        self._root_ids: dict[int, np.ndarray] = {}  # root state -> the same, computed ahead
        # the hot path's lookups, bound once: configuration -> state (the automaton's growing list)
        self._state_of = automaton.state_list
        self._inner_fill = self.inner.fill_row
        self._by_key: dict[tuple[int, tuple[int, ...], bool, bool], np.ndarray] = {}
        self._rows: dict[int, np.ndarray] = {}  # configuration -> its whole row, when one was asked for
        self._reach = trie.max_depth
        self._cross_list: list[int] = tabs.cross_dist.tolist()
        self._none = np.zeros(0, dtype=np.int32)
        self._scratch = threading.local()
        self._handle: Tables | None = None
        # Where every way to a push or pop reads a quote (a string body), the crossing tokens all hold
        # one: they are walked in the trie of the tokens with a cut byte (DFATokenMasks' split walks).
        cut = self.inner._cut
        self._quote_trie = cut[2] if cut is not None and cut[0][ord('"')] else None
        self._quote_handle: Tables | None = None
        self._needs_quote: np.ndarray | None = None

    @property
    def num_cached_states(self) -> int:
        """Configurations whose crossing tokens are known, and the byte table's states with masks."""
        return len(self._extra) + self.inner.num_cached_states

    def precompute_ahead(self) -> int:
        """The byte table's masks near the start (:meth:`DFATokenMasks.precompute_ahead`), and the
        crossing tokens of the root's states within a token's reach of a hole, nearest first, in
        batches for at most :data:`CROSSING_AHEAD_SECONDS` (a state's own walk costs a call from
        Python each, about as much again as the walk); returns the byte table's count."""
        done = self.inner.precompute_ahead()
        tabs = self.pushdown.tables
        near = np.flatnonzero((tabs.component == 0) & (tabs.cross_dist < self._reach))
        near = near[np.argsort(tabs.cross_dist[near], kind="stable")]
        if not near.size:
            return done
        scratch = np.empty(self.num_words * 32, dtype=np.int32)
        deadline = time.perf_counter() + CROSSING_AHEAD_SECONDS
        for lo in range(0, near.size, 256):
            batch = near[lo : lo + 256]
            offsets, ids = pushdown_walk_batch(batch, self.trie.tables, self._net(), scratch)
            for k, g in enumerate(batch.tolist()):
                got = ids[offsets[k] : offsets[k + 1]]
                self._root_ids[g] = got.copy() if got.size else self._none
            if time.perf_counter() > deadline:
                break
        return done

    def mask(self, config: int) -> np.ndarray:
        """The read-only int32 bitmask row of ``config``."""
        row = self._rows.get(config)
        if row is None:
            ids = self._crossing_ids(config)
            g = self.pushdown.parts(config)[1]
            if not ids.size:
                return self.inner.mask(g)
            row = self.inner.mask(g).copy()
            or_ids(ids, row)
            row.setflags(write=False)
            row = self._rows.setdefault(config, row)
        return row

    def fill_row(self, config: int, out: np.ndarray) -> None:
        """Write the mask of ``config`` into ``out`` (a writable, contiguous int32 row)."""
        ids = self._extra.get(config)
        if ids is None:
            ids = self._crossing_ids(config)
        self._inner_fill(self._state_of[config], out)
        if ids.size:
            or_ids(ids, out)

    def _crossing_ids(self, config: int) -> np.ndarray:
        """The ids of the tokens that push or pop from ``config`` (EOS too where it may end only by
        popping), cached by configuration and by state and stack top."""
        got = self._extra.get(config)
        if got is not None:
            return got
        node, g = self.pushdown.parts(config)
        if not node:  # in the root's DFA the stack is empty: one configuration per state, no key needed
            ids = self._root_ids.get(g)
            if ids is None:
                ids = self._none if self._cross_list[g] >= self._reach else self._walk(g, (), False)
                assert ids is not None  # nothing below an empty stack that is not truncated
            return self._extra.setdefault(config, ids if ids.size else self._none)
        # EOS where every value in progress may end: that depends on the whole stack, so it is in the key
        final = self.is_final(config)
        if self._cross_list[g] >= self._reach and not final:
            return self._extra.setdefault(config, self._none)
        stack, more = self.pushdown.stack(node, STACK_KEY_DEPTH)
        key = (g, tuple(stack), more, final)
        ids = self._by_key.get(key)
        if ids is None:
            ids = self._walk(g, stack, more)
            if ids is None:  # a token pops below the top STACK_KEY_DEPTH: key by the whole stack
                stack, more = self.pushdown.stack(node)
                key = (g, tuple(stack), more, final)
                ids = self._by_key.get(key)
                if ids is None:
                    ids = self._walk(g, stack, more)
                    assert ids is not None
            if final:
                ids = np.concatenate([ids, self._eos_ids.astype(np.int32)])
            ids = self._by_key.setdefault(key, ids if ids.size else self._none)
        return self._extra.setdefault(config, ids)

    def _walk(self, g: int, stack: Sequence[int], more: bool) -> np.ndarray | None:
        """The crossing tokens' ids from state ``g`` over ``stack`` (None: one pops below it)."""
        scratch = getattr(self._scratch, "ids", None)
        if scratch is None:
            scratch = self._scratch.ids = np.empty(self.num_words * 32, dtype=np.int32)
        below = np.array(stack, dtype=np.int32) if stack else self._none
        needs_quote = self._needs_quote
        if needs_quote is None:
            quote = np.uint64(1) << np.uint64(ord('"'))
            needs_quote = self._needs_quote = (self.pushdown.tables.necessary[:, 0] & quote) != 0
        if self._quote_trie is not None and needs_quote[g]:
            count = pushdown_walk(g, self._quote_trie.tables, self._net(True), below, more, scratch)
        else:
            count = pushdown_walk(g, self.trie.tables, self._net(), below, more, scratch)
        return None if count < 0 else scratch[:count].copy()

    def _net(self, quote: bool = False) -> Tables:
        """The network's walk handle (positions ``N_*``) for the whole trie, or with ``quote`` for the
        trie of the tokens with a cut byte; built on the first walk (it holds the chains)."""
        net = self._quote_handle if quote else self._handle
        if net is None:
            tabs = self.pushdown.tables
            chain_bytes, chain_len, _ = self.inner._chains()
            need_index = tabs.need_index
            need_index.setflags(write=False)
            trie = self._quote_trie if quote and self._quote_trie is not None else self.trie
            net = new_tables(
                (
                    tabs.transitions, tabs.cross_dist, tabs.necessary, tabs.pop_ok, tabs.hole_lo,
                    tabs.hole_hi, tabs.edge_first, tabs.edge_start, tabs.edge_ret, chain_bytes, chain_len,
                    need_index, suffix_candidate_sets(trie),
                )
            )  # fmt: skip
            if quote:
                self._quote_handle = net
            else:
                self._handle = net
        return net
