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

import re

from ..caches import bounded_cache
from ..exceptions import RegexSyntaxError, UnsupportedRegexFeature
from .charsets import Ranges, subtract
from .determinize import determinize, nfa_to_dfa
from .dfa import DFA, minimal_dfa
from .nfa import RegexBuilder, regex_nfa

# Canonical JSON escapes of the characters that cannot appear raw inside a JSON string.
_ESCAPES: dict[int, bytes] = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n"}
_ESCAPES.update({0x0D: b"\\r", 0x09: b"\\t"})
for _cp in range(0x20):
    _ESCAPES.setdefault(_cp, b"\\u%04x" % _cp)
_RAW_FORBIDDEN: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]

_SUPPORTED_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE | re.VERBOSE | re.MULTILINE


def regex_to_dfa(pattern: str, flags: int = 0) -> DFA:
    """Compile ``pattern`` (Python ``re`` syntax, full-match semantics) to a minimal byte-level DFA.

    Raises:
        RegexSyntaxError: the pattern does not parse.
        UnsupportedRegexFeature: the pattern uses lookaround, backreferences, word boundaries,
            atomic groups or possessive repeats, or expands past the size limits.
    """
    return _regex_to_dfa_cached(pattern, int(flags))


@bounded_cache(maxsize=256)
def _regex_to_dfa_cached(pattern: str, flags: int) -> DFA:
    if not isinstance(pattern, str):
        raise RegexSyntaxError(f"expected a str pattern, got {type(pattern).__name__}", repr(pattern))
    if flags & ~_SUPPORTED_FLAGS:
        raise UnsupportedRegexFeature(f"flags {flags:#x}", pattern, "supported: I, S, A, U, X, M")
    nfa, start, final = regex_nfa(pattern, flags)
    trans, accepting, classes = determinize(nfa, start, final)
    return minimal_dfa(trans, accepting, 0, classes, pattern)


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
    nfa, start, final = regex_nfa(pattern, flags, JsonStringBuilder if json_string else RegexBuilder)
    return nfa_to_dfa(nfa, start, final, pattern)
