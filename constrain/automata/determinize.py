"""Subset construction: an NFA over byte ranges to a DFA table over byte classes.

Bytes that every NFA edge treats alike form a class (:func:`byte_classes`), and the construction runs
over classes, not over 256 bytes. Anchor-free NFAs take a numba construction over CSR arrays
(:func:`_determinize_fast`); NFAs with anchors take the Python one, which tracks in each subset what
the anchors know about the input (:func:`_determinize_anchored`). :func:`nfa_to_dfa` then trims and
minimises the table (:mod:`.minimize`) into a :class:`~constrain.automata.dfa.DFA`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numba
import numpy as np

from ..budget import check_states, state_limit
from ..budget import time_up as _time_up
from ..exceptions import UnsupportedRegexFeature
from ..limits import current_limits
from .dfa import DEAD, DFA, dfa_from_class_arrays
from .nfa import BEGIN, END_OR_NL, EPS, NFA

# Modes track what the anchors know about the input: at the very start (nothing read yet); in the
# middle; after `$` (what is left is "" or "\n"); at the end (nothing may follow).
_M_START, _M_MID, _M_END_OR_NL, _M_END = 0, 1, 2, 3
_NL = 0x0A


def byte_classes(nfa: NFA, list_edges: np.ndarray | None = None) -> np.ndarray:
    """Partition 0..255 into classes that every NFA edge treats alike; returns class id per byte.

    ``list_edges``: :func:`list_edge_array` of ``nfa``, where the caller has it."""
    starts = np.zeros(257, dtype=np.bool_)  # a class starts at each byte where an edge starts or ends
    starts[0] = True
    for edges in (list_edge_array(nfa) if list_edges is None else list_edges, *nfa.edge_blocks):
        starts[edges[:, 1]] = True
        starts[edges[:, 2] + 1] = True
    if nfa.has_anchors:
        starts[_NL] = starts[_NL + 1] = True
    return (np.cumsum(starts[:256]) - 1).astype(np.int32)


def list_edge_array(nfa: NFA) -> np.ndarray:
    """The byte edges kept in ``nfa``'s per-state lists, as ``int64[edges, 4]`` rows
    ``(src, lo, hi, dst)``."""
    listed, edge_lists = nfa.listed, nfa.edges
    count = sum(len(edge_lists[s]) for s in listed)
    return np.fromiter(
        (x for s in listed for edge in edge_lists[s] for x in (s, *edge)), dtype=np.int64, count=4 * count
    ).reshape(-1, 4)


def _subset_id(subset: Hashable, index: dict[Any, int], order: list[Any], pattern: str) -> int:
    """The DFA state number of ``subset``, numbering it (in discovery order) on first sight."""
    j = index.get(subset)
    if j is None:
        j = len(order)
        if j >= state_limit(current_limits().max_dfa_states):
            check_states(current_limits().max_dfa_states, "determinization")
            raise UnsupportedRegexFeature(
                f"a language whose automaton exceeds {current_limits().max_dfa_states} states",
                pattern,
                "simplify the pattern or bound its repetitions less finely",
            )
        index[subset] = j
        order.append(subset)
    return j


def _determinize_anchored(nfa: NFA, start: int, final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction. Returns (class transitions [S, C] with -1 dead, accepting [S], class of byte)."""
    from ..budget import check

    nfa.materialize_blocks()
    classes = byte_classes(nfa)
    num_classes = int(classes.max()) + 1
    reps = [int(np.argmax(classes == c)) for c in range(num_classes)]

    def closure(configs: Iterable[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        seen = set(configs)
        stack = list(seen)
        while stack:
            s, m = stack.pop()
            for kind, t in nfa.eps[s]:
                if kind == EPS:
                    nm = m
                elif kind == BEGIN:
                    if m != _M_START:
                        continue
                    nm = m
                elif kind == END_OR_NL:
                    nm = m if m in (_M_END_OR_NL, _M_END) else _M_END_OR_NL
                else:
                    nm = _M_END
                cfg = (t, nm)
                if cfg not in seen:
                    seen.add(cfg)
                    stack.append(cfg)
        return frozenset(seen)

    # Per NFA state: class -> targets (edges are already class-aligned).
    per_class: list[dict[int, list[int]]] = []
    for edges in nfa.edges:
        d: dict[int, list[int]] = {}
        for lo, hi, t in edges:
            for c in range(int(classes[lo]), int(classes[hi]) + 1):
                d.setdefault(c, []).append(t)
        per_class.append(d)

    init = closure([(start, _M_START)])
    index: dict[frozenset[tuple[int, int]], int] = {init: 0}
    order = [init]
    rows: list[list[int]] = []
    i = 0
    while i < len(order):
        if i & 1023 == 1023:
            check("determinization")
        cur = order[i]
        i += 1
        row = [DEAD] * num_classes
        for c in range(num_classes):
            targets: list[tuple[int, int]] = []
            for s, m in cur:
                ts = per_class[s].get(c)
                if not ts:
                    continue
                if m == _M_END or (m == _M_END_OR_NL and reps[c] != _NL):
                    continue
                nm = _M_END if m == _M_END_OR_NL else _M_MID
                targets.extend((t, nm) for t in ts)
            if not targets:
                continue
            nxt = closure(targets)
            row[c] = _subset_id(nxt, index, order, nfa.pattern)
        rows.append(row)
    trans = np.array(rows, dtype=np.int32).reshape(len(order), num_classes)
    accepting = np.array([any(s == final for s, _ in st) for st in order], dtype=bool)
    return trans, accepting, classes


def _determinize_fast(nfa: NFA, start: int, final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction for anchor-free NFAs, in numba.

    The NFA goes into CSR arrays (epsilon edges; byte-range edges as byte-class ranges); subsets are
    sorted arrays of the states that read bytes (plus the final state), found by hashing.
    """
    list_edges = list_edge_array(nfa)
    classes = byte_classes(nfa, list_edges)
    num_classes = int(classes.max()) + 1
    n = len(nfa.edges)
    # Epsilon edges and byte edges from the per-state lists and the bulk blocks, sorted into CSR.
    listed, eps_lists = nfa.listed, nfa.eps
    count = sum(len(eps_lists[s]) for s in listed)
    eps = np.fromiter(
        (x for s in listed for _k, t in eps_lists[s] for x in (s, t)), dtype=np.int64, count=2 * count
    ).reshape(-1, 2)
    if nfa.eps_blocks:
        eps = np.concatenate([eps, *nfa.eps_blocks])
    flat = np.concatenate([list_edges, *nfa.edge_blocks]) if nfa.edge_blocks else list_edges
    eps_ptr, eps_dst, edge_ptr, edge_clo, edge_chi, edge_dst, important = _csr_tables(
        eps, flat, classes.astype(np.int64), n, final
    )
    rows, accepting, ok = _subset_construction(
        eps_ptr, eps_dst, edge_ptr, edge_clo, edge_chi, edge_dst, important, final, start, num_classes,
        state_limit(current_limits().max_dfa_states),
    )  # fmt: skip
    if not ok:
        # the kernel stopped early: the compile budget (time or states), else the size limit
        check_states(current_limits().max_dfa_states, "determinization")
        raise UnsupportedRegexFeature(
            f"a language whose automaton exceeds {current_limits().max_dfa_states} states",
            nfa.pattern,
            "simplify the pattern or bound its repetitions less finely",
        )
    return rows, accepting, classes


@numba.njit(cache=True)
def _row_offsets(rows, n):  # pragma: no cover - numba
    """CSR offsets of ``rows`` grouped by their source (column 0) among ``n`` states."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(rows.shape[0]):
        ptr[rows[i, 0] + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    return ptr


@numba.njit(cache=True)
def _csr_tables(eps, flat, classes, n, final):  # pragma: no cover - numba
    """The NFA's epsilon edges (``eps``: ``(src, dst)`` rows) and byte edges (``flat``: ``(src, lo, hi,
    dst)`` rows) as CSR arrays by source, each source's edges in their given order (a stable counting
    sort), byte ranges as class ranges; and which states read bytes (or are ``final``)."""
    eps_ptr = _row_offsets(eps, n)
    fill = eps_ptr[:-1].copy()
    eps_dst = np.empty(eps.shape[0], dtype=np.int64)
    for i in range(eps.shape[0]):
        s = eps[i, 0]
        eps_dst[fill[s]] = eps[i, 1]
        fill[s] += 1
    e = flat.shape[0]
    edge_ptr = _row_offsets(flat, n)
    fill = edge_ptr[:-1].copy()
    clo = np.empty(e, dtype=np.int64)
    chi = np.empty(e, dtype=np.int64)
    dst = np.empty(e, dtype=np.int64)
    for i in range(e):
        s = flat[i, 0]
        j = fill[s]
        clo[j] = classes[flat[i, 1]]
        chi[j] = classes[flat[i, 2]]
        dst[j] = flat[i, 3]
        fill[s] += 1
    important = np.zeros(n, dtype=np.bool_)
    for s in range(n):
        important[s] = edge_ptr[s + 1] > edge_ptr[s]
    important[final] = True
    return eps_ptr, eps_dst, edge_ptr, clo, chi, dst, important


@numba.njit(cache=True)
def _close(seeds, num_seeds, eps_ptr, eps_dst, important, stamp, tick, stack, out):  # pragma: no cover
    """Epsilon closure of ``seeds``; writes its important states, sorted, to ``out``; returns the count."""
    top = 0
    count = 0
    for i in range(num_seeds):
        s = seeds[i]
        if stamp[s] != tick:
            stamp[s] = tick
            stack[top] = s
            top += 1
    while top > 0:
        top -= 1
        s = stack[top]
        if important[s]:
            out[count] = s
            count += 1
        for j in range(eps_ptr[s], eps_ptr[s + 1]):
            t = eps_dst[j]
            if stamp[t] != tick:
                stamp[t] = tick
                stack[top] = t
                top += 1
    out[:count].sort()
    return count


@numba.njit(cache=True)
def _subset_construction(
    eps_ptr, eps_dst, edge_ptr, edge_clo, edge_chi, edge_dst, important, final, start, k, limit
):  # pragma: no cover
    n = eps_ptr.shape[0] - 1
    stamp = np.zeros(n, dtype=np.int64)
    stack = np.empty(n + 1, dtype=np.int64)
    buf = np.empty(n + 1, dtype=np.int64)
    seeds = np.empty(1, dtype=np.int64)
    seeds[0] = start
    tick = 1
    cnt = _close(seeds, 1, eps_ptr, eps_dst, important, stamp, tick, stack, buf)
    # Small first allocations, doubled as needed: most automata built here have a few dozen states,
    # and a 1,024-row table cost more than the construction itself.
    store = np.empty(max(256, 4 * cnt), dtype=np.int64)
    store[:cnt] = buf[:cnt]
    sub_start = np.empty(64, dtype=np.int64)
    sub_len = np.empty(64, dtype=np.int64)
    sub_start[0] = 0
    sub_len[0] = cnt
    used = cnt
    num = 1
    index = dict()
    h0 = np.int64(1469598103934665603)
    h = h0
    for j in range(cnt):
        h = (h ^ buf[j]) * np.int64(1099511628211)
    index[h] = 0
    rows = np.full((64, k), -1, dtype=np.int32)
    accepting = np.zeros(64, dtype=np.bool_)
    counts = np.zeros(k + 1, dtype=np.int64)
    targets = np.empty(256, dtype=np.int64)
    fill = np.empty(k, dtype=np.int64)
    i = 0
    while i < num:
        if num > limit:
            return rows[:0], accepting[:0], False
        if (i & 255) == 255:  # the compile budget, every 256 subsets (an object-mode call)
            with numba.objmode(stop="boolean"):
                stop = _time_up()
            if stop:
                return rows[:0], accepting[:0], False
        a = sub_start[i]
        b = a + sub_len[i]
        # Bucket the byte-reading edges of the subset by class.
        counts[:] = 0
        for p in range(a, b):
            s = store[p]
            if s == final:
                accepting[i] = True
            for e in range(edge_ptr[s], edge_ptr[s + 1]):
                for c in range(edge_clo[e], edge_chi[e] + 1):
                    counts[c + 1] += 1
        for c in range(k):
            counts[c + 1] += counts[c]
        total = counts[k]
        if total > targets.shape[0]:
            targets = np.empty(2 * total, dtype=np.int64)
        fill[:] = counts[:k]
        for p in range(a, b):
            s = store[p]
            for e in range(edge_ptr[s], edge_ptr[s + 1]):
                for c in range(edge_clo[e], edge_chi[e] + 1):
                    targets[fill[c]] = edge_dst[e]
                    fill[c] += 1
        prev_lo = 0
        prev_hi = 0
        prev_found = -1
        for c in range(k):
            lo = counts[c]
            hi = counts[c + 1]
            if lo == hi:
                continue
            # A class read by the same edges as the previous one goes to the same subset (wide ranges
            # such as string bodies span most classes): no closure, no hash.
            if prev_found >= 0 and hi - lo == prev_hi - prev_lo:
                same_targets = True
                for q in range(hi - lo):
                    if targets[lo + q] != targets[prev_lo + q]:
                        same_targets = False
                        break
                if same_targets:
                    rows[i, c] = prev_found
                    continue
            tick += 1
            cnt = _close(targets[lo:hi], hi - lo, eps_ptr, eps_dst, important, stamp, tick, stack, buf)
            h = h0
            for j in range(cnt):
                h = (h ^ buf[j]) * np.int64(1099511628211)
            # Open addressing on the hash: probe until an equal subset or a free key.
            found = -1
            while h in index:
                j2 = index[h]
                if sub_len[j2] == cnt:
                    same = True
                    base = sub_start[j2]
                    for q in range(cnt):
                        if store[base + q] != buf[q]:
                            same = False
                            break
                    if same:
                        found = j2
                        break
                h += 1
            if found < 0:
                found = num
                index[h] = found
                if num >= sub_start.shape[0]:
                    grow = sub_start.shape[0] * 2
                    ns = np.empty(grow, dtype=np.int64)
                    ns[:num] = sub_start[:num]
                    sub_start = ns
                    nl = np.empty(grow, dtype=np.int64)
                    nl[:num] = sub_len[:num]
                    sub_len = nl
                    nr = np.full((grow, k), -1, dtype=np.int32)
                    nr[:num] = rows[:num]
                    rows = nr
                    na = np.zeros(grow, dtype=np.bool_)
                    na[:num] = accepting[:num]
                    accepting = na
                if used + cnt > store.shape[0]:
                    nst = np.empty(max(store.shape[0] * 2, used + cnt), dtype=np.int64)
                    nst[:used] = store[:used]
                    store = nst
                store[used : used + cnt] = buf[:cnt]
                sub_start[num] = used
                sub_len[num] = cnt
                used += cnt
                num += 1
            rows[i, c] = found
            prev_lo, prev_hi, prev_found = lo, hi, found
        i += 1
    # Views, not copies: the callers minimise the table at once and drop it.
    return rows[:num], accepting[:num], True


def determinize(nfa: NFA, start: int, final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction from ``start`` with ``final`` the accepting NFA state.

    Returns (class transitions ``int32[S, C]`` with -1 dead, accepting ``bool[S]``, class of each byte);
    DFA state 0 is the start. Raises :class:`UnsupportedRegexFeature` past :data:`MAX_DFA_STATES`.
    """
    from ..budget import check

    check("determinization")
    if nfa.has_anchors:
        return _determinize_anchored(nfa, start, final)
    return _determinize_fast(nfa, start, final)


def nfa_to_dfa(nfa: NFA, start: int, final: int, label: str) -> DFA:
    """The minimal DFA of ``nfa`` (which remembers its byte classes, see :func:`dfa_from_class_arrays`)."""
    trans, accepting, classes = determinize(nfa, start, final)
    if trans.shape[0] > current_limits().max_dfa_states:  # pragma: no cover - _subset_id enforces it first
        raise UnsupportedRegexFeature("too many automaton states", label)
    return dfa_from_class_arrays(trans, accepting, 0, classes.astype(np.int32), label)
