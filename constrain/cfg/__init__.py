"""Context-free constraints: Lark grammars as a lazily determinised scannerless Earley recogniser.

``lark_frontend`` (Lark text -> BNF over regex terminals) -> ``earley`` (the automaton of Earley
configurations over bytes) -> ``token_masks`` (``CompiledCFG``: per-configuration token bitmasks)
-> ``matcher`` (``CFGMatcher``: per-sequence state with :class:`constrain.GrammarMatcher`'s API).
``constrain.compile`` and ``constrain.GrammarMatcher`` dispatch here for Lark grammars and recursive
JSON Schemas (whose automaton :mod:`constrain.json_schema.recursion` builds).
"""

from __future__ import annotations

import functools

from .earley import EarleyAutomaton, build_automaton
from .lark_frontend import CFG, Terminal, parse_lark, read_grammar_text
from .matcher import CFGMatcher
from .token_masks import CompiledCFG, compile_cfg


@functools.lru_cache(maxsize=64)
def automaton_for(source: str, start: str = "start", import_dir: str = "") -> EarleyAutomaton:
    """The configuration automaton of a Lark grammar text (cached; shared by every tokenizer)."""
    return build_automaton(parse_lark(source, start, import_dir or None))


def clear_caches() -> None:
    """Forget every Lark grammar's automaton (benchmarks time cold compiles)."""
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
    "compile_cfg",
    "parse_lark",
    "read_grammar_text",
]
