"""Compile constrain's numba kernels ahead of use, into numba's on-disk cache (``constrain warmup``).

Every ``@numba.njit`` in constrain is declared with ``cache=True``: the machine code of each signature it
is compiled for is written to numba's cache (``__pycache__/*.nbi`` and ``*.nbc`` beside the source;
numba falls back to a per-user cache folder where that is not writable, and ``$NUMBA_CACHE_DIR``
overrides both), and a later process loads it instead of compiling. A fresh install has an empty cache,
so the first compile in the first process pays every kernel's JIT: about 20-45 s on a 2-core machine,
enough to make the default 7 s :class:`~constrain.budget.CompileBudget` (which counts the compiling
thread's CPU time, JIT included) refuse even a small schema. ``scripts/setup.sh`` runs :func:`warm_up`
once, so that cost is paid at install time.

:func:`warm_up` runs the public data path on small inputs of every kind (a regex, a JSON Schema with the
common keywords, a recursive schema, a shipped Lark grammar), walks each along its shortest completion
filling masks and asking for forced tokens, and applies a mask with the CPU kernel, so every kernel is
compiled for the argument types real use passes. Numba compiles per argument types, not per tokenizer,
so one tokenizer warms the kernels for all of them.

Numba compiles one signature per kind of argument (a read-only array is another kind), so the warm-up also
calls the kernels that Python reaches only on rare paths with every kind real fills pass
(:func:`_walk_signatures`). Check: ``NUMBA_DEBUG_CACHE=1`` on a bench run prints "data saved" for any
kernel compiled after the warm-up (none on the 300-schema MaskBench step bench, 2026-12-06).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .budget import UNLIMITED, budget_scope
from .compiler import compile as compile_grammar
from .grammar import Grammar
from .matcher import GrammarMatcher
from .tokenizer_info import TokenizerInfo

__all__ = ["WarmupReport", "numba_kernels", "preload_kernels", "warm_up"]

_KERNEL_MODULES = (
    "constrain.automata.algebra",
    "constrain.automata.determinize",
    "constrain.automata.minimize",
    "constrain.automata.nfa",
    "constrain.cfg.fast_step",
    "constrain.cfg.token_masks",
    "constrain.json_schema.recursion",
    "constrain.masks.counted",
    "constrain.masks.handle",
    "constrain.masks.pushdown",
    "constrain.masks.sharing",
    "constrain.masks.trie",
    "constrain.masks.walks",
)
"""The modules that define numba kernels (``preload_kernels`` imports them all)."""
_PRELOADED: list[int] = []

_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[A-Za-z ]+$"},
        "email": {"type": "string", "format": "email"},
        "when": {"type": "string", "format": "date-time"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number", "multipleOf": 0.5, "exclusiveMaximum": 100},
        "tags": {
            "type": "array",
            "items": {"enum": ["a", "b", "c"]},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
        },
        "kind": {"oneOf": [{"const": "x"}, {"type": "integer"}]},
        "extra": {
            "anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": {"type": "boolean"}}]
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

# A small object of plain keywords: its masks take the DFA mask paths (split futures, cut walks) from
# Python, which the larger schema above reaches only inside other kernels (compiled there with other types).
_SMALL = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

_SMALL_ANY = {"type": "object", "properties": {"a": {}, "n": {"type": "integer"}}}

_RECURSIVE = {
    "type": "object",
    "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
    "required": ["v"],
}

# Enters a recursive object or starts a plain one on the same "{": the next byte does not decide, so
# this one runs on the Earley engine (``_RECURSIVE`` runs on the pushdown network).
_RECURSIVE_EARLEY = {
    "$defs": {
        "t": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}
    },
    "anyOf": [{"$ref": "#/$defs/t"}, {"type": "object", "properties": {"leaf": {"type": "integer"}}}],
}

_REGEX = r"[a-z]{1,8}@[a-z]+\.(com|org)|\+?[0-9]{2,4}-[0-9]{3,8}"


@dataclass
class WarmupReport:
    """What :func:`warm_up` did: seconds per input, and numba's view of every constrain kernel."""

    seconds: dict[str, float] = field(default_factory=dict)
    #: kernels whose signatures were all found in the cache
    loaded: list[str] = field(default_factory=list)
    #: kernels compiled in this process (and written to the cache)
    compiled: list[str] = field(default_factory=list)
    #: kernels numba cannot cache (each one compiles in every new process), with numba's reason
    uncacheable: dict[str, str] = field(default_factory=dict)
    #: cache folders in use (where the index files are)
    cache_dirs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [f"{k}: {v:.2f} s" for k, v in self.seconds.items()]
        out.append(f"numba kernels: {len(self.compiled)} compiled now, {len(self.loaded)} loaded from cache")
        out += [f"not cacheable: {name}: {why}" for name, why in self.uncacheable.items()]
        out += [f"cache: {d}" for d in self.cache_dirs]
        return out


