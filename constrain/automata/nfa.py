"""Thompson NFAs over byte ranges, built from Python's own regex parse trees.

The pattern is parsed with ``re``'s parser (``re._parser``), so the syntax and the meaning of every
construct are exactly those of ``re.fullmatch``: ``\\d`` is any Unicode digit unless ``re.ASCII`` is
set, ``(?i)`` folds case the way ``re`` does, ``.`` excludes ``\\n`` unless ``re.DOTALL``. Character sets
over code points become UTF-8 byte sequences (:mod:`.charsets`).

Anchors (``^ $ \\A \\Z``) are epsilon edges carrying an assertion kind, which the subset construction
(:mod:`.determinize`) interprets. Constructs no finite automaton can express (lookaround,
backreferences, conditionals, atomic groups, possessive repeats, word boundaries) raise
:class:`UnsupportedRegexFeature` naming the construct.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numba
import numpy as np

from ..exceptions import RegexSyntaxError, UnsupportedRegexFeature
from ..limits import DEFAULT_LIMITS, current_limits
from .charsets import (
    MAX_CODEPOINT,
    Ranges,
    category_ranges,
    complement,
    fold_case,
    normalize,
    utf8_sequences,
    without_surrogates,
)

try:  # Python >= 3.11
    from re import _constants as _c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c
    import sre_parse as _sre_parse

MAX_NFA_STATES = DEFAULT_LIMITS.max_nfa_states
"""Upper bound on NFA states: a guard against ``x{1000}{1000}``-style blow-ups."""

# Assertion kinds on epsilon edges; they interact with the matching "mode" (see determinize.py).
EPS, BEGIN, END_OR_NL, END = 0, 1, 2, 3


class NFA:
    """A Thompson NFA under construction: per state, byte-range edges and epsilon edges.

    ``edges[s]`` holds ``(byte_lo, byte_hi, target)``, ``eps[s]`` holds ``(kind, target)`` with ``kind``
    one of :data:`EPS`, :data:`BEGIN`, :data:`END_OR_NL`, :data:`END`. Automata copied in with
    :meth:`embed_dfa` keep their edges in bulk arrays (``edge_blocks``, ``eps_blocks``) instead.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.edges: list[list[tuple[int, int, int]]] = []  # (byte_lo, byte_hi, target)
        self.eps: list[list[tuple[int, int]]] = []  # (kind, target)
        self.has_anchors = False
        # Bulk edges from embedded automata, as arrays: (src, byte_lo, byte_hi, dst) and eps (src, dst).
        self.edge_blocks: list[np.ndarray] = []
        self.eps_blocks: list[np.ndarray] = []
        # The states with list edges, in order (embedded states have none): the subset construction's
        # glue reads these, not every state.
        self.listed: list[int] = []
        self.max_states = current_limits().max_nfa_states  # read once: state() runs per NFA state

    def embed_dfa(
        self, num_states: int, accepting: np.ndarray, start: int, runs: np.ndarray
    ) -> tuple[int, int]:
        """Copy a DFA in as a fragment (one state per DFA state, byte runs as edges), in bulk.

        ``runs``: the DFA's edges as :func:`class_edge_runs` gives them (``int64[edges, 4]``).
        """
        num = num_states
        if len(self.edges) + num + 1 > self.max_states:
            self._too_many()
        base = len(self.edges)
        # Inner states get no list edges (their edges live in the block): share one empty tuple.
        self.edges.extend(itertools.repeat((), num))  # type: ignore[arg-type]
        self.eps.extend(itertools.repeat((), num))  # type: ignore[arg-type]
        self.edges.append([])
        self.eps.append([])
        end = base + num
        self.listed.append(end)
        block = runs.copy()
        block[:, 0] += base
        block[:, 3] += base
        self.edge_blocks.append(block)
        acc = np.flatnonzero(accepting)
        self.eps_blocks.append(np.stack([acc + base, np.full(acc.shape[0], end)], axis=1).astype(np.int64))
        return base + int(start), end

    def materialize_blocks(self) -> None:
        """Move bulk edges into the per-state lists (for the anchor-aware subset construction)."""
        self.edges = [e if isinstance(e, list) else [] for e in self.edges]
        self.eps = [e if isinstance(e, list) else [] for e in self.eps]
        for block in self.edge_blocks:
            for s, lo, hi, t in block.tolist():
                self.edges[s].append((lo, hi, t))
        for block in self.eps_blocks:
            for s, t in block.tolist():
                self.eps[s].append((EPS, t))
        self.edge_blocks.clear()
        self.eps_blocks.clear()
        self.listed = list(range(len(self.edges)))

    def state(self) -> int:
        """A new state (raises :class:`UnsupportedRegexFeature` past :data:`MAX_NFA_STATES`)."""
        edges = self.edges
        if len(edges) >= self.max_states:
            self._too_many()
        edges.append([])
        self.eps.append([])
        self.listed.append(len(edges) - 1)
        return len(edges) - 1

    def _too_many(self) -> None:
        raise UnsupportedRegexFeature(
            f"a repetition that expands past {self.max_states} automaton states",
            self.pattern,
            "reduce the bounded repetition counts",
        )

    def charset(self, ranges: Ranges) -> tuple[int, int]:
        """A fragment reading the UTF-8 encoding of one code point from ``ranges``."""
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

    def literal_path(self, start: int, end: int, data: bytes) -> None:
        """Edges from ``start`` to ``end`` reading exactly ``data`` (non-empty).

        The states inside the path are numbered as :meth:`state` would number them, but their edges go
        into ``edge_blocks`` as one array (an object's keys are most of a schema's NFA states)."""
        inner = len(data) - 1
        if not inner:
            self.edges[start].append((data[0], data[0], end))
            return
        base = len(self.edges)
        if base + inner > self.max_states:
            self._too_many()
        self.edges.extend(itertools.repeat((), inner))  # type: ignore[arg-type]
        self.eps.extend(itertools.repeat((), inner))  # type: ignore[arg-type]
        self.edges[start].append((data[0], data[0], base))
        block = np.empty((inner, 4), dtype=np.int64)
        block[:, 0] = np.arange(base, base + inner)
        block[:, 1] = block[:, 2] = np.frombuffer(data, dtype=np.uint8, offset=1)
        block[:, 3] = block[:, 0] + 1
        block[-1, 3] = end
        self.edge_blocks.append(block)


