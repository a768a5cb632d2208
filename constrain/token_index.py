"""Token-level index: which tokens a DFA state allows, found by walking a vocabulary trie.

The vocabulary's byte strings (special tokens excluded) are sorted and laid out as a trie in DFS
preorder: node ``n`` adds byte ``node_byte[n]`` at depth ``node_depth[n]``; its subtree ends just before
``node_skip[n]``; the tokens spelled by the path to ``n`` are
``sorted_ids[node_tok_start[n]:node_tok_end[n]]``. One walk from a DFA state visits each node whose
path stays alive and jumps over every subtree whose first byte kills the walk, so sparse states
(``[0-9]``) cost microseconds and dense ones (inside a free-text string) one pass over the trie.

The walk is a numba kernel that releases the GIL, so several threads can fill the cache at once.
:func:`walk_trie_fast` is the one masks use: the same walk over narrower columns, with two exact
shortcuts from per-subtree summaries (:class:`TrieSummary`): a subtree whose every byte keeps the DFA on
a run of states that all accept those bytes (a self-loop, or a counter far from its bound) has all its
tokens set from one contiguous range, and a walk can be limited to tokens longer than ``k`` bytes (the
shorter ones copied from another state's mask, see ``CompiledGrammar``). :class:`BackgroundWorker` is
the thread that computes masks ahead of use.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from .regex import agreement_depth

if TYPE_CHECKING:
    from .tokenizer_info import TokenizerInfo


@dataclass(frozen=True, eq=False)
class TokenTrie:
    """The vocabulary of one tokenizer as a preorder trie of byte strings (see module docstring).

    ``nodes[n] = (byte, depth, skip, token)``: ``token`` is ``-1`` (no token ends here), a token id,
    or ``-2 - k`` when several ids share these bytes (they are ``sorted_ids[dup_start[k]:dup_end[k]]``).
    One packed row per node keeps the walk on consecutive cache lines.
    """

    nodes: np.ndarray  # int32[N, 4]
    dup_start: np.ndarray  # int32[D]
    dup_end: np.ndarray  # int32[D]
    sorted_ids: np.ndarray  # int32[T]: token ids in byte-string order
    max_depth: int
    num_words: int  # bitmask width in int32 words: ceil(vocab_size / 32)

    @property
    def num_nodes(self) -> int:
        """Number of trie nodes."""
        return int(self.nodes.shape[0])

    def walk(self, transitions: np.ndarray, state: int, out_mask: np.ndarray) -> int:
        """Set in ``out_mask`` (uint32 words) each token that keeps ``state`` alive; return the count."""
        return int(
            walk_trie(
                transitions,
                state,
                self.nodes,
                self.dup_start,
                self.dup_end,
                self.sorted_ids,
                self.max_depth,
                out_mask,
            )
        )

    @cached_property
    def root_ranges(self) -> np.ndarray:
        """``int64[K, 3]``: (first node, end, byte) of each depth-0 subtree, in byte order."""
        idx = np.flatnonzero(self.nodes[:, 1] == 0)
        ranges = np.stack([idx, self.nodes[idx, 2], self.nodes[idx, 0]], axis=1).astype(np.int64)
        ranges.setflags(write=False)
        return ranges

    @cached_property
    def summary(self) -> TrieSummary:
        """Per-node facts for :meth:`walk_fast` (built on first use: tens of ms for a 128k vocabulary)."""
        ascii_bytes, maxlen = _node_summary(self.nodes, self.max_depth)
        tok = self.nodes[:, 3]
        per_node = np.where(tok >= 0, 1, 0).astype(np.int64)
        dups = tok <= -2
        per_node[dups] = (self.dup_end - self.dup_start)[-2 - tok[dups]]
        tok_lo = np.zeros(self.num_nodes + 1, dtype=np.int32)
        np.cumsum(per_node, out=tok_lo[1:])
        tok_len = np.zeros(self.sorted_ids.shape[0], dtype=np.uint16)
        has = np.flatnonzero(tok != -1)
        tok_len[:] = np.repeat(self.nodes[has, 1] + 1, per_node[has])
        tok_off = np.zeros(tok_len.shape[0] + 1, dtype=np.int64)
        np.cumsum(tok_len, out=tok_off[1:])
        tok_bytes, tok_ascii, hi_prefix = _token_columns(self.nodes, tok_lo, tok_off, self.max_depth)
        out = TrieSummary(
            np.ascontiguousarray(self.nodes[:, 0], dtype=np.uint8),
            np.ascontiguousarray(self.nodes[:, 1], dtype=np.uint16),
            np.ascontiguousarray(self.nodes[:, 2]),
            np.ascontiguousarray(self.nodes[:, 3]),
            ascii_bytes,
            maxlen,
            tok_lo,
            tok_len,
            tok_off,
            tok_bytes,
            tok_ascii,
            hi_prefix,
        )
        for arr in dataclasses.astuple(out):
            arr.setflags(write=False)
        return out

    def short_mask(self, length: int) -> np.ndarray:
        """uint32 bitmask of the vocabulary tokens (in this trie) of at most ``length`` bytes."""
        return self.short_masks[min(max(length, 0), self.max_depth)]

    @cached_property
    def short_masks(self) -> np.ndarray:
        """uint32[max_depth + 1, num_words]: row ``k`` is :meth:`short_mask` ``(k)`` (built on first use)."""
        summary = self.summary
        out = _short_masks(self.sorted_ids, summary.tok_len, self.max_depth, self.num_words)
        out.setflags(write=False)
        return out

    @cached_property
    def long_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(token positions by length, longest first; ``counts[k]``: how many are longer than ``k`` bytes).

        Positions index ``sorted_ids`` and the summary's per-token columns, so the tokens longer than
        ``k`` are ``order[:counts[k]]`` (for :meth:`walk_long`)."""
        tok_len = self.summary.tok_len.astype(np.int64)
        order = np.argsort(-tok_len, kind="stable").astype(np.int32)
        ascending = np.sort(tok_len)
        depths = np.arange(self.max_depth + 1)
        counts = ascending.shape[0] - np.searchsorted(ascending, depths, side="right")
        order.setflags(write=False)
        counts.setflags(write=False)
        return order, counts

    def walk_long(
        self,
        transitions: np.ndarray,
        state: int,
        out_mask: np.ndarray,
        chains: tuple[np.ndarray, np.ndarray, np.ndarray],
        min_len: int,
    ) -> int:
        """:meth:`walk_fast` for the tokens longer than ``min_len`` bytes, going through them one by one
        (longest first) instead of through the trie; returns how many it set.

        For a large ``min_len`` (a partial walk deep in a counter or string body) few tokens are left,
        but the trie walk still visits every node on their paths: at ``min_len`` 33 on llama3, 222
        tokens, about 180 µs through the trie against 56 µs here. A token whose bytes are all in the
        state's chain (see :func:`state_chains`) within its run length is set at once; the others step
        the DFA."""
        order, counts = self.long_order
        s = self.summary
        return int(
            _walk_long(
                transitions,
                state,
                order,
                int(counts[min(max(min_len, 0), self.max_depth)]),
                self.sorted_ids,
                s.tok_len,
                s.tok_off,
                s.tok_bytes,
                s.tok_ascii,
                chains[0],
                chains[1],
                out_mask,
            )
        )

    def walk_batch(
        self,
        transitions: np.ndarray,
        trans_c: np.ndarray,
        states: np.ndarray,
        chains: tuple[np.ndarray, np.ndarray, np.ndarray],
        out: np.ndarray,
        counts: np.ndarray,
        ref_state: int,
        ref_row: np.ndarray,
        min_tokens: int,
        max_pairs: int,
    ) -> None:
        """Masks of ``states`` into the rows of ``out`` (uint32, zeroed) in one GIL-free call.

        Each state after the first reuses the previous one (and the first one ``ref_state`` with its
        mask ``ref_row``, if ``ref_state >= 0``) as in ``CompiledGrammar``'s partial walks: when the
        reference set at least ``min_tokens`` tokens and the two states agree on all strings of
        ``k >= 2`` bytes, tokens of at most ``k`` bytes are copied and only longer ones are walked.
        ``counts[i]`` gets the number of tokens set (an upper bound after a partial walk). No EOS bits.
        """
        _walk_batch(  # type: ignore[call-arg]  # numba's stub does not see the unpacked columns
            transitions,
            trans_c,
            states,
            *self._summary_columns(chains),
            self.short_masks,
            out,
            counts,
            ref_state,
            ref_row,
            min_tokens,
            max_pairs,
        )

    def _summary_columns(self, chains: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[Any, ...]:
        """The trie and summary arrays, then ``chains``: the arguments the fast walks share, in order."""
        s = self.summary
        return (
            s.byte, s.depth, s.skip, s.tok, self.dup_start, self.dup_end, self.sorted_ids, self.max_depth,
            s.ascii_bytes, s.maxlen, s.tok_lo, s.tok_len, s.tok_off, s.tok_bytes, s.tok_ascii, s.hi_prefix,
            chains[0], chains[1], chains[2],
        )  # fmt: skip

    def walk_fast(
        self,
        transitions: np.ndarray,
        state: int,
        out_mask: np.ndarray,
        chains: tuple[np.ndarray, np.ndarray, np.ndarray],
        min_len: int = 0,
    ) -> int:
        """Like :meth:`walk`, using the subtree summaries; only tokens longer than ``min_len`` bytes.

        ``chains`` is :func:`state_chains` of ``transitions`` (with ``cap >= max_depth``). Sets the
        same bits as :meth:`walk` for every token longer than ``min_len`` (all of them by default);
        returns how many it set.
        """
        return int(
            walk_trie_fast(  # type: ignore[call-arg]
                transitions,
                state,
                *self._summary_columns(chains),
                min_len,
                out_mask,
            )
        )


@dataclass(frozen=True, eq=False)
class TrieSummary:
    """The trie as separate narrow columns, plus per-subtree facts that let a walk skip work exactly.

    ``byte``, ``depth``, ``skip``, ``tok``: the columns of ``TokenTrie.nodes`` (a dense walk reads
    6 bytes per node instead of 16). ``ascii_bytes[n]``: the bytes used anywhere in node ``n``'s
    subtree (``n`` included) as 128 bits, where bit 127 stands for "0x7F or any byte >= 0x80";
    ``maxlen[n]``: the longest token in the subtree, in bytes; the subtree's tokens are
    ``sorted_ids[tok_lo[n]:tok_lo[skip[n]]]`` and ``tok_len[i]`` is the length of ``sorted_ids[i]``;
    the per-token columns (bytes, byte set, running count of tokens with a byte >= 0x7F) let a walk
    check the tokens of a subtree one by one instead of node by node.
    """

    byte: np.ndarray  # uint8[N]
    depth: np.ndarray  # uint16[N]
    skip: np.ndarray  # int32[N]
    tok: np.ndarray  # int32[N]
    ascii_bytes: np.ndarray  # uint64[N, 2]
    maxlen: np.ndarray  # uint16[N]
    tok_lo: np.ndarray  # int32[N + 1]
    tok_len: np.ndarray  # uint16[T]
    tok_off: np.ndarray  # int64[T + 1]: the bytes of sorted_ids[i] are tok_bytes[tok_off[i]:tok_off[i+1]]
    tok_bytes: np.ndarray  # uint8[sum of lengths]
    tok_ascii: np.ndarray  # uint64[T, 2]: the bytes of sorted_ids[i], in the form of ascii_bytes
    hi_prefix: np.ndarray  # int32[T + 1]: how many of sorted_ids[:i] have a byte >= 0x7F


@numba.njit(cache=True, nogil=True)
def _node_summary(nodes: np.ndarray, max_depth: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    n_nodes = nodes.shape[0]
    parent = np.full(n_nodes, -1, dtype=np.int64)
    path = np.empty(max_depth + 1, dtype=np.int64)
    for n in range(n_nodes):
        d = nodes[n, 1]
        path[d] = n
        if d > 0:
            parent[n] = path[d - 1]
    ascii_bytes = np.zeros((n_nodes, 2), dtype=np.uint64)
    maxlen = np.zeros(n_nodes, dtype=np.uint16)
    for n in range(n_nodes - 1, -1, -1):  # children come after their parent in preorder
        b = min(nodes[n, 0], 127)
        ascii_bytes[n, b >> 6] |= np.uint64(1) << np.uint64(b & 63)
        if nodes[n, 3] != -1:
            maxlen[n] = max(maxlen[n], nodes[n, 1] + 1)
        p = parent[n]
        if p >= 0:
            ascii_bytes[p, 0] |= ascii_bytes[n, 0]
            ascii_bytes[p, 1] |= ascii_bytes[n, 1]
            maxlen[p] = max(maxlen[p], maxlen[n])
    return ascii_bytes, maxlen


@numba.njit(cache=True, nogil=True)
def _token_columns(
    nodes: np.ndarray, tok_lo: np.ndarray, tok_off: np.ndarray, max_depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - numba
    n_tok = tok_off.shape[0] - 1
    tok_bytes = np.zeros(tok_off[n_tok], dtype=np.uint8)
    tok_ascii = np.zeros((n_tok, 2), dtype=np.uint64)
    hi_prefix = np.zeros(n_tok + 1, dtype=np.int32)
    path = np.zeros(max_depth + 1, dtype=np.uint8)
    for n in range(nodes.shape[0]):
        d = nodes[n, 1]
        path[d] = nodes[n, 0]
        for i in range(tok_lo[n], tok_lo[n + 1]):
            for j in range(d + 1):
                b = path[j]
                tok_bytes[tok_off[i] + j] = b
                c = min(b, 127)
                tok_ascii[i, c >> 6] |= np.uint64(1) << np.uint64(c & 63)
    for i in range(n_tok):
        hi_prefix[i + 1] = hi_prefix[i] + (1 if (tok_ascii[i, 1] >> np.uint64(63)) != 0 else 0)
    return tok_bytes, tok_ascii, hi_prefix


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


@numba.njit(cache=True, nogil=True)
def walk_trie_fast(
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
    min_len: int,
    out_mask: np.ndarray,
) -> int:  # pragma: no cover - numba
    """:func:`walk_trie` for the tokens longer than ``min_len`` bytes, with three exact shortcuts.

    Plain loops, per node ``n`` in preorder at DFA state ``q`` (the state after its parent's path):

    * no token longer than ``min_len`` in the subtree (``maxlen[n] <= min_len``): skip it;
    * every byte of the subtree is in ``chain_bytes[q]`` and no token in it needs more than
      ``chain_len[q]`` bytes from ``q`` (see :func:`state_chains`): every string in it stays alive,
      so set all its tokens (longer than ``min_len``) from the contiguous range
      ``sorted_ids[tok_lo[n]:tok_lo[skip]]`` and skip it;
    * the same, for a wide chain whose bytes include ``n``'s, except that some tokens have bytes
      outside ``chain_bytes[q]`` (at most a quarter have a byte >= 0x7F, and the path to ``n`` has
      none) or are too long (with a run of at least
      16 bytes, so that few are): go through the
      subtree's tokens one by one instead of node by node, setting those within the bytes and the
      run length and stepping the DFA through the remaining bytes of the others;
    * otherwise step the DFA as :func:`walk_trie` does (a dead byte skips the subtree).

    Token bits are set without a branch on "is there a token here".
    """
    stack = np.empty(max_depth + 1, dtype=np.int32)
    stack[0] = state
    path0 = np.zeros(max_depth + 1, dtype=np.uint64)  # bytes on the path to depth d (ascii form)
    path1 = np.zeros(max_depth + 1, dtype=np.uint64)
    n = 0
    total = node_byte.shape[0]
    count = 0
    while n < total:
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
            k = -2 - tid
            for i in range(dup_start[k], dup_end[k]):
                t = sorted_ids[i]
                out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
                count += 1
        n += 1
    return count


@numba.njit(cache=True, nogil=True)
def _walk_long(
    transitions: np.ndarray,
    state: int,
    order: np.ndarray,
    count: int,
    sorted_ids: np.ndarray,
    tok_len: np.ndarray,
    tok_off: np.ndarray,
    tok_bytes: np.ndarray,
    tok_ascii: np.ndarray,
    chain_bytes: np.ndarray,
    chain_len: np.ndarray,
    out_mask: np.ndarray,
) -> int:  # pragma: no cover - numba
    l0 = chain_bytes[state, 0]
    l1 = chain_bytes[state, 1]
    run = chain_len[state]
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
def _short_masks(
    sorted_ids: np.ndarray, tok_len: np.ndarray, max_depth: int, words: int
) -> np.ndarray:  # pragma: no cover - numba
    out = np.zeros((max_depth + 1, words), dtype=np.uint32)
    for i in range(sorted_ids.shape[0]):
        t = sorted_ids[i]
        out[tok_len[i], t >> 5] |= np.uint32(1) << np.uint32(t & 31)
    for k in range(1, max_depth + 1):
        for w in range(words):
            out[k, w] |= out[k - 1, w]
    return out


@numba.njit(cache=True, nogil=True)
def _walk_batch(
    transitions: np.ndarray,
    trans_c: np.ndarray,
    states: np.ndarray,
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
    short_masks: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
    ref_state: int,
    ref_row: np.ndarray,
    min_tokens: int,
    max_pairs: int,
) -> None:  # pragma: no cover - numba
    """See :meth:`TokenTrie.walk_batch`."""
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
        counts[i] = extra + walk_trie_fast(
            transitions,
            st,
            node_byte,
            node_depth,
            node_skip,
            node_tok,
            dup_start,
            dup_end,
            sorted_ids,
            max_depth,
            ascii_bytes,
            maxlen,
            tok_lo,
            tok_len,
            tok_off,
            tok_bytes,
            tok_ascii,
            hi_prefix,
            chain_bytes,
            chain_len,
            chain_wide,
            min_len,
            out[i],
        )
        prev = st
        prev_count = counts[i]


@numba.njit(cache=True, nogil=True)
def _build_trie(
    flat: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:  # pragma: no cover - numba
    """Preorder trie arrays from sorted byte strings (``flat[offsets[i]:offsets[i+1]]`` is string i)."""
    n_tok = offsets.shape[0] - 1
    cap = flat.shape[0] + 1
    node_byte = np.empty(cap, dtype=np.uint8)
    node_depth = np.empty(cap, dtype=np.int32)
    node_skip = np.empty(cap, dtype=np.int32)
    tok_start = np.zeros(cap, dtype=np.int32)
    tok_end = np.zeros(cap, dtype=np.int32)
    max_depth = 0
    for i in range(n_tok):
        max_depth = max(max_depth, offsets[i + 1] - offsets[i])
    path = np.full(max_depth + 1, -1, dtype=np.int64)  # node at each depth on the current path
    open_stack = np.empty(max_depth + 1, dtype=np.int64)
    open_len = 0
    n = 0
    prev_lo = 0
    prev_hi = 0
    for i in range(n_tok):
        lo = offsets[i]
        hi = offsets[i + 1]
        length = hi - lo
        # Longest common prefix with the previous string.
        lcp = 0
        if i > 0:
            m = min(length, prev_hi - prev_lo)
            while lcp < m and flat[lo + lcp] == flat[prev_lo + lcp]:
                lcp += 1
        if i > 0 and lcp == length and length == prev_hi - prev_lo:
            # Same bytes as the previous token: share its end node.
            tok_end[path[length - 1]] = i + 1
        else:
            # Close the open nodes deeper than the shared prefix.
            while open_len > 0 and node_depth[open_stack[open_len - 1]] >= lcp:
                node_skip[open_stack[open_len - 1]] = n
                open_len -= 1
            for d in range(lcp, length):
                node_byte[n] = flat[lo + d]
                node_depth[n] = d
                tok_start[n] = 0
                tok_end[n] = 0
                path[d] = n
                open_stack[open_len] = n
                open_len += 1
                n += 1
            tok_start[path[length - 1]] = i
            tok_end[path[length - 1]] = i + 1
        prev_lo = lo
        prev_hi = hi
    while open_len > 0:
        node_skip[open_stack[open_len - 1]] = n
        open_len -= 1
    return node_byte[:n], node_depth[:n], node_skip[:n], tok_start[:n], tok_end[:n], max_depth


@numba.njit(cache=True, nogil=True)
def walk_trie(
    transitions: np.ndarray,
    state: int,
    nodes: np.ndarray,
    dup_start: np.ndarray,
    dup_end: np.ndarray,
    sorted_ids: np.ndarray,
    max_depth: int,
    out_mask: np.ndarray,
) -> int:  # pragma: no cover - numba
    """Set in ``out_mask`` (uint32 words) the bit of every token whose bytes keep ``state`` alive.

    Plain loops: for each trie node in preorder, step the DFA from the parent's state by the node's
    byte; if the DFA dies, skip the node's subtree; otherwise record the tokens ending here.
    Returns the number of tokens allowed. About 6 ns per visited node on a 2-core CPU runner.
    """
    stack = np.empty(max_depth + 1, dtype=np.int32)
    stack[0] = state
    n = 0
    total = nodes.shape[0]
    count = 0
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
            k = -2 - tid
            for i in range(dup_start[k], dup_end[k]):
                t = sorted_ids[i]
                out_mask[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
                count += 1
        n += 1
    return count


_TRIES: weakref.WeakKeyDictionary[TokenizerInfo, TokenTrie] = weakref.WeakKeyDictionary()
_TRIES_LOCK = threading.Lock()


def token_trie(info: TokenizerInfo) -> TokenTrie:
    """The vocabulary trie of ``info`` (built once per tokenizer, then shared)."""
    trie = _TRIES.get(info)
    if trie is not None:
        return trie
    with _TRIES_LOCK:
        trie = _TRIES.get(info)
        if trie is None:
            trie = _make_trie(info)
            trie.summary  # noqa: B018 - built with the trie (tens of ms), not in a first mask
            trie.short_masks  # noqa: B018
            trie.root_ranges  # noqa: B018 - a full pass over the nodes (about 0.7 ms for 128k)
            _TRIES[info] = trie
    return trie


def _make_trie(info: TokenizerInfo) -> TokenTrie:
    special = info.special_ids
    entries = [
        (b, tid)
        for tid, b in enumerate(info.token_bytes)
        if b and tid not in special and tid not in info.eos_ids
    ]
    entries.sort()
    flat = np.frombuffer(b"".join(b for b, _ in entries), dtype=np.uint8)
    lengths = np.fromiter((len(b) for b, _ in entries), dtype=np.int64, count=len(entries))
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for _, t in entries), dtype=np.int32, count=len(entries))
    words = (info.vocab_size + 31) // 32
    if len(entries) == 0:
        return TokenTrie(np.zeros((0, 4), np.int32), *(np.zeros(0, np.int32),) * 3, 0, words)
    nb, nd, ns, ts, te, max_depth = _build_trie(flat, offsets)
    nodes = np.empty((nb.shape[0], 4), dtype=np.int32)
    nodes[:, 0] = nb
    nodes[:, 1] = nd
    nodes[:, 2] = ns
    has = te > ts
    single = has & (te - ts == 1)
    tok = np.full(nb.shape[0], -1, dtype=np.int32)
    tok[single] = ids[ts[single]]
    dup_nodes = np.flatnonzero(has & ~single)
    tok[dup_nodes] = -2 - np.arange(dup_nodes.shape[0], dtype=np.int32)
    nodes[:, 3] = tok
    dup_start = ts[dup_nodes].astype(np.int32)
    dup_end = te[dup_nodes].astype(np.int32)
    for a in (nodes, dup_start, dup_end, ids):
        a.setflags(write=False)
    return TokenTrie(nodes, dup_start, dup_end, ids, int(max_depth), words)


# --------------------------------------------------------------------------------------------------
# Background mask work


class BackgroundWorker:
    """One daemon thread that runs queued jobs, newest first (mask precompute, see ``CompiledGrammar``).

    A job is a callable taking the worker's stop event; it should check the event between units of
    work (one trie walk each) and hold no strong reference to what it works on between units, so
    that dropping a compiled grammar ends its job. The thread starts on the first :meth:`submit` and
    exits by itself after ``idle_exit_s`` without work; :meth:`stop` ends it at once (and drops the
    queue); a later :meth:`submit` starts a fresh thread. At most ``max_jobs`` wait; a new job pushes
    out the oldest.
    """

    def __init__(self, idle_exit_s: float = 2.0, max_jobs: int = 8) -> None:
        self.idle_exit_s = idle_exit_s
        self._cond = threading.Condition()
        # newest first, and only the newest few: the grammar just compiled is the one decoding now
        self._jobs: deque[Callable[[threading.Event], None]] = deque(maxlen=max_jobs)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def submit(self, job: Callable[[threading.Event], None]) -> None:
        """Queue ``job``; start the thread if none is running."""
        with self._cond:
            self._jobs.appendleft(job)  # a full queue drops its oldest job
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="constrain-masks", daemon=True
                )
                self._thread.start()
            else:
                self._cond.notify()

    def stop(self, timeout: float = 10.0) -> bool:
        """Drop queued jobs, stop the running one after its current walk; True when the thread is gone."""
        with self._cond:
            self._jobs.clear()
            self._stop.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    def _run(self, stop: threading.Event) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                while not self._jobs and not stop.is_set():
                    if not self._cond.wait(self.idle_exit_s) and not self._jobs:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                if stop.is_set():
                    return
                job = self._jobs.popleft()
            job(stop)
            del job


def _lower_thread_priority() -> None:
    """Nice the calling thread (Linux: per-thread nice values), so that on a busy machine the threads
    that serve requests win the CPU over work done ahead of time. No-op elsewhere."""
    native_id = getattr(threading, "get_native_id", None)
    if native_id is None or not hasattr(os, "setpriority"):  # pragma: no cover - not Linux
        return
    with contextlib.suppress(OSError):  # not permitted here: keep the default priority
        os.setpriority(os.PRIO_PROCESS, native_id(), 19)


MASK_WORKER = BackgroundWorker()
atexit.register(MASK_WORKER.stop)
