"""Regular expressions to minimal byte-level DFAs (cached).

:func:`regex_to_dfa` is ``re.fullmatch`` as an automaton over the UTF-8 bytes of the text. Pipeline:
``re``'s parse tree -> Thompson NFA over byte ranges (:mod:`.nfa`) -> subset construction over byte
classes (:mod:`.determinize`) -> pruning of states that cannot reach an accepting state -> minimisation
(:mod:`.minimize`) -> :class:`~constrain.automata.dfa.DFA`.

:func:`regex_dfa` is the same for the expression algebra, optionally reading the pattern over the
*decoded* characters of a JSON string: each character then matches its canonical JSON encoding
(``json.dumps(..., ensure_ascii=False)``): ``"`` and ``\\`` and control characters become their
escapes, every other character stands for itself. So a ``pattern`` or ``format`` regex is enforced on
the string value, not on its escaped text.
"""

from __future__ import annotations

import functools
import re

from ..caches import bounded_cache, register
from ..exceptions import RegexSyntaxError, UnsupportedRegexFeature
from .charsets import Ranges, subtract
from .determinize import determinize, nfa_to_dfa
from .dfa import DFA, minimal_dfa
from .nfa import RegexBuilder, _sre_parse, regex_nfa

# Canonical JSON escapes of the characters that cannot appear raw inside a JSON string.
_ESCAPES: dict[int, bytes] = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n"}
_ESCAPES.update({0x0D: b"\\r", 0x09: b"\\t"})
for _cp in range(0x20):
    _ESCAPES.setdefault(_cp, b"\\u%04x" % _cp)
_RAW_FORBIDDEN: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]

# An int: ``~`` of a RegexFlag keeps only the known flags, so unknown bits would slip through the check.
_SUPPORTED_FLAGS = int(re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE | re.VERBOSE | re.MULTILINE)


def regex_to_dfa(pattern: str, flags: int = 0) -> DFA:
    """Compile ``pattern`` (Python ``re`` syntax, full-match semantics) to a minimal byte-level DFA.

    Raises:
        RegexSyntaxError: the pattern does not parse.
        UnsupportedRegexFeature: the pattern uses lookaround, backreferences, word boundaries,
            atomic groups or possessive repeats, or expands past the size limits.
    """
    return _regex_to_dfa_cached(pattern, int(flags))


@bounded_cache(maxsize=256, name="regex_to_dfa")
def _regex_to_dfa_cached(pattern: str, flags: int) -> DFA:
    if not isinstance(pattern, str):
        raise RegexSyntaxError(f"expected a str pattern, got {type(pattern).__name__}", repr(pattern))
    if flags & ~_SUPPORTED_FLAGS:
        raise UnsupportedRegexFeature(f"flags {flags:#x}", pattern, "supported: I, S, A, U, X, M")
    try:
        nfa, start, final = regex_nfa(pattern, flags)
    except RecursionError:  # re's parser and the NFA builder recurse once per nested group
        raise _too_deep(pattern) from None
    except ValueError as e:  # re's parser checks some flag combinations with a bare ValueError
        if isinstance(e, (RegexSyntaxError, UnsupportedRegexFeature)):
            raise
        raise RegexSyntaxError(str(e), pattern) from None
    trans, accepting, classes = determinize(nfa, start, final)
    return minimal_dfa(trans, accepting, 0, classes, pattern)


def _too_deep(pattern: str) -> UnsupportedRegexFeature:
    return UnsupportedRegexFeature(
        "groups nested deeper than the parser's recursion limit", pattern, "flatten the nesting"
    )


def ascii_by_default(pattern: str, flags: int) -> int:
    """``flags`` with ``re.ASCII`` added unless the caller asked for Unicode classes.

    The public regex entry points (:meth:`constrain.Grammar.from_regex`, ``generate(regex=...)``) read
    ``\\d``, ``\\w``, ``\\s`` (and case-insensitive matching) as ASCII, as ECMA-262 and JSON Schema do:
    Python's Unicode ``\\d`` lets a model write ``"🯸🯸🯸🯸"`` for a year. ``re.UNICODE`` in ``flags``,
    or an inline ``(?u)`` in the pattern, keeps Python's Unicode classes.

    Raises:
        RegexSyntaxError: ``flags`` holds both ``re.ASCII`` and ``re.UNICODE``.
    """
    if flags & re.ASCII and flags & re.UNICODE:
        raise RegexSyntaxError("flags re.ASCII and re.UNICODE are incompatible", pattern)
    if flags & re.UNICODE or flags & re.ASCII:
        return flags
    try:
        _sre_parse.parse(pattern, flags | re.ASCII)
    except (re.error, ValueError) as e:
        if "incompatible" in str(e):  # an inline (?u): the pattern asks for Unicode itself
            return flags
    except RecursionError:
        raise _too_deep(pattern) from None
    return flags | re.ASCII


class JsonStringBuilder(RegexBuilder):
    """Reads each code point of the pattern as its canonical encoding inside a JSON string."""

    def charset(self, ranges: Ranges) -> tuple[int, int]:
        """A fragment reading one code point of ``ranges``: raw, or as its JSON escape."""
        raw = subtract(ranges, _RAW_FORBIDDEN)
        if raw:
            start, end = self.nfa.charset(raw)
        else:
            start, end = self.nfa.state(), self.nfa.state()
        for lo, hi in ranges:
            for cp in range(max(lo, 0), min(hi, 0x5C) + 1):
                esc = _ESCAPES.get(cp)
                if esc is not None:
                    self.nfa.literal_path(start, end, esc)
        return start, end


@bounded_cache(maxsize=1024)
def regex_dfa(pattern: str, flags: int = 0, json_string: bool = False) -> DFA:
    """Like :func:`regex_to_dfa`, optionally over JSON string characters (cached, no flag check)."""
    try:
        nfa, start, final = regex_nfa(pattern, flags, JsonStringBuilder if json_string else RegexBuilder)
    except RecursionError:
        raise _too_deep(pattern) from None
    return nfa_to_dfa(nfa, start, final, pattern)


@functools.lru_cache(maxsize=64)
def engine_regex_dfa(pattern: str) -> DFA:
    """:func:`regex_dfa` of a pattern the engine writes itself (a JSON number, ``true|false``,
    ``null``), built once per process: it depends on no grammar, so
    ``clear_caches(keep_constants=True)`` keeps it."""
    return regex_dfa(pattern)


register(engine_regex_dfa.cache_clear, constant=True)
