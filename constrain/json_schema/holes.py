"""Holes: how recursion (and, in a recursive schema, large languages) stay out of line.

A ``$ref`` cycle that comes back to a (subschema, location) pair still being compiled leaves a *hole*
there (the bytes ``0xFF idx``, which no UTF-8 text holds) that stands for that pair's language. Once a
schema recurses, large finished languages (past :data:`OUT_OF_LINE_STATES`) and any JSON value are kept
out of line as holes too, so no DFA inlines another's thousands of states; :mod:`.recursion` turns the
DFAs with holes into a context-free grammar. A schema that does not recurse but is too large for one
DFA is compiled again the same way (:attr:`CompileContext.outline`) where no product needs the holes
filled back in.

Concatenation and union are exact on holes. Intersection and difference (``allOf``, ``oneOf``, ``not``,
``if``) are exact where the operands' first bytes cannot overlap, where one operand is a bare ``type``
(it only cuts first bytes) or repeats another's constraints, and where the two sides read the same
holes at the same places once the holes that meet concrete bytes are unfolded a few levels
(:func:`unfolded_product`); else out-of-line holes are filled back in (any value: depth-capped), and
a recursive hole left is refused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import automata as A
from ..automata import DFA, dfa_from_arrays, empty_dfa
from ..exceptions import UnsupportedRegexFeature, UnsupportedSchemaFeature
from ..limits import current_limits
from .keywords import ANNOTATIONS, NOT_BESIDE_BARE_TYPE
from .recursion import HOLE, RecursiveLanguage, fill_hole, has_holes, hole_edges, hole_indices
from .references import SchemaNode, base_uri
from .values import (
    TYPE_FIRST,
    VALUE_FIRST,
    any_value_around_hole,
    capped_any_value,
    json_bytes,
    types_of,
)

if TYPE_CHECKING:
    from .compiler import CompileContext

#: In a recursive schema, a subschema's DFA past this many states is kept out of line (a hole).
OUT_OF_LINE_STATES = 256
#: Keywords that intersect or subtract languages. Where none of them may meet an object or an array,
#: a schema too large for one DFA can put its large languages out of line (:func:`products_meet_holes`).
PRODUCT_KEYWORDS = frozenset({
    "allOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies", "contains",
    "unevaluatedProperties", "unevaluatedItems", "uniqueItems",
})  # fmt: skip
_BRANCH_PRODUCTS = ("allOf", "oneOf", "not", "if", "then", "else")
_SCALAR_TYPES = frozenset({"string", "number", "integer", "boolean", "null"})
#: The any-value hole's key in a recursive schema.
ANY_KEY: tuple[Any, Any] = (("<any JSON value>",), ())

LangKey = tuple[Any, Any]  # (node key, location key)


@dataclass
class HoleTable:
    """The holes of one compilation, and what the recursion-aware set operations remember."""

    #: (node key, location key) -> hole index
    index: dict[LangKey, int] = field(default_factory=dict)
    #: per hole: its key, its JSON pointer, the first bytes of its values
    info: list[tuple[LangKey, str, frozenset[int]]] = field(default_factory=list)
    #: holes made while their place was still being compiled
    recursive: set[int] = field(default_factory=set)
    #: per hole: the DFA reading just the hole
    dfas: list[DFA] = field(default_factory=list)
    any_hole: DFA | None = None
    inlined: dict[int, DFA] = field(default_factory=dict)  # out-of-line hole -> its language, filled in
    filled: dict[int, tuple[DFA, DFA]] = field(default_factory=dict)  # id(dfa) -> (dfa, holes filled in)
    type_cuts: dict[int, tuple[DFA, frozenset[int]]] = field(default_factory=dict)  # id(bare type's DFA)
    fingerprints: dict[int, str] = field(default_factory=dict)  # id(subschema) -> constraints as JSON


def hole_for(ctx: CompileContext, key: LangKey, node: SchemaNode) -> DFA:
    """A stand-in for the language of ``key``, still being compiled: the bytes ``0xFF idx``."""
    idx = ctx.holes.index.get(key)
    if idx is None:
        return new_hole(ctx, key, node.ptr, first_bytes_of_node(ctx, node, frozenset()), recursive=True)
    return ctx.holes.dfas[idx]


def new_hole(ctx: CompileContext, key: LangKey, ptr: str, first: frozenset[int], *, recursive: bool) -> DFA:
    """A new hole for ``key`` whose values start with ``first``."""
    table = ctx.holes
    idx = len(table.info)
    if idx >= current_limits().max_holes:
        detail = f"more than {current_limits().max_holes} recursive places in one schema"
        raise UnsupportedSchemaFeature("$ref", ptr, detail)
    table.index[key] = idx
    table.info.append((key, ptr, first))
    if recursive:
        table.recursive.add(idx)
    table.dfas.append(A.build(A.Literal(bytes([HOLE, idx])), f"hole {idx}: {ptr}"))
    return table.dfas[idx]


def products_meet_holes(ctx: CompileContext) -> bool:
    """Whether a product keyword of the schema may take an operand that holds an object or an array
    (which could hold an out-of-line language): any of :data:`PRODUCT_KEYWORDS` but ``allOf``,
    ``oneOf``, ``not`` and ``if`` whose every subschema has a ``type`` of scalars only (the common
    ``oneOf: [{type: string}, {type: integer}]``), nor a ``oneOf`` whose branches cannot both hold
    (a union, see :func:`~constrain.json_schema.applicators.exclusive_branches`). Such products would
    fill the holes back in."""
    from .applicators import exclusive_branches

    doc = ctx.doc
    for node in doc.reachable():
        k = doc.keywords(node)
        for kw in PRODUCT_KEYWORDS & k.keys():
            if kw not in _BRANCH_PRODUCTS:
                return True
            if kw == "oneOf" and exclusive_branches(doc, node):
                continue  # a union (see exclusive_branches)
            subs = k[kw] if isinstance(k[kw], list) else [k[kw]]
            if not all(_scalar_typed(s) for s in subs):
                return True
    return False


def _scalar_typed(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return schema is False
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    return bool(types) and all(isinstance(x, str) and x in _SCALAR_TYPES for x in types)


def out_of_line(ctx: CompileContext, key: LangKey, node: SchemaNode, dfa: DFA) -> DFA:
    """A hole for a large finished language (or one out of line already), in a recursive schema or
    where :attr:`CompileContext.outline` says so: an object then embeds its large values as holes
    instead of copying their states, so its DFA stays small."""
    table = ctx.holes
    idx = table.index.get(key)
    if idx is not None and (idx not in table.recursive or dfa.num_states > OUT_OF_LINE_STATES):
        return table.dfas[idx]
    outline = ctx.recursive or ctx.outline
    if outline and dfa.num_states > OUT_OF_LINE_STATES and len(table.info) < current_limits().max_holes:
        return new_hole(ctx, key, node.ptr, first_bytes(ctx, dfa), recursive=False)
    return dfa


def any_value_hole(ctx: CompileContext) -> DFA:
    """The hole standing for any JSON value, its language defined by itself: exact at any depth.

    The context-free engine is needed anyway once a schema recurses, and the hole keeps every DFA that
    holds an unconstrained value small. Products that meet it against concrete bytes fill it with the
    depth-capped DFA instead (:func:`fill_in`)."""
    table = ctx.holes
    if table.any_hole is None:
        hole = table.any_hole = new_hole(ctx, ANY_KEY, "#", VALUE_FIRST, recursive=False)
        ctx.lang_memo[ANY_KEY] = any_value_around_hole(ctx, hole, len(table.info) - 1)
    return table.any_hole


def fill_in(ctx: CompileContext, dfa: DFA) -> DFA:
    """``dfa`` with its out-of-line holes filled in (any value: the depth-capped DFA)."""
    table = ctx.holes
    got = table.filled.get(id(dfa))
    if got is None:
        out = dfa
        for idx in hole_indices(dfa):
            if idx not in table.recursive:
                out = fill_hole(out, idx, _inlined_language(ctx, idx))
        got = table.filled[id(dfa)] = (dfa, out)
    return got[1]


def _inlined_language(ctx: CompileContext, idx: int) -> DFA:
    table = ctx.holes
    got = table.inlined.get(idx)
    if got is None:
        key = table.info[idx][0]
        if key == ANY_KEY:
            got = capped_any_value(ctx, ctx.capped_depth + 1)
        else:
            got = fill_in(ctx, ctx.lang_memo[key])
        table.inlined[idx] = got
    return got


def first_bytes_of_node(ctx: CompileContext, node: SchemaNode, seen: frozenset[Any]) -> frozenset[int]:
    """Bytes a value valid under ``node`` may start with (an over-approximation)."""
    if node.schema is False:
        return frozenset()
    if not isinstance(node.schema, dict) or node.key in seen:
        return VALUE_FIRST
    doc = ctx.doc
    seen = seen | {node.key}
    k = doc.keywords(node)
    out = VALUE_FIRST
    if "type" in k:
        out &= frozenset(b for t in types_of(node, k) for b in TYPE_FIRST[t])
    if isinstance(k.get("enum"), list):
        out &= frozenset(json_bytes(v)[0] for v in k["enum"])
    if "const" in k and doc.version >= 6:
        out &= frozenset({json_bytes(k["const"])[0]})
    for ref_kw in ("$ref", "$dynamicRef"):
        if ref_kw in k:
            out &= first_bytes_of_node(ctx, doc.resolve(node, ref_kw), seen)
    for i, sub in enumerate(doc.subschema_list(node, "allOf")):
        out &= first_bytes_of_node(ctx, doc.child(node, sub, "allOf", i), seen)
    for app in ("anyOf", "oneOf"):
        if app in k:
            subs = [doc.child(node, sub, app, i) for i, sub in enumerate(doc.subschema_list(node, app))]
            out &= frozenset().union(*[first_bytes_of_node(ctx, n, seen) for n in subs])
    return out


def first_bytes(ctx: CompileContext, dfa: DFA) -> frozenset[int]:
    """Bytes the values of ``dfa`` may start with; a hole contributes its place's first bytes."""
    row = dfa.transitions[dfa.start]
    out = {b for b in np.flatnonzero(row >= 0).tolist() if b != HOLE}
    for idx, _ in hole_edges(dfa, dfa.start):
        out |= ctx.holes.info[idx][2]
    return frozenset(out)


