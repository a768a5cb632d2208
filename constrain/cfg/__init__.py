"""Context-free constraints: Lark grammars as a lazily determinised scannerless Earley recogniser.

``lark_frontend`` (Lark text -> BNF over regex terminals) -> ``earley`` (the automaton of Earley
configurations over bytes) -> ``token_masks`` (``EarleyTokenMasks``: per-configuration token
bitmasks, the :class:`~constrain.compiler.TokenAutomaton` that :class:`constrain.GrammarMatcher`
walks). ``constrain.compile`` comes here for Lark grammars and recursive JSON Schemas (whose automaton
:mod:`constrain.json_schema.recursion` builds).

``CFGMatcher`` and ``CompiledCFG`` are kept as aliases of :class:`constrain.GrammarMatcher` and
:class:`constrain.CompiledGrammar` (one class each for every grammar kind now).
"""

from __future__ import annotations

from typing import Any

from ..caches import bounded_cache
from .earley import EarleyAutomaton, build_automaton
from .lark_frontend import CFG, Terminal, parse_lark, read_grammar_text
from .token_masks import EarleyTokenMasks, compile_cfg, compile_earley_masks


@bounded_cache(maxsize=64, name="lark_automaton")
def automaton_for(source: str, start: str = "start", import_dir: str = "") -> EarleyAutomaton:
    """The configuration automaton of a Lark grammar text (cached; shared by every tokenizer)."""
    return build_automaton(parse_lark(source, start, import_dir or None))


def clear_caches() -> None:
    """Forget every Lark grammar's automaton (benchmarks time cold compiles)."""
    automaton_for.cache_clear()


def __getattr__(name: str) -> Any:
    # Aliases from when Lark grammars had their own classes (imported lazily: no import cycle).
    if name == "CFGMatcher":
        from ..matcher import GrammarMatcher

        return GrammarMatcher
    if name == "CompiledCFG":
        from ..compiler import CompiledGrammar

        return CompiledGrammar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CFG",
    "CFGMatcher",
    "CompiledCFG",
    "EarleyAutomaton",
    "EarleyTokenMasks",
    "Terminal",
    "automaton_for",
    "build_automaton",
    "clear_caches",
    "compile_cfg",
    "compile_earley_masks",
    "parse_lark",
    "read_grammar_text",
]
