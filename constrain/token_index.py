"""Token-level index: which tokens a DFA state allows, found by walking a vocabulary trie.

The vocabulary's byte strings (special tokens excluded) are sorted and laid out as a trie in DFS
preorder: node ``n`` adds byte ``node_byte[n]`` at depth ``node_depth[n]``; its subtree ends just before
``node_skip[n]``; the tokens spelled by the path to ``n`` are
``sorted_ids[node_tok_start[n]:node_tok_end[n]]``. One walk from a DFA state visits each node whose
path stays alive and jumps over every subtree whose first byte kills the walk, so sparse states
(``[0-9]``) cost microseconds and dense ones (inside a free-text string) one pass over the trie.

The walk is a numba kernel that releases the GIL, so several threads can fill the cache at once.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

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