def _refuse_recursive(ctx: CompileContext, op: str, dfas: Sequence[DFA]) -> UnsupportedSchemaFeature:
    found = [i for d in dfas for i in hole_indices(d)]
    idx = next((i for i in found if i in ctx.holes.recursive), found[0])
    return UnsupportedSchemaFeature(
        "$ref",
        ctx.holes.info[idx][1],
        f"recursive schema combined by {op} with other constraints: the context-free engine "
        "handles recursion through properties, items, $ref and anyOf, not inside allOf/oneOf/not/if",
    )


def intersect(ctx: CompileContext, *dfas: DFA) -> DFA:
    """``A.intersect``, exact with recursive operands when their first bytes rule out overlap."""
    table = ctx.holes
    if table.any_hole is not None and len(dfas) > 1:
        # Any value and X is X: every operand holds only values.
        dfas = tuple(d for d in dfas if d is not table.any_hole) or dfas[:1]
    if len(dfas) < 2 or not any(has_holes(d) for d in dfas):
        return A.intersect(*dfas)
    cuts = [table.type_cuts[id(d)][1] for d in dfas if id(d) in table.type_cuts]
    rest = [d for d in dfas if id(d) not in table.type_cuts]
    if cuts and rest:
        # Every operand's values lie in the location's skeleton: a bare type only cuts first bytes.
        inner = intersect(ctx, *rest)
        cut = cut_first_bytes(ctx, inner, frozenset.intersection(*cuts))
        if cut is not None:
            return cut
    # X and X is X: equal subschemas (two names for one schema) build equal minimal DFAs.
    dfas = tuple(d for i, d in enumerate(dfas) if not any(_same_dfa(d, e) for e in dfas[:i]))
    if len(dfas) == 1:
        return dfas[0]
    firsts = [first_bytes(ctx, d) for d in dfas]
    if any(not (a & b) for i, a in enumerate(firsts) for b in firsts[i + 1 :]):
        return empty_dfa("disjoint recursive values")
    out: DFA | None = dfas[0]
    for d in dfas[1:]:
        out = unfolded_product(ctx, out, d, "and") if out is not None else None
    if out is not None:
        return out
    dfas = tuple(fill_in(ctx, d) for d in dfas)
    if not any(has_holes(d) for d in dfas):
        return A.intersect(*dfas)
    raise _refuse_recursive(ctx, "allOf", dfas)


