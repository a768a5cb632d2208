"""Context-free constraints: Lark grammars as a lazily determinised scannerless Earley recogniser.

``lark_frontend`` (Lark text -> BNF over regex terminals) -> ``earley`` (the automaton of Earley
configurations over bytes) -> ``token_masks`` (``CompiledCFG``: per-configuration token bitmasks)
-> ``matcher`` (``CFGMatcher``: per-sequence state with :class:`constrain.GrammarMatcher`'s API).
``constrain.compile`` and ``constrain.GrammarMatcher`` dispatch here for ``Grammar.kind == "lark"``.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from .earley import EarleyAutomaton, build_automaton
from .lark_frontend import CFG, Terminal, parse_lark, read_grammar_text
from .matcher import CFGMatcher
from .token_masks import CompiledCFG, compile_cfg

if TYPE_CHECKING:
    from ..grammar import Grammar
    from ..tokenizer_info import TokenizerInfo

_CACHE_SIZE = 64
_CACHE: OrderedDict[tuple[Grammar, str], CompiledCFG] = OrderedDict()
_CACHE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def automaton_for(source: str, start: str = "start", import_dir: str = "") -> EarleyAutomaton:
    """The configuration automaton of a Lark grammar text (cached; shared by every tokenizer)."""
    return build_automaton(parse_lark(source, start, import_dir or None))


def compile_lark(grammar: Grammar, tokenizer_info: TokenizerInfo) -> CompiledCFG:
    """Bind a ``kind == "lark"`` grammar to a tokenizer. Cached: the same pair gives the same object."""
    opts = dict(grammar.options)
    return compile_automaton(
        grammar,
        tokenizer_info,
        automaton_for(grammar.source, str(opts.get("start", "start")), str(opts.get("import_dir", ""))),
    )


def compile_automaton(
    grammar: Grammar, tokenizer_info: TokenizerInfo, automaton: EarleyAutomaton
) -> CompiledCFG:
    """Bind ``grammar``'s configuration automaton (a Lark grammar's, or a recursive JSON Schema's) to a
    tokenizer. Cached: the same pair gives the same object."""
    key = (grammar, tokenizer_info.fingerprint)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.tokenizer_info is tokenizer_info:
            _CACHE.move_to_end(key)
            return hit
    compiled = compile_cfg(grammar, tokenizer_info, automaton)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def clear_caches() -> None:
    """Forget every compiled Lark grammar and automaton (benchmarks time cold compiles)."""
    with _CACHE_LOCK:
        _CACHE.clear()
    automaton_for.cache_clear()


__all__ = [
    "CFG",
    "CFGMatcher",
    "CompiledCFG",
    "EarleyAutomaton",
    "Terminal",
    "automaton_for",
    "build_automaton",
    "clear_caches",
    "compile_automaton",
    "compile_cfg",
    "compile_lark",
    "parse_lark",
    "read_grammar_text",
]
