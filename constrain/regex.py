"""Regular expressions to minimal byte-level DFAs.

The pattern is parsed with Python's own regex parser (``re._parser``), so the syntax and the meaning of
every construct are exactly those of ``re.fullmatch``: ``\\d`` is any Unicode digit unless ``re.ASCII``
is set, ``(?i)`` folds case the way ``re`` does, ``.`` excludes ``\\n`` unless ``re.DOTALL``. Character
sets over code points become UTF-8 byte sequences, so the automaton reads the token bytes directly.

Pipeline: parse tree -> Thompson NFA over byte ranges -> subset construction over byte classes ->
pruning of states that cannot reach an accepting state -> Moore minimisation -> :class:`DFA`.

Constructs no finite automaton can express (lookaround, backreferences, conditionals, atomic groups,
possessive repeats, word boundaries) raise :class:`UnsupportedRegexFeature` naming the construct.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from .exceptions import RegexSyntaxError, UnsupportedRegexFeature

try:  # Python >= 3.11
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c
    import sre_parse as _sre_parse

MAX_CODEPOINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)

#: Upper bound on NFA states: a guard against ``x{1000}{1000}``-style blow-ups.
MAX_NFA_STATES = 400_000
#: Upper bound on DFA states produced by the subset construction.
MAX_DFA_STATES = 200_000

DEAD = -1

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive code point ranges


# --------------------------------------------------------------------------------------------
# The DFA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DFA:
    """A minimal deterministic automaton over bytes.

    ``transitions[s, b]`` is the state after reading byte ``b`` in state ``s``, or ``-1`` (dead). Every
    state can reach an accepting state (dead ends are pruned), so a prefix is viable exactly when
    its walk never hits ``-1``. The start state is ``start``.
    """

    transitions: np.ndarray  # int32[num_states, 256]
    accepting: np.ndarray  # bool[num_states]
    start: int = 0
    pattern: str = field(default="", compare=False)

    @property
    def num_states(self) -> int:
        """Number of live states."""
        return int(self.transitions.shape[0])

    def step(self, state: int, data: bytes) -> int:
        """The state after reading ``data`` from ``state`` (``-1`` if the walk dies)."""
        t = self.transitions
        for b in data:
            if state < 0:
                return DEAD
            state = int(t[state, b])
        return state

    def matches(self, data: bytes) -> bool:
        """True when ``data`` is in the language."""
        s = self.step(self.start, data)
        return s >= 0 and bool(self.accepting[s])


# --------------------------------------------------------------------------------------------
# Code point sets
# --------------------------------------------------------------------------------------------


def _normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODEPOINT:
        out.append((nxt, MAX_CODEPOINT))
    return _without_surrogates(out)


def _without_surrogates(ranges: Ranges) -> Ranges:
    lo_s, hi_s = _SURROGATES
    out: Ranges = []
    for lo, hi in ranges:
        if hi < lo_s or lo > hi_s:
            out.append((lo, hi))
            continue
        if lo < lo_s:
            out.append((lo, lo_s - 1))
        if hi > hi_s:
            out.append((hi_s + 1, hi))
    return out


@functools.lru_cache(maxsize=1)
def _all_text() -> str:
    """Every encodable code point, in order, as one string (for scanning with ``re``)."""
    return "".join(map(chr, range(_SURROGATES[0]))) + "".join(
        map(chr, range(_SURROGATES[1] + 1, MAX_CODEPOINT + 1))
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
def _category_ranges(regex_class: str, flags: int) -> Ranges:
    """Code points matched by ``\\d``, ``\\w``, ``\\s`` (and their negations) under ``flags``.

    Found by asking ``re`` itself, so Unicode tables match the running Python exactly.
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


