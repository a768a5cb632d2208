"""Machine-code byte steps for the Earley configuration automaton (see :mod:`constrain.cfg.earley`).

The automaton's frequent work is stepping a configuration's lexemes over one byte, looking up the
Earley node after the lexemes that end there, and interning the resulting configuration. The token
mask walks do it thousands of times per new configuration, so it runs here, in numba, on flat
tables. The rare, expensive part, the Earley closure that builds a new node, stays in Python: a step
that needs a node the tables do not hold yet returns :data:`NEED_NODE` (with the key of the missing
node in ``bail``), one that runs out of room returns :data:`NEED_ROOM`; Python builds or grows, then
steps again.

Encodings (``G`` terminal DFA states in all, numbered globally; ``NT`` terminals):

* a lexeme in progress is ``node * G + global DFA state``; a configuration is the sorted array of
  its lexemes (the start configuration carries one extra leading code ``-2 - root``, so it never
  equals a configuration reached by a step, whose input may not end at the root);
* a set of lexeme ends is the sorted array of ``node * NT + terminal`` for ordinary terminals and
  ``-1 - node`` for ``%ignore`` ones.

Both kinds of arrays are interned in pools (``off``/``pool``) with an open-addressing hash table.
"""

from __future__ import annotations

import numba
import numpy as np

UNKNOWN = -2  # trans[c, b] not computed yet
DEAD = -1
NEED_NODE = -3  # the node after the lexeme ends in ``bail`` is not in the tables yet
NEED_ROOM = -4  # a table is full: grow (see ``counts``) and step again

# ``counts`` slots
N_CONFIGS, N_ENDS, NUM_G, NUM_T, BAIL_LEN, POOL_NEED, END_POOL_NEED, SCRATCH_NEED = range(8)


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(key: np.ndarray, n: int) -> int:  # pragma: no cover - numba
    h = np.uint64(1469598103934665603)
    for i in range(n):
        h ^= np.uint64(key[i] + 4611686018427387904)  # codes are > -2**62: keep them positive
        h *= np.uint64(1099511628211)
    return int(h >> np.uint64(1))


@numba.njit(cache=True, nogil=True)
def find(
    table: np.ndarray, off: np.ndarray, pool: np.ndarray, key: np.ndarray, n: int
) -> int:  # pragma: no cover
    """The id of ``key[:n]`` in an interned pool, or ``-1 - slot`` with the free slot it would take."""
    mask = table.shape[0] - 1
    slot = _hash(key, n) & mask
    while True:
        ident = table[slot]
        if ident < 0:
            return -1 - slot
        lo = off[ident]
        if off[ident + 1] - lo == n:
            same = True
            for i in range(n):
                if pool[lo + i] != key[i]:
                    same = False
                    break
            if same:
                return ident
        slot = (slot + 1) & mask


