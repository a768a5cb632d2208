"""Token masks of a byte DFA: which tokens each state allows, found by trie walks and shared.

A DFA state's mask never changes, so it is computed once (one walk of the vocabulary trie, see
:mod:`constrain.masks.walks`) and cached for every matcher sharing the compiled grammar. Compiling
computes masks ahead only where that is cheap (:meth:`DFATokenMasks.precompute_ahead`): every mask of a
small DFA, and the masks nearest the start of a larger one within a few milliseconds. Masks are shared
between states with the same bounded future, reuse each other where two states agree on short strings,
and can be filled ahead on a background thread (see :class:`DFATokenMasks`).
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..automata import DFA
from ..automata.dfa import dfa_byte_classes, joint_byte_classes
from ..caches import LRUCache, register
from .sharing import (
    agreement_depth,
    bfs_state_order,
    bounded_liveness_classes,
    byte_class_transitions,
    canonical_future,
    closure_columns,
    future_key,
    plain_closure,
    split_future,
    split_future_columns,
    table_agreement,
)
from .store import MaskStore
from .trie import TokenTrie
from .walks import sparse_fill, state_chains, walk_trie_sparse, write_ids
from .worker import MASK_WORKER

# ---- token masks: shared per class of states, filled on demand and in the background -----------------

BACKGROUND_PRECOMPUTE = False
"""Default for ``DFATokenMasks.background``: fill masks on a worker thread after the first one.

Off by default: bench/bench_regex.py times fills back to back (no forward pass between them), where on
a busy 2-core runner the worker only competes for the CPU (on and off are within noise, on is worse
at the tail). Turn it on where a forward pass separates the fills (serving), see ``DFATokenMasks``."""
BACKGROUND_MAX_SECONDS = 1.0
"""Wall-clock budget of one grammar's background fill (the worker then moves on)."""
BACKGROUND_MAX_BYTES = 32 << 20
"""Memory budget of one grammar's background fill: 2,048 masks of a 128k vocabulary."""
SYNC_PARTITION_MAX_STATES = 1024
"""A foreground fill partitions DFAs up to this size at their second state (about 0.2 ms at 345)."""
SYNC_PARTITION_MAX_WORK = 100_000
"""Without the background worker, a larger DFA is partitioned in the foreground only when states x
byte classes is at most this."""
SPLIT_WALKS = True
"""Masks computed one at a time come from split walks where the state's future allows (see
:data:`SPLIT_BYTES`); off only to compare with whole walks (tests, benchmarks)."""
PARTIAL_WALK_MIN_DEPTH = 2
"""A walk reuses a reference mask when the two states agree on all strings of at least this many bytes."""
PARTIAL_WALK_MIN_LIVE = 16
"""... and only a state with at least this many live bytes tries one."""
PARTIAL_WALK_MIN_TOKENS = 2048
"""Only a reference mask with at least this many tokens is worth a partial walk (sparse walks are fast)."""
PARTIAL_WALK_MAX_PAIRS = 4096
"""Bound on the state pairs :func:`constrain.masks.sharing.agreement_depth` may expand (tens of µs)."""
LONG_WALK_MAX_TOKENS = 8192
"""A partial walk goes through the tokens longer than ``k`` one by one (:meth:`TokenTrie.walk_long`) when
there are at most this many: 2-4x faster than the trie there (llama3: 1,312 tokens over 16 bytes, 130 vs
300 µs; 27,177 over 8 bytes, 0.8-1.0 vs 1.2 ms; the two are even at 4 bytes)."""
EAGER_MAX_STATES = 256
"""``compile`` partitions a DFA with at most this many states at once (tens of µs) ..."""
EAGER_MAX_CLASSES = 64
"""... and, with at most this many mask classes, computes every class's mask in that one GIL-free call.
Over bench_regex.py's regexes this costs 0.2-1.7 ms (4 ms for quoted_string's two dense states), and
every later fill is a memcpy; first visits were 10-25 µs sparse and about 1 ms dense."""
EAGER_BUDGET_S = 0.008
"""A larger DFA that is cheap to partition gets the classes nearest its start walked within this budget
at compile time (``[^\n]{1,500}``: its start and the shared middle class, the two dense walks every
fresh matcher needs first)."""