def _fold_case(ranges: Ranges, flags: int) -> Ranges:
    """Close a positive set under ``re``'s case-insensitive matching (asking ``re`` for each cased char)."""
    if not ranges:
        return ranges
    matcher = re.compile(_class_regex(ranges), flags | re.IGNORECASE)
    extra = [ord(ch) for ch in _cased_chars() if matcher.fullmatch(ch)]
    return _normalize([*ranges, *((cp, cp) for cp in extra)])


# --------------------------------------------------------------------------------------------
# UTF-8
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# NFA (Thompson construction over byte ranges, with anchor assertions)
# --------------------------------------------------------------------------------------------

# Assertion kinds on epsilon edges; they interact with the matching "mode" (see _Subset).
_EPS, _BEGIN, _END_OR_NL, _END = 0, 1, 2, 3


class _NFA:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.edges: list[list[tuple[int, int, int]]] = []  # (byte_lo, byte_hi, target)
        self.eps: list[list[tuple[int, int]]] = []  # (kind, target)
        self.has_anchors = False

    def state(self) -> int:
        if len(self.edges) >= MAX_NFA_STATES:
            raise UnsupportedRegexFeature(
                f"a repetition that expands past {MAX_NFA_STATES} automaton states",
                self.pattern,
                "reduce the bounded repetition counts",
            )
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def charset(self, ranges: Ranges) -> tuple[int, int]:
        start, end = self.state(), self.state()
        # Share the first-byte fan-out: one path per UTF-8 sequence.
        for lo, hi in ranges:
            for seq in utf8_sequences(lo, hi):
                cur = start
                for i, (blo, bhi) in enumerate(seq):
                    nxt = end if i == len(seq) - 1 else self.state()
                    self.edges[cur].append((blo, bhi, nxt))
                    cur = nxt
        return start, end


