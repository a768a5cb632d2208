"""Sets of Unicode code points and their UTF-8 encodings.

A set is a :data:`Ranges` list: sorted, disjoint, inclusive ``(lo, hi)`` code point ranges. The regex
NFA builder reads character classes as such sets and spells each as UTF-8 byte-range sequences
(:func:`utf8_sequences`), so the automaton reads the bytes of the text directly. Surrogates
(U+D800..U+DFFF) have no UTF-8 encoding and are dropped from every set the builder emits.

The Unicode meaning of ``\\d \\w \\s`` and of case-insensitive matching is taken from ``re`` itself
(:func:`category_ranges`, :func:`fold_case`), so it matches the running Python exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MAX_CODEPOINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)
"""The surrogate code points (inclusive), which no UTF-8 text contains."""

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive code point ranges


def normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """``ranges`` (in any order, overlapping or not) as a sorted list of disjoint, non-adjacent ranges."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def complement(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """The code points ``0..MAX_CODEPOINT`` not in ``ranges`` (surrogates included)."""
    out: Ranges = []
    nxt = 0
    for lo, hi in normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODEPOINT:
        out.append((nxt, MAX_CODEPOINT))
    return out


def subtract(ranges: Ranges, remove: Ranges) -> Ranges:
    """The code points of ``ranges`` that are not in ``remove``, normalized."""
    out: Ranges = []
    for lo, hi in ranges:
        pieces = [(lo, hi)]
        for rlo, rhi in remove:
            nxt: Ranges = []
            for a, b in pieces:
                if rhi < a or rlo > b:
                    nxt.append((a, b))
                    continue
                if a < rlo:
                    nxt.append((a, rlo - 1))
                if rhi < b:
                    nxt.append((rhi + 1, b))
            pieces = nxt
        out.extend(pieces)
    return normalize(out)


def without_surrogates(ranges: Ranges) -> Ranges:
    """``ranges`` less the surrogates."""
    return subtract(ranges, [SURROGATES])


@functools.lru_cache(maxsize=1)
def _all_text() -> str:
    """Every encodable code point, in order, as one string (for scanning with ``re``)."""
    return "".join(map(chr, range(SURROGATES[0]))) + "".join(
        map(chr, range(SURROGATES[1] + 1, MAX_CODEPOINT + 1))
    )


def _positions_to_ranges(codepoints: Iterable[int]) -> Ranges:
    out: Ranges = []
    for cp in codepoints:
        if out and cp == out[-1][1] + 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


@functools.lru_cache(maxsize=32)
def category_ranges(regex_class: str, flags: int) -> Ranges:
    """Code points matched by ``\\d``, ``\\w``, ``\\s`` (and their negations) under ``flags``.

    Found by asking ``re`` itself, so Unicode tables match the running Python exactly. The list is
    cached and shared: do not mutate it.
    """
    text = _all_text()
    return _positions_to_ranges(ord(m.group()) for m in re.finditer(regex_class, text, flags))


@functools.lru_cache(maxsize=1)
def _cased_chars() -> str:
    """Code points that may match something else under ``re.IGNORECASE``."""
    text = _all_text()
    return "".join(ch for ch in text if ch.lower() != ch or ch.upper() != ch or ch.casefold() != ch)


def _class_regex(ranges: Ranges) -> str:
    return "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges) + "]"


def fold_case(ranges: Ranges, flags: int) -> Ranges:
    """Close a positive set under ``re``'s case-insensitive matching (asking ``re`` for each cased char)."""
    if not ranges:
        return ranges
    matcher = re.compile(_class_regex(ranges), flags | re.IGNORECASE)
    extra = [ord(ch) for ch in _cased_chars() if matcher.fullmatch(ch)]
    return normalize([*ranges, *((cp, cp) for cp in extra)])


def utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Split the code point range ``[lo, hi]`` into UTF-8 byte-range sequences.

    Each returned sequence is a list of inclusive byte ranges; the byte strings it spells (the
    product of its ranges) are exactly the UTF-8 encodings of the code points in the range.
    """
    out: list[list[tuple[int, int]]] = []
    stack = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        if a > b:
            continue
        for bound in (0x7F, 0x7FF, 0xFFFF):
            if a <= bound < b:
                stack.append((bound + 1, b))
                stack.append((a, bound))
                break
        else:
            if b <= 0x7F:
                out.append([(a, b)])
                continue
            n = len(chr(a).encode("utf-8", "surrogatepass"))
            for i in range(1, n):
                m = (1 << (6 * i)) - 1
                if (a & ~m) != (b & ~m):
                    if a & m:
                        stack.append(((a | m) + 1, b))
                        stack.append((a, a | m))
                        break
                    if (b & m) != m:
                        stack.append((b & ~m, b))
                        stack.append((a, (b & ~m) - 1))
                        break
            else:
                ea = chr(a).encode("utf-8", "surrogatepass")
                eb = chr(b).encode("utf-8", "surrogatepass")
                out.append(list(zip(ea, eb)))
    return out
