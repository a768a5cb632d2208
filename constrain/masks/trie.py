"""The vocabulary of a tokenizer as a trie of byte strings, built once per tokenizer and shared.

The vocabulary's byte strings (special tokens excluded) are sorted and laid out as a trie in DFS
preorder: node ``n`` adds byte ``node_byte[n]`` at depth ``node_depth[n]``; its subtree ends just before
``node_skip[n]``; the tokens spelled by the path to ``n`` are
``sorted_ids[node_tok_start[n]:node_tok_end[n]]``. :class:`TrieSummary` adds per-subtree facts that let
a walk skip work exactly; the walks themselves are in :mod:`constrain.masks.walks`.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numba
import numpy as np

from .handle import Tables
from .walks import (
    Chains,
    lexeme_walk,
    state_chains,
    walk_tables,
    walk_trie,
    walk_trie_batch,
    walk_trie_fast,
    walk_trie_long,
    walk_trie_long_plain,
)

if TYPE_CHECKING:
    from ..tokenizer_info import TokenizerInfo


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

    @cached_property
    def tables(self) -> Tables:
        """The handle the walk kernels take (:func:`constrain.masks.walks.walk_tables`), built once."""
        return walk_tables(self)

    def walk(self, transitions: np.ndarray, state: int, out_mask: np.ndarray) -> int:
        """Set in ``out_mask`` (uint32 words) each token that keeps ``state`` alive; return the count.

        The plain walk (:func:`constrain.masks.walks.walk_trie`), the reference for :meth:`walk_fast`."""
        return int(walk_trie(transitions, state, self.tables, out_mask))

    def walk_fast(
        self, transitions: np.ndarray, state: int, out_mask: np.ndarray, chains: Chains, min_len: int = 0
    ) -> int:
        """Like :meth:`walk`, using the subtree summaries; only tokens longer than ``min_len`` bytes.

        ``chains`` is :func:`~constrain.masks.walks.state_chains` of ``transitions`` (with
        ``cap >= max_depth``). Sets the same bits as :meth:`walk` for every token longer than
        ``min_len`` (all of them by default); returns how many it set.
        """
        return int(walk_trie_fast(transitions, state, self.tables, chains, min_len, out_mask))

    def walk_long(
        self, transitions: np.ndarray, state: int, out_mask: np.ndarray, chains: Chains, min_len: int
    ) -> int:
        """:meth:`walk_fast` for the tokens longer than ``min_len`` bytes, going through them one by one
        (longest first) instead of through the trie; returns how many it set.

        For a large ``min_len`` (a partial walk deep in a counter or string body) few tokens are left,
        but the trie walk still visits every node on their paths: at ``min_len`` 33 on llama3, 222
        tokens, about 180 µs through the trie against 56 µs here."""
        return int(walk_trie_long(transitions, state, self.tables, chains, min_len, out_mask))

    def walk_long_plain(self, transitions: np.ndarray, state: int, out_mask: np.ndarray, min_len: int) -> int:
        """:meth:`walk_long` without the DFA's chains: each token longer than ``min_len`` bytes steps the
        DFA (for a large ``min_len``: few tokens); returns how many it set."""
        return int(walk_trie_long_plain(transitions, state, self.tables, min_len, out_mask))

    def subset(self, keep: np.ndarray) -> TokenTrie:
        """A trie of some of these tokens (same ids, same bitmask width): those at the positions of
        ``sorted_ids`` where ``keep`` (bool) is set. A walk of it visits only their paths: llama3's
        1,667 tokens with a quote or backslash make 3,000 nodes
        (:data:`constrain.masks.dfa_masks.SPLIT_BYTES`)."""
        s = self.summary
        positions = np.flatnonzero(keep)
        starts, ends = s.tok_off[positions], s.tok_off[positions + 1]
        lengths = ends - starts
        offsets = np.zeros(positions.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return _trie_of(s.tok_bytes[take], offsets, self.sorted_ids[positions], self.num_words)

    def lexeme_sets(
        self, transitions: np.ndarray, accepting: np.ndarray, state: int, inside: np.ndarray
    ) -> np.ndarray:
        """A lexeme state's tokens for the Earley masks: those that keep ``state`` alive into
        ``inside`` (uint32 words), and the returned sub-trie of tokens that may cross the lexeme's end
        (see :func:`constrain.masks.walks.lexeme_walk`). The DFA's chains are computed once per
        transition table (kept while the table lives)."""
        key = id(transitions)
        got = self._chains.get(key)
        if got is None or got[0]() is not transitions:
            got = (weakref.ref(transitions), state_chains(transitions, self.max_depth))
            if len(self._chains) >= 1024:  # forget the tables that are gone
                for k, (ref, _) in list(self._chains.items()):
                    if ref() is None:
                        self._chains.pop(k, None)
            self._chains[key] = got
        return lexeme_walk(transitions, accepting, state, self.tables, got[1], inside)

    @cached_property
    def _chains(self) -> dict[int, tuple[weakref.ref[np.ndarray], Chains]]:
        return {}

    def walk_batch(
        self,
        transitions: np.ndarray,
        trans_c: np.ndarray,
        states: np.ndarray,
        chains: Chains,
        out: np.ndarray,
        counts: np.ndarray,
        ref_state: int,
        ref_row: np.ndarray,
        min_tokens: int,
        max_pairs: int,
    ) -> None:
        """Masks of ``states`` into the rows of ``out`` (uint32, zeroed) in one GIL-free call.

        Each state after the first reuses the previous one (and the first one ``ref_state`` with its
        mask ``ref_row``, if ``ref_state >= 0``) as in ``DFATokenMasks``'s partial walks: when the
        reference set at least ``min_tokens`` tokens and the two states agree on all strings of
        ``k >= 2`` bytes, tokens of at most ``k`` bytes are copied and only longer ones are walked.
        ``counts[i]`` gets the number of tokens set (an upper bound after a partial walk). No EOS bits.
        """
        walk_trie_batch(
            transitions,
            trans_c,
            states,
            self.tables,
            chains,
            ref_state,
            ref_row,
            min_tokens,
            max_pairs,
            out,
            counts,
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
    def byte_token_counts(self) -> np.ndarray:
        """``int64[128]``: how many tokens hold each ASCII byte below 0x7F (entry 127: 0x7F or any byte
        >= 0x80), to bound the cost of a walk of the tokens holding some of them
        (:meth:`TokenTrie.subset`)."""
        out = _byte_token_counts(self.summary.tok_ascii)
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
def _byte_token_counts(tok_ascii: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    out = np.zeros(128, dtype=np.int64)
    for i in range(tok_ascii.shape[0]):
        for w in range(2):
            x = tok_ascii[i, w]
            while x:
                low = x & (~x + np.uint64(1))  # the lowest set bit
                b = 0
                y = low
                while y > np.uint64(1):
                    y >>= np.uint64(1)
                    b += 1
                out[64 * w + b] += 1
                x ^= low
    return out


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


# Per tokenizer, weakly: a tokenizer's trie goes with it (see :func:`clear_token_tries`).
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
            trie.tables  # noqa: B018 - the walks' handle (and the token order walk_long uses)
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
    return _trie_of(flat, offsets, ids, (info.vocab_size + 31) // 32)


def _trie_of(flat: np.ndarray, offsets: np.ndarray, ids: np.ndarray, words: int) -> TokenTrie:
    """The trie of the sorted byte strings ``flat[offsets[i]:offsets[i + 1]]``, string ``i`` being token
    ``ids[i]``, for bitmasks of ``words`` int32 words."""
    if ids.shape[0] == 0:
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
    ids = ids.copy()
    for a in (nodes, dup_start, dup_end, ids):
        a.setflags(write=False)
    return TokenTrie(nodes, dup_start, dup_end, ids, int(max_depth), words)


def clear_token_tries() -> None:
    """Forget every tokenizer's trie (the next :func:`token_trie` of a tokenizer builds it again)."""
    with _TRIES_LOCK:
        _TRIES.clear()