class _Builder:
    """Walks ``re``'s parse tree and emits NFA fragments ``(start, end)``."""

    def __init__(self, pattern: str, nfa: _NFA) -> None:
        self.pattern = pattern
        self.nfa = nfa

    def unsupported(self, construct: str, hint: str = "") -> UnsupportedRegexFeature:
        return UnsupportedRegexFeature(construct, self.pattern, hint)

    # ---- character sets -------------------------------------------------------------------
    def _category(self, cat: object, flags: int) -> Ranges:
        name = str(cat)
        table = {
            "CATEGORY_DIGIT": r"\d",
            "CATEGORY_NOT_DIGIT": r"\D",
            "CATEGORY_SPACE": r"\s",
            "CATEGORY_NOT_SPACE": r"\S",
            "CATEGORY_WORD": r"\w",
            "CATEGORY_NOT_WORD": r"\W",
        }
        if name not in table:
            raise self.unsupported(f"the character category {name}")
        return _category_ranges(table[name], flags & (re.ASCII | re.UNICODE | re.LOCALE))

    def _in_ranges(self, items: Sequence[tuple[Any, Any]], flags: int) -> Ranges:
        negate = False
        parts: Ranges = []
        for op, av in items:
            if op is _c.NEGATE:
                negate = True
            elif op is _c.LITERAL:
                assert isinstance(av, int)
                parts.append((av, av))
            elif op is _c.RANGE:
                lo, hi = av
                parts.append((lo, hi))
            elif op is _c.CATEGORY:
                parts.extend(self._category(av, flags))
            else:  # pragma: no cover - re's parser emits nothing else inside []
                raise self.unsupported(f"the set item {op}")
        ranges = _normalize(parts)
        if flags & re.IGNORECASE:
            ranges = _fold_case(ranges, flags)
        return _complement(ranges) if negate else _without_surrogates(ranges)

    # ---- the tree -------------------------------------------------------------------------
    def seq(self, items: Iterable[tuple[Any, Any]], flags: int) -> tuple[int, int]:
        nfa = self.nfa
        start = nfa.state()
        cur = start
        for op, av in items:
            s, e = self.node(op, av, flags)
            nfa.eps[cur].append((_EPS, s))
            cur = e
        return start, cur

    def node(self, op: Any, av: Any, flags: int) -> tuple[int, int]:
        nfa = self.nfa
        if op is _c.LITERAL:
            assert isinstance(av, int)
            ranges: Ranges = [(av, av)]
            if flags & re.IGNORECASE:
                ranges = _fold_case(ranges, flags)
            return nfa.charset(_without_surrogates(ranges))
        if op is _c.NOT_LITERAL:
            assert isinstance(av, int)
            ranges = [(av, av)]
            if flags & re.IGNORECASE:
                ranges = _fold_case(ranges, flags)
            return nfa.charset(_complement(ranges))
        if op is _c.ANY:
            ranges = [(0, MAX_CODEPOINT)] if flags & re.DOTALL else [(0, 9), (11, MAX_CODEPOINT)]
            return nfa.charset(_without_surrogates(ranges))
        if op is _c.IN:
            return nfa.charset(self._in_ranges(av, flags))
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            return self.seq(sub, (flags | add_flags) & ~del_flags)
        if op is _c.BRANCH:
            _, branches = av
            start, end = nfa.state(), nfa.state()
            for br in branches:
                s, e = self.seq(br, flags)
                nfa.eps[start].append((_EPS, s))
                nfa.eps[e].append((_EPS, end))
            return start, end
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, sub = av
            return self.repeat(lo, hi, sub, flags)
        if op is _c.AT:
            return self.anchor(av, flags)
        if op is _c.GROUPREF or op is getattr(_c, "GROUPREF_EXISTS", None):
            raise self.unsupported("a backreference", "backreferences make the language non-regular")
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            direction = "lookahead" if av[0] == 1 else "lookbehind"
            kind = "negative " if op is _c.ASSERT_NOT else ""
            raise self.unsupported(f"a {kind}{direction} assertion", "rewrite it without lookaround")
        if op is getattr(_c, "POSSESSIVE_REPEAT", None):
            raise self.unsupported("a possessive repeat (*+, ++, ?+)", "use a greedy repeat")
        if op is getattr(_c, "ATOMIC_GROUP", None):
            raise self.unsupported("an atomic group (?>...)", "use a plain group")
        raise self.unsupported(f"the regex construct {op}")  # pragma: no cover

    def repeat(self, lo: int, hi: int, sub: Any, flags: int) -> tuple[int, int]:
        nfa = self.nfa
        unbounded = hi == _c.MAXREPEAT
        if (not unbounded and hi > 100_000) or lo > 100_000:
            raise self.unsupported(f"a repetition count {{{lo},{hi}}} beyond 100000")
        start = nfa.state()
        cur = start
        for _ in range(lo):
            s, e = self.seq(sub, flags)
            nfa.eps[cur].append((_EPS, s))
            cur = e
        if unbounded:
            s, e = self.seq(sub, flags)
            end = nfa.state()
            nfa.eps[cur].append((_EPS, s))
            nfa.eps[cur].append((_EPS, end))
            nfa.eps[e].append((_EPS, s))
            nfa.eps[e].append((_EPS, end))
            return start, end
        end = nfa.state()
        for _ in range(hi - lo):
            nfa.eps[cur].append((_EPS, end))
            s, e = self.seq(sub, flags)
            nfa.eps[cur].append((_EPS, s))
            cur = e
        nfa.eps[cur].append((_EPS, end))
        return start, end

    def anchor(self, at: object, flags: int) -> tuple[int, int]:
        nfa = self.nfa
        name = str(at)
        if name in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
            raise self.unsupported(
                "a word boundary (\\b or \\B)", "spell out the characters allowed on each side"
            )
        if flags & re.MULTILINE and name in ("AT_BEGINNING", "AT_END"):
            raise self.unsupported("^ or $ under re.MULTILINE", "drop the MULTILINE flag")
        kind = {
            "AT_BEGINNING": _BEGIN,
            "AT_BEGINNING_STRING": _BEGIN,
            "AT_END": _END_OR_NL,
            "AT_END_STRING": _END,
        }.get(name)
        if kind is None:  # pragma: no cover
            raise self.unsupported(f"the anchor {name}")
        nfa.has_anchors = True
        s, e = nfa.state(), nfa.state()
        nfa.eps[s].append((kind, e))
        return s, e


