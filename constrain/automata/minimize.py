"""Pruning and minimisation of DFAs given as transition tables over byte classes.

:func:`prune_and_minimize` keeps the states that are reachable and can reach acceptance, merges
equivalent states with Hopcroft's partition refinement (:func:`hopcroft`, in numba), numbers the
quotient breadth-first from the start in class order, so that equal languages over the same classes
get equal tables. Its tables are ``int[states, classes]`` with ``-1`` for dead.
"""

from __future__ import annotations

import numba
import numpy as np

from ..budget import check
from ..budget import time_up as _time_up


@numba.njit(cache=True, nogil=True)
def predecessors(trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """The reverse edges of ``trans`` (``-1`` = dead) in CSR form: ``(ptr, preds)``.

    The predecessors of state ``t`` are ``preds[ptr[t]:ptr[t + 1]]``, in ascending source order, one
    entry per edge (a source repeats once per class that leads to ``t``).
    """
    n, k = trans.shape
    ptr = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        for c in range(k):
            t = trans[s, c]
            if t >= 0:
                ptr[t + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    preds = np.empty(ptr[n], dtype=np.int64)
    for s in range(n):
        for c in range(k):
            t = trans[s, c]
            if t >= 0:
                preds[fill[t]] = s
                fill[t] += 1
    return ptr, preds


def prune_and_minimize(
    trans: np.ndarray,
    accepting: np.ndarray,
    start: int,
    known_minimal: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Drop states that are unreachable or cannot reach acceptance and merge equivalent states:
    ``(int32[states, classes], accepting)`` over the same byte classes as ``trans``, with the start
    state 0, or None when the language is empty. One kernel call: the steps in between were Python and
    numpy glue that took longer than the kernels on the small tables most compiles build.

    States are numbered breadth-first from the start, each state's columns read in class order.

    ``known_minimal``: the caller built a table whose live states are pairwise inequivalent (a layered
    length automaton, a quoted minimal DFA), so refinement is skipped; the result is the same table
    the full path gives (trimmed, numbered breadth-first), for a fraction of the time on the
    28,000-state tables of ``maxLength: 2048``.
    """
    table32 = np.ascontiguousarray(trans, dtype=np.int32)
    acc = np.ascontiguousarray(accepting, dtype=np.bool_)
    while True:
        table, acc_out, status = _prune_minimize(table32, acc, int(start), known_minimal)
        if status == _EMPTY:
            return None
        if status == _DONE:
            return table, acc_out
        check("minimization")  # the kernel stopped for the budget: this raises unless time was left


_DONE, _EMPTY, _STOPPED = 0, 1, 2


@numba.njit(cache=True)
def _prune_minimize(trans, accepting, start, known_minimal):  # pragma: no cover - numba
    """:func:`prune_and_minimize`'s kernel; the status is ``_DONE``, ``_EMPTY`` or ``_STOPPED``
    (:func:`hopcroft` ran out of budget).

    The table is read twice, into its edges; the rest runs over the edges and the quotient is written
    once. States that cannot reach acceptance form the sink's block (dead); unreachable ones take part
    in the refinement (equivalence does not depend on reachability) but the breadth-first numbering
    never meets them, so the result is the trimmed minimal table."""
    n, k = trans.shape
    nothing = np.empty((0, k), dtype=np.int32)
    # Out-edges as CSR, each state's in column order; incoming counts on the way.
    optr = np.zeros(n + 1, dtype=np.int64)
    iptr = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        out = 0
        for c in range(k):
            t = trans[s, c]
            if t >= 0:
                out += 1
                iptr[t + 1] += 1
        optr[s + 1] = optr[s] + out
    for t in range(n):
        iptr[t + 1] += iptr[t]
    e = optr[n]
    ocol = np.empty(e, dtype=np.int64)
    odst = np.empty(e, dtype=np.int64)
    isrc = np.empty(e, dtype=np.int64)
    icls = np.empty(e, dtype=np.int64)
    fill = iptr[:-1].copy()
    i = 0
    for s in range(n):
        for c in range(k):
            t = trans[s, c]
            if t >= 0:
                ocol[i] = c
                odst[i] = t
                i += 1
                isrc[fill[t]] = s
                icls[fill[t]] = c
                fill[t] += 1
    # Co-reachable states: a backward search from the accepting ones.
    live = np.zeros(n, dtype=np.bool_)
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for s in range(n):
        if accepting[s]:
            live[s] = True
            stack[top] = s
            top += 1
    while top > 0:
        top -= 1
        t = stack[top]
        for j in range(iptr[t], iptr[t + 1]):
            s = isrc[j]
            if not live[s]:
                live[s] = True
                stack[top] = s
                top += 1
    if not live[start]:
        return nothing, np.empty(0, dtype=np.bool_), _EMPTY
    if known_minimal:
        block = np.arange(n)
    else:
        group = np.empty(n, dtype=np.int64)
        for s in range(n):
            group[s] = (0 if accepting[s] else 1) if live[s] else 2
        block = _refine(n, k, group, iptr, isrc, icls, True)
        if block.shape[0] == 0:
            return nothing, np.empty(0, dtype=np.bool_), _STOPPED
    # The quotient automaton: blocks renumbered in BFS order from the start (columns in order); the
    # first live state of each block represents it.
    num_blocks = block.max() + 1
    rep = np.full(num_blocks, -1, dtype=np.int64)
    for s in range(n - 1, -1, -1):
        if live[s]:
            rep[block[s]] = s
    seen = np.zeros(num_blocks, dtype=np.bool_)
    bfs = np.empty(num_blocks, dtype=np.int64)
    first = block[start]
    bfs[0] = first
    seen[first] = True
    size = 1
    i = 0
    while i < size:
        r = rep[bfs[i]]
        i += 1
        for j in range(optr[r], optr[r + 1]):
            t = odst[j]
            if live[t] and not seen[block[t]]:
                seen[block[t]] = True
                bfs[size] = block[t]
                size += 1
    new_id = np.full(num_blocks, -1, dtype=np.int64)
    for i in range(size):
        new_id[bfs[i]] = i
    table = np.full((size, k), -1, dtype=np.int32)
    acc_out = np.empty(size, dtype=np.bool_)
    for i in range(size):
        r = rep[bfs[i]]
        for j in range(optr[r], optr[r + 1]):
            t = odst[j]
            if live[t]:
                table[i, ocol[j]] = new_id[block[t]]
        acc_out[i] = accepting[r]
    return table, acc_out, _DONE


@numba.njit(cache=True, nogil=True)
def expand_columns(table: np.ndarray, classes: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """``table[:, classes]`` as a new ``int32[states, 256]`` table (a third faster than numpy's
    gather on the 20,000-state tables)."""
    n = table.shape[0]
    out = np.empty((n, classes.shape[0]), dtype=np.int32)
    for s in range(n):
        for b in range(classes.shape[0]):
            out[s, b] = table[s, classes[b]]
    return out


def refine(trans: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """:func:`hopcroft` under the compile budget: the kernel stops when the time is up, and this
    raises :class:`~constrain.exceptions.CompileBudgetExceeded` (see :mod:`constrain.budget`)."""
    block = hopcroft(trans, accepting)
    while block.shape[0] == 0 and trans.shape[0] > 0:
        check("minimization")
        block = hopcroft(trans, accepting)
    return block


@numba.njit(cache=True, nogil=True)
def bfs_order(trans: np.ndarray, start: int, sink: int) -> np.ndarray:  # pragma: no cover - numba
    """The states reachable from ``start``, breadth-first, successors in column order.

    Dead targets (``< 0``) and ``sink`` (``-1`` for none) are not visited.
    """
    n, k = trans.shape
    seen = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    order[0] = start
    seen[start] = True
    if sink >= 0:
        seen[sink] = True
    size = 1
    i = 0
    while i < size:
        s = order[i]
        i += 1
        for c in range(k):
            t = trans[s, c]
            if t >= 0 and not seen[t]:
                seen[t] = True
                order[size] = t
                size += 1
    return order[:size]


@numba.njit(cache=True)
def hopcroft(trans: np.ndarray, accepting: np.ndarray, sink: int = -1) -> np.ndarray:  # pragma: no cover
    """Hopcroft's partition refinement on a complete DFA; returns the block (class) of each state.

    Blocks are contiguous slices of ``elems``; splitting moves the predecessors of the splitter to the
    front of their block (Valmari's layout), so a round costs time proportional to the edges read.
    Predecessors are kept per target state, sorted by class, and a splitter's incoming edges are
    bucketed by the classes they actually use: a round never loops over all classes x splitter
    states (most of those pairs have no edge; on a 20,000-state, 84-class object DFA that loop was
    most of the time). ``sink`` (a state every other state can tell itself apart from: the DFA is
    trimmed) makes it the partial-DFA refinement of Valmari and Lehtinen: edges into the sink are not
    read, the sink keeps a block of its own, and every initial block is a splitter, so the time is
    proportional to the live edges, not states x classes. Returns an empty array when the compile
    budget ran out (:func:`refine` then raises).
    """
    n, k = trans.shape
    # Incoming edges per target state as CSR, each state's run sorted by class (none through the sink).
    ptr = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        if s == sink:
            continue
        for c in range(k):
            t = trans[s, c]
            if t != sink:
                ptr[t + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    src = np.empty(ptr[n], dtype=np.int64)
    cls = np.empty(ptr[n], dtype=np.int64)
    by_class = np.ascontiguousarray(trans.T)
    for c in range(k):
        row = by_class[c]
        for s in range(n):
            t = row[s]
            if t != sink and s != sink:
                src[fill[t]] = s
                cls[fill[t]] = c
                fill[t] += 1
    group = np.empty(n, dtype=np.int64)
    for s in range(n):
        group[s] = 2 if s == sink else (0 if accepting[s] else 1)
    return _refine(n, k, group, ptr, src, cls, sink >= 0)


@numba.njit(cache=True)
def _refine(n, k, group, ptr, src, cls, partial):  # pragma: no cover - numba
    """:func:`hopcroft`'s refinement from the initial blocks ``group`` (0: accepting, 1: not, 2: the
    sink's block, dead states that reach no other), given each state's incoming edges as CSR
    (``ptr``; source ``src``, class ``cls``); ``partial``: a partial DFA (see :func:`hopcroft`)."""
    elems = np.empty(n, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    block_of = np.zeros(n, dtype=np.int64)
    bstart = np.zeros(n + 1, dtype=np.int64)
    bend = np.zeros(n + 1, dtype=np.int64)
    mcount = np.zeros(n + 1, dtype=np.int64)
    in_work = np.zeros(n + 1, dtype=np.bool_)
    j = 0
    nblocks = 0
    for want in range(3):  # accepting, other, and last the sink's block (partial)
        first = j
        for s in range(n):
            if group[s] == want:
                elems[j] = s
                pos[s] = j
                block_of[s] = nblocks
                j += 1
        if j > first:
            bstart[nblocks] = first
            bend[nblocks] = j
            nblocks += 1
    if partial:
        # every initial block splits (a partial DFA: no block is the complement of the others); the
        # sink's block is never split or read
        work = [np.int64(0)]  # numba: a typed list of int64
        work.pop()
        for b0 in range(nblocks):
            if group[elems[bstart[b0]]] < 2:
                work.append(np.int64(b0))
                in_work[b0] = True
    else:
        # a complete DFA: either initial block splits like the pair (the other is its complement), so
        # only the smaller one is queued
        smallest = 0
        if nblocks == 2 and bend[1] - bstart[1] < bend[0] - bstart[0]:
            smallest = 1
        work = [np.int64(smallest)]
        in_work[smallest] = True
    touched = np.empty(n + 1, dtype=np.int64)
    # A splitter's incoming edges bucketed by class: per-class counts, the classes met, the sources.
    ccount = np.zeros(k + 1, dtype=np.int64)
    cstart = np.zeros(k, dtype=np.int64)
    classes_met = np.empty(k, dtype=np.int64)
    bucket = np.empty(ptr[n], dtype=np.int64)
    rounds = 0
    while len(work) > 0:
        rounds += 1
        if (rounds & 255) == 0:  # the compile budget, every 256 splitters (an object-mode call)
            with numba.objmode(stop="boolean"):
                stop = _time_up()
            if stop:
                return block_of[:0]
        b = work.pop()
        in_work[b] = False
        lo_b, hi_b = bstart[b], bend[b]
        nmet = 0
        total = 0
        for e in range(lo_b, hi_b):
            t = elems[e]
            for i in range(ptr[t], ptr[t + 1]):
                c = cls[i]
                if ccount[c] == 0:
                    classes_met[nmet] = c
                    nmet += 1
                ccount[c] += 1
                total += 1
        if total == 0:
            continue
        at = 0
        for m_i in range(nmet):
            c = classes_met[m_i]
            cstart[c] = at
            at += ccount[c]
            ccount[c] = 0
        # elems[lo_b:hi_b] is not reordered until the splits below: read it once more to fill
        for e in range(lo_b, hi_b):
            t = elems[e]
            for i in range(ptr[t], ptr[t + 1]):
                c = cls[i]
                bucket[cstart[c] + ccount[c]] = src[i]
                ccount[c] += 1
        for m_i in range(nmet):
            c = classes_met[m_i]
            first_i = cstart[c]
            last_i = first_i + ccount[c]
            ccount[c] = 0
            ntouched = 0
            for i in range(first_i, last_i):
                p = bucket[i]
                bp = block_of[p]
                front = bstart[bp] + mcount[bp]
                if pos[p] < front:
                    continue  # already marked
                q = elems[front]
                elems[pos[p]] = q
                pos[q] = pos[p]
                elems[front] = p
                pos[p] = front
                if mcount[bp] == 0:
                    touched[ntouched] = bp
                    ntouched += 1
                mcount[bp] += 1
            for ti in range(ntouched):
                bp = touched[ti]
                m = mcount[bp]
                mcount[bp] = 0
                if m == bend[bp] - bstart[bp]:
                    continue
                nb = nblocks
                nblocks += 1
                bstart[nb] = bstart[bp]
                bend[nb] = bstart[bp] + m
                bstart[bp] = bstart[bp] + m
                for e in range(bstart[nb], bend[nb]):
                    block_of[elems[e]] = nb
                if in_work[bp] or bend[nb] - bstart[nb] <= bend[bp] - bstart[bp]:
                    work.append(np.int64(nb))
                    in_work[nb] = True
                else:
                    work.append(np.int64(bp))
                    in_work[bp] = True
    return block_of
