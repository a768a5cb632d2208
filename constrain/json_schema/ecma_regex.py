"""ECMA-262 regexes (JSON Schema ``pattern``) translated to Python ``re`` syntax with ECMA's meaning.

JSON Schema says ``pattern`` is an ECMA-262 regex and that it is *not* anchored: ``"a+"`` accepts
``"xxaayy"``. :func:`ecma_to_python` rewrites the pattern so that Python's ``re.search`` behaves as
ECMA's ``RegExp.prototype.test``; :func:`search_regex` wraps it for the full-match world of
:func:`constrain.automata.regex_to_dfa`.

What changes meaning between the two dialects, and what we emit:

* ``\\d`` ``\\w`` are ASCII only in ECMA (``[0-9]``, ``[A-Za-z0-9_]``); ``\\s`` is ECMA's WhiteSpace and
  LineTerminator set (with U+FEFF, without U+0085); ``\\D \\W \\S`` are their complements, also inside
  ``[...]``.
* ``.`` excludes the four line terminators ``\\n \\r \\u2028 \\u2029``; ``$`` matches only at the very
  end (``\\Z``, Python's ``$`` also matches before a final newline); ``^`` is ``\\A``.
* ``[^]`` is any character, ``[]`` is nothing; ``{`` that does not start a quantifier is a literal
  (Annex B), as are a lone ``]`` and ``}``; ``\\cX``, ``\\0``, legacy octal escapes, ``\\xHH``,
  ``\\uHHHH`` (a surrogate pair written as two escapes is one astral code point) and identity escapes
  (``\\/``, ``\\-``) become explicit code points.
* ``\\p{...}`` / ``\\P{...}`` general categories (``L``, ``Letter``, ``Nd``, ``digit``, ``gc=Lu``, ...)
  and ``Any``/``ASCII``/``Assigned`` become code point classes computed with :mod:`unicodedata`.
* Groups become non-capturing ``(?:...)``: the language is all we need, and ECMA allows group names and
  duplicate names that Python would reject.

Matching is over code points (the JSON string as decoded), as in ECMA's unicode mode, which the JSON
Schema Test Suite expects. The syntax is the lenient non-unicode one (Annex B: lone ``{ } ]``, legacy
octal, ``[\\d-z]``) with two exceptions where the readings of the two modes differ and we refuse rather
than guess: ``\\u{...}`` (unsupported), and an escaped ASCII letter with no ECMA meaning such as
``\\a`` or ``\\z`` (a syntax error, as in unicode mode; Annex B would read it as the letter).

No finite automaton can do lookahead/lookbehind, backreferences (``\\1``, ``\\k<name>``) or word
boundaries (``\\b``, ``\\B``): they raise :class:`UnsupportedRegexFeature` naming the construct. A pattern
that ECMA rejects raises :class:`RegexSyntaxError`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import numpy as np

from ..automata.charsets import MAX_CODEPOINT, Ranges, complement, normalize
from ..automata.nfa import _c, _sre_parse  # re's parser and constants, for either Python
from ..exceptions import RegexSyntaxError, UnsupportedRegexFeature

_LINE_TERMINATORS: Ranges = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]

# ECMA-262 General_Category values and aliases (Table "Value aliases and canonical values for
# General_Category", from Unicode's PropertyValueAliases.txt) -> the two-letter categories they cover.
_GC_GROUPS = {
    "L": "Lu Ll Lt Lm Lo",
    "LC": "Lu Ll Lt",
    "M": "Mn Mc Me",
    "N": "Nd Nl No",
    "P": "Pc Pd Ps Pe Pi Pf Po",
    "S": "Sm Sc Sk So",
    "Z": "Zs Zl Zp",
    "C": "Cc Cf Cs Co Cn",
}
_GC_ALIASES = {
    "Letter": "L",
    "Cased_Letter": "LC",
    "Uppercase_Letter": "Lu",
    "Lowercase_Letter": "Ll",
    "Titlecase_Letter": "Lt",
    "Modifier_Letter": "Lm",
    "Other_Letter": "Lo",
    "Mark": "M",
    "Combining_Mark": "M",
    "Nonspacing_Mark": "Mn",
    "Spacing_Mark": "Mc",
    "Enclosing_Mark": "Me",
    "Number": "N",
    "Decimal_Number": "Nd",
    "digit": "Nd",
    "Letter_Number": "Nl",
    "Other_Number": "No",
    "Punctuation": "P",
    "punct": "P",
    "Connector_Punctuation": "Pc",
    "Dash_Punctuation": "Pd",
    "Open_Punctuation": "Ps",
    "Close_Punctuation": "Pe",
    "Initial_Punctuation": "Pi",
    "Final_Punctuation": "Pf",
    "Other_Punctuation": "Po",
    "Symbol": "S",
    "Math_Symbol": "Sm",
    "Currency_Symbol": "Sc",
    "Modifier_Symbol": "Sk",
    "Other_Symbol": "So",
    "Separator": "Z",
    "Space_Separator": "Zs",
    "Line_Separator": "Zl",
    "Paragraph_Separator": "Zp",
    "Other": "C",
    "Control": "Cc",
    "cntrl": "Cc",
    "Format": "Cf",
    "Surrogate": "Cs",
    "Private_Use": "Co",
    "Unassigned": "Cn",
}
_TWO_LETTER = {c for group in _GC_GROUPS.values() for c in group.split()}


# --------------------------------------------------------------------------------------------
# Code point sets
# --------------------------------------------------------------------------------------------


@functools.cache
def _category_table() -> dict[str, Ranges]:
    """Two-letter general category -> code point ranges, for the running Python's Unicode version."""
    table: dict[str, Ranges] = {}
    start, current = 0, unicodedata.category("\0")
    for cp in range(1, MAX_CODEPOINT + 2):
        cat = unicodedata.category(chr(cp)) if cp <= MAX_CODEPOINT else ""
        if cat != current:
            table.setdefault(current, []).append((start, cp - 1))
            start, current = cp, cat
    return table