def _default_tokenizer() -> TokenizerInfo:
    """The default model's tokenizer where setup converted it, else a small byte-level vocabulary (numba
    specialises on argument types, not on the vocabulary, so either warms the same kernels)."""
    try:
        from .models import cache_root

        folder = cache_root() / "models"
        for candidate in sorted(folder.glob("*/tokenizer.json")):
            return TokenizerInfo.from_file(candidate)
    except Exception:  # noqa: BLE001 - any problem with the model cache: fall back to the plain vocabulary
        pass
    words = [bytes([b]) for b in range(256)]
    words += [b'{"', b'":', b'",', b'"}', b"true", b"false", b"null", b"com", b"org", b" ", b"\\n"]
    return TokenizerInfo.from_vocab([*words, b""], eos_ids=len(words), name="warmup")


def _walk(compiled: Any, bitmask: Any) -> None:
    """Teacher-force the shortest completion, filling every mask and asking for forced tokens."""
    m = GrammarMatcher(compiled)
    m.forced_tokens()
    path = m.shortest_completion()
    for tid in path:
        if bitmask is not None:
            m.fill_next_token_bitmask(bitmask, 0)
        else:
            m.next_token_mask()
        if not m.accept_token(tid):  # pragma: no cover - shortest_completion is valid by construction
            raise RuntimeError("warm-up: the shortest completion was rejected")
        m.forced_tokens()
    if path:
        m.rollback(1)
    m.fork().next_token_mask()


def _walk_signatures(compiled: Any) -> None:
    """Call the kernels that Python calls with argument kinds the walks above may not reach: the trie
    walks of a regular grammar on a DFA's read-only transitions and on a writable split-future table,
    and a context-free grammar's single byte step. Short warm-up paths do not reach all of
    them (a partial walk deep in a long string is rare), and numba compiles one signature per kind;
    without this a fill in the middle of decoding paid the JIT (a 273 ms step in the MaskBench bench)."""
    from .cfg import fast_step
    from .masks.counted import CountedStringMasks, token_code_points
    from .masks.dfa_masks import DFATokenMasks
    from .masks.pushdown import PushdownTokenMasks, or_ids, pushdown_walk
    from .masks.walks import sparse_fill, state_chains, write_ids

    auto = compiled.automaton
    token_code_points(compiled.trie)  # a counted maxLength's per-token code points (a vocabulary pass)
    if isinstance(auto, CountedStringMasks):
        auto = auto.inner
    earley = getattr(auto, "earley", None)
    if earley is not None:
        # a context-free byte step from Python (an accepted token whose transition no mask computed);
        # recomputing a known transition writes the same value
        with earley.lock:
            fast_step.step(earley.handle, int(earley.start), ord(" "))
    if isinstance(auto, PushdownTokenMasks):
        # the crossing walk, and the byte table's own masks as any DFA's
        pushdown_walk(
            auto.start, auto.trie.tables, auto._net(), np.zeros(1, dtype=np.int32), False,
            np.empty(auto.num_words * 32, dtype=np.int32),
        )  # fmt: skip
        or_ids(np.zeros(0, dtype=np.int32), np.zeros(auto.num_words, dtype=np.int32))
        auto = auto.inner
    if not isinstance(auto, DFATokenMasks):
        return
    trie = auto.trie
    # a sparse state's first visit written into a bitmask row, and its ids written back
    row = np.zeros(auto.num_words, dtype=np.int32)
    chains = state_chains(auto.dfa.transitions, trie.max_depth)
    eos = auto._eos_ids
    _, ids = sparse_fill(auto.dfa.transitions, auto.start, trie.tables, chains, 256, 8, eos, False, row)
    write_ids(ids, row)
    for trans in (auto.dfa.transitions, np.array(auto.dfa.transitions)):
        chains = state_chains(trans, trie.max_depth)
        words = np.zeros(auto.num_words, dtype=np.uint32)
        trie.walk_fast(trans, auto.start, words, chains)
        trie.walk_fast(trans, auto.start, words, chains, 2)
        trie.walk_long(trans, auto.start, words, chains, 2)
        trie.walk_long_plain(trans, auto.start, words, 2)