SPLIT_BYTES = b'"\\'
"""The cut bytes of split walks: JSON's quote and escape. The mask of a dense state (a string body) is
the tokens without a cut byte, which depend only on the state's future up to the next cut byte (the
same for a string body whatever property it is in), looked up by that future
(:func:`constrain.masks.sharing.split_future`) in :data:`FUTURE_MASKS`, plus the few tokens with a cut
byte, walked from the state through a trie of only those tokens (llama3: 1,667 tokens, 3,000 nodes,
about 6 µs; a walk of the whole trie that skips the subtrees without one took 17 µs). More cut bytes
(``,:[]{}``) share more sparse states but triple the cut walk, and sparse states walk whole in
microseconds anyway."""
SPLIT_MAX_TOKENS = 8192
"""Cut bytes are taken while the tokens holding one stay within this many, so that the cut walk stays
short."""
SPARSE_MAX_IDS = 256
"""A sparse state's mask filled by ``fill_row`` is kept as its token ids when it has at most this many."""
SPLIT_MIN_LIVE_BYTES = 64
"""Only states with at least this many live bytes get split walks: sparse ones walk whole in µs."""
SPLIT_LONG_TOKENS = 512
"""Futures are compared up to the fewest bytes that leave at most this many longer tokens (llama3: 21
bytes, 474 tokens), which are stepped one by one from the state instead. Shorter futures share more:
every position of a bounded string at least that far from its bound has the same one."""
SPLIT_MAX_STATES = 512
"""A state whose future up to the next cut byte has more states than this (a large enum, a pattern with
many branches) is walked whole instead. A string body needs about 8 states a character (UTF-8)."""
PLAIN_CHECK_MAX_PAIRS = 8 * SPLIT_MAX_STATES
"""Bound on the (future, plain body) state pairs compared when a large future may be a plain body."""
FUTURE_MASKS: LRUCache[tuple[weakref.ref[TokenTrie], np.ndarray, int, int]] = LRUCache(
    "token_mask_futures",
    max_entries=4096,  # bytes: caches.FALLBACK_MAX_BYTES, or CONSTRAIN_CACHE_MAX_BYTES
    sizeof=lambda v: int(v[1].nbytes) + v[3] + 200,
    register_as="token_mask_futures",
)
"""Masks of the tokens without a cut byte, by trie and canonical future (shared by every grammar of a
tokenizer: the string body of one schema is the string body of the next)."""
_CUTS: weakref.WeakKeyDictionary[TokenTrie, tuple[np.ndarray, np.ndarray, TokenTrie] | None] = (
    weakref.WeakKeyDictionary()
)
_PLAIN_FUTURES: weakref.WeakKeyDictionary[TokenTrie, list[object]] = weakref.WeakKeyDictionary()
"""Per trie: ``[key, mask or None, count]`` of the future of an unconstrained JSON string body (every
free key and every string without ``maxLength``/``pattern``/``format`` has it). Vocabulary data, no
grammar's: kept by ``clear_caches(keep_constants=True)``, so a new schema's first string costs a lookup
and a cut walk, not a walk of the vocabulary (2-3 ms with llama3-128k)."""
register(_PLAIN_FUTURES.clear, constant=True)
PLAIN_MAX_PAIRS = 4096
"""Bound on the (DFA state, plain body state) pairs :func:`constrain.masks.sharing.plain_closure` may
meet: a string value's body is about 8, an object's free key one per prefix of its property names
(tens of µs at this bound, against 1-2 ms for a whole walk of llama3-128k)."""
PLAIN_FIRST_PAIRS = 64
"""The first, cheap bound on those pairs (a string value's body needs about 8); past it, the check
runs again to :data:`PLAIN_MAX_PAIRS`."""
_PLAIN_NO_CUT: weakref.WeakKeyDictionary[TokenTrie, tuple[np.ndarray, int]] = weakref.WeakKeyDictionary()
"""Per trie: the mask of the tokens without a cut byte, of any length, that an unconstrained JSON
string body allows (a constant of the vocabulary, like :data:`_PLAIN_FUTURES`)."""
register(_PLAIN_NO_CUT.clear, constant=True)


@functools.cache
def _plain_string_body() -> tuple[np.ndarray, int]:
    """The transitions of a JSON string of any text and the state after its opening quote (the
    expression of :func:`constrain.json_schema.strings.string_expr` over ``ANY_CHARS``)."""
    from .. import automata as A

    dfa = A.build(A.seq(A.Literal(b'"'), A.Regex(r"(?s).*", 0, True), A.Literal(b'"')), "<JSON string>")
    return dfa.transitions, int(dfa.transitions[dfa.start, ord('"')])


def _plain_future(trie: TokenTrie, cut_cols: np.ndarray, depth: int) -> list[Any]:
    """``trie``'s :data:`_PLAIN_FUTURES` entry ``[key, mask, count, table]`` (key and table computed on
    first use, the key in :func:`~constrain.masks.sharing.future_key`'s form; the mask by the caller,
    from :func:`_plain_no_cut`)."""
    got = _PLAIN_FUTURES.get(trie)
    if got is None:
        transitions, state = _plain_string_body()
        table = split_future(transitions, state, cut_cols, depth, SPLIT_MAX_STATES)
        table = canonical_future(table, depth) if table.shape[0] else table
        key = b""
        if table.shape[0]:
            byte_map, compact = future_key(table, np.arange(256, dtype=np.int64))
            key = byte_map.tobytes() + compact.tobytes()
        got = _PLAIN_FUTURES[trie] = [key, None, 0, table]
    return got


def _is_plain_future(table: np.ndarray, key: bytes, plain: list[Any], depth: int) -> bool:
    """Whether a canonical future ``table`` keeps alive the same strings of at most ``depth`` bytes as
    the plain string body: equal tables, or, where :func:`canonical_future` may have missed a merge
    (more than ``depth + 1`` states: an object's key that tracks the property names it spells), the
    same strings level by level (:func:`constrain.masks.sharing.table_agreement`)."""
    if key == plain[0]:
        return True
    if table.shape[0] <= depth + 1 or not plain[0]:
        return False  # a full merge: equal languages would have given equal tables
    return bool(table_agreement(table, plain[3], depth, PLAIN_CHECK_MAX_PAIRS) == depth)


def _plain_no_cut(trie: TokenTrie, cut_cols: np.ndarray) -> tuple[np.ndarray, int]:
    """``trie``'s :data:`_PLAIN_NO_CUT` mask (read-only uint32 words) and its token count (one walk on
    first use)."""
    got = _PLAIN_NO_CUT.get(trie)
    if got is None:
        transitions, state = _plain_string_body()
        table = transitions.copy()
        table[:, cut_cols] = -1
        words = np.zeros(trie.num_words, dtype=np.uint32)
        count = trie.walk_fast(table, state, words, state_chains(table, trie.max_depth))
        words.setflags(write=False)
        got = _PLAIN_NO_CUT[trie] = (words, count)
    return got


def _cut_of(trie: TokenTrie) -> tuple[np.ndarray, np.ndarray, TokenTrie] | None:
    """The cut bytes of ``trie`` (``bool[256]`` columns, ``uint64[2]`` bits) and the trie of its tokens
    that hold one (:meth:`TokenTrie.subset`), or None (no split walks)."""
    try:
        return _CUTS[trie]
    except KeyError:
        pass
    counts = trie.byte_token_counts
    cols = np.zeros(256, dtype=np.bool_)
    bits = np.zeros(2, dtype=np.uint64)
    total = 0
    for b in SPLIT_BYTES:
        if total + int(counts[b]) > SPLIT_MAX_TOKENS:
            continue
        total += int(counts[b])
        cols[b] = True
        bits[b >> 6] |= np.uint64(1) << np.uint64(b & 63)
    got = None
    if cols.any() and trie.num_nodes:
        tok_ascii = trie.summary.tok_ascii
        holds = ((tok_ascii[:, 0] & bits[0]) | (tok_ascii[:, 1] & bits[1])) != 0
        sub = trie.subset(holds)
        sub.tables  # noqa: B018 - built here, once per tokenizer, not in a first walk
        got = (cols, bits, sub)
    _CUTS[trie] = got
    return got


