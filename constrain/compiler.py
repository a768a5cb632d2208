"""``compile``: a Grammar plus a tokenizer becomes an immutable, thread-shareable ``CompiledGrammar``.

Compilation builds the byte-level DFA only. The token mask of a DFA state is computed the first time
a matcher visits that state (one trie walk, see :mod:`constrain.token_index`) and cached for every
matcher sharing this object, so the first mask comes in about a millisecond instead of after
precomputing every state. ``precompute()`` fills the whole cache ahead of time when that is wanted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .grammar import Grammar
from .regex import DFA
from .token_index import TokenTrie, token_trie
from .tokenizer_info import TokenizerInfo

_COMPILE_CACHE_SIZE = 128


@dataclass(frozen=True, eq=False)
class CompiledGrammar:
    """A grammar bound to a tokenizer. Immutable from the outside; share it across threads and matchers."""

    grammar: Grammar
    tokenizer_info: TokenizerInfo
    dfa: DFA
    trie: TokenTrie
    _masks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _mask_addrs: dict[int, int] = field(default_factory=dict, repr=False)
    _eos_mask: np.ndarray = field(init=False, repr=False)
    _eos_words: tuple[tuple[int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        words = self.num_words
        eos_words: list[tuple[int, int]] = []
        eos = np.zeros(words, dtype=np.uint32)
        for tid in self.tokenizer_info.eos_ids:
            eos[tid >> 5] |= np.uint32(1 << (tid & 31))
            eos_words.append((tid >> 5, 1 << (tid & 31)))
        eos_i32 = eos.view(np.int32)
        eos_i32.setflags(write=False)
        object.__setattr__(self, "_eos_mask", eos_i32)
        object.__setattr__(self, "_eos_words", tuple(eos_words))

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words: ``ceil(vocab_size / 32)``."""
        return (self.tokenizer_info.vocab_size + 31) // 32

    @property
    def num_cached_states(self) -> int:
        """How many DFA states have their token mask computed so far."""
        return len(self._masks)

    def eos_only_mask(self) -> np.ndarray:
        """The mask that allows only the EOS tokens (used once a matcher has terminated)."""
        return self._eos_mask

    def state_mask(self, state: int) -> np.ndarray:
        """The read-only int32 bitmask row of DFA ``state`` (EOS bits set where the state accepts)."""
        mask = self._masks.get(state)
        if mask is None:
            mask = self._compute_mask(state)
        return mask

    def _compute_mask(self, state: int) -> np.ndarray:
        words = np.zeros(self.num_words, dtype=np.uint32)
        self.trie.walk(self.dfa.transitions, state, words)
        if self.dfa.accepting[state]:
            for w, bit in self._eos_words:
                words[w] |= np.uint32(bit)
        mask = words.view(np.int32)
        mask.setflags(write=False)
        # Racing threads compute the same array; whichever lands first is kept.
        kept = self._masks.setdefault(state, mask)
        self._mask_addrs.setdefault(state, kept.ctypes.data)
        return kept

    def state_mask_address(self, state: int) -> int:
        """Memory address of :meth:`state_mask` (for a memcpy into a bitmask row without numpy overhead)."""
        addr = self._mask_addrs.get(state)
        if addr is None:
            self.state_mask(state)
            addr = self._mask_addrs[state]
        return addr

    def precompute(self) -> int:
        """Compute the mask of every DFA state now; returns the number of states."""
        for s in range(self.dfa.num_states):
            self.state_mask(s)
        return self.dfa.num_states


_CACHE: OrderedDict[tuple[Grammar, str], CompiledGrammar] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def compile(grammar: Grammar, tokenizer_info: TokenizerInfo) -> CompiledGrammar:
    """Bind ``grammar`` to ``tokenizer_info``. Cached: the same pair returns the same object.

    A Lark grammar (``kind == "lark"``) compiles to a :class:`constrain.cfg.CompiledCFG`, which
    :class:`~constrain.GrammarMatcher` accepts the same way.
    """
    if grammar.kind == "lark":
        from .cfg import compile_lark

        return compile_lark(grammar, tokenizer_info)  # type: ignore[return-value]
    automaton = grammar.to_automaton()
    if not isinstance(automaton, DFA):  # a recursive JSON Schema: the context-free engine
        from .cfg import compile_automaton

        return compile_automaton(grammar, tokenizer_info, automaton)  # type: ignore[return-value]
    key = (grammar, tokenizer_info.fingerprint)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.tokenizer_info is tokenizer_info:
            _CACHE.move_to_end(key)
            return hit
    compiled = CompiledGrammar(grammar, tokenizer_info, automaton, token_trie(tokenizer_info))
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _COMPILE_CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def clear_caches() -> None:
    """Forget every compiled grammar and regex DFA (benchmarks use this to time cold compiles)."""
    from .regex import _regex_to_dfa_cached

    with _CACHE_LOCK:
        _CACHE.clear()
    _regex_to_dfa_cached.cache_clear()
    from .cfg import clear_caches as clear_cfg_caches
    from .grammar import _json_schema_automaton

    _json_schema_automaton.cache_clear()

    clear_cfg_caches()