# --------------------------------------------------------------------------------------------
# NFA -> DFA -> minimal DFA
# --------------------------------------------------------------------------------------------

# Modes track what the anchors know about the input: at the very start (nothing read yet); in the
# middle; after `$` (what is left is "" or "\n"); at the end (nothing may follow).
_M_START, _M_MID, _M_END_OR_NL, _M_END = 0, 1, 2, 3
_NL = 0x0A


def _byte_classes(nfa: _NFA) -> np.ndarray:
    """Partition 0..255 into classes that every NFA edge treats alike; returns class id per byte."""
    cuts = {0, 256}
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts.add(lo)
            cuts.add(hi + 1)
    if nfa.has_anchors:
        cuts.update((_NL, _NL + 1))
    bounds = sorted(cuts)
    classes = np.zeros(256, dtype=np.int32)
    for i in range(len(bounds) - 1):
        classes[bounds[i] : bounds[i + 1]] = i
    return classes


def _subset_id(subset: Hashable, index: dict[Any, int], order: list[Any], pattern: str) -> int:
    """The DFA state number of ``subset``, numbering it (in discovery order) on first sight."""
    j = index.get(subset)
    if j is None:
        j = len(order)
        if j >= MAX_DFA_STATES:
            raise UnsupportedRegexFeature(
                f"a language whose automaton exceeds {MAX_DFA_STATES} states",
                pattern,
                "simplify the pattern or bound its repetitions less finely",
            )
        index[subset] = j
        order.append(subset)
    return j