def _split_depth(trie: TokenTrie) -> int:
    """How many bytes of a state's future split walks compare (see :data:`SPLIT_LONG_TOKENS`)."""
    counts = trie.long_order[1]
    return int(np.searchsorted(-counts, -SPLIT_LONG_TOKENS)) if counts.shape[0] else 0


class _MaskCache:
    """The mutable mask store behind a frozen :class:`DFATokenMasks` (one per compiled grammar)."""

    __slots__ = (
        "by_class",
        "cancelled",
        "chains",
        "class_of",
        "counts",
        "future_classes",
        "last",
        "lock",
        "no_sync_partition",
        "not_plain",
        "num_classes",
        "partial_walks",
        "plain_states",
        "plain_walks",
        "split_misses",
        "split_ref",
        "split_walks",
        "submitted",
        "trans_c",
        "walks",
    )

    def __init__(self) -> None:
        self.by_class: dict[int, np.ndarray] = {}
        self.class_of: np.ndarray | None = None  # set once, after the partition is complete
        self.trans_c: np.ndarray | None = None  # transitions over byte classes, set with class_of
        self.chains: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (
            None  # state_chains, on the first walk
        )
        self.last = -1  # the last dense state walked (the reference for partial walks)
        self.partial_walks = 0
        self.split_walks = 0  # masks made by split walks (statistics)
        self.split_misses = 0  # ... of which the future's mask was not in FUTURE_MASKS
        self.plain_walks = 0  # masks made from the plain string body's constant (statistics)
        self.plain_states: set[int] = set()  # states whose future up to a cut byte is a plain body
        self.not_plain: set[int] = set()  # ... and states checked not to be
        self.future_classes: tuple[np.ndarray, np.ndarray] | None = None  # DFATokenMasks._future_classes
        # (tokens, canonical future as a table or in future_key's form, mask) of the last split walk:
        # the reference of the next miss
        self.split_ref: tuple[int, np.ndarray | tuple[np.ndarray, np.ndarray], np.ndarray] | None = None
        self.counts: dict[int, int] = {}  # walked state -> tokens set (about), to pick dense references
        self.num_classes = 0
        self.lock = threading.Lock()
        self.walks = 0  # trie walks done (statistics; racy increments are fine)
        self.submitted = False
        self.cancelled = False
        self.no_sync_partition = False

    def note_reference(self, state: int) -> None:
        """After a walk of ``state``: keep it as the partial-walk reference if its mask is dense.

        Only a dense reference is worth a partial walk, so a sparse state walked in between (a UTF-8
        continuation state, a closing quote) must not displace the last dense one: in
        ``[^"]{1,40}`` the next body position then reuses the previous one's mask (0.3 ms) instead
        of walking all 128k tokens again (2 ms)."""
        if self.last < 0 or self.counts.get(state, 0) >= PARTIAL_WALK_MIN_TOKENS:
            self.last = state