def numba_kernels() -> dict[str, Any]:
    """Every numba dispatcher defined in a loaded constrain module: ``module.function`` -> dispatcher."""
    from numba.core.dispatcher import Dispatcher

    found: dict[str, Any] = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("constrain") or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if isinstance(value, Dispatcher) and getattr(value.py_func, "__module__", "") == name:
                found[f"{name}.{attr}"] = value
    return found


def preload_kernels() -> int:
    """Load every constrain kernel that numba's on-disk cache holds, now, for every signature cached.

    Numba loads a cached kernel on its first call in a process (5-20 ms each, about 0.6 s for all of
    them), so without this the first mask that needs a rarely used walk (a partial walk deep in a
    string, a context-free first visit) pays that load in the middle of decoding. A server calls this
    once at start-up, beside loading its model and tokenizer; ``load_model`` does. Idempotent (later
    calls return at once); a cache entry that cannot be loaded is left to load (or compile) on first
    call. Returns how many signatures were loaded by this call.

    Uses numba's cache index (``Dispatcher._cache``), which is not public API: on a numba where it is
    missing this loads nothing and returns 0.
    """
    import importlib

    if _PRELOADED:
        return 0
    _PRELOADED.append(1)
    for name in _KERNEL_MODULES:
        importlib.import_module(name)
    loaded = 0
    for disp in numba_kernels().values():
        try:
            index = disp._cache._cache_file._load_index()
        except Exception:  # noqa: BLE001 - no cache, or another numba: load on first call instead
            continue
        for key in index:
            try:
                disp.compile(key[0])
            except Exception:  # noqa: BLE001 - a stale entry: numba compiles it on first call
                continue
            loaded += 1
    _compile_budget_checks()
    return loaded


# Its subset construction meets 512 subsets and its minimisation pops more than 256 splitters, so both
# kernels reach their budget check.
_BUDGET_CHECK_REGEX = "[ab]*a[ab]{8}"


def _compile_budget_checks() -> None:
    """Run the subset construction and the minimisation far enough to reach their budget checks.

    Those checks are ``numba.objmode`` blocks, which numba compiles in every process the first time one
    is reached (they are not in the on-disk cache): about 40-50 ms each, which otherwise lands in the
    first compile of a schema with a few hundred states (its time to first mask). Built directly, not
    through the grammar caches, so nothing stays behind.
    """
    from .automata.determinize import nfa_to_dfa
    from .automata.regex import RegexBuilder, regex_nfa

    nfa, start, final = regex_nfa(_BUDGET_CHECK_REGEX, 0, RegexBuilder)
    nfa_to_dfa(nfa, start, final, _BUDGET_CHECK_REGEX)