@numba.njit(cache=True, nogil=True)
def class_edge_runs(table: np.ndarray, classes: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The live edges of the 256-column table ``table[:, classes]`` as byte runs, ``int64[edges, 4]``
    rows ``(src, lo, hi, dst)``: per state, each maximal run of bytes with one target, dead runs left
    out, in state and byte order. Read from the class table (``classes[b]``: the column of byte
    ``b``) without building the 256 columns."""
    run_lo = np.empty(256, dtype=np.int64)
    run_col = np.empty(256, dtype=np.int64)
    runs = 0
    for b in range(256):
        if b == 0 or classes[b] != classes[b - 1]:
            run_lo[runs] = b
            run_col[runs] = classes[b]
            runs += 1
    n = table.shape[0]
    count = 0
    for s in range(n):
        prev = -2
        for r in range(runs):
            t = table[s, run_col[r]]
            if t != prev:
                if t >= 0:
                    count += 1
                prev = t
    out = np.empty((count, 4), dtype=np.int64)
    i = 0
    for s in range(n):
        prev = -2
        open_i = -1
        for r in range(runs):
            t = table[s, run_col[r]]
            if t == prev:
                continue
            if open_i >= 0:
                out[open_i, 2] = run_lo[r] - 1
                open_i = -1
            if t >= 0:
                out[i, 0] = s
                out[i, 1] = run_lo[r]
                out[i, 3] = t
                open_i = i
                i += 1
            prev = t
        if open_i >= 0:
            out[open_i, 2] = 255
    return out


class RegexBuilder:
    """Walks ``re``'s parse tree and emits NFA fragments ``(start, end)``."""

    def __init__(self, pattern: str, nfa: NFA) -> None:
        self.pattern = pattern
        self.nfa = nfa

    def unsupported(self, construct: str, hint: str = "") -> UnsupportedRegexFeature:
        """The error for a construct no finite automaton can express."""
        return UnsupportedRegexFeature(construct, self.pattern, hint)

    # ---- character sets -------------------------------------------------------------------
    def charset(self, ranges: Ranges) -> tuple[int, int]:
        """An NFA fragment reading one code point from ``ranges`` (subclasses re-encode it)."""
        return self.nfa.charset(ranges)

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
        return category_ranges(table[name], flags & (re.ASCII | re.UNICODE | re.LOCALE))

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
        ranges = normalize(parts)
        if flags & re.IGNORECASE:
            ranges = fold_case(ranges, flags)
        return without_surrogates(complement(ranges) if negate else ranges)

    # ---- the tree -------------------------------------------------------------------------
    def seq(self, items: Iterable[tuple[Any, Any]], flags: int) -> tuple[int, int]:
        """The fragment of a sequence of parse-tree nodes."""
        nfa = self.nfa
        start = nfa.state()
        cur = start
        for op, av in items:
            s, e = self.node(op, av, flags)
            nfa.eps[cur].append((EPS, s))
            cur = e
        return start, cur

    def node(self, op: Any, av: Any, flags: int) -> tuple[int, int]:
        """The fragment of one parse-tree node."""
        nfa = self.nfa
        if op is _c.LITERAL or op is _c.NOT_LITERAL:
            assert isinstance(av, int)
            ranges: Ranges = [(av, av)]
            if flags & re.IGNORECASE:
                ranges = fold_case(ranges, flags)
            return self.charset(without_surrogates(complement(ranges) if op is _c.NOT_LITERAL else ranges))
        if op is _c.ANY:
            ranges = [(0, MAX_CODEPOINT)] if flags & re.DOTALL else [(0, 9), (11, MAX_CODEPOINT)]
            return self.charset(without_surrogates(ranges))
        if op is _c.IN:
            return self.charset(self._in_ranges(av, flags))
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            return self.seq(sub, (flags | add_flags) & ~del_flags)
        if op is _c.BRANCH:
            _, branches = av
            start, end = nfa.state(), nfa.state()
            for br in branches:
                s, e = self.seq(br, flags)
                nfa.eps[start].append((EPS, s))
                nfa.eps[e].append((EPS, end))
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
        """The fragment of ``sub{lo,hi}`` (``hi`` is ``MAXREPEAT`` when unbounded)."""
        nfa = self.nfa
        unbounded = hi == _c.MAXREPEAT
        if (not unbounded and hi > 100_000) or lo > 100_000:
            raise self.unsupported(f"a repetition count {{{lo},{hi}}} beyond 100000")
        start = nfa.state()
        cur = start
        for _ in range(lo):
            s, e = self.seq(sub, flags)
            nfa.eps[cur].append((EPS, s))
            cur = e
        if unbounded:
            s, e = self.seq(sub, flags)
            end = nfa.state()
            nfa.eps[cur].append((EPS, s))
            nfa.eps[cur].append((EPS, end))
            nfa.eps[e].append((EPS, s))
            nfa.eps[e].append((EPS, end))
            return start, end
        end = nfa.state()
        for _ in range(hi - lo):
            nfa.eps[cur].append((EPS, end))
            s, e = self.seq(sub, flags)
            nfa.eps[cur].append((EPS, s))
            cur = e
        nfa.eps[cur].append((EPS, end))
        return start, end

    def anchor(self, at: object, flags: int) -> tuple[int, int]:
        """The fragment of an anchor: an epsilon edge carrying its assertion kind."""
        nfa = self.nfa
        name = str(at)
        if name in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
            raise self.unsupported(
                "a word boundary (\\b or \\B)", "spell out the characters allowed on each side"
            )
        if flags & re.MULTILINE and name in ("AT_BEGINNING", "AT_END"):
            raise self.unsupported("^ or $ under re.MULTILINE", "drop the MULTILINE flag")
        kind = {
            "AT_BEGINNING": BEGIN,
            "AT_BEGINNING_STRING": BEGIN,
            "AT_END": END_OR_NL,
            "AT_END_STRING": END,
        }.get(name)
        if kind is None:  # pragma: no cover
            raise self.unsupported(f"the anchor {name}")
        nfa.has_anchors = True
        s, e = nfa.state(), nfa.state()
        nfa.eps[s].append((kind, e))
        return s, e


def regex_nfa(pattern: str, flags: int, builder: type[RegexBuilder] = RegexBuilder) -> tuple[NFA, int, int]:
    """Parse ``pattern`` with ``re``'s parser and build its NFA: ``(nfa, start, final)``.

    Raises:
        RegexSyntaxError: the pattern does not parse.
        UnsupportedRegexFeature: a construct no finite automaton expresses, or a size limit.
    """
    try:
        tree = _sre_parse.parse(pattern, flags)
    except re.error as e:
        raise RegexSyntaxError(e.msg, pattern, e.pos) from None
    nfa = NFA(pattern)
    start, final = builder(pattern, nfa).seq(tree, tree.state.flags)
    return nfa, start, final