def difference(ctx: CompileContext, a: DFA, b: DFA) -> DFA:
    """``A.difference``, exact with recursive operands when their first bytes rule out overlap."""
    if not has_holes(a) and not has_holes(b):
        return A.difference(a, b)
    if b is ctx.holes.any_hole:
        return empty_dfa("not any value")
    if not (first_bytes(ctx, a) & first_bytes(ctx, b)):
        return a
    exact = unfolded_product(ctx, a, b, "minus")
    if exact is not None:
        return exact
    a, b = fill_in(ctx, a), fill_in(ctx, b)
    if not has_holes(a) and not has_holes(b):
        return A.difference(a, b)
    raise _refuse_recursive(ctx, "not/oneOf/if", (a, b))


#: Bytes that can extend a complete JSON value into a longer one (only numbers grow: ``1`` -> ``12``).
_VALUE_EXTENSION = np.frombuffer(b"0123456789.eE", dtype=np.uint8)


#: Rounds of :func:`unfolded_product` before a product falls back to the depth-capped fill-in, and
#: how many times their first size (plus 1,024 states) the unfolded operands may grow to.
MAX_UNFOLD_ROUNDS = 8
UNFOLD_GROWTH = 4
#: The most states :func:`unfolded_product` determinises in all its rounds (each rebuilds an operand
#: whole: rounds of one state each on a 20,000-state operand took 1.4 s and then failed).
MAX_UNFOLD_WORK = 64_000