def warm_up(tokenizer: str | Path | TokenizerInfo | None = None) -> WarmupReport:
    """Compile (or load from numba's cache) every constrain kernel the data path uses.

    ``tokenizer``: a ``tokenizer.json`` path or a :class:`TokenizerInfo` (default: the default model's
    tokenizer where setup converted it, else a small built-in vocabulary). Compiles run without a
    :class:`~constrain.budget.CompileBudget` (the JIT time would count against it). Returns a
    :class:`WarmupReport`; nothing is cached besides numba's files (constrain's own caches are cleared
    at the end).
    """
    from . import compiler

    report = WarmupReport()
    t0 = time.perf_counter()
    if isinstance(tokenizer, TokenizerInfo):
        info = tokenizer
    else:
        info = TokenizerInfo.from_file(tokenizer) if tokenizer is not None else _default_tokenizer()
    report.seconds["tokenizer"] = time.perf_counter() - t0

    grammars: list[tuple[str, Callable[[], Grammar]]] = [
        ("regex", lambda: Grammar.from_regex(_REGEX)),
        ("json schema", lambda: Grammar.from_json_schema(_SCHEMA)),
        ("small json schema", lambda: Grammar.from_json_schema(_SMALL)),
        ("recursive schema", lambda: Grammar.from_json_schema(_RECURSIVE)),
        ("recursive schema, Earley", lambda: Grammar.from_json_schema(_RECURSIVE_EARLEY)),
        ("exact any value", lambda: Grammar.from_json_schema(_SMALL_ANY, max_any_depth=None)),
        ("lark grammar", lambda: Grammar.from_lark(name="json")),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # numpy masks (``next_token_mask``), then torch bitmasks and the CPU kernel: both public paths.
        for label, make in grammars:
            t = time.perf_counter()
            with budget_scope(UNLIMITED):
                compiled = compile_grammar(make(), info, budget=UNLIMITED)
            _walk(compiled, None)
            _walk_signatures(compiled)
            report.seconds[label] = time.perf_counter() - t
        try:
            import torch  # the CPU kernel and torch bitmasks are part of the data path

            from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace

            bitmask: Any = allocate_token_bitmask(1, info.vocab_size)
        except ImportError:
            bitmask = None
        if bitmask is not None:
            compiler.clear_caches()
            t = time.perf_counter()
            for _, make in grammars:
                with budget_scope(UNLIMITED):
                    _walk(compile_grammar(make(), info, budget=UNLIMITED), bitmask)
            report.seconds["torch bitmasks"] = time.perf_counter() - t

            t = time.perf_counter()
            logits = torch.zeros((2, info.logits_width))
            apply_token_bitmask_inplace(logits[:1], bitmask)
            apply_token_bitmask_inplace(logits, torch.cat([bitmask, bitmask]), indices=[0, 1])
            report.seconds["cpu kernel"] = time.perf_counter() - t
    for w in caught:
        text = str(w.message)
        if "cache" in text.lower() and "cannot" in text.lower():
            quoted = text.split('"')
            report.uncacheable[quoted[1] if len(quoted) > 2 else text[:60]] = text.splitlines()[0]
    dirs: set[str] = set()
    for name, disp in sorted(numba_kernels().items()):
        stats = getattr(disp, "stats", None)
        if not disp.signatures or stats is None:
            continue
        (report.compiled if stats.cache_misses else report.loaded).append(name)
        cache = getattr(disp, "_cache", None)
        path = getattr(cache, "cache_path", None)
        if path:
            dirs.add(str(path))
        elif cache is not None and type(cache).__name__ == "NullCache":
            report.uncacheable.setdefault(name, "no cache (cache=False or not cacheable)")
    report.cache_dirs = sorted(dirs)
    compiler.clear_caches()
    report.seconds["total"] = time.perf_counter() - t0
    return report