# The tables, one tuple (see :class:`constrain.cfg.earley.EarleyAutomaton`): terminal DFA transitions
# (local targets, rows numbered globally), acceptance, terminal of each row, each terminal's first
# row, %ignore flags; then ``trans``; the configuration pool (offsets, codes, hash); the lexeme-end
# pool (offsets, codes, node, hash); each node's fresh lexemes (offsets, global start rows);
# ``counts``; ``bail``; the grammar's byte classes (class of each byte, offsets, bytes by class); a
# scratch buffer for a step's lexeme ends and result (no allocation per step).
(
    GTRANS, GACC, GTERM, TOFF, IGNORE, TRANS, CFG_OFF, CFG_POOL, CFG_HASH,
    END_OFF, END_POOL, END_NODE, END_HASH, FRESH_OFF, FRESH_POOL, COUNTS, BAIL,
    BYTE_CLASS, CLASS_OFF, CLASS_BYTES, SCRATCH,
) = range(21)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def intern_config(tabs, key: np.ndarray, n: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """The id of the configuration ``key[:n]``, made (with its initial ``trans`` row) if new."""
    gtrans, gacc, trans, cfg_off, cfg_pool, cfg_hash, counts = (
        tabs[GTRANS], tabs[GACC], tabs[TRANS], tabs[CFG_OFF], tabs[CFG_POOL], tabs[CFG_HASH], tabs[COUNTS]
    )  # fmt: skip
    r = find(cfg_hash, cfg_off, cfg_pool, key, n)
    if r >= 0:
        return r
    cid = counts[N_CONFIGS]
    lo = cfg_off[cid]
    if cid + 1 >= trans.shape[0] or 4 * (cid + 1) > cfg_hash.shape[0] or lo + n > cfg_pool.shape[0]:
        counts[POOL_NEED] = lo + n
        return NEED_ROOM
    for i in range(n):
        cfg_pool[lo + i] = key[i]
    cfg_off[cid + 1] = lo + n
    cfg_hash[-1 - r] = cid
    counts[N_CONFIGS] = cid + 1
    g = counts[NUM_G]
    may_end = False
    for i in range(n):
        if key[i] >= 0 and gacc[key[i] % g]:
            may_end = True
    # Bytes no lexeme survives are dead unless a lexeme may end before them (the byte that ends a
    # lexeme starts what follows, so then the parser decides); the rest are stepped on demand.
    class_off, class_bytes = tabs[CLASS_OFF], tabs[CLASS_BYTES]
    for cls in range(class_off.shape[0] - 1):
        b = class_bytes[class_off[cls]]
        alive = may_end
        if not alive:
            for i in range(n):
                if key[i] >= 0 and gtrans[key[i] % g, b] >= 0:
                    alive = True
                    break
        for k in range(class_off[cls], class_off[cls + 1]):
            trans[cid, class_bytes[k]] = UNKNOWN if alive else DEAD
    return cid


@numba.njit(cache=True, nogil=True)
def _sort_unique(buf: np.ndarray, n: int) -> int:  # pragma: no cover - numba
    buf[:n].sort()
    k = 0
    for i in range(n):
        if k == 0 or buf[i] != buf[k - 1]:
            buf[k] = buf[i]
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def step(tabs, c: int, b: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Fill ``trans[c, b]``: the configuration after byte ``b`` (or DEAD, NEED_NODE, NEED_ROOM).

    A lexeme that ``b`` keeps alive goes on; one that ``b`` kills ends before ``b`` if its DFA is
    accepting (else it is dropped). Where lexemes end, the lexemes that may start at the node after
    them read ``b`` as their first byte.
    """
    gtrans, gacc, gterm, toff, ignore, trans = (
        tabs[GTRANS], tabs[GACC], tabs[GTERM], tabs[TOFF], tabs[IGNORE], tabs[TRANS]
    )  # fmt: skip
    cfg_off, cfg_pool, counts, bail = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS], tabs[BAIL]
    g = counts[NUM_G]
    nt = counts[NUM_T]
    lo = cfg_off[c]
    hi = cfg_off[c + 1]
    scratch = tabs[SCRATCH]
    if 2 * (hi - lo) > scratch.shape[0]:
        counts[SCRATCH_NEED] = 2 * (hi - lo)
        return NEED_ROOM
    ends = scratch[: hi - lo]
    out = scratch[hi - lo :]
    ne = 0
    no = 0
    for k in range(lo, hi):
        code = cfg_pool[k]
        if code < 0:
            continue
        m = code // g
        q = code - m * g
        q2 = gtrans[q, b]
        if q2 >= 0:
            out[no] = code - q + toff[gterm[q]] + q2
            no += 1
        elif gacc[q]:
            t = gterm[q]
            ends[ne] = -1 - m if ignore[t] else m * nt + t
            ne += 1
    if ne:
        ne = _sort_unique(ends, ne)
        r = find(tabs[END_HASH], tabs[END_OFF], tabs[END_POOL], ends, ne)
        if r < 0:
            counts[BAIL_LEN] = ne
            if ne > bail.shape[0]:
                return NEED_ROOM
            bail[:ne] = ends[:ne]
            return NEED_NODE
        node = tabs[END_NODE][r]
        fresh_off, fresh_pool = tabs[FRESH_OFF], tabs[FRESH_POOL]
        flo = fresh_off[node]
        fhi = fresh_off[node + 1]
        if hi - lo + no + fhi - flo > scratch.shape[0]:
            counts[SCRATCH_NEED] = hi - lo + no + fhi - flo
            return NEED_ROOM
        for k in range(flo, fhi):
            q = fresh_pool[k]
            q2 = gtrans[q, b]
            if q2 >= 0:
                out[no] = node * g + toff[gterm[q]] + q2
                no += 1
    if no == 0:
        cid = DEAD
    else:
        no = _sort_unique(out, no)
        cid = intern_config(tabs, out, no)
        if cid < DEAD:
            return cid
    # Bytes of one class act alike on every terminal DFA row, so they step alike from any
    # configuration (the same lexemes survive, the same ones end, the same fresh ones start).
    cls = tabs[BYTE_CLASS][b]
    class_off, class_bytes = tabs[CLASS_OFF], tabs[CLASS_BYTES]
    for k in range(class_off[cls], class_off[cls + 1]):
        trans[c, class_bytes[k]] = cid
    return cid


@numba.njit(cache=True, nogil=True)
def step_row(tabs, c: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Fill every unknown ``trans[c, :]``; 0, or the first NEED_NODE / NEED_ROOM met."""
    trans = tabs[TRANS]
    for b in range(256):
        if trans[c, b] == UNKNOWN:
            r = step(tabs, c, b)
            if r <= NEED_NODE:
                return r
    return 0


@numba.njit(cache=True, nogil=True)
def insert_end(tabs, key: np.ndarray, n: int, node: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """Record that the lexeme ends ``key[:n]`` lead to ``node``; NEED_ROOM when a table is full."""
    end_off, end_pool, end_node, end_hash, counts = (
        tabs[END_OFF], tabs[END_POOL], tabs[END_NODE], tabs[END_HASH], tabs[COUNTS]
    )  # fmt: skip
    r = find(end_hash, end_off, end_pool, key, n)
    if r >= 0:
        return 0
    e = counts[N_ENDS]
    lo = end_off[e]
    if e + 1 >= end_node.shape[0] or 4 * (e + 1) > end_hash.shape[0] or lo + n > end_pool.shape[0]:
        counts[END_POOL_NEED] = lo + n
        return NEED_ROOM
    end_pool[lo : lo + n] = key[:n]
    end_off[e + 1] = lo + n
    end_node[e] = node
    end_hash[-1 - r] = e
    counts[N_ENDS] = e + 1
    return 0


@numba.njit(cache=True, nogil=True)
def rehash(table: np.ndarray, off: np.ndarray, pool: np.ndarray, count: int) -> None:  # pragma: no cover
    """Insert ids ``0..count-1`` of an interned pool into an empty (all -1) hash table."""
    for ident in range(count):
        lo = off[ident]
        r = find(table, off, pool, pool[lo:], off[ident + 1] - lo)
        table[-1 - r] = ident


__all__ = [
    "DEAD",
    "NEED_NODE",
    "NEED_ROOM",
    "UNKNOWN",
    "find",
    "insert_end",
    "intern_config",
    "rehash",
    "step",
    "step_row",
]