class DFATokenMasks(MaskStore):
    """The token masks of a byte DFA: the :class:`~constrain.compiler.TokenAutomaton` of a regular grammar.

    Token masks are computed on first use and cached; three mechanisms keep the first mask cheap and
    make later ones mostly cache hits or short walks:

    * **Shared per class.** A token is allowed at a state iff walking its bytes from there never hits
      the dead state, so the mask depends only on which byte strings of at most ``trie.max_depth``
      bytes stay alive (plus acceptance, for EOS). At the second distinct state visited, the states
      are partitioned by that bounded liveness (:func:`constrain.masks.sharing.bounded_liveness_classes`,
      about 1.5 ms for the 4,001 states of ``[^\\n]{1,500}``, tens of µs for most regexes; large
      DFAs only where cheap or in the background, see ``_partition_here``), and one
      walk then serves a whole class: the 4,001 counter states share about 1,000 masks, and every
      position more than 128 characters from the bound shares one. The next state after a token is
      still found by stepping the DFA (:meth:`GrammarMatcher.accept_token`), so classes never change
      what a matcher accepts, only where masks come from.
    * **Partial walks.** A new class's mask is built from the last dense mask walked when the two
      states keep the same strings of up to ``k >= 2`` bytes alive
      (:func:`constrain.masks.sharing.agreement_depth`): tokens of at most ``k`` bytes are copied, only longer
      ones are walked. Near a counter's bound (``[^\\n]{1,500}`` after 400 characters) this turns a
      1.3 ms walk into 30-150 µs. Walks also skip, exactly, subtrees of the trie that a self-loop or
      a counter run keeps alive (:func:`constrain.masks.walks.walk_trie_fast`).
    * **Split walks.** A dense state (a string body: at least :data:`SPLIT_MIN_LIVE_BYTES` live
      bytes) takes its tokens without a quote or backslash from its future up to the next one
      (:func:`constrain.masks.sharing.split_future`, merged to a canonical table), looked up in
      :data:`FUTURE_MASKS`, which every grammar of the tokenizer shares: the body of a string property
      is the same wherever it is, and so is an object key that may be any string. Only the ~1,700
      tokens with a quote or backslash, and the few longest tokens (:data:`SPLIT_LONG_TOKENS`), are
      walked from the state itself (tens of µs instead of a
      1-2 ms walk of the vocabulary); near a ``maxLength`` bound, a new future copies the short
      tokens of the previous one (:meth:`_future_mask`). Exact: the two parts are the tokens with
      and without a cut byte, each computed exactly.
    * **Sparse first visits** (:meth:`fill_row`, the matcher's hot path, in a DFA not partitioned
      into classes). A state with few live bytes is walked in one kernel call straight into the
      caller's bitmask row, and kept as its token ids (at most :data:`SPARSE_MAX_IDS`), not as a
      16 KB row (llama3): a fresh row per state costs page faults about as long as the walk, and
      the big DFAs of real schemas have thousands of such states. :meth:`mask` builds the row from
      the ids when one is asked for.
    * **Background fill** (``background=True``, default :data:`BACKGROUND_PRECOMPUTE`). After the
      first mask, a worker thread computes one state per class in breadth-first order from the start,
      in batches of GIL-free walks, so that the masks a sequence will need are usually ready before
      it gets there. In decoding, a
      mask is needed once per forward pass (milliseconds on a GPU), so this work hides behind the
      model; the walks are numba kernels that release the GIL. A synchronous fill that finds no mask
      computes it itself (both threads then compute the same immutable array; the first one stored
      wins). Bounded by :data:`BACKGROUND_MAX_SECONDS` and :data:`BACKGROUND_MAX_BYTES` per grammar;
      it stops when the grammar is garbage-collected, on :meth:`cancel_background`, and for all
      grammars on :func:`stop_background_precompute`. The worker thread runs at the lowest CPU
      priority (Linux), so that on a busy machine it yields to the threads serving requests.
      Measurements of on versus off are in bench/README.md.
    * ``precompute()`` fills every class now.
    """

    def __init__(
        self, dfa: DFA, trie: TokenTrie, eos_ids: Iterable[int], background: bool | None = None
    ) -> None:
        super().__init__(trie, eos_ids)
        self.dfa = dfa
        self.start = dfa.start
        self.background = background
        self._cache = _MaskCache()
        # A flat int32 memoryview reads transitions at ~30 ns each, with no copy.
        self._trans = dfa.transitions.data.cast("B").cast("i")
        self._accepting = dfa.accepting
        # for the first visit of a sparse state (a few µs in all): Python-level lookups
        self._final = dfa.accepting.tobytes()
        self._transitions = dfa.transitions
        self._tables = trie.tables
        self._num_words = trie.num_words
        # sparse states' masks as token ids (fill_row); materialised into ``_masks`` when asked for a row
        self._sparse: dict[int, np.ndarray] = {}
        self._cut = _cut_of(trie) if SPLIT_WALKS else None
        self._closure_columns: np.ndarray | None = None  # the bytes plain_closure reads (set on first use)

    # ---- the TokenAutomaton protocol -------------------------------------------------------------
    def step(self, state: int, data: bytes) -> int:
        """The state after ``data`` from ``state``, or -1 where a byte is rejected."""
        trans = self._trans
        for b in data:
            state = trans[(state << 8) | b]
            if state < 0:
                return -1
        return state

    def is_final(self, state: int) -> bool:
        """Whether the input may end at ``state``."""
        return bool(self._accepting[state])

    def live_bytes(self, state: int) -> np.ndarray:
        """The bytes that may follow at ``state``, ascending."""
        return np.flatnonzero(self.dfa.transitions[state] >= 0)

    def mask(self, state: int) -> np.ndarray:
        """The read-only int32 bitmask row of ``state`` (EOS bits set where the state accepts)."""
        mask = self._masks.get(state)
        if mask is None:
            ids = self._sparse.get(state)
            if ids is None:
                return self._compute_mask(state)
            row = np.empty(self._num_words, dtype=np.int32)
            write_ids(ids, row)
            row.setflags(write=False)
            mask = self._masks.setdefault(state, row)
            self._sparse.pop(state, None)
        return mask

    def fill_row(self, state: int, out: np.ndarray) -> None:
        """Write the mask of ``state`` into ``out`` (a writable, contiguous int32 row).

        What :meth:`mask` gives, without keeping a full row for a sparse state: its first visit walks
        straight into ``out`` and keeps only its token ids (at most :data:`SPARSE_MAX_IDS`), later
        visits write them back. A full row kept per state costs a fresh 16 KB per first visit (llama3),
        and on a VM the page faults of fresh memory cost as much as the walk (about 2.5 µs of 10)."""
        mask = self._masks.get(state)
        if mask is not None:
            out[...] = mask
            return
        ids = self._sparse.get(state)
        if ids is not None:
            write_ids(ids, out)
            return
        cache = self._cache
        if cache.class_of is not None or not self._masks:
            # masks shared by class, or the first one (which starts partitioning or the background fill)
            out[...] = self._compute_mask(state)
            return
        count, ids = sparse_fill(
            self._transitions, state, self._tables, self._chains(), PARTIAL_WALK_MIN_LIVE, SPARSE_MAX_IDS,
            self._eos_ids, self._final[state] != 0, out,
        )  # fmt: skip
        if count < 0:  # a dense state, with ``-1 - count`` live bytes
            out[...] = self._compute_mask(state, -1 - count)
            return
        cache.walks += 1
        cache.counts[state] = count
        if count > SPARSE_MAX_IDS:
            row = out.copy()
            row.setflags(write=False)
            self._masks.setdefault(state, row)
        else:
            self._sparse.setdefault(state, ids)

    @property
    def num_cached_states(self) -> int:
        """How many states have their token mask at hand so far (as a row or as token ids)."""
        return len(self._masks) + len(self._sparse)

    @property
    def num_mask_classes(self) -> int | None:
        """Number of mask-sharing classes of states, or None before the partition is computed."""
        return self._cache.num_classes if self._cache.class_of is not None else None

    @property
    def num_walks(self) -> int:
        """Trie walks done so far, in the foreground and the background (for tests and benchmarks)."""
        return self._cache.walks

    def mask_classes(self) -> np.ndarray:
        """The mask-sharing class of every state (computes the partition if needed); see the class doc."""
        self._ensure_classes()
        class_of = self._cache.class_of
        if class_of is None:  # pragma: no cover - _ensure_classes sets it
            raise RuntimeError("mask classes were not computed")
        return class_of

    def precompute(self) -> int:
        """Compute the mask of every DFA state now (one walk per class); returns the number of states."""
        for s in range(self.dfa.num_states):
            self.mask(s)
        return self.dfa.num_states

    def cancel_background(self) -> None:
        """Stop this grammar's background fill after its current walk (masks stay computed on demand)."""
        self._cache.cancelled = True

    # ---- internals -----------------------------------------------------------------------------
    def _compute_mask(self, state: int, live: int = -1) -> np.ndarray:
        """The mask of ``state``, by class where classes are known (see the class docstring); ``live``:
        its number of live bytes where the caller counted them (-1: not known)."""
        cache = self._cache
        first = not self._masks and not self._sparse
        if (
            not first
            and cache.class_of is None
            and not cache.no_sync_partition
            and self.dfa.num_states > 1
            and self._partition_here()
        ):
            self._ensure_classes()  # the second distinct state: share masks from now on
        class_of = cache.class_of
        if class_of is not None:
            c = int(class_of[state])
            mask = cache.by_class.get(c)
            if mask is None:
                mask = cache.by_class.setdefault(c, self._walk(state, cache.last, live))
                cache.note_reference(state)
        else:
            mask = self._walk(state, live=live)
            cache.note_reference(state)
        # Racing threads compute the same array; whichever lands first is kept.
        kept = self._masks.setdefault(state, mask)
        if first and not cache.submitted:
            cache.submitted = True
            if self._background_on() and self.dfa.num_states > 1:
                MASK_WORKER.submit(functools.partial(_background_fill, weakref.ref(self)))
        return kept

    def precompute_ahead(self) -> int:
        """Masks computed at compile time, nearest states first; returns how many classes were walked.

        A DFA with at most :data:`EAGER_MAX_CLASSES` mask classes gets every mask now; a larger one
        that is cheap to partition gets the classes nearest the start within :data:`EAGER_BUDGET_S`
        (the start of a long string body, where the first fills would otherwise walk the dense masks
        of a fresh matcher); anything else stays lazy. Walks run breadth-first from the start in
        GIL-free batches, each walk reusing the previous dense one where the two states agree on short
        strings (the partial walks of the class docstring). :func:`constrain.compile` calls this.
        """
        dfa = self.dfa
        if dfa.num_states > EAGER_MAX_STATES and not self._partition_here():
            return 0
        self._ensure_classes()
        cache = self._cache
        class_of, trans_c = cache.class_of, cache.trans_c
        if class_of is None or trans_c is None:  # pragma: no cover - set by _ensure_classes
            return 0
        everything = cache.num_classes <= EAGER_MAX_CLASSES
        deadline = time.perf_counter() + EAGER_BUDGET_S
        with cache.lock:
            chains = self._chains()
            order = bfs_state_order(dfa)
            _, first = np.unique(class_of[order], return_index=True)
            reps = order[np.sort(first)].astype(np.int64)
            done = self._split_ahead(reps, everything, deadline)
            if done:
                reps = reps[~np.isin(reps, done)]
            walked = 0
            prev, prev_row = -1, np.zeros(self.num_words, dtype=np.uint32)
            size = reps.shape[0] if everything else 2
            started = time.perf_counter()
            while walked < reps.shape[0] and (everything or time.perf_counter() < deadline):
                batch = reps[walked : walked + size]
                out, counts = self._walk_batch(batch, trans_c, chains, prev, prev_row)
                # A writable copy: a read-only row would be a second numba signature (compiled again).
                prev, prev_row = int(batch[-1]), out[-1].copy()
                masks = out.view(np.int32)
                for i, st in enumerate(batch.tolist()):
                    cache.by_class[int(class_of[st])] = masks[i]
                    cache.counts[st] = int(counts[i])
                walked += batch.shape[0]
                if not everything:
                    # Each call costs tens of µs besides its walks: batches grow while the pace measured
                    # so far says the next one still ends by the deadline.
                    now = time.perf_counter()
                    pace = (now - started) / walked
                    size = max(2, min(2 * size, int((deadline - now) / max(pace, 1e-7))))
            cache.walks += walked
            for st in reps[:walked].tolist():
                cache.note_reference(st)
            walked += len(done)
            if everything:
                # Every state whose class was walked gets its row now, so each fill is one dict lookup
                # and a copy.
                for st in range(dfa.num_states):
                    m = cache.by_class.get(int(class_of[st]))
                    if m is not None:
                        self._masks[st] = m
                cache.submitted = True  # nothing left for the background worker
        return walked

    def _split_ahead(self, reps: np.ndarray, everything: bool, deadline: float) -> list[int]:
        """:meth:`precompute_ahead`'s dense states (string bodies) by split walks, which are mostly
        lookups in :data:`FUTURE_MASKS` or the plain body's constant (tens of µs instead of a walk of the
        vocabulary); returns the states done. Called with the lock held and the partition computed."""
        cache = self._cache
        class_of = cache.class_of
        if self._cut is None or class_of is None:
            return []
        trans = self.dfa.transitions
        live = np.count_nonzero(trans[reps] >= 0, axis=1)
        done: list[int] = []
        for st in reps[live >= SPLIT_MIN_LIVE_BYTES].tolist():
            if not everything and time.perf_counter() >= deadline:
                break
            got = self._dense_walk(st)
            if got is None:
                continue
            words, count = got
            if self.dfa.accepting[st]:
                for w, bit in self._eos_words:
                    words[w] |= np.uint32(bit)
            mask = words.view(np.int32)
            mask.setflags(write=False)
            cache.by_class[int(class_of[st])] = mask
            cache.counts[st] = count
            cache.walks += 1
            cache.note_reference(st)
            done.append(st)
        return done

    def _walk_batch(
        self,
        states: np.ndarray,
        trans_c: np.ndarray,
        chains: tuple[np.ndarray, np.ndarray, np.ndarray],
        prev: int,
        prev_row: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The read-only uint32 masks (EOS bits set) of ``states`` in one GIL-free call, and how many
        tokens each allows; ``prev`` / ``prev_row``: the state walked just before, as a reference."""
        out = np.zeros((states.shape[0], self.num_words), dtype=np.uint32)
        counts = np.zeros(states.shape[0], dtype=np.int64)
        self.trie.walk_batch(
            self.dfa.transitions,
            trans_c,
            states,
            chains,
            out,
            counts,
            prev,
            prev_row,
            PARTIAL_WALK_MIN_TOKENS,
            PARTIAL_WALK_MAX_PAIRS,
        )
        accepting = np.flatnonzero(self.dfa.accepting[states])
        for w, bit in self._eos_words:
            out[accepting, w] |= np.uint32(bit)
        out.setflags(write=False)
        return out, counts

    def _background_on(self) -> bool:
        return BACKGROUND_PRECOMPUTE if self.background is None else self.background

    def _partition_here(self) -> bool:
        """Whether a foreground fill should partition the states now (see ``SYNC_PARTITION_*``).

        Small DFAs always; larger ones are left to the background worker when it is on, else
        partitioned when states x byte classes is small enough (the 4,001-state ``[^\\n]{1,500}``
        has 12 byte classes: about 1.5 ms), and never otherwise (a 3,000-state JSON Schema DFA with
        ~100 byte classes takes about 17 ms and shares no mask). Large DFAs then walk per state.
        """
        cache = self._cache
        n = self.dfa.num_states
        if n <= SYNC_PARTITION_MAX_STATES:
            return True
        if self._background_on() or cache.no_sync_partition:
            cache.no_sync_partition = True  # the worker partitions (a fill does not ask again)
            return False
        if cache.trans_c is None:
            cache.trans_c = byte_class_transitions(self.dfa)
        if n * cache.trans_c.shape[1] <= SYNC_PARTITION_MAX_WORK:
            return True
        cache.no_sync_partition = True
        return False

    def _walk(self, state: int, ref: int = -1, live: int = -1) -> np.ndarray:
        """The mask of ``state`` by a trie walk: a plain or split walk for a dense state
        (:meth:`_dense_walk`), else a whole one. With ``ref`` (a state whose class mask is known and
        dense), a partial walk when the two keep the same strings of ``k >= 2`` bytes alive: tokens of
        at most ``k`` bytes are copied from the reference mask, only longer ones are walked. ``live``:
        the state's number of live bytes where the caller knows it is dense (a kernel call saved)."""
        cache = self._cache
        chains = self._chains()
        words = None  # a dense walk brings its own
        if live >= PARTIAL_WALK_MIN_LIVE:
            count = -1 - live
        else:
            # a sparse state walks whole in µs, in one kernel call: no agreement check against a reference
            words = np.zeros(self._num_words, dtype=np.uint32)
            count = walk_trie_sparse(
                self._transitions, state, self._tables, chains, PARTIAL_WALK_MIN_LIVE, words
            )
        if count < 0:
            got = None
            if self._cut is not None and -1 - count >= SPLIT_MIN_LIVE_BYTES:
                got = self._dense_walk(state)
            if got is None:
                got = self._whole_or_partial_walk(
                    state, ref, words if words is not None else np.zeros(self._num_words, dtype=np.uint32)
                )
            words, count = got
        assert words is not None
        if self._final[state]:
            for w, bit in self._eos_words:
                words[w] |= np.uint32(bit)
        mask = words.view(np.int32)
        mask.setflags(write=False)
        cache.walks += 1
        cache.counts[state] = count
        return mask

    def _chains(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`state_chains` of the DFA, computed on the first walk."""
        chains = self._cache.chains
        if chains is None:
            chains = self._cache.chains = state_chains(self.dfa.transitions, self.trie.max_depth)
        return chains

    def _whole_or_partial_walk(self, state: int, ref: int, words: np.ndarray) -> tuple[np.ndarray, int]:
        """The mask of ``state`` (writable uint32 words, no EOS bits) by a walk of the whole trie into
        ``words`` (zeros), or a partial one from ``ref``'s mask (see :meth:`_walk`), and how many tokens
        (about)."""
        cache = self._cache
        trie = self.trie
        chains = self._chains()
        if ref >= 0 and cache.trans_c is not None and cache.class_of is not None:
            ref_mask = cache.by_class.get(int(cache.class_of[ref]))
            # Sparse masks walk in microseconds: only a dense reference is worth the check.
            if ref_mask is not None and cache.counts.get(ref, 0) >= PARTIAL_WALK_MIN_TOKENS:
                k = agreement_depth(cache.trans_c, state, ref, trie.max_depth, PARTIAL_WALK_MAX_PAIRS)
                if k >= PARTIAL_WALK_MIN_DEPTH:
                    # EOS is dropped by the AND: no EOS id is in the trie.
                    words = ref_mask.view(np.uint32) & trie.short_mask(k)
                    if trie.long_order[1][min(k, trie.max_depth)] <= LONG_WALK_MAX_TOKENS:
                        count = trie.walk_long(self.dfa.transitions, state, words, chains, k)
                    else:
                        count = trie.walk_fast(self.dfa.transitions, state, words, chains, k)
                    cache.partial_walks += 1
                    return words, count + cache.counts[ref]  # an upper bound is enough here
        return words, trie.walk_fast(self.dfa.transitions, state, words, chains)

    def _dense_walk(self, state: int) -> tuple[np.ndarray, int] | None:
        """The mask of a dense state by :meth:`_plain_walk` or else :meth:`_split_walk`; None when
        neither applies (walk whole)."""
        got = self._plain_walk(state, PLAIN_FIRST_PAIRS)
        if got is None and state not in self._cache.not_plain:
            got = self._plain_walk(state, PLAIN_MAX_PAIRS)
        return got if got is not None else self._split_walk(state)

    def _plain_walk(self, state: int, max_pairs: int) -> tuple[np.ndarray, int] | None:
        """The mask of a state whose future up to the next cut byte is an unconstrained string body at
        every length (:func:`constrain.masks.sharing.plain_closure`): the vocabulary's constant mask of
        such a body (:data:`_PLAIN_NO_CUT`) plus the tokens with a cut byte, walked from the state in
        the trie of those tokens (:func:`_cut_of`). None for any other state. Writable uint32 words, no
        EOS bits, and how many tokens (about).

        A string value's body and an object's free key (whose DFA also spells the property names) are
        such states; their split walks otherwise compare futures up to a depth, and walk the longest
        tokens one by one, or walk whole where the names give the future too many states.
        ``max_pairs`` bounds the check (None past it): a string value's body needs a few pairs, a
        free key one per name prefix (a bounded string one per position, only to differ at its
        bound; measured over the MaskBench sample, checking first still costs least)."""
        cut = self._cut
        if cut is None:  # pragma: no cover - checked by the caller
            return None
        cache = self._cache
        if state not in cache.plain_states:
            if state in cache.not_plain:
                return None
            transitions, p0 = _plain_string_body()
            verdict, met = plain_closure(
                self.dfa.transitions, state, transitions, p0, self._plain_columns(), max_pairs
            )
            if verdict < 0 and max_pairs < PLAIN_MAX_PAIRS:
                return None  # undecided: the caller checks again with the large bound
            if verdict <= 0:
                # Not plain, or undecided at the large bound; the states met are most likely the same
                # (the next positions of a long bounded string): they skip the check, only a shortcut lost.
                cache.not_plain.update(met.tolist())
                return None
            cache.plain_states.update(met.tolist())
        base, count = _plain_no_cut(self.trie, cut[0])
        words = base.copy()
        cache.plain_walks += 1
        return words, count + cut[2].walk(self.dfa.transitions, state, words)

    def _plain_columns(self) -> np.ndarray:
        """:func:`constrain.masks.sharing.closure_columns` against the plain body (set on first use)."""
        columns = self._closure_columns
        if columns is None:
            assert self._cut is not None
            columns = closure_columns(self.dfa, _plain_string_body()[0], self._cut[0])
            self._closure_columns = columns
        return columns

    def _future_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """The byte classes split walks read (:func:`~constrain.masks.sharing.split_future_columns`):
        the DFA's, with each cut byte apart; ``(class_of, columns)``, ``class_of[b]`` the column of byte
        ``b`` (-1 for a cut byte) and ``columns`` each class's lowest byte, ascending (set on first use)."""
        got = self._cache.future_classes
        if got is None:
            assert self._cut is not None
            cut = self._cut[0]
            classes = joint_byte_classes(dfa_byte_classes(self.dfa), cut.astype(np.int64))
            live = np.flatnonzero(~cut)
            _, first, inverse = np.unique(classes[live], return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.shape[0])
            class_of = np.full(256, -1, dtype=np.int64)
            class_of[live] = rank[np.asarray(inverse).reshape(-1)]
            got = self._cache.future_classes = (class_of, live[first[order]].astype(np.int64))
        return got

    def _split_walk(self, state: int) -> tuple[np.ndarray, int] | None:
        """The mask of ``state`` from three parts: the tokens of at most ``_split_depth`` bytes without
        a cut byte (the plain body's where the state agrees with it to that depth, checked by
        :func:`~constrain.masks.sharing.plain_closure` with a depth bound, a string bounded further
        on; else by the state's future up to the next cut byte, from :data:`FUTURE_MASKS` or
        :meth:`_future_mask`), the tokens with a cut byte (walked in their own trie) and the longer
        tokens (:meth:`TokenTrie.walk_long_plain`); None when the future is too large
        (:data:`SPLIT_MAX_STATES`). Writable uint32 words, no EOS bits, and how many tokens (about)."""
        cut = self._cut
        if cut is None:  # pragma: no cover - checked by the caller
            return None
        trie = self.trie
        depth = _split_depth(trie)
        cache = self._cache
        plain = _plain_future(trie, cut[0], depth)
        transitions, p0 = _plain_string_body()
        if plain[1] is None:  # tokens of at most ``depth`` bytes that the plain body allows
            short = _plain_no_cut(trie, cut[0])[0] & trie.short_mask(depth)
            short.setflags(write=False)
            plain[1], plain[2] = short, int(np.unpackbits(short.view(np.uint8)).sum())
            cache.split_misses += 1
        plain_columns = self._plain_columns()
        hit: tuple[weakref.ref[TokenTrie], np.ndarray, int, int] | None
        table: np.ndarray | tuple[np.ndarray, np.ndarray]
        bound = PLAIN_CHECK_MAX_PAIRS
        if plain_closure(self.dfa.transitions, state, transitions, p0, plain_columns, bound, depth)[0] == 1:
            # The plain body up to the split depth (a string bounded further on): its mask, without a
            # future table (tens of µs each for the hundreds of states of a long bound) or a lookup.
            hit = (weakref.ref(trie), plain[1], plain[2], 0)
            table = plain[3]
        else:
            class_of, columns = self._future_classes()
            raw = split_future_columns(self.dfa.transitions, state, columns, depth, SPLIT_MAX_STATES)
            if raw.shape[0] == 0:
                return None
            # First by the future as met (the same format or pattern in another property of this
            # schema or another has the same states up to its closing quote), then in canonical form.
            raw_map, raw_compact = future_key(raw, class_of)
            raw_key = (id(trie), depth, b"as met" + raw_map.tobytes() + raw_compact.tobytes())
            hit = FUTURE_MASKS.get(raw_key)
            table = (raw_compact, raw_map)
            if hit is None or hit[0]() is not trie:
                byte_map, compact = future_key(canonical_future(raw, depth), class_of)
                key = (id(trie), depth, byte_map.tobytes() + compact.tobytes())
                hit = FUTURE_MASKS.get(key)
                table = (compact, byte_map)  # the 256-column table, spelled out where needed
                if hit is None or hit[0]() is not trie:
                    table = np.ascontiguousarray(compact[:, byte_map])
                    if _is_plain_future(table, key[2], plain, depth):  # an unconstrained string body
                        hit = (weakref.ref(trie), plain[1], plain[2], 0)
                    else:
                        base, n = self._future_mask(table, depth)
                        hit = FUTURE_MASKS.put(key, (weakref.ref(trie), base, n, compact.nbytes + 256))
                        cache.split_misses += 1
                if hit[1] is not plain[1]:
                    FUTURE_MASKS.put(raw_key, (hit[0], hit[1], hit[2], raw_compact.nbytes + 256))
        cache.split_walks += 1
        cache.split_ref = (hit[2], table, hit[1])
        words = hit[1].copy()
        count = hit[2] + cut[2].walk(self.dfa.transitions, state, words)
        if trie.max_depth > depth:
            count += trie.walk_long_plain(self.dfa.transitions, state, words, depth)
        return words, count

    def _future_mask(self, table: np.ndarray, depth: int) -> tuple[np.ndarray, int]:
        """The read-only mask (uint32 words) of the tokens of at most ``depth`` bytes that ``table`` (a
        :func:`constrain.masks.sharing.canonical_future`) keeps alive from 0, and how many (about).

        Reuses the last split mask of this grammar when the two futures agree on strings of ``k >= 2``
        bytes (:func:`constrain.masks.sharing.table_agreement`): tokens of at most ``k`` bytes are
        copied, only longer ones walked. Along a bounded string body (``maxLength``) each position is
        a new future, and this turns a walk of the vocabulary into one of the tokens longer than the
        characters left."""
        trie = self.trie
        chains = state_chains(table, trie.max_depth)
        ref = self._cache.split_ref
        words = None
        if ref is not None and ref[0] >= PARTIAL_WALK_MIN_TOKENS:
            ref_table = ref[1] if isinstance(ref[1], np.ndarray) else ref[1][0][:, ref[1][1]]
            k = table_agreement(table, ref_table, depth, PARTIAL_WALK_MAX_PAIRS)
            if k >= PARTIAL_WALK_MIN_DEPTH:
                words = ref[2] & trie.short_mask(k)
                if k >= depth:
                    n = ref[0]
                elif trie.long_order[1][k] <= LONG_WALK_MAX_TOKENS:
                    n = ref[0] + trie.walk_long(table, 0, words, chains, k)
                else:
                    n = ref[0] + trie.walk_fast(table, 0, words, chains, k)
                self._cache.partial_walks += 1
        if words is None:
            words = np.zeros(self.num_words, dtype=np.uint32)
            n = trie.walk_fast(table, 0, words, chains)
        if depth < trie.max_depth:
            # Merged states may loop past ``depth`` (a counter's far positions): longer tokens come
            # from the DFA itself.
            words &= trie.short_mask(depth)
        words.setflags(write=False)
        return words, n

    def _ensure_classes(self) -> None:
        cache = self._cache
        if cache.class_of is not None:
            return
        with cache.lock:  # one thread partitions, the other waits (the kernel releases the GIL)
            if cache.class_of is not None:
                return
            trans_c = cache.trans_c
            if trans_c is None:
                trans_c = byte_class_transitions(self.dfa)
            class_of, num = bounded_liveness_classes(self.dfa, self.trie.max_depth, trans_c)
            class_of.setflags(write=False)
            cache.trans_c = trans_c
            for s, m in list(self._masks.items()):
                cache.by_class.setdefault(int(class_of[s]), m)
            cache.num_classes = int(num)
            cache.class_of = class_of  # published last: readers see a complete partition


def _background_fill(ref: weakref.ref[DFATokenMasks], stop: threading.Event) -> None:
    """Worker job: the masks of one state per class, breadth-first from the start, within the budgets.

    Walks run in batches, each one GIL-free kernel call (:meth:`TokenTrie.walk_batch`) that writes
    into a fresh array; the GIL is taken only to publish a batch (a few µs), so the threads serving
    requests are barely slowed. Batches start small (the first masks are wanted soonest) and grow
    while they stay under 5 ms. The grammar is held only during a batch, so a dropped grammar ends
    the job at the next check.
    """
    g = ref()
    if g is None or g._cache.cancelled:
        return
    deadline = time.monotonic() + BACKGROUND_MAX_SECONDS
    g._ensure_classes()
    cache = g._cache
    class_of, trans_c = cache.class_of, cache.trans_c
    if class_of is None or trans_c is None:  # pragma: no cover - set by _ensure_classes
        return
    chains = g._chains()
    order = bfs_state_order(g.dfa)
    _, first = np.unique(class_of[order], return_index=True)
    reps = order[np.sort(first)]  # one state per class, nearest first
    budget = max(1, BACKGROUND_MAX_BYTES // (4 * g.num_words))
    words = g.num_words
    del g
    pos, size = 0, 4
    prev, prev_row = -1, np.zeros(words, dtype=np.uint32)
    while pos < reps.shape[0] and budget > 0:
        if stop.is_set() or cache.cancelled or time.monotonic() > deadline:
            return
        g = ref()
        if g is None:
            return
        batch = [int(s) for s in reps[pos : pos + size] if int(class_of[s]) not in cache.by_class]
        pos += size
        if not batch:
            continue
        states = np.array(batch[:budget], dtype=np.int64)
        t = time.monotonic()
        out, counts = g._walk_batch(states, trans_c, chains, prev, prev_row)
        prev, prev_row = int(states[-1]), out[-1].copy()  # writable: one numba signature
        masks = out.view(np.int32)
        for i, s in enumerate(batch[: states.shape[0]]):
            cache.by_class.setdefault(int(class_of[s]), masks[i])
            cache.counts[s] = int(counts[i])
        cache.walks += states.shape[0]
        budget -= states.shape[0]
        if time.monotonic() - t < 0.005:
            size = min(size * 2, 64)
        del g


def stop_background_precompute(timeout: float = 10.0) -> bool:
    """Stop the background mask worker (all grammars) and wait for it; True when it has exited.

    Masks keep being computed on demand; the next compiled grammar to fill a mask starts it again.
    """
    return MASK_WORKER.stop(timeout)
