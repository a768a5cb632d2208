"""``compile``: a Grammar plus a tokenizer becomes an immutable, thread-shareable ``CompiledGrammar``.

Every grammar kind compiles to the same :class:`CompiledGrammar`: the grammar, the tokenizer and a
:class:`TokenAutomaton`, the one interface :class:`~constrain.GrammarMatcher` walks. Two engines
implement it:

* a regular language (a regex, a non-recursive JSON Schema) is a byte DFA whose token masks are
  cached per state (:class:`constrain.masks.dfa_masks.DFATokenMasks`);
* a context-free one (a Lark grammar, a recursive JSON Schema) is the Earley configuration automaton
  with its token masks (:class:`constrain.cfg.token_masks.EarleyTokenMasks`).

:class:`Compiler` owns the cache of compiled grammars (bounded, least recently used first out) and
clears every cache derived from grammars (:func:`constrain.caches.clear_all`); :func:`compile`,
:func:`clear_caches` and :func:`ensure_compiled` use the default one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .budget import CompileBudget, budget_scope
from .exceptions import InvalidInputError
from .grammar import Grammar
from .masks import MASK_WORKER, TokenTrie, token_trie
from .tokenizer_info import TokenizerInfo

__all__ = [
    "CompiledGrammar",
    "Compiler",
    "TokenAutomaton",
    "clear_caches",
    "compile",
    "default_compiler",
    "ensure_compiled",
    "stop_background_precompute",
]


@runtime_checkable
class TokenAutomaton(Protocol):
    """An automaton over bytes with a token mask per state: what a matcher needs of an engine.

    States are ints (``start`` first); a rejected byte leads to ``-1``. Masks are read-only int32
    bitmask rows (``ceil(vocab_size / 32)`` words) with the EOS bits set where the input may end.
    Implementations are shared across threads and matchers; they may fill caches lazily.
    """

    start: int

    def step(self, state: int, data: bytes) -> int:
        """The state after ``data`` from ``state``, or -1 where a byte is rejected."""
        ...

    def is_final(self, state: int) -> bool:
        """Whether the input may end at ``state``."""
        ...

    def live_bytes(self, state: int) -> np.ndarray:
        """The bytes that may follow at ``state``, ascending."""
        ...

    def mask(self, state: int) -> np.ndarray:
        """The token mask of ``state`` (EOS bits set where the input may end)."""
        ...

    def eos_only_mask(self) -> np.ndarray:
        """The mask that allows only the EOS tokens (a terminated matcher's mask)."""
        ...

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words."""
        ...

    @property
    def num_cached_states(self) -> int:
        """How many states have their mask at hand so far."""
        ...


@dataclass(frozen=True, eq=False)
class CompiledGrammar:
    """A grammar bound to a tokenizer, for every grammar kind. Immutable from the outside; share it
    across threads and matchers (:class:`~constrain.GrammarMatcher` holds the per-sequence state).

    ``automaton`` is the engine (:class:`TokenAutomaton`); the properties below are the parts every
    caller needs, so nothing outside the matcher looks inside it.
    """

    grammar: Grammar
    tokenizer_info: TokenizerInfo
    automaton: TokenAutomaton

    @property
    def kind(self) -> str:
        """``"regular"`` (a byte DFA) or ``"context-free"`` (the Earley engine)."""
        from .masks.dfa_masks import DFATokenMasks

        return "regular" if isinstance(self.automaton, DFATokenMasks) else "context-free"

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words: ``ceil(vocab_size / 32)``."""
        return self.automaton.num_words

    @property
    def num_cached_states(self) -> int:
        """How many automaton states have their token mask at hand so far."""
        return self.automaton.num_cached_states

    @property
    def trie(self) -> TokenTrie:
        """The tokenizer's vocabulary trie (shared by every grammar compiled for it)."""
        return token_trie(self.tokenizer_info)

    def state_mask(self, state: int) -> np.ndarray:
        """The read-only int32 bitmask row of automaton ``state``."""
        return self.automaton.mask(state)

    def eos_only_mask(self) -> np.ndarray:
        """The mask that allows only the EOS tokens (used once a matcher has terminated)."""
        return self.automaton.eos_only_mask()


# ---- compiling, with one owner for the caches -----------------------------------------------------------


class Compiler:
    """Compiles grammars and owns the cache of compiled ones.

    ``max_entries`` bounds the compiled-grammar cache (least recently used out first); the caches
    of regex DFAs, schema automata and Lark automata are bounded where they are defined and registered
    with :mod:`constrain.caches`. :meth:`clear` empties all of them. Thread-safe; two threads compiling
    the same grammar at once may both build it (the first stored wins).
    """

    def __init__(self, max_entries: int = 128) -> None:
        if max_entries < 0:
            raise InvalidInputError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[Grammar, str], CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def compile(
        self, grammar: Grammar, tokenizer_info: TokenizerInfo, budget: CompileBudget | None = None
    ) -> CompiledGrammar:
        """Bind ``grammar`` to ``tokenizer_info``. Cached: the same pair returns the same object.

        ``budget`` (a :class:`~constrain.budget.CompileBudget`; default ``DEFAULT_BUDGET``)
        bounds the time spent building the automaton and its first masks: past it the compile is refused
        with :class:`~constrain.exceptions.CompileBudgetExceeded` naming where it was. To bound the
        schema stages that :meth:`Grammar.from_json_schema` runs, open the same budget around it
        (``with constrain.budget.budget_scope(budget): ...``)."""
        if not isinstance(grammar, Grammar):
            raise InvalidInputError(f"compile needs a constrain.Grammar, got {type(grammar).__name__}")
        if not isinstance(tokenizer_info, TokenizerInfo):
            raise InvalidInputError(
                f"compile needs a constrain.TokenizerInfo, got {type(tokenizer_info).__name__}"
            )
        key = (grammar, tokenizer_info.fingerprint)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.tokenizer_info is tokenizer_info:
                self._cache.move_to_end(key)
                return hit
        with budget_scope(budget):
            compiled = CompiledGrammar(grammar, tokenizer_info, _token_automaton(grammar, tokenizer_info))
        with self._lock:
            if self.max_entries:
                compiled = self._cache.setdefault(key, compiled)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return compiled

    def clear(self) -> None:
        """Forget every compiled grammar and every cache derived from grammars (regex DFAs, schema and
        Lark automata, forced tokens); benchmarks use this to time cold compiles."""
        from .caches import clear_all

        with self._lock:
            self._cache.clear()
        clear_all()


def _token_automaton(grammar: Grammar, info: TokenizerInfo) -> TokenAutomaton:
    """The engine for ``grammar``: DFA masks for a regular language, Earley masks otherwise."""
    from .automata import DFA

    automaton = grammar.to_automaton()
    trie = token_trie(info)
    if isinstance(automaton, DFA):
        from .masks.dfa_masks import DFATokenMasks

        masks = DFATokenMasks(automaton, trie, info.eos_ids)
        masks.precompute_ahead()
        return masks
    from .cfg.token_masks import compile_earley_masks

    return compile_earley_masks(automaton, trie, info.eos_ids)


_DEFAULT = Compiler()


def default_compiler() -> Compiler:
    """The process-wide :class:`Compiler` behind :func:`compile` (set its ``max_entries`` to resize)."""
    return _DEFAULT


def compile(
    grammar: Grammar, tokenizer_info: TokenizerInfo, budget: CompileBudget | None = None
) -> CompiledGrammar:
    """Bind ``grammar`` to ``tokenizer_info`` with the default :class:`Compiler`. Cached: the same pair
    returns the same object. Every grammar kind (regex, JSON Schema, Lark) gives a
    :class:`CompiledGrammar`. ``budget``: see :meth:`Compiler.compile`."""
    return _DEFAULT.compile(grammar, tokenizer_info, budget)


def clear_caches() -> None:
    """Forget every compiled grammar and every derived cache (see :meth:`Compiler.clear`)."""
    _DEFAULT.clear()


def ensure_compiled(grammar: Grammar | CompiledGrammar, tokenizer_info: TokenizerInfo) -> CompiledGrammar:
    """``grammar`` compiled for ``tokenizer_info``: a :class:`Grammar` is compiled (cached), a
    :class:`CompiledGrammar` is checked to be for the same tokenizer.

    Raises:
        InvalidInputError: anything else, or a grammar compiled for another tokenizer.
    """
    if isinstance(grammar, Grammar):
        return compile(grammar, tokenizer_info)
    if isinstance(grammar, CompiledGrammar):
        if grammar.tokenizer_info.fingerprint != tokenizer_info.fingerprint:
            raise InvalidInputError(
                "the compiled grammar was compiled for another tokenizer; pass the Grammar instead"
            )
        return grammar
    raise InvalidInputError(f"expected a Grammar or a CompiledGrammar, got {type(grammar).__name__}")


def stop_background_precompute(timeout: float = 10.0) -> bool:
    """Stop the background mask worker (all grammars) and wait for it; True when it has exited.

    Masks keep being computed on demand; the next compiled grammar to fill a mask starts it again.
    """
    return MASK_WORKER.stop(timeout)