@functools.cache
def _space_separators() -> Ranges:
    """The code points of category Zs, for the running Python's Unicode version. Every Zs character
    is one ``str.isspace`` accepts (Zs, or bidirectional class WS, B or S), so ``re``'s ``\\s`` over
    all code points (one string, decoded at C speed) finds the few candidates: about 40 ms, where
    :func:`_category_table` takes 0.3-0.5 s, and ``\\s`` is common in schema patterns."""
    cps = np.arange(MAX_CODEPOINT + 1, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    found = (m.start() for m in re.finditer(r"\s", cps))
    return [(cp, cp) for cp in found if unicodedata.category(chr(cp)) == "Zs"]


@functools.cache
def _whitespace() -> Ranges:
    """ECMA ``\\s``: WhiteSpace (TAB VT FF ZWNBSP and every Zs) plus LineTerminator."""
    fixed = [(0x09, 0x09), (0x0B, 0x0C), (0xFEFF, 0xFEFF), *_LINE_TERMINATORS]
    return normalize(fixed + _space_separators())


@functools.cache
def property_ranges(name: str) -> Ranges | None:
    """Code points of the ECMA property escape body ``name`` (``L``, ``Letter``, ``gc=Lu``, ``ASCII``...).

    Returns None for a property this module does not know (scripts, most binary properties). The list
    is cached and shared: do not mutate it.
    """
    key, sep, value = name.partition("=")
    if sep:
        if key not in ("General_Category", "gc"):
            return None
        name = value
    elif name == "Any":
        return [(0, MAX_CODEPOINT)]
    elif name == "ASCII":
        return [(0, 0x7F)]
    elif name == "Assigned":
        return complement(_category_table().get("Cn", []))
    short = _GC_ALIASES.get(name, name)
    cats = _GC_GROUPS.get(short, short if short in _TWO_LETTER else None)
    if cats is None:
        return None
    table = _category_table()
    return normalize([r for cat in cats.split() for r in table.get(cat, [])])


def _escape_cp(cp: int) -> str:
    """One code point as Python regex text that means exactly that code point (in or out of a class)."""
    ch = chr(cp)
    if ch.isascii() and (ch.isalnum() or ch == "_"):
        return ch
    if 0x21 <= cp <= 0x7E:
        return "\\" + ch  # Python reads a backslash before ASCII punctuation as that character
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _class_text(ranges: Ranges) -> str:
    """A Python class for a code point set (a never-matching class when it is empty)."""
    ranges = normalize(ranges)
    if not ranges:
        return r"[^\x00-\U0010ffff]"
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(_escape_cp(lo))
        elif hi == lo + 1:
            parts.append(_escape_cp(lo) + _escape_cp(hi))
        else:
            parts.append(f"{_escape_cp(lo)}-{_escape_cp(hi)}")
    return "[" + "".join(parts) + "]"


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------

_BRACED_QUANTIFIER = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_CONTROL_ESCAPES = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_CLASS_ESCAPES = {"d": (_DIGIT, False), "D": (_DIGIT, True), "w": (_WORD, False), "W": (_WORD, True)}
_HEX = "0123456789abcdefABCDEF"


class _Parser:
    """Recursive descent over ECMA-262 Pattern (Annex B grammar), emitting Python regex text."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.n_groups, self.has_names = _scan_groups(pattern)

    # -- errors -----------------------------------------------------------------------------------

    def syntax(self, message: str) -> RegexSyntaxError:
        return RegexSyntaxError(f"invalid ECMA-262 regex: {message}", self.p, self.i)

    def unsupported(self, construct: str, hint: str = "") -> UnsupportedRegexFeature:
        return UnsupportedRegexFeature(construct, self.p, hint)

    # -- helpers ----------------------------------------------------------------------------------

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.p[j] if j < len(self.p) else ""

    def parse(self) -> str:
        out = self.disjunction()
        if self.i < len(self.p):  # only an unmatched ")" stops the top-level disjunction
            raise self.syntax("unmatched ')'")
        return out

    def disjunction(self) -> str:
        alts = [self.alternative()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.alternative())
        return "|".join(alts)

    def alternative(self) -> str:
        parts = []
        while self.i < len(self.p) and self.peek() not in "|)":
            parts.append(self.term())
        return "".join(parts)

    def term(self) -> str:
        p, c = self.p, self.peek()
        if c in "^$":
            self.i += 1
            if self.quantifier() is not None:
                raise self.syntax(f"nothing to repeat after '{c}'")
            # ECMA without the m flag: ^ and $ are the very start and the very end of the input.
            return r"\A" if c == "^" else r"\Z"
        if c == "\\" and self.peek(1) in ("b", "B"):
            raise self.unsupported(
                f"a word boundary (\\{self.peek(1)})", "spell out the characters allowed on each side"
            )
        for opener, what in (("(?=", "lookahead"), ("(?!", "negative lookahead")):
            if p.startswith(opener, self.i):
                raise self.unsupported(f"a {what} assertion {opener}...)", "rewrite it without lookaround")
        for opener, what in (("(?<=", "lookbehind"), ("(?<!", "negative lookbehind")):
            if p.startswith(opener, self.i):
                raise self.unsupported(f"a {what} assertion {opener}...)", "rewrite it without lookaround")
        if c in "*+?":
            raise self.syntax(f"nothing to repeat before '{c}'")
        if c == "{" and _BRACED_QUANTIFIER.match(p, self.i):
            raise self.syntax("nothing to repeat before a braced quantifier")
        atom = self.atom()
        q = self.quantifier()
        if q is None:
            return atom
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and _BRACED_QUANTIFIER.match(p, self.i)):
            raise self.syntax("nothing to repeat (two quantifiers in a row)")
        return atom + q

    def quantifier(self) -> str | None:
        """A quantifier at the cursor as Python text (laziness dropped: same language), or None."""
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            q = c
        elif c == "{":
            m = _BRACED_QUANTIFIER.match(self.p, self.i)
            if m is None:
                return None  # Annex B: a literal "{"
            lo = int(m.group(1))
            hi = None if m.group(2) and not m.group(3) else int(m.group(3) or m.group(1))
            if hi is not None and hi < lo:
                raise self.syntax(f"numbers out of order in {m.group()}")
            self.i = m.end()
            q = f"{{{lo}}}" if hi == lo else f"{{{lo},}}" if hi is None else f"{{{lo},{hi}}}"
        else:
            return None
        if self.peek() == "?":
            self.i += 1  # lazy: matches the same strings
        return q

    def atom(self) -> str:
        c = self.peek()
        if c == ".":
            self.i += 1
            return _class_text(complement(_LINE_TERMINATORS))
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class()
        if c == "\\":
            item = self.escape(in_class=False)
            return _class_text(item) if isinstance(item, list) else _escape_cp(item)
        self.i += 1
        return _escape_cp(ord(c))

    def group(self) -> str:
        p = self.p
        self.i += 1
        if p.startswith("?:", self.i):
            self.i += 2
        elif p.startswith("?<", self.i):
            end = p.find(">", self.i)
            name = p[self.i + 2 : end] if end >= 0 else ""
            if not name or not all(ch.isalnum() or ch in "_$" for ch in name) or name[0].isdigit():
                raise self.syntax("invalid group name")
            self.i = end + 1
        elif self.peek() == "?":
            raise self.syntax("invalid group")
        body = self.disjunction()
        if self.peek() != ")":
            raise self.syntax("missing ')'")
        self.i += 1
        return f"(?:{body})"

    def char_class(self) -> str:
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: Ranges = []
        while True:
            if self.i >= len(self.p):
                raise self.syntax("missing ']'")
            if self.peek() == "]":
                self.i += 1
                break
            first = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                second = self.class_atom()
                if isinstance(first, int) and isinstance(second, int):
                    if first > second:
                        raise self.syntax("range out of order in character class")
                    ranges.append((first, second))
                    continue
                # Annex B: a class escape at either end makes "-" a plain member.
                ranges += [*_as_ranges(first), (0x2D, 0x2D), *_as_ranges(second)]
                continue
            ranges += _as_ranges(first)
        return _class_text(complement(ranges) if negate else ranges)

    def class_atom(self) -> int | Ranges:
        c = self.peek()
        if c == "\\":
            return self.escape(in_class=True)
        self.i += 1
        return ord(c)

    def escape(self, in_class: bool) -> int | Ranges:
        """The escape at the cursor (which is on the backslash): a code point or a set."""
        p = self.p
        self.i += 1
        c = self.peek()
        if c == "":
            raise self.syntax("\\ at end of pattern")
        self.i += 1
        if c in _CLASS_ESCAPES:
            ranges, negated = _CLASS_ESCAPES[c]
            return complement(ranges) if negated else list(ranges)
        if c in ("s", "S"):
            return complement(_whitespace()) if c == "S" else list(_whitespace())
        if c in ("p", "P") and self.peek() == "{":
            end = p.find("}", self.i)
            if end < 0:
                raise self.syntax("missing '}' in property escape")
            name = p[self.i + 1 : end]
            self.i = end + 1
            prop = property_ranges(name)
            if prop is None:
                raise self.unsupported(
                    f"the property escape \\{c}{{{name}}}",
                    "general categories (L, Lu, Nd, P, ...), Any, ASCII and Assigned are supported",
                )
            return complement(prop) if c == "P" else list(prop)
        if c in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[c]
        if c == "b" and in_class:
            return 0x08
        if c == "c":
            nxt = self.peek()
            if nxt.isascii() and (nxt.isalpha() or (in_class and (nxt.isdigit() or nxt == "_"))):
                self.i += 1
                return ord(nxt) % 32
            raise self.syntax("\\c must be followed by a letter")
        if c == "x":
            if _is_hex(self.peek()) and _is_hex(self.peek(1)):
                self.i += 2
                return int(p[self.i - 2 : self.i], 16)
            raise self.syntax("\\x must be followed by two hex digits")
        if c == "u":
            return self.unicode_escape()
        if c == "0" and not _is_digit(self.peek()):
            return 0
        if _is_digit(c):
            return self.decimal_escape(c, in_class)
        if c == "k" and self.has_names and not in_class:
            raise self.unsupported(
                "a backreference (\\k<name>)", "backreferences make the language non-regular"
            )
        if c.isascii() and c.isalpha():
            # Annex B would read "\a" as "a", but unicode mode (the JSON Schema Test Suite's reading)
            # rejects it and other dialects give such escapes a meaning (\a bell, \A start, \z end).
            raise self.syntax(f"\\{c} is not an ECMA-262 escape")
        return ord(c)  # identity escape: \/ \- \. \$ ...

    def unicode_escape(self) -> int:
        p = self.p
        if self.peek() == "{":
            raise self.unsupported(
                "a \\u{...} escape",
                "it means a code point only in unicode mode; write \\uXXXX (pairs) instead",
            )
        hex4 = p[self.i : self.i + 4]
        if len(hex4) < 4 or not all(map(_is_hex, hex4)):
            raise self.syntax("\\u must be followed by four hex digits")
        self.i += 4
        cp = int(hex4, 16)
        # A high surrogate escape followed by a low one is one astral code point.
        low = p[self.i : self.i + 6]
        if 0xD800 <= cp <= 0xDBFF and len(low) == 6 and low[:2] == "\\u" and all(map(_is_hex, low[2:])):
            lo = int(low[2:], 16)
            if 0xDC00 <= lo <= 0xDFFF:
                self.i += 6
                return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
        return cp

    def decimal_escape(self, first: str, in_class: bool) -> int:
        p = self.p
        start = self.i - 1
        j = start
        while j < len(p) and _is_digit(p[j]):
            j += 1
        if not in_class and first != "0" and int(p[start:j]) <= self.n_groups:
            raise self.unsupported(
                f"a backreference (\\{p[start:j]})", "backreferences make the language non-regular"
            )
        if first in "89":
            return ord(first)  # Annex B identity escape
        # Annex B legacy octal: up to three octal digits, at most \377.
        digits = first
        while len(digits) < 3 and self.peek() != "" and self.peek() in "01234567":
            if len(digits) == 2 and digits[0] not in "0123":
                break
            digits += self.peek()
            self.i += 1
        return int(digits, 8)


def _is_hex(ch: str) -> bool:
    return ch != "" and ch in _HEX


def _is_digit(ch: str) -> bool:
    return ch != "" and ch in "0123456789"


def _as_ranges(item: int | Ranges) -> Ranges:
    return [(item, item)] if isinstance(item, int) else item


def _scan_groups(pattern: str) -> tuple[int, bool]:
    """Count capturing groups and see whether any is named (decides what ``\\1`` and ``\\k`` mean)."""
    count, named, i, in_class = 0, False, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            rest = pattern[i + 1 : i + 4]
            if not rest.startswith("?"):
                count += 1
            elif rest.startswith("?<") and rest[2:3] not in ("=", "!"):
                count += 1
                named = True
        i += 1
    return count, named


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def ecma_to_python(pattern: str) -> str:
    """Translate an ECMA-262 regex (no flags) to Python ``re`` syntax with the same meaning.

    ``re.search(ecma_to_python(p), s)`` succeeds exactly when ``new RegExp(p).test(s)`` would (over
    code points), and ``re.fullmatch`` of it is the ECMA match of the whole string. See the module
    docstring for what is translated.

    Raises:
        UnsupportedRegexFeature: lookaround, backreferences, ``\\b``/``\\B``, an unknown ``\\p{...}``
            property or a ``\\u{...}`` escape.
        RegexSyntaxError: ECMA-262 rejects the pattern.
    """
    if not isinstance(pattern, str):
        raise RegexSyntaxError(f"expected a str pattern, got {type(pattern).__name__}", repr(pattern))
    try:
        return _Parser(pattern).parse()
    except RecursionError:  # the parser recurses once per nested group
        raise UnsupportedRegexFeature(
            "groups nested deeper than the parser's recursion limit", pattern, "flatten the nesting"
        ) from None


def search_regex(pattern: str) -> str:
    """A full-match Python regex accepting exactly the strings in which the ECMA ``pattern`` is found.

    That is JSON Schema's ``pattern`` keyword: ``RegExp(pattern).test(s)``. The translated pattern sits
    between two "anything" runs; its ``\\A``/``\\Z`` anchors still pin it to the ends of the string.
    """
    translated = ecma_to_python(pattern)
    inner = _between_anchors(translated)
    if inner is not None:
        return inner
    return rf"(?s:.*)(?:{translated})(?s:.*)"


def _between_anchors(translated: str) -> str | None:
    """``X`` when ``translated`` is ``\\AX\\Z`` with both anchors at its top level and no other anchor
    anywhere: then the search language is the full match of ``X``, which the subset construction builds
    without tracking anchors (tens of ms less for a long ``^...$`` pattern). None otherwise."""
    if not (translated.startswith("\\A") and translated.endswith("\\Z")):
        return None
    try:
        parsed = _sre_parse.parse(translated)
    except re.error:  # pragma: no cover - the translation is valid Python syntax
        return None
    items = list(parsed)
    if len(items) < 2 or items[0] != (_c.AT, _c.AT_BEGINNING_STRING):
        return None
    if items[-1] != (_c.AT, _c.AT_END_STRING):
        return None
    if _anchors_in(items[1:-1]):
        return None
    return translated[2:-2]


_REPEATS = tuple(getattr(_c, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(_c, n))
_OPAQUE = tuple(
    getattr(_c, n) for n in ("ASSERT", "ASSERT_NOT", "ATOMIC_GROUP", "GROUPREF_EXISTS") if hasattr(_c, n)
)


def _anchors_in(items: Any) -> bool:
    """Whether a parsed pattern (``re``'s parse items) holds an anchor or a word boundary anywhere."""
    for op, av in items:
        if op is _c.AT:
            return True
        if op is _c.BRANCH:
            if any(_anchors_in(branch) for branch in av[1]):
                return True
        elif op is _c.SUBPATTERN:
            if _anchors_in(av[-1]):
                return True
        elif op in _REPEATS:
            if _anchors_in(av[2]):
                return True
        elif op in _OPAQUE:
            return True  # not produced by the translation; the general path names them
    return False
