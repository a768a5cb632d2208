"""Trie walks: the tokens whose bytes keep a DFA state alive, as numba kernels that release the GIL.

A walk goes through the vocabulary trie (:class:`constrain.masks.trie.TokenTrie`) in preorder from a
DFA state, stepping the DFA by each node's byte and jumping over every subtree whose first byte kills
it, so sparse states (``[0-9]``) cost microseconds and dense ones (inside a free-text string) one pass
over the trie. :func:`walk_trie_fast` is the one masks use: the same walk over narrower columns, with
exact shortcuts from per-subtree summaries (:class:`constrain.masks.trie.TrieSummary`) and the DFA's
chains (:func:`state_chains`): a subtree whose every byte keeps the DFA on a run of states that all
accept those bytes (a self-loop, or a counter far from its bound) has all its tokens set from one
contiguous range, and a walk can be limited to tokens longer than ``k`` bytes (the shorter ones copied
from another state's mask, see :class:`constrain.masks.dfa_masks.DFATokenMasks`).

Every kernel takes the trie as one :class:`~constrain.masks.handle.Tables` handle (:func:`walk_tables`,
built once per trie and cached as ``TokenTrie.tables``) instead of its twenty arrays. Several threads
can walk at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from .handle import Tables, new_tables, tables_of
from .sharing import agreement_depth

if TYPE_CHECKING:
    from .trie import TokenTrie

# Positions in a trie's walk tables (see :func:`walk_tables`).
(
    NODES, DUP_START, DUP_END, SORTED_IDS, BYTE, DEPTH, SKIP, TOK, ASCII_BYTES, MAXLEN, TOK_LO,
    TOK_LEN, TOK_OFF, TOK_BYTES, TOK_ASCII, HI_PREFIX, SHORT_MASKS, LONG_ORDER, LONG_COUNTS, ROOT_NODE,
) = range(20)  # fmt: skip

Chains = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(chain_bytes, chain_len, chain_wide)`` of a DFA: :func:`state_chains`'s result."""


def walk_tables(trie: TokenTrie) -> Tables:
    """The handle every walk kernel takes: the trie's arrays and its summary's columns, in the order
    of the position constants above. ``NODES`` .. ``SORTED_IDS``: the
    :class:`~constrain.masks.trie.TokenTrie` fields; ``BYTE`` .. ``HI_PREFIX``: the
    :class:`~constrain.masks.trie.TrieSummary` columns; ``SHORT_MASKS`` (first axis
    ``max_depth + 1``) and ``LONG_ORDER``, ``LONG_COUNTS``: the trie's cached properties;
    ``ROOT_NODE``: :func:`_root_nodes`. Use
    ``trie.tables``, built once."""
    s = trie.summary
    order, counts = trie.long_order
    tabs = (
        trie.nodes, trie.dup_start, trie.dup_end, trie.sorted_ids, s.byte, s.depth, s.skip, s.tok,
        s.ascii_bytes, s.maxlen, s.tok_lo, s.tok_len, s.tok_off, s.tok_bytes, s.tok_ascii, s.hi_prefix,
        trie.short_masks, order, counts, _root_nodes(s.byte, s.depth),
    )  # fmt: skip
    return new_tables(tabs)


def _root_nodes(node_byte: np.ndarray, node_depth: np.ndarray) -> np.ndarray:
    """``root[b]``: the preorder index of the trie node for the first byte ``b`` (-1: no token starts
    with ``b``)."""
    root = np.full(256, -1, dtype=np.int32)
    first = np.flatnonzero(node_depth == 0)
    root[node_byte[first]] = first
    return root


