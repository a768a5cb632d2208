"""``compile``: a Grammar plus a tokenizer becomes an immutable, thread-shareable ``CompiledGrammar``.

Every grammar kind compiles to the same :class:`CompiledGrammar`: the grammar, the tokenizer and a
:class:`TokenAutomaton`, the one interface :class:`~constrain.GrammarMatcher` walks. Three engines
implement it:

* a regular language (a regex, a non-recursive JSON Schema) is a byte DFA whose token masks are
  cached per state (:class:`constrain.masks.dfa_masks.DFATokenMasks`);
* a JSON Schema with holes (recursion, or exact unconstrained values) whose every push and pop the
  next byte decides is its network of DFAs run with a stack
  (:class:`constrain.masks.pushdown.PushdownTokenMasks`);
* another context-free one (a Lark grammar, any other recursive JSON Schema) is the Earley
  configuration automaton with its token masks (:class:`constrain.cfg.token_masks.EarleyTokenMasks`).

:class:`Compiler` owns the cache of compiled grammars (bounded, least recently used first out) and
clears every cache derived from grammars (:func:`constrain.caches.clear_all`); :func:`compile`,
:func:`clear_caches` and :func:`ensure_compiled` use the default one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import numpy as np

from .budget import CompileBudget, as_budget, budget_scope
from .caches import CacheStats, LRUCache, estimate_nbytes
from .exceptions import InvalidInputError
from .grammar import Grammar
from .masks import MASK_WORKER, TokenTrie, token_trie
from .tokenizer_info import TokenizerInfo
from .validation import checked_arguments

if TYPE_CHECKING:
    from .masks.counted import CountedStringMasks
    from .masks.dfa_masks import DFATokenMasks
    from .masks.pushdown import PushdownTokenMasks

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
        from .masks.counted import CountedStringMasks
        from .masks.dfa_masks import DFATokenMasks

        auto = self.automaton
        regular = isinstance(auto, DFATokenMasks) or (
            isinstance(auto, CountedStringMasks) and isinstance(auto.inner, DFATokenMasks)
        )
        return "regular" if regular else "context-free"

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words: ``ceil(vocab_size / 32)``."""
        return self.automaton.num_words

    @property
    def num_cached_states(self) -> int:
        """How many automaton states have their token mask at hand so far."""
        return self.automaton.num_cached_states

    @property
    def nbytes(self) -> int:
        """Estimated bytes this grammar holds: its automaton's tables and the token masks filled so far
        (not the tokenizer's shared trie); what the compile cache's byte bound counts."""
        return _compiled_nbytes(self)

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

    # ---- copying and pickling ---------------------------------------------------------------------------
    def __copy__(self) -> CompiledGrammar:
        return self  # immutable from the outside and shared across threads: a copy is the same object

    def __deepcopy__(self, memo: dict[int, object]) -> CompiledGrammar:
        return self

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled as the grammar, the tokenizer and the byte automaton (a DFA's tables, or the Earley
        automaton's tables as built so far, so state ids held by matchers stay valid); token masks are
        computed again where it is loaded (see :func:`_restore_compiled`)."""
        from .masks.counted import CountedStringMasks
        from .masks.dfa_masks import DFATokenMasks

        auto = self.automaton
        if isinstance(auto, DFATokenMasks):
            return _restore_compiled, (self.grammar, self.tokenizer_info, auto.dfa)
        if isinstance(auto, CountedStringMasks):
            return _restore_compiled, (self.grammar, self.tokenizer_info, auto.counted)
        earley = getattr(auto, "earley", None) or getattr(auto, "pushdown", None)
        if earley is None:
            raise TypeError(f"cannot pickle a CompiledGrammar over a {type(auto).__name__}")
        return _restore_compiled, (self.grammar, self.tokenizer_info, earley)


def _restore_compiled(grammar: Grammar, info: TokenizerInfo, automaton: object) -> CompiledGrammar:
    """A pickled :class:`CompiledGrammar` back. A DFA grammar is the default compiler's cached one when
    that has the same DFA (the same process, or a worker that loaded it before), else it is built from
    the pickled DFA and cached; a context-free one keeps the pickled Earley automaton (its configuration
    ids are the ones matchers hold) and is not cached."""
    from .automata import DFA

    trie = token_trie(info)
    if isinstance(automaton, DFA):
        from .masks.dfa_masks import DFATokenMasks

        hit = _DEFAULT.cached(grammar, info)
        if hit is not None and _same_dfa(getattr(hit.automaton, "dfa", None), automaton):
            return hit if hit.tokenizer_info is info else CompiledGrammar(grammar, info, hit.automaton)
        mine = CompiledGrammar(grammar, info, _precomputed(DFATokenMasks(automaton, trie, info.eos_ids)))
        kept = _DEFAULT.adopt(mine)
        return kept if kept is mine or _same_dfa(getattr(kept.automaton, "dfa", None), automaton) else mine
    engine = _mask_engine(automaton, trie, info.eos_ids)
    if engine is not None:
        return CompiledGrammar(grammar, info, engine)
    from .cfg.token_masks import compile_earley_masks

    # Not eager: no step before the matchers pickled with it are restored and hold their configurations.
    earley_masks = compile_earley_masks(automaton, trie, info.eos_ids, eager=False)  # type: ignore[arg-type]
    return CompiledGrammar(grammar, info, earley_masks)


def _same_dfa(a: object, b: object) -> bool:
    from .automata import DFA

    return (
        isinstance(a, DFA)
        and isinstance(b, DFA)
        and a.start == b.start
        and np.array_equal(a.transitions, b.transitions)
        and np.array_equal(a.accepting, b.accepting)
    )


# ---- compiling, with one owner for the caches -----------------------------------------------------------


class Compiler:
    """Compiles grammars and owns the cache of compiled ones.

    The compiled-grammar cache is a :class:`~constrain.caches.LRUCache`: least recently used out first
    past ``max_entries`` grammars or past ``max_bytes`` bytes (estimated: the automaton's tables and the
    token masks filled so far, see :func:`constrain.caches.estimate_nbytes`; default
    ``DEFAULT_MAX_BYTES["compiled"]``, 512 MiB, or ``$CONSTRAIN_CACHE_MAX_BYTES``). The caches of
    regex DFAs, schema automata and Lark automata are bounded where they are defined and registered with
    :mod:`constrain.caches`. :meth:`clear` empties all of them.

    Thread-safe, and single-flight: threads compiling the same grammar at once share one compile (the
    others wait for it and get the same object, or the same exception).
    """

    def __init__(
        self, max_entries: int = 128, max_bytes: int | None = None, *, name: str | None = None
    ) -> None:
        for what, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidInputError(f"{what} must be an int >= 0, got {value!r}")
        self._cache: LRUCache[CompiledGrammar] = LRUCache(
            "compiled",
            max_entries=max_entries,
            max_bytes=max_bytes,
            sizeof=_compiled_nbytes,
            register_as=name,
        )

    @property
    def max_entries(self) -> int:
        """The most compiled grammars kept (0: none)."""
        return self._cache.max_entries

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self._cache.set_limits(max_entries=value)

    @property
    def max_bytes(self) -> int:
        """The most bytes (estimated) of compiled grammars kept (0: none)."""
        return self._cache.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._cache.set_limits(max_bytes=value)

    @property
    def nbytes(self) -> int:
        """The estimated bytes the cached compiled grammars hold, as last measured."""
        return self._cache.nbytes

    def stats(self, refresh: bool = False) -> CacheStats:
        """The compiled-grammar cache's :class:`~constrain.caches.CacheStats` (``refresh``: measure again)."""
        return self._cache.stats(refresh)

    def __len__(self) -> int:
        return len(self._cache)

    @checked_arguments
    def compile(
        self, grammar: Grammar, tokenizer_info: TokenizerInfo, budget: CompileBudget | float | None = None
    ) -> CompiledGrammar:
        """Bind ``grammar`` to ``tokenizer_info``. Cached: the same pair returns the same object (a
        ``TokenizerInfo`` with the same fingerprint gets the cached automaton and masks, bound to it).

        ``budget`` (a :class:`~constrain.budget.CompileBudget`, or a number of CPU seconds; default
        ``DEFAULT_BUDGET``) bounds the time spent building the automaton and its first masks, and the
        size of the automata built on the way: past it the compile is refused
        with :class:`~constrain.exceptions.CompileBudgetExceeded` naming where it was. To bound the
        schema stages that :meth:`Grammar.from_json_schema` runs, open the same budget around it
        (``with constrain.budget.budget_scope(budget): ...``). A thread that finds the same grammar
        being compiled by another waits for that compile (and its budget) instead."""
        if not isinstance(grammar, Grammar):
            raise InvalidInputError(f"compile needs a constrain.Grammar, got {type(grammar).__name__}")
        if not isinstance(tokenizer_info, TokenizerInfo):
            raise InvalidInputError(
                f"compile needs a constrain.TokenizerInfo, got {type(tokenizer_info).__name__}"
            )
        budget = as_budget(budget, "compile: budget")  # checked before a cache hit could skip it

        def build() -> CompiledGrammar:
            with budget_scope(budget):
                return CompiledGrammar(grammar, tokenizer_info, _token_automaton(grammar, tokenizer_info))

        compiled = self._cache.get_or_build((grammar, tokenizer_info.fingerprint), build)
        if compiled.tokenizer_info is not tokenizer_info:
            # An equal tokenizer (same fingerprint): share the automaton and masks, keep the caller's
            # TokenizerInfo (its backend encodes forced tokens).
            compiled = CompiledGrammar(grammar, tokenizer_info, compiled.automaton)
            # the latest caller's binding is the cached one: compiling twice for it gives one object
            self._cache.swap((grammar, tokenizer_info.fingerprint), compiled)
        return compiled

    def cached(self, grammar: Grammar, tokenizer_info: TokenizerInfo) -> CompiledGrammar | None:
        """The cached compiled grammar for the pair, or None (compiles nothing)."""
        return self._cache.get((grammar, tokenizer_info.fingerprint))

    def adopt(self, compiled: CompiledGrammar) -> CompiledGrammar:
        """Cache ``compiled`` (built elsewhere, e.g. unpickled) unless its pair is cached; returns the one
        kept."""
        return self._cache.put((compiled.grammar, compiled.tokenizer_info.fingerprint), compiled)

    def clear(self, *, keep_constants: bool = False, release: bool = True) -> None:
        """Forget every compiled grammar and every cache derived from grammars (regex DFAs, schema and
        Lark automata, forced tokens), and hand the freed memory back to the system (glibc
        ``malloc_trim``); benchmarks use this to time cold compiles.

        ``keep_constants``: keep what depends on no grammar (each tokenizer's JSON key tables, the
        any-value automata), as a long-running process has them after its first schema; benchmarks of
        a new schema's compile time in a warm process pass it. ``release=False``: keep the freed pages
        in the heap, as a long-running process has them (after a trim, the next compile's new mask rows
        fault their pages in again: about 1.6 ms of a typical schema's 5 ms of masks at compile)."""
        from .caches import clear_all, release_memory

        self._cache.clear()
        clear_all(keep_constants=keep_constants)
        if release:
            release_memory()


def _compiled_nbytes(compiled: CompiledGrammar) -> int:
    """Estimated bytes of a compiled grammar: its automaton and masks, less the tokenizer's shared data."""
    from .masks.trie import TokenTrie

    return estimate_nbytes(compiled, exclude=(TokenizerInfo, TokenTrie))


_Ahead = TypeVar("_Ahead", "DFATokenMasks", "CountedStringMasks", "PushdownTokenMasks")


def _precomputed(masks: _Ahead) -> _Ahead:
    """``masks`` with the masks nearest its start computed now (its ``precompute_ahead``)."""
    masks.precompute_ahead()
    return masks


def _mask_engine(automaton: object, trie: TokenTrie, eos_ids: Sequence[int]) -> TokenAutomaton | None:
    """The mask engine of a byte DFA, a counted automaton or a pushdown automaton, its nearest masks
    precomputed; None for anything else (an Earley automaton: the caller decides whether it steps
    eagerly)."""
    from .automata import DFA
    from .automata.counted import CountedDFA
    from .json_schema.recursion import CountedPushdown
    from .masks.counted import CountedStringMasks
    from .masks.dfa_masks import DFATokenMasks
    from .masks.pushdown import PushdownAutomaton, PushdownTokenMasks

    if isinstance(automaton, DFA):
        return _precomputed(DFATokenMasks(automaton, trie, eos_ids))
    if isinstance(automaton, (CountedDFA, CountedPushdown)):
        return _precomputed(CountedStringMasks(automaton, trie, eos_ids))
    if isinstance(automaton, PushdownAutomaton):
        return _precomputed(PushdownTokenMasks(automaton, trie, eos_ids))
    return None


def _token_automaton(grammar: Grammar, info: TokenizerInfo) -> TokenAutomaton:
    """The engine for ``grammar``: DFA, counted or pushdown masks (:func:`_mask_engine`), else Earley
    masks."""
    from .cfg.earley import EarleyAutomaton
    from .cfg.token_masks import compile_earley_masks

    automaton = grammar.to_automaton()
    trie = token_trie(info)
    if isinstance(automaton, EarleyAutomaton):
        return compile_earley_masks(automaton, trie, info.eos_ids)
    engine = _mask_engine(automaton, trie, info.eos_ids)
    if engine is None:  # pragma: no cover - to_automaton returns one of the kinds above
        raise TypeError(f"no mask engine for a {type(automaton).__name__}")
    return engine


_DEFAULT = Compiler(name="compiled")


def default_compiler() -> Compiler:
    """The process-wide :class:`Compiler` behind :func:`compile` (set its ``max_entries`` or ``max_bytes``
    to resize, or call :func:`constrain.set_cache_limits`); its cache is registered as ``"compiled"``."""
    return _DEFAULT


@checked_arguments
def compile(
    grammar: Grammar, tokenizer_info: TokenizerInfo, budget: CompileBudget | float | None = None
) -> CompiledGrammar:
    """Bind ``grammar`` to ``tokenizer_info`` with the default :class:`Compiler`. Cached: the same pair
    returns the same object. Every grammar kind (regex, JSON Schema, Lark) gives a
    :class:`CompiledGrammar`. ``budget``: see :meth:`Compiler.compile`."""
    return _DEFAULT.compile(grammar, tokenizer_info, budget)


def clear_caches(*, keep_constants: bool = False, release: bool = True) -> None:
    """Forget every compiled grammar and every derived cache (see :meth:`Compiler.clear`)."""
    _DEFAULT.clear(keep_constants=keep_constants, release=release)


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
