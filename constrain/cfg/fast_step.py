"""Machine-code byte steps for the Earley configuration automaton (see :mod:`constrain.cfg.earley`).

The automaton's frequent work is stepping a configuration's lexemes over one byte, looking up the
Earley node after the lexemes that end there, and interning the resulting configuration. The token
mask walks do it thousands of times per new configuration, so it runs here, in numba, on flat
tables, and so does the Earley closure that builds a node the tables do not hold yet (a mask walk
at a new position may build a hundred: in Python they were most of a first visit's cost). A step
that runs out of room returns :data:`NEED_ROOM`; Python grows the tables, then steps again.

Encodings (``G`` terminal DFA states in all, numbered globally; ``NT`` terminals):

* a lexeme in progress is ``node * G + global DFA state``; a configuration is the sorted array of
  its lexemes (the start configuration carries one extra leading code ``-2 - root``, so it never
  equals a configuration reached by a step, whose input may not end at the root);
* a set of lexeme ends is the sorted array of ``node * NT + terminal`` for ordinary terminals and
  ``-1 - node`` for ``%ignore`` ones;
* an Earley item is ``(origin + 1) * NDR + dotted rule`` (``NDR`` dotted rules; origin ``-1``, i.e.
  code ``< NDR``, is SELF: the item started at the node that holds it); a node is interned as
  ``[final, sorted codes of its items that still wait for a symbol]``.

Both kinds of arrays are interned in pools (``off``/``pool``) with an open-addressing hash table.

Calling conventions, both for speed: Python passes a :class:`Tables` handle (one pointer to unbox;
the tuple of 35 arrays cost more to pass than a small step costs to run), and every function here
first takes its tables through :func:`borrowed`, so numba does no atomic reference counting on them.
"""

from __future__ import annotations

import numba
import numpy as np

from ..masks.handle import tables_of

UNKNOWN = -2  # trans[row of c, class of b] not computed yet
DEAD = -1
NEED_ROOM = -4  # a table is full: grow (see ``counts``) and step again

# ``counts`` slots
(
    N_CONFIGS, N_ENDS, NUM_G, NUM_T, POOL_NEED, END_POOL_NEED, SCRATCH_NEED,
    N_NODES, NDR, ACCEPT_DR, GEN, NODE_POOL_NEED, WORK_NEED, N_FREE, CFG_USED, N_ROWS, N_COUNTS,
) = range(17)  # fmt: skip


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(key: np.ndarray, n: int) -> int:  # pragma: no cover - numba
    h = np.uint64(1469598103934665603)
    for i in range(n):
        h ^= np.uint64(key[i] + 4611686018427387904)  # codes are > -2**62: keep them positive
        h *= np.uint64(1099511628211)
    return int(h >> np.uint64(1))


