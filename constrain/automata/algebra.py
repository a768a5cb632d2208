"""An algebra of byte-level DFAs: build them from small expressions, combine them as sets.

The JSON Schema compiler describes each subschema as an expression (:class:`Seq`, :class:`Alt`,
:class:`Repeat` of :class:`Literal` bytes, :class:`Regex` pieces and already-built :class:`Embed` DFAs),
which :func:`build` turns into one NFA and then a minimal :class:`~constrain.automata.dfa.DFA`. Keywords
that are not about concatenation (``allOf``, ``not``, ``oneOf``, ``if``) become :func:`intersect`,
:func:`union` and :func:`difference`, computed as product automata in numba.

A :class:`Regex` with ``json_string=True`` reads its pattern over the *decoded* characters of a JSON
string (see :func:`constrain.automata.regex.regex_dfa`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from ..budget import check_states, state_limit
from ..exceptions import UnsupportedRegexFeature
from ..limits import current_limits
from .counted import has_count_marks
from .determinize import nfa_to_dfa
from .dfa import (
    DFA,
    class_table,
    dfa_byte_classes,
    dfa_columns,
    dfa_from_class_arrays,
    empty_dfa,
    joint_byte_classes,
)
from .nfa import NFA, class_edge_runs
from .regex import regex_dfa


class Expr:
    """A regular language over bytes, as an expression tree (see :func:`build`)."""


@dataclass(frozen=True)
class Literal(Expr):
    """Exactly these bytes."""

    data: bytes


@dataclass(frozen=True)
class Regex(Expr):
    """A Python ``re`` pattern (full match). ``json_string``: over decoded JSON string characters."""

    pattern: str
    flags: int = 0
    json_string: bool = False


@dataclass(frozen=True)
class Seq(Expr):
    """Concatenation."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Alt(Expr):
    """Union."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Repeat(Expr):
    """``sub{lo,hi}``; ``hi=None`` is unbounded."""

    sub: Expr
    lo: int
    hi: int | None


@dataclass(frozen=True, eq=False)
class Embed(Expr):
    """An already-built DFA used as a piece of a larger expression."""

    dfa: DFA


@dataclass(frozen=True, eq=False)
class Graph(Expr):
    """A small automaton whose edges read sub-languages: ``edges`` are ``(src, dst, expr)`` triples.

    Used for the members of an object or the items of an array, where the node is "how many so far"
    (commas, ``minProperties``, ``maxItems``) and each edge reads one member.
    """

    num_nodes: int
    start: int
    finals: tuple[int, ...]
    edges: tuple[tuple[int, int, Expr], ...]


def seq(*parts: Expr) -> Expr:
    """Concatenation, flattening nested sequences."""
    flat: list[Expr] = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, Seq) else (p,))
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*parts: Expr) -> Expr:
    """Union of ``parts`` (the empty union is the empty language)."""
    return parts[0] if len(parts) == 1 else Alt(tuple(parts))


# --------------------------------------------------------------------------------------------
# Expression -> NFA -> DFA
# --------------------------------------------------------------------------------------------


def _embed(nfa: NFA, dfa: DFA) -> tuple[int, int]:
    """Copy ``dfa`` into ``nfa`` as a fragment (its edge runs cached on it: schemas embed the same
    value automata many times)."""
    runs = dfa.__dict__.get("_edge_runs")
    if runs is None:
        table, classes = class_table(dfa)
        runs = class_edge_runs(np.ascontiguousarray(table), np.asarray(classes, dtype=np.int64))
        runs.setflags(write=False)
        dfa.__dict__["_edge_runs"] = runs
    return nfa.embed_dfa(dfa.num_states, dfa.accepting, dfa.start, runs)


def _emit(nfa: NFA, expr: Expr) -> tuple[int, int]:
    if isinstance(expr, Literal):
        start, end = nfa.state(), nfa.state()
        if expr.data:
            nfa.literal_path(start, end, expr.data)
        else:
            nfa.eps[start].append((0, end))
        return start, end
    if isinstance(expr, Regex):
        return _embed(nfa, regex_dfa(expr.pattern, expr.flags, expr.json_string))
    if isinstance(expr, Embed):
        return _embed(nfa, expr.dfa)
    if isinstance(expr, Seq):
        start = nfa.state()
        cur = start
        for part in expr.parts:
            s, e = _emit(nfa, part)
            nfa.eps[cur].append((0, s))
            cur = e
        return start, cur
    if isinstance(expr, Alt):
        start, end = nfa.state(), nfa.state()
        for part in expr.parts:
            s, e = _emit(nfa, part)
            nfa.eps[start].append((0, s))
            nfa.eps[e].append((0, end))
        return start, end
    if isinstance(expr, Graph):
        nodes = [nfa.state() for _ in range(expr.num_nodes)]
        end = nfa.state()
        for src, dst, sub_expr in expr.edges:
            s, e = _emit(nfa, sub_expr)
            nfa.eps[nodes[src]].append((0, s))
            nfa.eps[e].append((0, nodes[dst]))
        for f in expr.finals:
            nfa.eps[nodes[f]].append((0, end))
        return nodes[expr.start], end
    if isinstance(expr, Repeat):
        # Build the sub-language once as a DFA so bounded repeats copy a minimal automaton.
        sub = Embed(build(expr.sub)) if not isinstance(expr.sub, (Literal, Embed)) else expr.sub
        start = nfa.state()
        cur = start
        for _ in range(expr.lo):
            s, e = _emit(nfa, sub)
            nfa.eps[cur].append((0, s))
            cur = e
        end = nfa.state()
        if expr.hi is None:
            s, e = _emit(nfa, sub)
            nfa.eps[cur].append((0, s))
            nfa.eps[e].append((0, s))
            nfa.eps[e].append((0, end))
            nfa.eps[cur].append((0, end))
            return start, end
        for _ in range(expr.hi - expr.lo):
            nfa.eps[cur].append((0, end))
            s, e = _emit(nfa, sub)
            nfa.eps[cur].append((0, s))
            cur = e
        nfa.eps[cur].append((0, end))
        return start, end
    raise TypeError(f"not an automaton expression: {expr!r}")


def build(expr: Expr, label: str = "<expr>") -> DFA:
    """The minimal DFA of ``expr``."""
    if isinstance(expr, Embed):
        return expr.dfa
    if isinstance(expr, Regex):
        return regex_dfa(expr.pattern, expr.flags, expr.json_string)
    nfa = NFA(label)
    start, final = _emit(nfa, expr)
    return nfa_to_dfa(nfa, start, final, label)


# --------------------------------------------------------------------------------------------
# Set operations as product automata
# --------------------------------------------------------------------------------------------

_OP_AND, _OP_OR, _OP_DIFF = 0, 1, 2


@numba.njit(cache=True)
def _product(ta, tb, acc_a, acc_b, sa, sb, op, limit):  # pragma: no cover
    """Reachable pairs of states of two complete-by-sink DFAs over the same byte classes."""
    na = ta.shape[0]
    nb = tb.shape[0]
    k = ta.shape[1]
    index = dict()
    index[sa * (nb + 1) + sb] = 0
    qa = [sa]
    qb = [sb]
    rows = np.full((64, k), -1, dtype=np.int32)
    acc = np.zeros(64, dtype=np.bool_)
    i = 0
    while i < len(qa):
        if i >= limit:
            return rows[:0], acc[:0], np.empty(0, np.int64), np.empty(0, np.int64), False
        a = qa[i]
        b = qb[i]
        if i >= rows.shape[0]:
            grown = np.full((rows.shape[0] * 2, k), -1, dtype=np.int32)
            grown[: rows.shape[0]] = rows
            rows = grown
            acc2 = np.zeros(rows.shape[0], dtype=np.bool_)
            acc2[: acc.shape[0]] = acc
            acc = acc2
        in_a = a < na and acc_a[a]
        in_b = b < nb and acc_b[b]
        if op == 0:
            acc[i] = in_a and in_b
        elif op == 1:
            acc[i] = in_a or in_b
        else:
            acc[i] = in_a and not in_b
        for c in range(k):
            ta_next = ta[a, c] if a < na else -1
            tb_next = tb[b, c] if b < nb else -1
            if ta_next < 0:
                ta_next = na
            if tb_next < 0:
                tb_next = nb
            dead_a = ta_next == na
            dead_b = tb_next == nb
            if op == 0 and (dead_a or dead_b):
                continue
            if op == 1 and dead_a and dead_b:
                continue
            if op == 2 and dead_a:
                continue
            key = ta_next * (nb + 1) + tb_next
            j = index.get(key, -1)
            if j < 0:
                j = len(qa)
                index[key] = j
                qa.append(ta_next)
                qb.append(tb_next)
            rows[i, c] = j
        i += 1
    return rows[: len(qa)], acc[: len(qa)], np.array(qa), np.array(qb), True


def _combine(
    a: DFA,
    b: DFA,
    op: int,
    label: str,
    pairs_ok: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> DFA | None:
    if op != _OP_OR and (has_count_marks(a) or has_count_marks(b)):
        # A product would compare count marks as text (see .counted): refused, never a wrong language.
        raise UnsupportedRegexFeature(
            "a maxLength counted beside the automaton inside an intersection or difference",
            label,
            "such a bound is counted only where it is combined by sequence or union",
        )
    # Joint byte classes: pairs of the two automata's own classes.
    joint = joint_byte_classes(dfa_byte_classes(a), dfa_byte_classes(b)).astype(np.int32)
    _u, reps = np.unique(joint, return_index=True)
    ta = np.ascontiguousarray(dfa_columns(a, reps), dtype=np.int64)
    tb = np.ascontiguousarray(dfa_columns(b, reps), dtype=np.int64)
    most = current_limits().max_dfa_states
    rows, acc, pair_a, pair_b, ok = _product(
        ta, tb, a.accepting, b.accepting, np.int64(a.start), np.int64(b.start), op, state_limit(most)
    )
    if not ok:
        check_states(most, "a product")  # the compile budget's limit?
        raise UnsupportedRegexFeature(f"a product automaton past {most} states", label)
    if pairs_ok is not None and not pairs_ok(pair_a, pair_b):
        return None
    return dfa_from_class_arrays(rows, acc, 0, joint, label)


def intersect(*dfas: DFA, label: str = "<and>") -> DFA:
    """The DFA of the strings every one of ``dfas`` accepts."""
    if not dfas:
        raise ValueError("intersect() needs at least one automaton")
    out = dfas[0]
    for d in dfas[1:]:
        if is_empty(out):
            return out
        out = _done(_combine(out, d, _OP_AND, label))
    return out


def union(*dfas: DFA, label: str = "<or>") -> DFA:
    """The DFA of the strings at least one of ``dfas`` accepts."""
    live = [d for d in dfas if not is_empty(d)]
    if not live:
        return empty_dfa(label)
    out = live[0]
    for d in live[1:]:
        out = _done(_combine(out, d, _OP_OR, label))
    return out


def difference(a: DFA, b: DFA, label: str = "<minus>") -> DFA:
    """The DFA of the strings ``a`` accepts and ``b`` does not."""
    if is_empty(a) or is_empty(b):
        return a
    return _done(_combine(a, b, _OP_DIFF, label))


def checked_product(
    a: DFA, b: DFA, op: str, pairs_ok: Callable[[np.ndarray, np.ndarray], bool], label: str = "<product>"
) -> DFA | None:
    """``intersect(a, b)`` (``op="and"``) or ``difference(a, b)`` (``op="minus"``), or None when
    ``pairs_ok(pair_a, pair_b)`` rejects the product's reachable state pairs (before minimisation:
    ``pair_a[i]``, ``pair_b[i]`` are the states of ``a`` and ``b`` in product state ``i``, their
    ``num_states`` for dead)."""
    if is_empty(a) or is_empty(b):
        return a if op == "minus" or is_empty(a) else b
    return _combine(a, b, _OP_AND if op == "and" else _OP_DIFF, label, pairs_ok)


def _done(dfa: DFA | None) -> DFA:
    assert dfa is not None  # no pairs_ok: _combine returns a DFA
    return dfa


def splice(dfa: DFA, edges: list[tuple[int, int, DFA]], label: str = "<splice>") -> DFA:
    """``dfa`` with a fresh copy of ``language`` between ``s`` and ``r`` for each ``(s, r, language)``
    in ``edges`` (the caller has already cut whatever path joined them)."""
    nfa = NFA(label)
    start, end = _embed(nfa, dfa)
    base = start - dfa.start
    links: list[tuple[int, int]] = []
    for s, r, lang in edges:
        a, b = _embed(nfa, lang)
        links += [(base + s, a), (b, base + r)]
    if links:
        # Embedded states keep their edges in blocks, so the joins go in a block too.
        nfa.eps_blocks.append(np.asarray(links, dtype=np.int64))
    return nfa_to_dfa(nfa, start, end, label)


def is_empty(dfa: DFA) -> bool:
    """Whether ``dfa`` accepts no string at all (trimmed DFAs have an accepting state otherwise)."""
    return not bool(dfa.accepting.any())


def accepts_empty_string(dfa: DFA) -> bool:
    """Whether the empty string is in the language."""
    return bool(dfa.accepting[dfa.start])