def unfolded_product(ctx: CompileContext, a: DFA, b: DFA, op: str) -> DFA | None:
    """``a`` and ``b`` (``op="and"``) or ``a`` less ``b`` (``op="minus"``) with the holes kept as
    symbols, exact at any depth, or None where that cannot be had (the caller then fills them in).

    The product of the symbol strings is exact when the two automata, read in step, always enter a
    hole together: in every reachable pair of states, the first bytes of a hole on either side are
    read by neither side's concrete edges nor by a different hole on the other side, and no state
    after a hole reads a byte that could extend a value (numbers are the only values that are
    prefixes of others). Then a text has the same holes at the same places in both automata.

    Where a hole on one side meets concrete bytes (or another hole) on the other, that occurrence of
    the hole is replaced by its own language (any value: ``{``, ``[`` or a scalar, with holes for the
    values inside; an out-of-line language: its DFA, holes kept), which changes neither language, and
    the product is tried again: each round follows the other side's concrete structure one level
    deeper. None after :data:`MAX_UNFOLD_ROUNDS` rounds, past :data:`UNFOLD_GROWTH` times the
    operands' first size or :data:`MAX_UNFOLD_WORK` states rebuilt, at a recursive hole (a DFA
    cannot hold it), or where a value could extend past a hole."""
    # Where the other side loops (its structure goes deeper at every level) unfolding has no end and
    # the operands double each round: stop at a few times their first size.
    limit = min(current_limits().max_dfa_states // 4, UNFOLD_GROWTH * (a.num_states + b.num_states) + 1024)
    work = 0  # states determinised again so far: each round rebuilds both operands whole
    for _ in range(MAX_UNFOLD_ROUNDS):
        got = _product_or_conflicts(ctx, a, b, op)
        if got is None or isinstance(got, DFA):
            return got
        at_a, at_b = got
        a2 = _unfold(ctx, a, at_a) if at_a else a
        b2 = _unfold(ctx, b, at_b) if at_b else b
        if a2 is None or b2 is None or a2.num_states + b2.num_states > limit:
            return None
        work += (a2.num_states if a2 is not a else 0) + (b2.num_states if b2 is not b else 0)
        if work > MAX_UNFOLD_WORK:
            return None
        a, b = a2, b2
    return None


def _unfold(ctx: CompileContext, dfa: DFA, states: set[int]) -> DFA | None:
    """``dfa`` with the holes read at ``states`` replaced there by their languages (see
    :func:`unfolded_product`); None where one of them is recursive."""
    table = ctx.holes
    trans = dfa.transitions.copy()
    edges: list[tuple[int, int, DFA]] = []
    for s in sorted(states):
        mid = int(trans[s, HOLE])
        for idx in np.flatnonzero(trans[mid] >= 0).tolist():
            if idx in table.recursive:
                return None
            key = table.info[idx][0]
            edges.append((s, int(trans[mid, idx]), ctx.lang_memo[key]))
        trans[s, HOLE] = -1  # cut here only: other states may share the state after HOLE
    cut = DFA(trans, dfa.accepting, dfa.start, dfa.pattern)
    return A.splice(cut, edges, label=f"{dfa.pattern} unfolded")


def _product_or_conflicts(
    ctx: CompileContext, a: DFA, b: DFA, op: str
) -> DFA | tuple[set[int], set[int]] | None:
    """The exact symbolic product (see :func:`unfolded_product`), else the states of ``a`` and of
    ``b`` whose holes stand in the way, or None where a value could extend past a hole."""
    sa, sb = _hole_summary(ctx, a), _hole_summary(ctx, b)
    if sa is None or sb is None:
        return None
    conc_a, first_a, holes_a = sa
    conc_b, first_b, holes_b = sb
    info = ctx.holes.info
    at_a: set[int] = set()
    at_b: set[int] = set()

    def pairs_ok(pair_a: np.ndarray, pair_b: np.ndarray) -> bool:
        ca, fa, cb, fb = conc_a[pair_a], first_a[pair_a], conc_b[pair_b], first_b[pair_b]
        at_a.update(pair_a[(fa & cb).any(axis=1)].tolist())
        at_b.update(pair_b[(fb & ca).any(axis=1)].tolist())
        both = np.flatnonzero(fa.any(axis=1) & fb.any(axis=1))
        for i in both.tolist():  # holes on both sides: different holes must not share a first byte
            ha, hb = holes_a[int(pair_a[i])], holes_b[int(pair_b[i])]
            if any(x != y and info[x][2] & info[y][2] for x in ha for y in hb):
                at_a.add(int(pair_a[i]))
                at_b.add(int(pair_b[i]))
        return not at_a and not at_b

    got = A.checked_product(a, b, op, pairs_ok, "<and>" if op == "and" else "<minus>")
    return got if got is not None else (at_a, at_b)


def _hole_summary(
    ctx: CompileContext, dfa: DFA
) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]] | None:
    """Per state of ``dfa`` (plus a dead row): the bytes its concrete edges read and the first bytes of
    its holes, as packed bits, and its hole indices; None when a state after a hole reads a byte that
    could extend a value."""
    trans = dfa.transitions
    n = trans.shape[0]
    concrete = np.zeros((n + 1, 256), dtype=bool)
    concrete[:n] = trans >= 0
    firsts = np.zeros((n + 1, 256), dtype=bool)
    mids = trans[:, HOLE]
    holes: dict[int, list[int]] = {}
    for s in np.flatnonzero(mids >= 0).tolist():
        mid = int(mids[s])
        concrete[s, HOLE] = False
        concrete[mid] = False  # the hole's index byte is part of the hole, not text
        idxs = np.flatnonzero(trans[mid] >= 0)
        after = trans[mid, idxs]
        if (trans[after][:, _VALUE_EXTENSION] >= 0).any():
            return None
        holes[s] = idxs.tolist()
        for i in holes[s]:
            firsts[s, list(ctx.holes.info[i][2])] = True
    return np.packbits(concrete, axis=1), np.packbits(firsts, axis=1), holes