def _determinize(nfa: _NFA, start: int, final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction. Returns (class transitions [S, C] with -1 dead, accepting [S], class of byte)."""
    classes = _byte_classes(nfa)
    num_classes = int(classes.max()) + 1
    reps = [int(np.argmax(classes == c)) for c in range(num_classes)]

    def closure(configs: Iterable[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        seen = set(configs)
        stack = list(seen)
        while stack:
            s, m = stack.pop()
            for kind, t in nfa.eps[s]:
                if kind == _EPS:
                    nm = m
                elif kind == _BEGIN:
                    if m != _M_START:
                        continue
                    nm = m
                elif kind == _END_OR_NL:
                    nm = m if m in (_M_END_OR_NL, _M_END) else _M_END_OR_NL
                else:
                    nm = _M_END
                cfg = (t, nm)
                if cfg not in seen:
                    seen.add(cfg)
                    stack.append(cfg)
        return frozenset(seen)

    # Per NFA state: class -> targets (edges are already class-aligned).
    per_class: list[dict[int, list[int]]] = []
    for edges in nfa.edges:
        d: dict[int, list[int]] = {}
        for lo, hi, t in edges:
            for c in range(int(classes[lo]), int(classes[hi]) + 1):
                d.setdefault(c, []).append(t)
        per_class.append(d)

    init = closure([(start, _M_START)])
    index: dict[frozenset[tuple[int, int]], int] = {init: 0}
    order = [init]
    rows: list[list[int]] = []
    i = 0
    while i < len(order):
        cur = order[i]
        i += 1
        row = [DEAD] * num_classes
        for c in range(num_classes):
            targets: list[tuple[int, int]] = []
            for s, m in cur:
                ts = per_class[s].get(c)
                if not ts:
                    continue
                if m == _M_END or (m == _M_END_OR_NL and reps[c] != _NL):
                    continue
                nm = _M_END if m == _M_END_OR_NL else _M_MID
                targets.extend((t, nm) for t in ts)
            if not targets:
                continue
            nxt = closure(targets)
            row[c] = _subset_id(nxt, index, order, nfa.pattern)
        rows.append(row)
    trans = np.array(rows, dtype=np.int32).reshape(len(order), num_classes)
    accepting = np.array([any(s == final for s, _ in st) for st in order], dtype=bool)
    return trans, accepting, classes


def _determinize_fast(nfa: _NFA, start: int, final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction for anchor-free patterns, with subsets as int bitsets.

    Epsilon closures are computed once per NFA state and only byte-consuming states (and the final
    state) are kept in subsets, so each DFA transition is a handful of big-int ORs.
    """
    classes = _byte_classes(nfa)
    num_classes = int(classes.max()) + 1
    n = len(nfa.edges)
    closure: list[int | None] = [None] * n

    def close(s0: int) -> int:
        got = closure[s0]
        if got is not None:
            return got
        bits = 0
        seen = {s0}
        stack = [s0]
        while stack:
            s = stack.pop()
            if nfa.edges[s] or s == final:
                bits |= 1 << s
            for _kind, t in nfa.eps[s]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        closure[s0] = bits
        return bits

    move: dict[int, list[tuple[int, int]]] = {}

    def moves_of(s: int) -> list[tuple[int, int]]:
        got = move.get(s)
        if got is not None:
            return got
        per: dict[int, int] = {}
        for lo, hi, t in nfa.edges[s]:
            ct = close(t)
            for c in range(int(classes[lo]), int(classes[hi]) + 1):
                per[c] = per.get(c, 0) | ct
        got = list(per.items())
        move[s] = got
        return got

    init = close(start)
    index: dict[int, int] = {init: 0}
    order = [init]
    rows: list[list[int]] = []
    final_bit = 1 << final
    i = 0
    while i < len(order):
        cur = order[i]
        i += 1
        acc = [0] * num_classes
        x = cur
        while x:
            low = x & -x
            x ^= low
            for c, bits in moves_of(low.bit_length() - 1):
                acc[c] |= bits
        row = [DEAD] * num_classes
        for c in range(num_classes):
            nxt = acc[c]
            if not nxt:
                continue
            row[c] = _subset_id(nxt, index, order, nfa.pattern)
        rows.append(row)
    trans = np.array(rows, dtype=np.int32).reshape(len(order), num_classes)
    accepting = np.array([bool(st & final_bit) for st in order], dtype=bool)
    return trans, accepting, classes


def _prune_and_minimize(
    trans: np.ndarray, accepting: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Drop states that are unreachable or cannot reach acceptance, then merge equivalent states.

    Returns None when the language is empty.
    """
    n, k = trans.shape
    # Reachable from start.
    reach = np.zeros(n, dtype=bool)
    reach[start] = True
    stack = [start]
    while stack:
        s = stack.pop()
        for t in trans[s]:
            if t >= 0 and not reach[t]:
                reach[t] = True
                stack.append(int(t))
    # Co-reachable: reverse BFS from accepting states.
    rev: list[list[int]] = [[] for _ in range(n)]
    src, _cls = np.nonzero(trans >= 0)
    for s, t in zip(src.tolist(), trans[trans >= 0].tolist()):
        rev[t].append(s)
    coreach = accepting.copy()
    stack = [int(s) for s in np.nonzero(accepting)[0]]
    while stack:
        t = stack.pop()
        for s in rev[t]:
            if not coreach[s]:
                coreach[s] = True
                stack.append(s)
    live = reach & coreach
    if not live[start]:
        return None
    # Renumber live states; a sink (index m) stands for dead during minimisation.
    ids = np.full(n, -1, dtype=np.int64)
    ids[live] = np.arange(int(live.sum()))
    m = int(live.sum())
    t2 = trans[live]
    t2 = np.where(t2 >= 0, ids[np.maximum(t2, 0)], -1)
    t2 = np.where(t2 >= 0, t2, m).astype(np.int64)
    t2 = np.vstack([t2, np.full((1, k), m, dtype=np.int64)])
    acc2 = np.append(accepting[live], False)
    block = _moore_hashed(t2, acc2)
    if not _is_congruence(t2, acc2, block):  # pragma: no cover - a 64-bit hash collision
        block = _hopcroft(t2, acc2)
    # Build the quotient automaton, start state first, sink removed.
    sink_block = block[m]
    order = [int(block[ids[start]])]
    seen = {order[0]}
    rep: dict[int, int] = {}
    for s in range(m + 1):
        rep.setdefault(int(block[s]), s)
    i = 0
    while i < len(order):
        b = order[i]
        i += 1
        for t in t2[rep[b]]:
            tb = int(block[t])
            if tb != sink_block and tb not in seen:
                seen.add(tb)
                order.append(tb)
    new_id = {b: j for j, b in enumerate(order)}
    out = np.full((len(order), k), -1, dtype=np.int32)
    acc_out = np.zeros(len(order), dtype=bool)
    for b, j in new_id.items():
        s = rep[b]
        acc_out[j] = acc2[s]
        for c in range(k):
            tb = int(block[t2[s, c]])
            out[j, c] = new_id.get(tb, -1) if tb != sink_block else -1
    return out, acc_out, 0


@numba.njit(cache=True)
def _moore_hashed(trans: np.ndarray, accepting: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Moore refinement with hashed signatures; the caller verifies the result (hashes may collide)."""
    n, k = trans.shape
    block = np.zeros(n, dtype=np.int64)
    for s in range(n):
        block[s] = 1 if accepting[s] else 0
    num_blocks = 2
    while True:
        ids = numba.typed.Dict.empty(key_type=numba.types.int64, value_type=numba.types.int64)
        new = np.empty(n, dtype=np.int64)
        for s in range(n):
            h = np.uint64(block[s]) * np.uint64(0x9E3779B97F4A7C15)
            for c in range(k):
                h = (h ^ np.uint64(block[trans[s, c]])) * np.uint64(0x100000001B3)
            key = np.int64(h)
            j = ids.get(key, np.int64(-1))
            if j < 0:
                j = len(ids)
                ids[key] = j
            new[s] = j
        block = new
        if len(ids) == num_blocks:
            return block
        num_blocks = len(ids)


def _is_congruence(trans: np.ndarray, accepting: np.ndarray, block: np.ndarray) -> bool:
    """True when states in one block agree on acceptance and on the blocks they step to."""
    reps = np.zeros(int(block.max()) + 1, dtype=np.int64)
    reps[block] = np.arange(block.shape[0])
    rep = reps[block]
    return bool((accepting == accepting[rep]).all() and (block[trans] == block[trans[rep]]).all())


def _hopcroft(trans: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """Hopcroft's partition refinement; returns the block id of each state (complete DFA ``trans``)."""
    n, k = trans.shape
    rows = trans.tolist()
    inverse: list[list[list[int]]] = [[[] for _ in range(n)] for _ in range(k)]
    for s, row in enumerate(rows):
        for c, t in enumerate(row):
            inverse[c][t].append(s)
    acc = [s for s in range(n) if accepting[s]]
    rej = [s for s in range(n) if not accepting[s]]
    blocks: list[set[int]] = [set(b) for b in (acc, rej) if b]
    block_of = [0] * n
    for i, b in enumerate(blocks):
        for s in b:
            block_of[s] = i
    work = {min(range(len(blocks)), key=lambda i: len(blocks[i]))} if len(blocks) == 2 else set()
    while work:
        a = blocks[work.pop()].copy()
        for c in range(k):
            inv_c = inverse[c]
            hit: dict[int, set[int]] = {}
            for t in a:
                for s in inv_c[t]:
                    hit.setdefault(block_of[s], set()).add(s)
            for bi, x in hit.items():
                y = blocks[bi]
                if len(x) == len(y):
                    continue
                rest = y - x
                new_i = len(blocks)
                small, big = (x, rest) if len(x) <= len(rest) else (rest, x)
                blocks[bi] = big
                blocks.append(small)
                for s in small:
                    block_of[s] = new_i
                # Whether or not bi was pending, adding the smaller half keeps Hopcroft's invariant.
                work.add(new_i)
    return np.array(block_of, dtype=np.int64)


def _expand_classes(trans: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(trans[:, classes], dtype=np.int32)


_EMPTY_DFA_TRANSITIONS = np.full((1, 256), -1, dtype=np.int32)


def empty_dfa(label: str = "<empty>") -> DFA:
    """The DFA of the empty language: one non-accepting state with no way out."""
    return DFA(_EMPTY_DFA_TRANSITIONS.copy(), np.zeros(1, dtype=bool), 0, label)


def dfa_from_arrays(transitions: np.ndarray, accepting: np.ndarray, start: int, label: str = "<dfa>") -> DFA:
    """Trim and minimise a hand-built automaton (``transitions[s, byte]`` = next state or -1).

    The result satisfies the :class:`DFA` invariants: start state 0, every state can reach acceptance,
    no two states equivalent. An empty language gives :func:`empty_dfa`.
    """
    trans = np.asarray(transitions)
    if trans.ndim != 2 or trans.shape[1] != 256:
        raise ValueError(f"transitions must be [states, 256], got {trans.shape}")
    # Work on byte classes (columns that agree everywhere) to keep minimisation cheap.
    cols, classes = np.unique(trans.T, axis=0, return_inverse=True)
    compact = np.ascontiguousarray(cols.T, dtype=np.int32)
    result = _prune_and_minimize(compact, np.asarray(accepting, dtype=bool), int(start))
    if result is None:
        return empty_dfa(label)
    t, acc, st = result
    full = _expand_classes(t, np.asarray(classes).reshape(-1))
    full.setflags(write=False)
    acc.setflags(write=False)
    return DFA(full, acc, st, label)


def regex_to_dfa(pattern: str, flags: int = 0) -> DFA:
    """Compile ``pattern`` (Python ``re`` syntax, full-match semantics) to a minimal byte-level DFA.

    Raises:
        RegexSyntaxError: the pattern does not parse.
        UnsupportedRegexFeature: the pattern uses lookaround, backreferences, word boundaries,
            atomic groups or possessive repeats, or expands past the size limits.
    """
    return _regex_to_dfa_cached(pattern, int(flags))


@functools.lru_cache(maxsize=256)
def _regex_to_dfa_cached(pattern: str, flags: int) -> DFA:
    if not isinstance(pattern, str):
        raise RegexSyntaxError(f"expected a str pattern, got {type(pattern).__name__}", repr(pattern))
    if flags & ~(re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE | re.VERBOSE | re.MULTILINE):
        raise UnsupportedRegexFeature(f"flags {flags:#x}", pattern, "supported: I, S, A, U, X, M")
    try:
        tree = _sre_parse.parse(pattern, flags)
    except re.error as e:
        raise RegexSyntaxError(e.msg, pattern, e.pos) from None
    flags = tree.state.flags
    nfa = _NFA(pattern)
    builder = _Builder(pattern, nfa)
    start, final = builder.seq(tree, flags)
    determinize = _determinize if nfa.has_anchors else _determinize_fast
    trans, accepting, classes = determinize(nfa, start, final)
    result = _prune_and_minimize(trans, accepting, 0)
    if result is None:
        # The empty language: a single non-accepting state with no way out.
        return DFA(_EMPTY_DFA_TRANSITIONS.copy(), np.zeros(1, dtype=bool), 0, pattern)
    t, acc, st = result
    full = _expand_classes(t, classes)
    full.setflags(write=False)
    acc.setflags(write=False)
    return DFA(full, acc, st, pattern)
