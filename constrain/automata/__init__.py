"""Byte-level automata: regexes and expressions to minimal DFAs, and set operations on them.

The modules, along the pipeline:

* ``charsets.py``: code point range sets (complement, case folding, ``\\d \\w \\s``) and their UTF-8
  byte sequences;
* ``nfa.py``: Thompson NFAs over byte ranges, built from ``re``'s parse trees;
* ``determinize.py``: subset construction over byte classes;
* ``minimize.py``: pruning and Hopcroft minimisation;
* ``dfa.py``: the :class:`DFA` type and constructors from transition tables;
* ``regex.py``: :func:`regex_to_dfa` (``re.fullmatch`` as a DFA) and :func:`regex_dfa`, cached;
* ``algebra.py``: expressions (:class:`Seq`, :class:`Alt`, :class:`Repeat`, :class:`Graph`...) to DFAs
  with :func:`build`, and :func:`intersect`, :func:`union`, :func:`difference`, :func:`splice`.

Which states of a DFA share a token mask is the masks' business (:mod:`constrain.masks.sharing`).
"""

from __future__ import annotations

from .algebra import (
    Alt,
    Embed,
    Expr,
    Graph,
    Literal,
    Regex,
    Repeat,
    Seq,
    accepts_empty_string,
    alt,
    build,
    checked_product,
    difference,
    intersect,
    is_empty,
    seq,
    splice,
    union,
)
from .charsets import utf8_sequences
from .dfa import (
    DEAD,
    DFA,
    MAX_DFA_STATES,
    class_table,
    column_classes,
    dfa_byte_classes,
    dfa_columns,
    dfa_from_arrays,
    dfa_from_class_arrays,
    empty_dfa,
    equivalent_states,
)
from .nfa import MAX_NFA_STATES
from .regex import engine_regex_dfa, regex_dfa, regex_to_dfa

__all__ = [
    "DEAD",
    "DFA",
    "MAX_DFA_STATES",
    "MAX_NFA_STATES",
    "Alt",
    "Embed",
    "Expr",
    "Graph",
    "Literal",
    "Regex",
    "Repeat",
    "Seq",
    "accepts_empty_string",
    "alt",
    "build",
    "checked_product",
    "class_table",
    "column_classes",
    "dfa_byte_classes",
    "dfa_columns",
    "dfa_from_arrays",
    "dfa_from_class_arrays",
    "difference",
    "empty_dfa",
    "engine_regex_dfa",
    "equivalent_states",
    "intersect",
    "is_empty",
    "regex_dfa",
    "regex_to_dfa",
    "seq",
    "splice",
    "union",
    "utf8_sequences",
]
