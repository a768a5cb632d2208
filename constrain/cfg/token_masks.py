"""Token masks for the Earley configuration automaton: a lookup for the common case, a walk for the rest.

A configuration ``c`` (see :mod:`constrain.cfg.earley`) holds lexemes in progress, each a terminal
``T`` in DFA state ``q``. A token is allowed at ``c`` in one of two ways:

* it stays inside one lexeme: ``q`` survives the token's bytes in ``T``'s DFA. Every configuration
  can be completed, so this needs no parser at all. These *lexer-only* tokens depend on ``(T, q)``
  alone; one trie walk per ``(T, q)`` finds them, cached for the grammar's lifetime (XGrammar's
  context-independent tokens).
* it ends a lexeme strictly inside the token and goes on past it (``",`` after a string, ``1]``).
  Only these *crossing* tokens need the parser. The same walk per ``(T, q)`` marks the candidates:
  a lexeme ends only before the byte that kills it (:mod:`constrain.cfg.earley`'s lexing rule), so
  a candidate is a token with a byte that kills ``T`` right after an accepting state. Each lexeme
  state's candidates are laid out once as a sub-trie of the vocabulary, appended to one node array
  (the arena), so a set of lexemes is a list of ranges; where a lexeme is accepting already, the
  tokens whose first byte kills it all cross, and their first-byte subtrees of the full trie are
  walked in place instead. At run time those ranges are walked through the configuration automaton
  (``trans``, lazily extended), skipping every subtree whose first byte dies (llguidance's trie walk
  with parser checks at lexeme boundaries, restricted to the few tokens that can cross one).

The mask of a configuration is the lexer-only union plus the walk's result, plus EOS where the
input may end; it is cached per configuration, so a configuration seen again costs one memcpy.

A configuration whose lexemes are all complete (a finished ``*``, ``":"`` or trailing whitespace)
steps exactly like the *fresh* configuration one position past their ends
(its *fresh twin*, :func:`~constrain.cfg.fast_step.fresh_twin`), so it takes that one's mask. That
turns the walk over every token into lexer-only lookups for the fresh lexemes: after an operator
every identifier and number token is one ``(T, start)`` set, the same at every position.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from ..grammar import Grammar
from ..masks.store import MaskStore
from ..masks.trie import TokenTrie, token_trie
from .earley import EarleyAutomaton
from .fast_step import BYTE_CLASS, CFG_ROW, NEED_ROOM, TRANS, UNKNOWN, step, tables_of

if TYPE_CHECKING:
    from ..compiler import CompiledGrammar
    from ..tokenizer_info import TokenizerInfo


@numba.njit(cache=True, nogil=True)
def lexeme_token_sets(
    transitions: np.ndarray,
    accepting: np.ndarray,
    state: int,
    nodes: np.ndarray,
    dup_start: np.ndarray,
    dup_end: np.ndarray,
    sorted_ids: np.ndarray,
    max_depth: int,
    inside: np.ndarray,
) -> np.ndarray:  # pragma: no cover - numba
    """Lexer-only tokens of ``(transitions, state)`` into ``inside``; returns the crossing sub-trie.

    Plain loops over the preorder trie: a node whose byte keeps the lexeme alive marks its tokens in
    ``inside``. A node whose byte kills the lexeme in an accepting state (the lexeme ends just
    above it and the byte starts what follows) starts a subtree of crossing candidates: the subtree
    and the path to it are kept, renumbered into a smaller preorder trie (``int32[M, 4]``, same
    layout as the input).
    Tokens on an alive path are lexer-only, so they never need the parser. A first byte that kills
    the lexeme (``state`` itself accepting) is left out: such a token's whole first-byte subtree of
    the vocabulary crosses, and is walked in place (see :func:`walk_configs`), not copied.
    """
    total = nodes.shape[0]
    stack = np.empty(max_depth + 1, dtype=np.int32)
    path = np.empty(max_depth + 1, dtype=np.int64)
    emitted = np.zeros(max_depth + 1, dtype=np.bool_)
    kept = np.empty(total, dtype=np.int64)
    nkept = 0
    stack[0] = state
    n = 0
    while n < total:
        d = nodes[n, 1]
        nxt = transitions[stack[d], nodes[n, 0]]
        if nxt < 0:
            end = nodes[n, 2]
            if d > 0 and accepting[stack[d]]:
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
        _mark(nodes[n, 3], dup_start, dup_end, sorted_ids, inside)
        n += 1
    out = np.empty((nkept, 4), dtype=np.int32)
    sel = kept[:nkept]
    for j in range(nkept):
        k = sel[j]
        out[j, 0] = nodes[k, 0]
        out[j, 1] = nodes[k, 1]
        out[j, 2] = np.searchsorted(sel, nodes[k, 2])
        out[j, 3] = nodes[k, 3]
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _mark(
    tid: int, dup_start: np.ndarray, dup_end: np.ndarray, sorted_ids: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - numba
    if tid >= 0:
        out[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
    elif tid <= -2:
        k = -2 - tid
        for i in range(dup_start[k], dup_end[k]):
            t = sorted_ids[i]
            out[t >> 5] |= np.uint32(1) << np.uint32(t & 31)


@numba.njit(cache=True, nogil=True)
def walk_configs(
    handle: Any,
    config: int,
    nodes: np.ndarray,
    ranges: np.ndarray,
    dup_start: np.ndarray,
    dup_end: np.ndarray,
    sorted_ids: np.ndarray,
    out: np.ndarray,
    stack: np.ndarray,
    pos: np.ndarray,
) -> int:  # pragma: no cover - numba
    """Walk trie subtrees through the configuration automaton from ``config``; mark surviving tokens
    in ``out``.

    ``handle`` is the automaton's :class:`~constrain.masks.handle.Tables`. ``ranges[k] = (lo, hi)``:
    the preorder nodes ``lo..hi`` of ``nodes``, whole subtrees whose roots are at depth 0. A
    transition not built yet is stepped here (:func:`constrain.cfg.fast_step.step`, Earley closures
    included). A step that runs out of room stops the walk: it returns NEED_ROOM with its place in
    ``pos`` (range, node) and ``stack``, and the caller calls again after growing the tables, which
    resumes there. Returns 0 when done.
    """
    tables = tables_of(handle)
    r = pos[0]
    n = pos[1]
    stack[0] = config
    while r < ranges.shape[0]:
        if n < 0:  # entering a range
            n = ranges[r, 0]
        total = ranges[r, 1]
        trans = tables[TRANS]
        rows, byte_class = tables[CFG_ROW], tables[BYTE_CLASS]
        while n < total:
            d = nodes[n, 1]
            s = stack[d]
            nxt = trans[rows[s], byte_class[nodes[n, 0]]]
            if nxt == UNKNOWN:
                nxt = step(tables, s, nodes[n, 0])
                if nxt == NEED_ROOM:
                    pos[0] = r
                    pos[1] = n
                    return nxt
            if nxt < 0:
                n = nodes[n, 2]
                continue
            stack[d + 1] = nxt
            _mark(nodes[n, 3], dup_start, dup_end, sorted_ids, out)
            n += 1
        r += 1
        n = -1
    pos[0] = r
    pos[1] = -1
    return 0


class _Arena:
    """Every lexeme state's crossing sub-trie, one after another in one node array (skip pointers
    absolute), so a set of lexemes is a list of ranges: no copy per set, one walk for all of them.
    Grows by doubling; a walk holds the array it started with, which has every range made before."""

    def __init__(self) -> None:
        self.nodes = np.zeros((4096, 4), dtype=np.int32)
        self.used = 0
        self.lock = threading.Lock()

    def add(self, sub: np.ndarray) -> tuple[int, int]:
        """Append a sub-trie (``int32[M, 4]``, skips relative to it); returns its range."""
        with self.lock:
            lo = self.used
            hi = lo + sub.shape[0]
            if hi > self.nodes.shape[0]:
                grown = np.zeros((max(hi, 2 * self.nodes.shape[0]), 4), dtype=np.int32)
                grown[:lo] = self.nodes[:lo]
                self.nodes = grown
            self.nodes[lo:hi] = sub
            self.nodes[lo:hi, 2] += lo
            self.used = hi
            return lo, hi


@dataclass(frozen=True)
class _LexsetMasks:
    inside: np.ndarray  # uint32 words: tokens that stay inside one lexeme
    # int64[K, 2]: the arena ranges of the lexemes' sub-tries of tokens that may cross a lexeme end
    crossing: np.ndarray
    # int64[K, 2]: ranges of the full trie: first bytes that end an accepting lexeme right away
    first_ranges: np.ndarray


class EarleyTokenMasks(MaskStore):
    """The token masks of an Earley configuration automaton: the
    :class:`~constrain.compiler.TokenAutomaton` of a context-free grammar. Shareable across threads.

    Masks are computed on first visit of a configuration and cached (see the module docstring).
    """

    def __init__(self, earley: EarleyAutomaton, trie: TokenTrie, eos_ids: Iterable[int]) -> None:
        super().__init__(trie, eos_ids)
        self.earley = earley
        self.start = earley.start
        self._lexeme_cache: dict[int, tuple[np.ndarray, int, int]] = {}
        self._arena = _Arena()
        self._lexset_masks: dict[bytes, _LexsetMasks] = {}
        # The protocol's stepping is the automaton's own (it builds configurations on demand).
        self.step = earley.walk
        self.is_final = earley.is_final
        self.completion_bound = earley.completion_bound
        # Memory: matchers register their histories, and a collection forgets the masks of freed
        # configurations; past MASK_CACHE_BYTES the oldest masks go too (computed again if needed).
        self.track = earley.track
        self.hold = earley.hold
        self.released = earley.released
        self.watch_states = earley.watch_states
        earley.watch_states(self._masks, self)
        self._max_masks = max(64, MASK_CACHE_BYTES // (4 * self.num_words))

    def live_bytes(self, state: int) -> np.ndarray:
        """The bytes that lead somewhere from configuration ``state`` (unknown transitions computed)."""
        return np.flatnonzero(self.earley.resolve_row(state) >= 0)

    # ---- per (terminal, DFA state) -------------------------------------------------------------------
    def _lexeme_sets(self, term: int, state: int) -> tuple[np.ndarray, int, int]:
        """(lexer-only tokens as uint32 words, arena range of the crossing-candidate sub-trie) of one
        lexeme state.

        Cached by the state's future class: lexeme states that accept the same continuations share one
        trie walk (recursive schemas' segment terminals are separately minimised copies of a few DFAs)."""
        future = self.earley.future_class_of(term, state)
        hit = self._lexeme_cache.get(future)
        if hit is None:
            dfa = self.earley.dfas[term]
            trie = self.trie
            inside = np.zeros(self.num_words, dtype=np.uint32)
            # lexeme_token_sets with the chain shortcut (same sets; a string body skips most of the trie)
            crossing = trie.lexeme_sets(dfa.transitions, dfa.accepting, state, inside)
            inside.setflags(write=False)
            hit = self._lexeme_cache.setdefault(future, (inside, *self._arena.add(crossing)))
        return hit

    def _lexset(self, rows: np.ndarray) -> _LexsetMasks:
        """The token sets of the lexemes in progress, by their sorted global DFA rows (cached)."""
        key = rows.tobytes()
        hit = self._lexset_masks.get(key)
        if hit is not None:
            return hit
        auto = self.earley
        sets = [self._lexeme_sets(*auto.row_lexeme(row)) for row in rows.tolist()]
        inside = sets[0][0] if sets else np.zeros(self.num_words, dtype=np.uint32)  # the masks copy it
        if len(sets) > 1:
            inside = inside.copy()
            for i, _, _ in sets[1:]:
                inside |= i
        crossing = np.array([(lo, hi) for _, lo, hi in sets if hi > lo], dtype=np.int64).reshape(-1, 2)
        kills = auto.kill_bytes[rows].any(axis=0)
        roots = self.trie.root_ranges
        first = roots[kills[roots[:, 2]], :2]
        return self._lexset_masks.setdefault(key, _LexsetMasks(inside, crossing, first))

    # ---- per configuration ---------------------------------------------------------------------------
    def mask(self, config: int) -> np.ndarray:
        """The read-only int32 bitmask row of ``config`` (EOS bits set where the input may end)."""
        mask = self._masks.get(config)
        if mask is None:
            auto = self.earley
            # The whole computation holds the lock: no collection frees the fresh twin midway.
            with auto.lock:
                auto.maybe_collect(config)
                mask = self._compute_mask(config)
        return mask

    def _compute_mask(self, config: int) -> np.ndarray:
        """The mask of ``config``, computed and cached (hold the automaton's lock)."""
        hit = self._masks.get(config)
        if hit is not None:
            return hit
        auto = self.earley
        twin, final, rows = auto.mask_facts(config, FRESH_EQUIVALENTS)
        if twin >= 0 and twin != config:
            return self._store(config, self._compute_mask(twin))
        lm = self._lexset(rows)
        words = lm.inside.copy()
        if lm.crossing.shape[0]:
            self._walk(auto, config, self._arena.nodes, lm.crossing, words)
        if lm.first_ranges.shape[0]:
            self._walk(auto, config, self.trie.nodes, lm.first_ranges, words)
        if final:
            words |= self._eos_bits
        mask = words.view(np.int32)
        mask.setflags(write=False)
        return self._store(config, mask)

    def _store(self, config: int, mask: np.ndarray) -> np.ndarray:
        """Cache ``mask`` as ``config``'s; past :data:`MASK_CACHE_BYTES`, forget the older half first."""
        masks = self._masks
        if len(masks) >= self._max_masks:
            for old in list(itertools.islice(masks, len(masks) // 2)):
                if old != self.start:
                    masks.pop(old, None)
        return masks.setdefault(config, mask)

    def _walk(
        self, auto: EarleyAutomaton, config: int, nodes: np.ndarray, ranges: np.ndarray, words: np.ndarray
    ) -> None:
        trie = self.trie
        stack = np.empty(trie.max_depth + 1, dtype=np.int32)
        pos = np.array([0, -1], dtype=np.int64)
        while walk_configs(
            auto.handle,
            config,
            nodes,
            ranges,
            trie.dup_start,
            trie.dup_end,
            trie.sorted_ids,
            words,
            stack,
            pos,
        ):
            auto.grow()  # the walk ran out of room (NEED_ROOM): grow the tables, then resume

    def precompute_lexemes(self) -> int:
        """Run the lexer-only walk for every (terminal, DFA state) now; returns how many."""
        count = 0
        for term, dfa in enumerate(self.earley.dfas):
            for state in range(dfa.num_states):
                self._lexeme_sets(term, state)
                count += 1
        return count


#: A configuration whose lexemes are all complete takes the mask of its fresh equivalent
#: (:func:`~constrain.cfg.fast_step.fresh_twin`); off only to test that the two agree.
FRESH_EQUIVALENTS = True

#: Bytes of per-configuration masks a grammar keeps for one tokenizer (6 KB a mask with a 49k vocabulary,
#: 16 KB with 128k: 10,000 and 4,000 masks; a JSON document visits a few hundred configurations). Past
#: it the older half is forgotten and computed again when visited, so a long or deeply nested
#: generation keeps masks in bounded memory.
MASK_CACHE_BYTES = 64 << 20

#: Up to this many (terminal, DFA state) pairs, their lexer-only walks run while compiling (JSON has
#: 54, about 25 ms on a loaded 2-core runner), so no later first visit pays for one. (A background
#: thread was tried: its Python parts hold the GIL and slowed the first masks down instead.)
EAGER_LEXEME_LIMIT = 512


def compile_earley_masks(
    earley: EarleyAutomaton, trie: TokenTrie, eos_ids: Iterable[int], *, eager: bool = True
) -> EarleyTokenMasks:
    """The token masks of a grammar's configuration automaton; masks are filled lazily (see module
    docstring).

    With ``eager`` (the default) the work every generation needs first is done here: the lexer-only
    walks of small grammars (:data:`EAGER_LEXEME_LIMIT`) and the start configuration's mask, so the
    first fill is a copy."""
    masks = EarleyTokenMasks(earley, trie, eos_ids)
    if eager:
        if sum(d.num_states for d in earley.dfas) <= EAGER_LEXEME_LIMIT:
            masks.precompute_lexemes()
        masks.mask(earley.start)
    return masks


def compile_cfg(
    grammar: Grammar, tokenizer_info: TokenizerInfo, automaton: EarleyAutomaton, *, eager: bool = True
) -> CompiledGrammar:
    """Bind a grammar's configuration automaton to a tokenizer, bypassing the compile cache (tests use
    it to compare engine settings); :func:`constrain.compile` is the usual way in."""
    from ..compiler import CompiledGrammar

    masks = compile_earley_masks(automaton, token_trie(tokenizer_info), tokenizer_info.eos_ids, eager=eager)
    return CompiledGrammar(grammar, tokenizer_info, masks)


__all__ = ["EarleyTokenMasks", "compile_cfg", "compile_earley_masks"]