@numba.njit(cache=True, nogil=True)
def state_chains(
    transitions: np.ndarray, cap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """Per state ``q``: the bytes ``U[q]`` that all lead to one next state ``sigma(q)``, and the run
    length ``g[q]`` (at most ``cap``) of the chain ``q, sigma(q), sigma(sigma(q)), ...`` whose states
    all send every byte of ``U[q]`` on along the chain.

    So every string of at most ``g[q]`` bytes, all in ``U[q]``, stays alive from ``q``: a self-loop
    (``sigma(q) = q``: ``g[q] = cap``) or a counter (``[^\n]{1,500}``: ``g[q]`` = characters left).
    ``U`` is in the 128-bit form of ``TrieSummary.ascii_bytes``: bit 127 is set only when 0x7F and
    every byte >= 0x80 lead to ``sigma(q)``, so "subtree bits within ``U[q]``" implies every byte of
    the subtree does. ``sigma(q)`` is the most common target of the bytes 0x00-0x7E. The third
    result, ``wide[q]``, says ``U[q]`` has at least 64 of the 128 bits (a broad class such as a
    string body or free text, where going through a subtree token by token pays off).
    """
    n = transitions.shape[0]
    u = np.zeros((n, 2), dtype=np.uint64)
    sigma = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    for q in range(n):
        best = -1
        best_count = 0
        for b in range(127):
            t = transitions[q, b]
            if t >= 0:
                counts[t] += 1
                if counts[t] > best_count or (counts[t] == best_count and t < best):
                    best = t
                    best_count = counts[t]
        for b in range(127):
            t = transitions[q, b]
            if t >= 0:
                counts[t] = 0
        if best < 0:
            continue
        sigma[q] = best
        for b in range(127):
            if transitions[q, b] == best:
                u[q, b >> 6] |= np.uint64(1) << np.uint64(b & 63)
        high = True
        for b in range(127, 256):
            if transitions[q, b] != best:
                high = False
                break
        if high:
            u[q, 1] |= np.uint64(1) << np.uint64(63)
    g = np.full(n, -1, dtype=np.int64)
    for q in range(n - 1, -1, -1):  # regex DFAs number states breadth-first: deep states first
        u0 = u[q, 0]
        u1 = u[q, 1]
        if (u0 | u1) == 0:
            g[q] = 0
            continue
        p = q
        i = 0
        while i < cap:
            if (u0 & ~u[p, 0]) | (u1 & ~u[p, 1]) != 0:
                break
            i += 1
            p = sigma[p]
            if g[p] >= 0 and u[p, 0] == u0 and u[p, 1] == u1:
                i += g[p]
                break
        g[q] = min(i, cap)
    wide = np.zeros(n, dtype=np.bool_)
    for q in range(n):
        bits = 0
        for b in range(128):
            if (u[q, b >> 6] >> np.uint64(b & 63)) & np.uint64(1):
                bits += 1
        wide[q] = bits >= 64
    return u, g.astype(np.int32), wide


@numba.njit(cache=True, nogil=True, inline="always")
def on_chain(
    n: int,
    d: int,
    q: int,
    ascii_bytes: np.ndarray,
    maxlen: np.ndarray,
    chain_bytes: np.ndarray,
    chain_len: np.ndarray,
) -> bool:  # pragma: no cover - numba
    """Whether every token under trie node ``n`` (depth ``d``) stays alive from state ``q`` on its chain
    (:func:`state_chains`): all the subtree's bytes are chain bytes and no token outruns the chain."""
    l0 = chain_bytes[q, 0]
    l1 = chain_bytes[q, 1]
    return (
        (l0 | l1) != 0
        and ((ascii_bytes[n, 0] & ~l0) | (ascii_bytes[n, 1] & ~l1)) == 0
        and maxlen[n] - d <= chain_len[q]
    )


@numba.njit(cache=True, nogil=True)
def _set_tokens(out_mask: np.ndarray, sorted_ids: np.ndarray, lo: int, hi: int) -> int:  # pragma: no cover
    """Set the bits of the tokens ``sorted_ids[lo:hi]`` in ``out_mask``; returns how many."""
    for i in range(lo, hi):
        t = sorted_ids[i]
        out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
    return hi - lo


@numba.njit(cache=True, nogil=True)
def walk_trie(
    transitions: np.ndarray, state: int, tables: Any, out_mask: np.ndarray
) -> int:  # pragma: no cover - numba
    """Set in ``out_mask`` (uint32 words) the bit of every token whose bytes keep ``state`` alive.

    ``tables``: :func:`walk_tables`. Plain loops: for each trie node in preorder, step the DFA from
    the parent's state by the node's byte; if the DFA dies, skip the node's subtree; otherwise record
    the tokens ending here. Returns the number of tokens allowed. About 6 ns per visited node on a
    2-core CPU runner.
    """
    tabs = tables_of(tables)
    nodes, dup_start, dup_end, sorted_ids = tabs[NODES], tabs[DUP_START], tabs[DUP_END], tabs[SORTED_IDS]
    max_depth = tabs[SHORT_MASKS].shape[0] - 1
    total = nodes.shape[0]
    count = 0
    n = 0
    stack = np.empty(max_depth + 1, dtype=np.int32)
    stack[0] = state
    while n < total:
        d = nodes[n, 1]
        nxt = transitions[stack[d], nodes[n, 0]]
        if nxt < 0:
            n = nodes[n, 2]
            continue
        stack[d + 1] = nxt
        tid = nodes[n, 3]
        if tid >= 0:
            out_mask[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
            count += 1
        elif tid <= -2:
            count += _set_tokens(out_mask, sorted_ids, dup_start[-2 - tid], dup_end[-2 - tid])
        n += 1
    return count


@numba.njit(cache=True, nogil=True)
def walk_trie_fast(
    transitions: np.ndarray, state: int, tables: Any, chains: Chains, min_len: int, out_mask: np.ndarray
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie` for the tokens longer than ``min_len`` bytes, with three exact shortcuts.

    ``tables``: :func:`walk_tables`; ``chains``: :func:`state_chains` of ``transitions`` (with
    ``cap >= max_depth``). Returns how many tokens it set. Plain loops, per node ``n`` in preorder at
    DFA state ``q`` (the state after its parent's path):

    * no token longer than ``min_len`` in the subtree (``maxlen[n] <= min_len``): skip it;
    * every byte of the subtree is in ``chain_bytes[q]`` and no token in it needs more than
      ``chain_len[q]`` bytes from ``q`` (see :func:`state_chains`): every string in it stays alive,
      so set all its tokens (longer than ``min_len``) from the contiguous range
      ``sorted_ids[tok_lo[n]:tok_lo[skip]]`` and skip it;
    * the same, for a wide chain whose bytes include ``n``'s, except that some tokens have bytes
      outside ``chain_bytes[q]`` (at most a quarter have a byte >= 0x7F, and the path to ``n`` has
      none) or are too long (with a run of at least 16 bytes, so that few are): go through the
      subtree's tokens one by one instead of node by node, setting those within the bytes and the
      run length and stepping the DFA through the remaining bytes of the others;
    * otherwise step the DFA as :func:`walk_trie` does (a dead byte skips the subtree).

    Token bits are set without a branch on "is there a token here".
    """
    t = tables_of(tables)
    return _walk_fast(
        transitions, state, t[BYTE], t[DEPTH], t[SKIP], t[TOK], t[DUP_START], t[DUP_END], t[SORTED_IDS],
        t[SHORT_MASKS].shape[0] - 1, t[ASCII_BYTES], t[MAXLEN], t[TOK_LO], t[TOK_LEN], t[TOK_OFF],
        t[TOK_BYTES], t[TOK_ASCII], t[HI_PREFIX], chains[0], chains[1], chains[2], t[ROOT_NODE], min_len,
        out_mask,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def walk_trie_sparse(
    transitions: np.ndarray, state: int, tables: Any, chains: Chains, max_live: int, out_mask: np.ndarray
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie_fast` of every token for a state with fewer than ``max_live`` live bytes
    (returns how many it set); for any other state nothing is walked and it returns ``-1 - live``.
    One call for the most common first visit (a sparse state), where two calls from Python cost as much
    as the walk."""
    live = 0
    for b in range(256):
        live += transitions[state, b] >= 0
    if live >= max_live:
        return -1 - live
    return walk_trie_fast(transitions, state, tables, chains, 0, out_mask)


@numba.njit(cache=True, nogil=True)
def sparse_fill(
    transitions: np.ndarray,
    state: int,
    tables: Any,
    chains: Chains,
    max_live: int,
    max_ids: int,
    eos_ids: np.ndarray,
    final: bool,
    out: np.ndarray,
) -> tuple[int, np.ndarray]:  # pragma: no cover - numba
    """The first mask of a sparse state, written straight into ``out`` (an int32 bitmask row): zeroed,
    walked (:func:`walk_trie_sparse`), EOS bits where ``final``. Returns ``(count, ids)``: with at
    most ``max_ids`` bits set, their number and the ids ascending (read back from ``out``); with
    more, about how many tokens (above ``max_ids``) and an empty array; ``(-1 - live, empty)`` for a
    state with ``max_live`` live bytes or more, whose ``out`` is left as it was."""
    live = 0
    for b in range(256):
        live += transitions[state, b] >= 0
    if live >= max_live:
        return -1 - live, np.empty(0, dtype=np.int32)
    words = out.view(np.uint32)
    words[:] = 0
    count = walk_trie_fast(transitions, state, tables, chains, 0, words)
    if final:
        for e in eos_ids:
            words[e >> 5] |= np.uint32(1) << np.uint32(e & 31)
        count += eos_ids.shape[0]
    ids = np.empty(max_ids, dtype=np.int32)
    k = 0
    for w in range(words.shape[0]):
        x = words[w]
        while x != 0:
            if k == max_ids:
                return max(count, max_ids + 1), np.empty(0, dtype=np.int32)
            low = x & (~x + np.uint32(1))  # the lowest set bit
            bit = 0
            while (low >> np.uint32(bit)) != np.uint32(1):
                bit += 1
            ids[k] = (w << 5) | bit
            k += 1
            x ^= low
    return k, ids[:k].copy()


@numba.njit(cache=True, nogil=True)
def write_ids(ids: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """Write the bitmask row of the token ``ids`` into ``out`` (int32 words; every other bit cleared)."""
    words = out.view(np.uint32)
    words[:] = 0
    for t in ids:
        words[t >> 5] |= np.uint32(1) << np.uint32(t & 31)


@numba.njit(cache=True, nogil=True)
def _walk_fast(
    transitions: np.ndarray,
    state: int,
    node_byte: np.ndarray,
    node_depth: np.ndarray,
    node_skip: np.ndarray,
    node_tok: np.ndarray,
    dup_start: np.ndarray,
    dup_end: np.ndarray,
    sorted_ids: np.ndarray,
    max_depth: int,
    ascii_bytes: np.ndarray,
    maxlen: np.ndarray,
    tok_lo: np.ndarray,
    tok_len: np.ndarray,
    tok_off: np.ndarray,
    tok_bytes: np.ndarray,
    tok_ascii: np.ndarray,
    hi_prefix: np.ndarray,
    chain_bytes: np.ndarray,
    chain_len: np.ndarray,
    chain_wide: np.ndarray,
    root_node: np.ndarray,
    min_len: int,
    out_mask: np.ndarray,
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie_fast` on the unpacked tables. The arrays come in as arguments (from numba,
    free) because the dense walk runs about 2% faster that way than on arrays taken out of the handle in
    the same kernel (llama3, ``[^\\n]{1,500}`` start: about 0.95 ms); the handle keeps the call from
    Python cheap (llama3, ``[0-9]+`` start: 5.0 µs, against 5.6 µs with 23 arrays passed from Python)."""
    stack = np.empty(max_depth + 1, dtype=np.int32)
    stack[0] = state
    path0 = np.zeros(max_depth + 1, dtype=np.uint64)  # bytes on the path to depth d (ascii form)
    path1 = np.zeros(max_depth + 1, dtype=np.uint64)
    count = 0
    # The root's subtrees are entered only for the bytes alive at ``state`` (``root_node``: a sparse
    # state's walk then skips the 256 root children one by one, about half of a small walk).
    r = 0
    n = 0
    end = 0
    while True:
        if n >= end:
            while r < 256 and (root_node[r] < 0 or transitions[state, r] < 0):
                r += 1
            if r >= 256:
                break
            n = root_node[r]
            end = node_skip[n]
            r += 1
        if min_len > 0 and maxlen[n] <= min_len:
            n = node_skip[n]
            continue
        d = node_depth[n]
        q = stack[d]
        l0 = chain_bytes[q, 0]
        l1 = chain_bytes[q, 1]
        if (l0 | l1) != 0:
            skip = node_skip[n]
            lo = tok_lo[n]
            hi = tok_lo[skip]
            run = chain_len[q]
            if ((ascii_bytes[n, 0] & ~l0) | (ascii_bytes[n, 1] & ~l1)) == 0 and maxlen[n] - d <= run:
                for i in range(lo, hi):
                    if tok_len[i] > min_len:
                        t = sorted_ids[i]
                        out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
                        count += 1
                n = skip
                continue
            c = min(node_byte[n], 127)
            own = (l0 >> np.uint64(c)) & np.uint64(1) if c < 64 else (l1 >> np.uint64(c - 64)) & np.uint64(1)
            if (
                hi - lo >= 16
                and chain_wide[q]
                and own != 0
                and (run >= 16 or maxlen[n] - d <= run)
                and 4 * (hi_prefix[hi] - hi_prefix[lo]) <= hi - lo
                and ((path0[d] & ~l0) | (path1[d] & ~l1)) == 0
            ):
                for i in range(lo, hi):
                    length = tok_len[i]
                    if length <= min_len:
                        continue
                    ok = length - d <= run and ((tok_ascii[i, 0] & ~l0) | (tok_ascii[i, 1] & ~l1)) == 0
                    if not ok:
                        q2 = q
                        for j in range(tok_off[i] + d, tok_off[i] + length):
                            q2 = transitions[q2, tok_bytes[j]]
                            if q2 < 0:
                                break
                        ok = q2 >= 0
                    if ok:
                        t = sorted_ids[i]
                        out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
                        count += 1
                n = skip
                continue
        b = node_byte[n]
        nxt = transitions[q, b]
        if nxt < 0:
            n = node_skip[n]
            continue
        c = min(b, 127)
        if c < 64:
            path0[d + 1] = path0[d] | (np.uint64(1) << np.uint64(c))
            path1[d + 1] = path1[d]
        else:
            path0[d + 1] = path0[d]
            path1[d + 1] = path1[d] | (np.uint64(1) << np.uint64(c - 64))
        stack[d + 1] = nxt
        tid = node_tok[n]
        if tid >= -1:
            has = tid >= 0 and d >= min_len
            w = (tid >> 5) if has else 0
            bit = (np.uint32(1) << np.uint32(tid & 31)) if has else np.uint32(0)
            out_mask[w] |= bit
            count += has
        elif d >= min_len:
            count += _set_tokens(out_mask, sorted_ids, dup_start[-2 - tid], dup_end[-2 - tid])
        n += 1
    return count


@numba.njit(cache=True, nogil=True)
def walk_trie_batch(
    transitions: np.ndarray,
    trans_c: np.ndarray,
    states: np.ndarray,
    tables: Any,
    chains: Chains,
    ref_state: int,
    ref_row: np.ndarray,
    min_tokens: int,
    max_pairs: int,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:  # pragma: no cover - numba
    """See :meth:`constrain.masks.trie.TokenTrie.walk_batch`."""
    short_masks = tables_of(tables)[SHORT_MASKS]
    max_depth = short_masks.shape[0] - 1
    prev = ref_state
    prev_count = min_tokens if ref_state >= 0 else 0
    words = out.shape[1]
    for i in range(states.shape[0]):
        st = states[i]
        k = -1
        if prev >= 0 and prev_count >= min_tokens:
            k = agreement_depth(trans_c, st, prev, max_depth, max_pairs)
        min_len = 0
        extra = 0
        if k >= 2:
            src = ref_row if i == 0 else out[i - 1]
            for w in range(words):
                out[i, w] = src[w] & short_masks[k, w]
            min_len = k
            extra = prev_count
        counts[i] = extra + walk_trie_fast(transitions, st, tables, chains, min_len, out[i])
        prev = st
        prev_count = counts[i]


@numba.njit(cache=True, nogil=True)
def walk_trie_long(
    transitions: np.ndarray, state: int, tables: Any, chains: Chains, min_len: int, out_mask: np.ndarray
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie_fast`'s result for the tokens longer than ``min_len`` bytes, going through them
    one by one (longest first, ``LONG_ORDER``) instead of through the trie; returns how many it set.

    A token whose bytes are all in the state's chain (see :func:`state_chains`) within its run length
    is set at once; the others step the DFA."""
    tabs = tables_of(tables)
    order, sorted_ids, long_counts = tabs[LONG_ORDER], tabs[SORTED_IDS], tabs[LONG_COUNTS]
    tok_len, tok_off, tok_bytes, tok_ascii = tabs[TOK_LEN], tabs[TOK_OFF], tabs[TOK_BYTES], tabs[TOK_ASCII]
    count = long_counts[min(max(min_len, 0), long_counts.shape[0] - 1)]
    l0 = chains[0][state, 0]
    l1 = chains[0][state, 1]
    run = chains[1][state]
    set_count = 0
    for j in range(count):
        i = order[j]
        length = tok_len[i]
        ok = length <= run and ((tok_ascii[i, 0] & ~l0) | (tok_ascii[i, 1] & ~l1)) == 0
        if not ok:
            q = state
            for p in range(tok_off[i], tok_off[i] + length):
                q = transitions[q, tok_bytes[p]]
                if q < 0:
                    break
            ok = q >= 0
        if ok:
            t = sorted_ids[i]
            out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
            set_count += 1
    return set_count


@numba.njit(cache=True, nogil=True)
def _ascii_bytes_to(row: np.ndarray, target: int) -> tuple[np.uint64, np.uint64]:  # pragma: no cover
    """The bytes below 0x7F that ``row`` (a DFA row) sends to ``target``, as two 64-bit sets."""
    lo = np.uint64(0)
    hi = np.uint64(0)
    for b in range(127):
        if row[b] == target:
            if b < 64:
                lo |= np.uint64(1) << np.uint64(b)
            else:
                hi |= np.uint64(1) << np.uint64(b - 64)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def walk_trie_long_plain(
    transitions: np.ndarray, state: int, tables: Any, min_len: int, out_mask: np.ndarray
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie_long` without :func:`state_chains` of the DFA: each token longer than
    ``min_len`` bytes steps the DFA from ``state``, except that a token whose bytes all loop on
    ``state`` (a string body) is set at once, and so is one whose ASCII bytes all follow the chain of
    positions of a bounded body (see the loop); returns how many it set. For the few longest tokens
    (llama3: 474 over 21 bytes), tens of µs."""
    tabs = tables_of(tables)
    order, sorted_ids, long_counts = tabs[LONG_ORDER], tabs[SORTED_IDS], tabs[LONG_COUNTS]
    tok_len, tok_off, tok_bytes, tok_ascii = tabs[TOK_LEN], tabs[TOK_OFF], tabs[TOK_BYTES], tabs[TOK_ASCII]
    count = long_counts[min(max(min_len, 0), long_counts.shape[0] - 1)]
    length_cap = tok_len[order[0]] if count > 0 else 0  # the longest token's length
    # A self-loop at ``state`` (a string body): tokens whose bytes all loop are set without stepping.
    l0, l1 = _ascii_bytes_to(transitions[state], state)
    high = True
    for b in range(127, 256):
        if transitions[state, b] != state:
            high = False
            break
    if high:
        l1 |= np.uint64(1) << np.uint64(63)
    set_count = 0
    # Along a bounded string body each position is a new state: ``c0/c1[k]`` are the ASCII bytes that
    # lead, at every one of the first ``k`` steps, to the one next state of the chain from ``state``
    # (``chain[k]``), so a token of ``k`` bytes all in them is alive without stepping the DFA (dependent
    # loads in a large DFA). Built as far as the tokens need (``built``).
    chain = np.empty(length_cap + 1, dtype=np.int64)
    c0 = np.empty(length_cap + 1, dtype=np.uint64)
    c1 = np.empty(length_cap + 1, dtype=np.uint64)
    chain[0] = state
    c0[0] = ~np.uint64(0)
    c1[0] = ~np.uint64(0) >> np.uint64(1)  # bit 127 (any byte >= 0x7F) never: those tokens step
    built = 0
    for j in range(count):
        i = order[j]
        if ((tok_ascii[i, 0] & ~l0) | (tok_ascii[i, 1] & ~l1)) == 0:
            t = sorted_ids[i]
            out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
            set_count += 1
            continue
        start = tok_off[i]
        length = tok_len[i]
        while built < length and (c0[built] | c1[built]) != 0:
            q = chain[built]
            nxt = transitions[q, 97]  # the chain follows 'a', else '0', else ' '
            if nxt < 0:
                nxt = transitions[q, 48]
            if nxt < 0:
                nxt = transitions[q, 32]
            u0, u1 = _ascii_bytes_to(transitions[q], nxt) if nxt >= 0 else (np.uint64(0), np.uint64(0))
            chain[built + 1] = nxt
            c0[built + 1] = c0[built] & u0
            c1[built + 1] = c1[built] & u1
            built += 1
        if length <= built and ((tok_ascii[i, 0] & ~c0[length]) | (tok_ascii[i, 1] & ~c1[length])) == 0:
            t = sorted_ids[i]
            out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
            set_count += 1
            continue
        q = state
        for p in range(start, start + length):
            q = transitions[q, tok_bytes[p]]
            if q < 0:
                break
        if q >= 0:
            t = sorted_ids[i]
            out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
            set_count += 1
    return set_count


@numba.njit(cache=True, nogil=True)
def lexeme_walk(
    transitions: np.ndarray,
    accepting: np.ndarray,
    state: int,
    tables: Any,
    chains: Chains,
    inside: np.ndarray,
) -> np.ndarray:  # pragma: no cover - numba
    """:func:`constrain.cfg.token_masks.lexeme_token_sets` with :func:`walk_trie_fast`'s first shortcut.

    Marks in ``inside`` the tokens that keep ``state`` alive, and returns the crossing sub-trie: the
    subtrees whose first byte kills the lexeme right after an accepting state (below the root), with
    the paths to them, renumbered as a preorder trie (``int32[M, 4]``: byte, depth, skip, token).
    A subtree whose bytes all stay on the chain of the state it starts from (``chains``, see
    :func:`state_chains`) for all its tokens' lengths has every token alive and no byte that kills,
    so its tokens are set from one range and it is skipped: a string body's walk then visits only
    the subtrees with a quote, an escape or a multi-byte character instead of all of the trie.
    """
    t = tables_of(tables)
    node_byte, node_depth, node_skip, node_tok = t[BYTE], t[DEPTH], t[SKIP], t[TOK]
    dup_start, dup_end, sorted_ids = t[DUP_START], t[DUP_END], t[SORTED_IDS]
    ascii_bytes, maxlen, tok_lo = t[ASCII_BYTES], t[MAXLEN], t[TOK_LO]
    chain_bytes, chain_len = chains[0], chains[1]
    max_depth = t[SHORT_MASKS].shape[0] - 1
    total = node_byte.shape[0]
    stack = np.empty(max_depth + 1, dtype=np.int32)
    path = np.empty(max_depth + 1, dtype=np.int64)
    emitted = np.zeros(max_depth + 1, dtype=np.bool_)
    kept = np.empty(total, dtype=np.int64)
    nkept = 0
    stack[0] = state
    n = 0
    while n < total:
        d = node_depth[n]
        q = stack[d]
        if on_chain(n, d, q, ascii_bytes, maxlen, chain_bytes, chain_len):
            skip = node_skip[n]
            for i in range(tok_lo[n], tok_lo[skip]):
                tid = sorted_ids[i]
                inside[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
            n = skip
            continue
        nxt = transitions[q, node_byte[n]]
        if nxt < 0:
            end = node_skip[n]
            if d > 0 and accepting[q]:
                for up in range(d):  # the path to here, once
                    if not emitted[up]:
                        emitted[up] = True
                        kept[nkept] = path[up]
                        nkept += 1
                for k in range(n, end):
                    kept[nkept] = k
                    nkept += 1
            n = end
            continue
        path[d] = n
        emitted[d] = False
        stack[d + 1] = nxt
        tid = node_tok[n]
        if tid >= 0:
            inside[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
        elif tid <= -2:
            _set_tokens(inside, sorted_ids, dup_start[-2 - tid], dup_end[-2 - tid])
        n += 1
    out = np.empty((nkept, 4), dtype=np.int32)
    sel = kept[:nkept]
    for j in range(nkept):
        k = sel[j]
        out[j, 0] = node_byte[k]
        out[j, 1] = node_depth[k]
        out[j, 2] = np.searchsorted(sel, node_skip[k])
        out[j, 3] = node_tok[k]
    return out