@numba.njit(cache=True, nogil=True)
def find(
    table: np.ndarray, off: np.ndarray, pool: np.ndarray, key: np.ndarray, n: int, stride: int
) -> int:  # pragma: no cover
    """The id of ``key[:n]`` in an interned pool, or ``-1 - slot`` with the free slot it would take.

    Entry ``i`` is ``pool[off[stride * i] : off[stride * i + 1]]``: stride 1 for the append-only pools,
    2 for configurations, whose ids are reused after a collection (:func:`collect`)."""
    mask = table.shape[0] - 1
    slot = _hash(key, n) & mask
    while True:
        ident = table[slot]
        if ident < 0:
            return -1 - slot
        lo = off[stride * ident]
        if off[stride * ident + 1] - lo == n:
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
# ``counts``; the grammar's byte classes (class of each byte, offsets, bytes by class); a scratch
# buffer for a step's lexeme ends and result (no allocation per step). Then the grammar for the
# closure: each dotted rule's next symbol (-1 at the end) and left-hand side, each symbol's
# nullability, each nonterminal's prediction (the SELF dotted rules it adds, closed, and the
# nonterminals predicted on the way: offsets and values), each terminal's fresh global DFA row, the
# %ignore terminals; the node pool (offsets, ``[final, items...]``, hash); the closure's scratch: a
# hash set of items, a work array (agenda, touched slots, key: thirds) and a per-symbol stamp; the
# configuration ids a collection freed (reused lowest first: the list is in descending order); each
# configuration's row of ``trans`` (rows are packed at a collection, so ``trans`` holds the live ones).
(
    GTRANS, GACC, GTERM, TOFF, IGNORE, TRANS, CFG_OFF, CFG_POOL, CFG_HASH,
    END_OFF, END_POOL, END_NODE, END_HASH, FRESH_OFF, FRESH_POOL, COUNTS,
    BYTE_CLASS, CLASS_OFF, CLASS_BYTES, SCRATCH,
    NEXT_SYM, LHS, NULLABLE, PRED_OFF, PRED_DRS, PSYM_OFF, PSYMS, TERM_ROW, IGNORE_TERMS,
    NODE_OFF, NODE_POOL, NODE_HASH, SEEN, WORK, STAMP, CFG_FREE, CFG_ROW,
) = range(37)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def intern_config(tables, key: np.ndarray, n: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """The id of the configuration ``key[:n]``, made (with its initial ``trans`` row) if new."""
    tabs = tables_of(tables)
    gtrans, gacc, trans, cfg_off, cfg_pool, cfg_hash, counts = (
        tabs[GTRANS], tabs[GACC], tabs[TRANS], tabs[CFG_OFF], tabs[CFG_POOL], tabs[CFG_HASH], tabs[COUNTS]
    )  # fmt: skip
    r = find(cfg_hash, cfg_off, cfg_pool, key, n, 2)
    if r >= 0:
        return r
    nfree = counts[N_FREE]
    cid = tabs[CFG_FREE][nfree - 1] if nfree else counts[N_CONFIGS]  # a freed id first, lowest first
    hw = counts[N_CONFIGS]
    row = counts[N_ROWS]
    lo = counts[CFG_USED]
    cfg_row = tabs[CFG_ROW]
    if (
        row + 1 >= trans.shape[0]
        or hw + 1 >= cfg_row.shape[0]
        or 2 * hw + 2 > cfg_off.shape[0]
        or 4 * (hw - nfree + 1) > cfg_hash.shape[0]
        or lo + n > cfg_pool.shape[0]
    ):
        counts[POOL_NEED] = lo + n
        return NEED_ROOM
    for i in range(n):
        cfg_pool[lo + i] = key[i]
    cfg_off[2 * cid] = lo
    cfg_off[2 * cid + 1] = lo + n
    counts[CFG_USED] = lo + n
    cfg_row[cid] = row
    counts[N_ROWS] = row + 1
    cfg_hash[-1 - r] = cid
    if nfree:
        counts[N_FREE] = nfree - 1
    else:
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
        trans[row, cls] = UNKNOWN if alive else DEAD
    return cid


@numba.njit(cache=True, nogil=True, inline="always")
def _sort(buf: np.ndarray, lo: int, hi: int) -> None:  # pragma: no cover - numba
    """Sort ``buf[lo:hi]`` in place: insertion sort for the usual handful of codes (numba's
    ``ndarray.sort`` costs about 500 ns even on five, which was a quarter of a step)."""
    if hi - lo > 32:
        buf[lo:hi].sort()
        return
    for i in range(lo + 1, hi):
        x = buf[i]
        j = i - 1
        while j >= lo and buf[j] > x:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = x


@numba.njit(cache=True, nogil=True)
def _sort_unique(buf: np.ndarray, n: int) -> int:  # pragma: no cover - numba
    _sort(buf, 0, n)
    k = 0
    for i in range(n):
        if k == 0 or buf[i] != buf[k - 1]:
            buf[k] = buf[i]
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def step(tables, c: int, b: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Fill ``trans[c, b]``: the configuration after byte ``b`` (or DEAD, NEED_ROOM).

    A lexeme that ``b`` keeps alive goes on; one that ``b`` kills ends before ``b`` if its DFA is
    accepting (else it is dropped). Where lexemes end, the lexemes that may start at the node after
    them read ``b`` as their first byte.
    """
    tabs = tables_of(tables)
    gtrans, gacc, gterm, toff, ignore, trans = (
        tabs[GTRANS], tabs[GACC], tabs[GTERM], tabs[TOFF], tabs[IGNORE], tabs[TRANS]
    )  # fmt: skip
    cfg_off, cfg_pool, counts = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS]
    g = counts[NUM_G]
    nt = counts[NUM_T]
    lo = cfg_off[2 * c]
    hi = cfg_off[2 * c + 1]
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
        r = find(tabs[END_HASH], tabs[END_OFF], tabs[END_POOL], ends, ne, 1)
        if r >= 0:
            node = tabs[END_NODE][r]
        else:
            node = end_node(tabs, ends, ne)
            if node < 0:
                return node
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
    trans[tabs[CFG_ROW][c], tabs[BYTE_CLASS][b]] = cid
    return cid


@numba.njit(cache=True, nogil=True)
def step_row(tables, c: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Fill every unknown transition of ``c`` (one per byte class); 0, or NEED_ROOM."""
    tabs = tables_of(tables)
    trans = tabs[TRANS]
    row = tabs[CFG_ROW][c]
    class_off, class_bytes = tabs[CLASS_OFF], tabs[CLASS_BYTES]
    for cls in range(trans.shape[1]):
        if trans[row, cls] == UNKNOWN:
            r = step(tabs, c, class_bytes[class_off[cls]])
            if r == NEED_ROOM:
                return r
    return 0


@numba.njit(cache=True, nogil=True)
def insert_end(tables, key: np.ndarray, n: int, node: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """Record that the lexeme ends ``key[:n]`` lead to ``node``; NEED_ROOM when a table is full."""
    tabs = tables_of(tables)
    end_off, end_pool, end_node, end_hash, counts = (
        tabs[END_OFF], tabs[END_POOL], tabs[END_NODE], tabs[END_HASH], tabs[COUNTS]
    )  # fmt: skip
    r = find(end_hash, end_off, end_pool, key, n, 1)
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
def fresh_config(tables, node: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The configuration with only the fresh lexemes of ``node`` (made if new), or NEED_ROOM: the
    state right after a position whose lexemes all ended at ``node`` (the start configuration is
    the root's). Its leading code ``-2 - node`` keeps it apart from configurations reached by a
    step, and says the input may end where ``node`` is final."""
    tabs = tables_of(tables)
    counts, scratch = tabs[COUNTS], tabs[SCRATCH]
    fresh_off, fresh_pool = tabs[FRESH_OFF], tabs[FRESH_POOL]
    g = counts[NUM_G]
    flo = fresh_off[node]
    nk = 1 + fresh_off[node + 1] - flo
    if nk > scratch.shape[0]:
        counts[SCRATCH_NEED] = nk
        return NEED_ROOM
    key = scratch[:nk]
    key[0] = -2 - node
    for i in range(1, nk):  # the rows are in terminal order, so ascending
        key[i] = node * g + fresh_pool[flo + i - 1]
    return intern_config(tabs, key, nk)


@numba.njit(cache=True, nogil=True)
def config_final(tables, c: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """1 where the input may end at configuration ``c`` (its fresh root is final, or ending every
    accepting lexeme completes a sentence), else 0; or NEED_ROOM (the end node may be new)."""
    tabs = tables_of(tables)
    gacc, gterm, ignore = tabs[GACC], tabs[GTERM], tabs[IGNORE]
    cfg_off, cfg_pool, counts, scratch = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS], tabs[SCRATCH]
    node_off, node_pool = tabs[NODE_OFF], tabs[NODE_POOL]
    g = counts[NUM_G]
    nt = counts[NUM_T]
    lo = cfg_off[2 * c]
    hi = cfg_off[2 * c + 1]
    if hi > lo and cfg_pool[lo] < 0 and node_pool[node_off[-2 - cfg_pool[lo]]] == 1:
        return 1
    if hi - lo > scratch.shape[0]:
        counts[SCRATCH_NEED] = hi - lo
        return NEED_ROOM
    ends = scratch[: hi - lo]
    ne = 0
    for k in range(lo, hi):
        code = cfg_pool[k]
        if code < 0:
            continue
        m = code // g
        q = code - m * g
        if gacc[q]:
            t = gterm[q]
            ends[ne] = -1 - m if ignore[t] else m * nt + t
            ne += 1
    if ne == 0:
        return 0
    ne = _sort_unique(ends, ne)
    r = find(tabs[END_HASH], tabs[END_OFF], tabs[END_POOL], ends, ne, 1)
    node = tabs[END_NODE][r] if r >= 0 else end_node(tabs, ends, ne)
    if node < 0:
        return node
    return 1 if node_pool[node_off[node]] == 1 else 0


@numba.njit(cache=True, nogil=True)
def mask_facts(tables, c: int, want_twin: bool, out: np.ndarray) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """What a token mask of ``c`` needs from the automaton, in one call from Python: ``out[0]`` its
    fresh twin (:func:`fresh_twin`; -1 for none, or when not ``want_twin``). Without a twin,
    ``out[1]`` its finality and ``out[2] = n`` and ``out[3 : 3 + n]`` the sorted global DFA rows of
    its lexemes (the lexeme states its lexer-only tokens depend on). Returns 0, or NEED_ROOM."""
    tabs = tables_of(tables)
    twin = fresh_twin(tabs, c) if want_twin else DEAD
    if twin == NEED_ROOM:
        return twin
    out[0] = twin
    if twin >= 0 and twin != c:
        return 0
    final = config_final(tabs, c)
    if final == NEED_ROOM:
        return final
    out[1] = final
    cfg_off, cfg_pool, g = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS][NUM_G]
    lo = cfg_off[2 * c]
    hi = cfg_off[2 * c + 1]
    if 3 + hi - lo > out.shape[0]:
        return NEED_ROOM  # the caller passes room for every lexeme of the largest configuration
    n = 0
    for k in range(lo, hi):
        if cfg_pool[k] >= 0:
            out[3 + n] = cfg_pool[k] % g
            n += 1
    out[2] = _sort_unique(out[3:], n)
    return 0


@numba.njit(cache=True, nogil=True)
def fresh_twin(tables, c: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The fresh configuration (a leading ``-2 - node`` code, then the fresh lexemes of ``node``) with
    the same transitions as ``c``; DEAD when ``c`` has none; or NEED_ROOM.

    Only a configuration whose lexemes are all accepting can have one: ``node`` is the node after
    they all end. A byte that kills them all steps ``c`` exactly as it steps the twin (the ends are
    all of ``c``'s lexemes, then ``node``'s fresh lexemes read the byte); the bytes that continue
    a lexeme are compared, one per byte class. Finality agrees too: both are ``node``'s.
    """
    tabs = tables_of(tables)
    gtrans, gacc, gterm, ignore, trans = tabs[GTRANS], tabs[GACC], tabs[GTERM], tabs[IGNORE], tabs[TRANS]
    cfg_off, cfg_pool, counts, scratch = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS], tabs[SCRATCH]
    g = counts[NUM_G]
    nt = counts[NUM_T]
    lo = cfg_off[2 * c]
    hi = cfg_off[2 * c + 1]
    if hi == lo or cfg_pool[lo] < 0:  # a start or fresh configuration is its own twin
        return DEAD
    if hi - lo > scratch.shape[0]:
        counts[SCRATCH_NEED] = hi - lo
        return NEED_ROOM
    ends = scratch[: hi - lo]
    for k in range(lo, hi):
        code = cfg_pool[k]
        m = code // g
        q = code - m * g
        if not gacc[q]:
            return DEAD
        t = gterm[q]
        ends[k - lo] = -1 - m if ignore[t] else m * nt + t
    ne = _sort_unique(ends, hi - lo)
    r = find(tabs[END_HASH], tabs[END_OFF], tabs[END_POOL], ends, ne, 1)
    node = tabs[END_NODE][r] if r >= 0 else end_node(tabs, ends, ne)
    if node < 0:
        return node
    f = fresh_config(tabs, node)
    if f < DEAD:
        return f
    class_off, class_bytes = tabs[CLASS_OFF], tabs[CLASS_BYTES]
    for cls in range(class_off.shape[0] - 1):
        b = class_bytes[class_off[cls]]
        alive = False
        for k in range(lo, hi):
            if gtrans[cfg_pool[k] % g, b] >= 0:
                alive = True
                break
        if not alive:
            continue
        x = trans[tabs[CFG_ROW][c], cls]
        if x == UNKNOWN:
            x = step(tabs, c, b)
            if x == NEED_ROOM:
                return x
        y = trans[tabs[CFG_ROW][f], cls]
        if y == UNKNOWN:
            y = step(tabs, f, b)
            if y == NEED_ROOM:
                return y
        if x != y:
            return DEAD
    return f


@numba.njit(cache=True, nogil=True)
def end_node(tables, ends: np.ndarray, ne: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """The node after the lexeme ends ``ends[:ne]`` (sorted codes), built if new and recorded in the
    lexeme-end pool; or NEED_ROOM. Seeds: the items of each ending lexeme's start node advanced past
    its terminal; for an ``%ignore`` lexeme, all the items of its start node (skipped text)."""
    tabs = tables_of(tables)
    counts = tabs[COUNTS]
    if ne == 1 and ends[0] < 0:
        # Skipped text: the position behaves exactly like the one the ignored lexeme began at.
        node = -1 - ends[0]
    else:
        next_sym, node_off, node_pool, work = tabs[NEXT_SYM], tabs[NODE_OFF], tabs[NODE_POOL], tabs[WORK]
        ndr = counts[NDR]
        nt = counts[NUM_T]
        third = work.shape[0] // 3
        na = 0
        final = False
        for i in range(ne):
            k = ends[i]
            m = k // nt if k >= 0 else -1 - k
            t = k - m * nt if k >= 0 else -1
            lo = node_off[m]
            final = final or (k < 0 and node_pool[lo] == 1)
            for j in range(lo + 1, node_off[m + 1]):
                code = node_pool[j]
                dr = code % ndr
                if t >= 0 and next_sym[dr] != t:
                    continue
                o = code // ndr
                if o == 0:
                    o = m + 1
                if na >= third:
                    counts[WORK_NEED] = 2 * na + 2
                    return NEED_ROOM
                work[na] = o * ndr + dr + (1 if t >= 0 else 0)
                na += 1
        node = close(tabs, na, final)
        if node < 0:
            return node
    if insert_end(tabs, ends, ne, node) == NEED_ROOM:
        return NEED_ROOM
    return node


@numba.njit(cache=True, nogil=True)
def close(tables, na: int, final: bool) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """Earley closure (predict + complete) of the ``na`` items on the agenda (``WORK[:na]``) at a new
    position: the id of the node of its waiting items (interned; new ones get their fresh lexemes),
    or NEED_ROOM. Completing a SELF item adds nothing (the nullable step-over covers it); a
    prediction adds its closed set of SELF items at once."""
    tabs = tables_of(tables)
    counts = tabs[COUNTS]
    next_sym, lhs, nullable = tabs[NEXT_SYM], tabs[LHS], tabs[NULLABLE]
    pred_off, pred_drs, psym_off, psyms = tabs[PRED_OFF], tabs[PRED_DRS], tabs[PSYM_OFF], tabs[PSYMS]
    node_off, node_pool = tabs[NODE_OFF], tabs[NODE_POOL]
    seen, work, stamp = tabs[SEEN], tabs[WORK], tabs[STAMP]
    ndr = counts[NDR]
    nt = counts[NUM_T]
    accept = counts[ACCEPT_DR]
    third = work.shape[0] // 3
    touched = work[third : 2 * third]
    key = work[2 * third :]
    smask = seen.shape[0] - 1
    counts[GEN] += 1
    gen = counts[GEN]
    nts = 0
    room = True
    while na > 0 and room:
        na -= 1
        code = work[na]
        # insert into the seen set (open addressing; the touched slots are cleared at the end)
        slot = (code * 0x9E3779B1) & smask
        fresh = True
        while seen[slot] >= 0:
            if seen[slot] == code:
                fresh = False
                break
            slot = (slot + 1) & smask
        if not fresh:
            continue
        if 2 * (nts + 1) > seen.shape[0] or nts + 1 >= third:  # the key takes nts + 1 <= third
            counts[WORK_NEED] = 2 * nts + 2
            room = False
            break
        seen[slot] = code
        touched[nts] = slot
        nts += 1
        dr = code % ndr
        o = code // ndr
        sym = next_sym[dr]
        if sym < 0:
            if dr == accept:
                final = True
            elif o > 0:  # complete: advance the items of the origin that wait for this rule's lhs
                origin = o - 1
                x = lhs[dr]
                for j in range(node_off[origin] + 1, node_off[origin + 1]):
                    c2 = node_pool[j]
                    d2 = c2 % ndr
                    if next_sym[d2] == x:
                        o2 = c2 // ndr
                        if o2 == 0:
                            o2 = origin + 1
                        if na >= third:
                            counts[WORK_NEED] = 2 * na + 2
                            room = False
                            break
                        work[na] = o2 * ndr + d2 + 1
                        na += 1
        elif sym >= nt:
            if stamp[sym] != gen:
                for j in range(psym_off[sym], psym_off[sym + 1]):
                    stamp[psyms[j]] = gen
                for j in range(pred_off[sym], pred_off[sym + 1]):
                    if na >= third:
                        counts[WORK_NEED] = 2 * na + 2
                        room = False
                        break
                    work[na] = pred_drs[j]  # SELF items: code == dotted rule
                    na += 1
            if nullable[sym]:
                if na >= third:
                    counts[WORK_NEED] = 2 * na + 2
                    room = False
                else:
                    work[na] = code + 1
                    na += 1
    # the waiting items, sorted, after the final flag: the node's key
    n = 1
    if room:
        key[0] = 1 if final else 0
        for i in range(nts):
            code = seen[touched[i]]
            if next_sym[code % ndr] >= 0:
                key[n] = code
                n += 1
    for i in range(nts):
        seen[touched[i]] = -1
    if not room:
        return NEED_ROOM
    _sort(key, 1, n)
    r = find(tabs[NODE_HASH], node_off, node_pool, key, n, 1)
    if r >= 0:
        return r
    return _new_node(tabs, key, n, -1 - r)


@numba.njit(cache=True, nogil=True)
def _new_node(tables, key: np.ndarray, n: int, slot: int) -> int:  # type: ignore[no-untyped-def]  # pragma: no cover
    """Intern node ``key[:n]`` at hash ``slot`` and register its fresh lexemes (the terminals its items
    wait for, and the %ignore ones, as global DFA start rows in terminal order); or NEED_ROOM."""
    tabs = tables_of(tables)
    counts = tabs[COUNTS]
    node_off, node_pool, node_hash = tabs[NODE_OFF], tabs[NODE_POOL], tabs[NODE_HASH]
    fresh_off, fresh_pool = tabs[FRESH_OFF], tabs[FRESH_POOL]
    next_sym, stamp, term_row, ignore_terms = tabs[NEXT_SYM], tabs[STAMP], tabs[TERM_ROW], tabs[IGNORE_TERMS]
    nid = counts[N_NODES]
    lo = node_off[nid]
    nt = counts[NUM_T]
    flo = fresh_off[nid]
    if (
        nid + 2 >= node_off.shape[0]
        or 4 * (nid + 2) > node_hash.shape[0]
        or lo + n > node_pool.shape[0]
        or nid + 2 >= fresh_off.shape[0]
        or flo + nt > fresh_pool.shape[0]
    ):
        counts[NODE_POOL_NEED] = lo + n
        return NEED_ROOM
    for i in range(n):
        node_pool[lo + i] = key[i]
    node_off[nid + 1] = lo + n
    node_hash[slot] = nid
    counts[N_NODES] = nid + 1
    # fresh lexemes: mark the terminals (a terminal is never a predicted nonterminal, so a new
    # generation of the shared stamp is free for them), then list them in order
    ndr = counts[NDR]
    counts[GEN] += 1
    gen = counts[GEN]
    for i in range(1, n):
        sym = next_sym[key[i] % ndr]
        if sym < nt:
            stamp[sym] = gen
    for i in range(ignore_terms.shape[0]):
        stamp[ignore_terms[i]] = gen
    f = flo
    for t in range(nt):
        if stamp[t] == gen:
            fresh_pool[f] = term_row[t]
            f += 1
    fresh_off[nid + 1] = f
    return nid


@numba.njit(cache=True, nogil=True)
def rehash(
    table: np.ndarray, off: np.ndarray, pool: np.ndarray, count: int, stride: int
) -> None:  # pragma: no cover
    """Insert ids ``0..count-1`` of an interned pool (see :func:`find`) into an empty (all -1) hash
    table, skipping freed ids (offset -1)."""
    for ident in range(count):
        lo = off[stride * ident]
        if lo < 0:
            continue
        r = find(table, off, pool, pool[lo:], off[stride * ident + 1] - lo, stride)
        table[-1 - r] = ident


@numba.njit(cache=True, nogil=True)
def mark_live(tables, live_cfg: np.ndarray, live_node: np.ndarray) -> None:  # type: ignore[no-untyped-def]  # pragma: no cover
    """Mark in ``live_node`` the nodes the configurations marked in ``live_cfg`` hold: their lexemes'
    start nodes (and a fresh configuration's node), then, transitively, every origin of those nodes'
    items. One pass from the newest node down suffices: an item's origin is always an older node (it
    existed when the node was built), and compaction keeps the order."""
    tabs = tables_of(tables)
    cfg_off, cfg_pool, counts = tabs[CFG_OFF], tabs[CFG_POOL], tabs[COUNTS]
    node_off, node_pool = tabs[NODE_OFF], tabs[NODE_POOL]
    g = counts[NUM_G]
    ndr = counts[NDR]
    for c in range(counts[N_CONFIGS]):
        if live_cfg[c]:
            for k in range(cfg_off[2 * c], cfg_off[2 * c + 1]):
                code = cfg_pool[k]
                live_node[-2 - code if code < 0 else code // g] = True
    for n in range(counts[N_NODES] - 1, -1, -1):
        if live_node[n]:
            for j in range(node_off[n] + 1, node_off[n + 1]):
                o = node_pool[j] // ndr
                if o > 0:
                    live_node[o - 1] = True


@numba.njit(cache=True, nogil=True)
def compact(  # type: ignore[no-untyped-def]
    tables,
    live_cfg: np.ndarray,
    new_node: np.ndarray,
    node_off: np.ndarray,
    node_pool: np.ndarray,
    fresh_off: np.ndarray,
    fresh_pool: np.ndarray,
    end_off: np.ndarray,
    end_pool: np.ndarray,
    end_node: np.ndarray,
    cfg_off: np.ndarray,
    cfg_pool: np.ndarray,
    cfg_row: np.ndarray,
    trans: np.ndarray,
) -> tuple[int, int, int]:  # pragma: no cover - numba
    """Copy what a collection keeps into the new (empty) arrays given: the live nodes renumbered in
    order (``new_node``, -1 for a dead one) with their fresh lexemes, the lexeme ends whose nodes all
    live, and the live configurations under their own ids (a freed id gets offsets -1), their codes
    rewritten to the new node numbers, and their ``trans`` rows packed in id order (``cfg_row``), where
    a transition to a freed configuration becomes UNKNOWN (it is stepped again on demand). Every
    renumbering is monotone, so sorted keys stay sorted. Returns (nodes, ends, configuration codes)
    kept."""
    tabs = tables_of(tables)
    counts = tabs[COUNTS]
    g = counts[NUM_G]
    nt = counts[NUM_T]
    ndr = counts[NDR]
    o_noff, o_npool, o_foff, o_fpool = tabs[NODE_OFF], tabs[NODE_POOL], tabs[FRESH_OFF], tabs[FRESH_POOL]
    nn = 0
    p = 0
    f = 0
    node_off[0] = 0
    fresh_off[0] = 0
    for n in range(counts[N_NODES]):
        if new_node[n] < 0:
            continue
        lo = o_noff[n]
        node_pool[p] = o_npool[lo]
        p += 1
        for j in range(lo + 1, o_noff[n + 1]):
            code = o_npool[j]
            o = code // ndr
            if o > 0:
                code = (new_node[o - 1] + 1) * ndr + code % ndr
            node_pool[p] = code
            p += 1
        for k in range(o_foff[n], o_foff[n + 1]):
            fresh_pool[f] = o_fpool[k]
            f += 1
        nn += 1
        node_off[nn] = p
        fresh_off[nn] = f
    o_eoff, o_epool, o_enode = tabs[END_OFF], tabs[END_POOL], tabs[END_NODE]
    ne = 0
    p = 0
    end_off[0] = 0
    for e in range(counts[N_ENDS]):
        if new_node[o_enode[e]] < 0:
            continue
        lo = o_eoff[e]
        hi = o_eoff[e + 1]
        keep = True
        for k in range(lo, hi):
            code = o_epool[k]
            if new_node[code // nt if code >= 0 else -1 - code] < 0:
                keep = False
                break
        if not keep:
            continue
        for k in range(lo, hi):
            code = o_epool[k]
            if code >= 0:
                m = code // nt
                end_pool[p] = new_node[m] * nt + code - m * nt
            else:
                end_pool[p] = -1 - new_node[-1 - code]
            p += 1
        end_node[ne] = new_node[o_enode[e]]
        ne += 1
        end_off[ne] = p
    o_coff, o_cpool, o_trans, o_row = tabs[CFG_OFF], tabs[CFG_POOL], tabs[TRANS], tabs[CFG_ROW]
    p = 0
    nr = 0
    for c in range(counts[N_CONFIGS]):
        if not live_cfg[c]:
            if c < cfg_row.shape[0]:  # ids past the last live one are dropped
                cfg_off[2 * c] = -1
                cfg_off[2 * c + 1] = -1
                cfg_row[c] = -1
            continue
        cfg_off[2 * c] = p
        for k in range(o_coff[2 * c], o_coff[2 * c + 1]):
            code = o_cpool[k]
            if code < 0:
                cfg_pool[p] = -2 - new_node[-2 - code]
            else:
                m = code // g
                cfg_pool[p] = new_node[m] * g + code - m * g
            p += 1
        cfg_off[2 * c + 1] = p
        r = o_row[c]
        for k in range(o_trans.shape[1]):
            t = o_trans[r, k]
            trans[nr, k] = UNKNOWN if t >= 0 and not live_cfg[t] else t
        cfg_row[c] = nr
        nr += 1
    return nn, ne, p


__all__ = [
    "DEAD",
    "NEED_ROOM",
    "UNKNOWN",
    "close",
    "compact",
    "config_final",
    "end_node",
    "find",
    "fresh_config",
    "fresh_twin",
    "insert_end",
    "intern_config",
    "mark_live",
    "mask_facts",
    "rehash",
    "step",
    "step_row",
]