def note_bare_type(ctx: CompileContext, node: SchemaNode, dfa: DFA) -> None:
    """Where values may be holes (a recursive schema, or unconstrained values exact at any depth),
    remember ``dfa`` (the language of ``node``) as a bare type when ``type`` is its only constraint:
    :func:`intersect` then cuts first bytes instead of building a product."""
    k = ctx.doc.keywords(node)
    if (ctx.recursive or ctx.exact_any) and k.keys() - ANNOTATIONS == {"type"}:
        first = type_first_bytes(node, k)
        if first is not None:
            ctx.holes.type_cuts[id(dfa)] = (dfa, first)


def bare_type_first_bytes(ctx: CompileContext, node: SchemaNode, k: dict[str, Any]) -> frozenset[int] | None:
    """Where values may be holes (a recursive schema, or unconstrained values exact at any depth), the
    first bytes ``type`` allows when it is the node's only own keyword and only
    ``$ref``/``allOf``/``anyOf``/``oneOf`` sit beside it; else None."""
    if not (ctx.recursive or ctx.exact_any) or "type" not in k or (k.keys() & NOT_BESIDE_BARE_TYPE):
        return None
    if not k.keys() & {"$ref", "$dynamicRef", "allOf", "anyOf", "oneOf"}:
        return None
    return type_first_bytes(node, k)


def type_first_bytes(node: SchemaNode, k: dict[str, Any]) -> frozenset[int] | None:
    """The first bytes of the values ``type`` allows; None when it allows integers but not all
    numbers (they share first bytes)."""
    types = types_of(node, k)
    if "integer" in types:
        return None
    return frozenset(b for t in types for b in TYPE_FIRST[t])


def cut_first_bytes(
    ctx: CompileContext, dfa: DFA, allowed: frozenset[int], unfold: bool = False
) -> DFA | None:
    """The values of ``dfa`` that start with an ``allowed`` byte; None where a hole at the start
    may start with both allowed and other bytes (``unfold``: unless its language, put in its place
    one level deep, can be cut; see :func:`unfolded_product`)."""
    if unfold:
        got = cut_first_bytes(ctx, dfa, allowed)
        if got is not None or not hole_edges(dfa, dfa.start):
            return got
        opened = _unfold(ctx, dfa, {dfa.start})
        return cut_first_bytes(ctx, opened, allowed) if opened is not None else None
    trans = dfa.transitions
    n = trans.shape[0]
    row = trans[dfa.start].copy()
    keep = np.zeros(256, dtype=bool)
    keep[list(allowed)] = True
    keep[HOLE] = True
    row[~keep] = -1
    extra = [row]
    holes = hole_edges(dfa, dfa.start)
    if holes:
        mid = trans[int(row[HOLE])].copy()
        for idx, _ in holes:
            first = ctx.holes.info[idx][2]
            if not first <= allowed:
                if first & allowed:
                    return None
                mid[idx] = -1
        row[HOLE] = n + 1
        extra.append(mid)
    table = np.concatenate([trans, np.stack(extra)]).astype(np.int32)
    accepting = np.concatenate([dfa.accepting, np.zeros(len(extra), dtype=bool)])
    return dfa_from_arrays(table, accepting, n, dfa.pattern)


def distinct(ctx: CompileContext, nodes: list[SchemaNode]) -> list[SchemaNode]:
    """In a recursive schema, ``nodes`` less those that repeat an earlier one's constraints (the same
    keywords besides annotations, from the same base URI): intersecting a recursive language with
    itself would otherwise be refused."""
    if not ctx.recursive or len(nodes) < 2:
        return nodes
    seen: set[tuple[str, str]] = set()
    out = []
    for n in nodes:
        key = (_fingerprint(ctx, n.schema), base_uri(n))
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _fingerprint(ctx: CompileContext, schema: Any) -> str:
    got = ctx.holes.fingerprints.get(id(schema))
    if got is None:
        if isinstance(schema, dict):
            kept = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
            got = json.dumps(kept, sort_keys=True, default=repr)
        else:
            got = json.dumps(schema)
        ctx.holes.fingerprints[id(schema)] = got
    return got


def _same_dfa(a: DFA, b: DFA) -> bool:
    return a is b or (
        a.start == b.start
        and np.array_equal(a.accepting, b.accepting)
        and np.array_equal(a.transitions, b.transitions)
    )


def finish(ctx: CompileContext, dfa: DFA) -> DFA | RecursiveLanguage:
    """The root's language: ``dfa`` itself, or with the holes it reaches, a :class:`RecursiveLanguage`."""
    if not has_holes(dfa):
        return dfa
    table = ctx.holes
    holes: dict[int, DFA] = {}
    todo = [dfa]
    while todo:
        d = todo.pop()
        mids = np.unique(d.transitions[:, HOLE])
        for mid in mids[mids >= 0].tolist():
            for idx in np.flatnonzero(d.transitions[mid] >= 0).tolist():
                if idx not in holes:
                    holes[idx] = ctx.lang_memo[table.info[idx][0]]
                    todo.append(holes[idx])
    exact_any = ctx.exact_any and table.any_hole is not None and ctx.holes.index[ANY_KEY] in holes
    if not table.recursive & holes.keys() and not exact_any and not ctx.outline:
        # The cycle is out of the root's reach: a DFA (the regular engine) where it fits. (Languages
        # put out of line for their size stay so: filled back in, they would outgrow the limit again.)
        with contextlib.suppress(UnsupportedRegexFeature):
            return fill_in(ctx, dfa)
    return RecursiveLanguage(dfa, holes, {i: table.info[i][1] for i in holes})
