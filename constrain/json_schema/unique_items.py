"""``uniqueItems``: beyond regular languages in general, exact where the arrays are a finite set or
their items take finitely many values.

The arrays the rest of the schema allows are enumerated (up to :data:`MAX_ARRAYS`), and those with a
repeated item dropped. Where they are infinite but every item is one of finitely many values (an
``enum`` of strings, booleans, objects of those), the arrays of distinct values are an automaton over
the sets of values used so far (at most :data:`MAX_ARRAYS` sets), intersected with the rest. Anything
else is refused (or the keyword dropped under ``lenient``).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from math import comb
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..limits import DEFAULT_LIMITS, current_limits
from .arrays import count_keyword
from .holes import fill_in
from .locations import Location
from .recursion import has_holes
from .references import SchemaNode
from .values import json_equal

if TYPE_CHECKING:
    from .compiler import CompileContext

MAX_ARRAYS = DEFAULT_LIMITS.max_arrays


def unique_items_language(
    ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location, result: DFA
) -> DFA:
    """``result`` (the values at ``loc``) less the arrays with a repeated item."""
    hi = count_keyword(node, k, "maxItems")
    if hi is not None and hi <= 1:
        return result
    result = fill_in(ctx, result)
    if has_holes(result):
        ctx.unsupported("uniqueItems", f"{node.ptr}/uniqueItems", "the arrays hold recursive values")
        return result
    arrays = ctx.intersect(result, A.build(A.Regex(r"\[(?s:.*)")))
    limit = current_limits().max_arrays
    strings = enumerate_strings(arrays, limit)
    if strings is not None:
        keep = [s for s in strings if _all_unique(json.loads(s))]
        finite = A.build(A.alt(*[A.Literal(s) for s in keep])) if keep else empty_dfa("uniqueItems")
        return A.union(ctx.difference(result, arrays), finite)
    distinct = distinct_item_arrays(ctx, node, loc, hi, limit)
    if isinstance(distinct, str):
        ctx.unsupported(
            "uniqueItems", f"{node.ptr}/uniqueItems", f"the set of possible arrays is infinite and {distinct}"
        )
        return result
    return A.union(ctx.difference(result, arrays), ctx.intersect(arrays, distinct))


def distinct_item_arrays(
    ctx: CompileContext, node: SchemaNode, loc: Location, hi: int | None, limit: int
) -> DFA | str:
    """The arrays at ``loc`` of pairwise distinct items, each item one of the texts ``node``'s item
    schemas allow (``prefixItems``/``items``, built as :func:`.arrays.array_language` builds them); or
    why not (for the refusal): those texts are infinite or more than ``limit``, or the sets of values
    an array can have used (at most ``maxItems`` = ``hi`` of them) are more than ``limit``.

    One node per set of values used so far; an item may be any text of a value not in the set. Every
    item of an array the node's keywords allow is one of these texts, so the intersection with those
    arrays keeps exactly the ones whose items are distinct (the same separators, so the same texts)."""
    prefix, rest = ctx.places.items_split(node)
    width = ctx.places.prefix_len(loc)
    langs: list[DFA] = []
    for i in range(width + 1):
        sub = prefix[i] if i < len(prefix) else rest
        if sub is None:
            return "its items are not a few known values (any value may be one)"
        langs.append(ctx.lang(sub, ctx.places.item_loc(loc, i)))
    items = A.union(*langs) if len(langs) > 1 else langs[0]
    if has_holes(items):
        return "its items hold recursive values"
    texts = enumerate_strings(items, limit)
    if texts is None:
        return "its items are not a few known values (strings, numbers or other open values)"
    values: dict[Any, list[bytes]] = {}
    for text in texts:
        values.setdefault(_canonical(json.loads(text, parse_float=Decimal, parse_int=Decimal)), []).append(
            text
        )
    m = len(values)
    most = m if hi is None else min(m, hi)
    sets = 0
    for j in range(most + 1):  # the sets of at most ``most`` values, counted only up to the limit
        sets += comb(m, j)
        if sets > limit:
            return f"its items take {m} distinct values: more than {limit} sets of them to track"
    forms = [A.Embed(A.build(A.alt(*[A.Literal(t) for t in group]))) for group in values.values()]
    ids = {0: 0}
    order = [0]
    edges: list[tuple[int, int, A.Expr]] = []
    for used in order:  # grows while it is read: breadth-first over the sets of values used
        size = used.bit_count()
        if size == most:
            continue
        for j, form in enumerate(forms):
            if used >> j & 1:
                continue
            after = used | 1 << j
            if after not in ids:
                ids[after] = len(order)
                order.append(after)
            edges.append((ids[used], ids[after], A.seq(ctx.sep(size), form)))
    graph = A.Graph(len(order), 0, tuple(range(len(order))), tuple(edges))
    return A.build(
        A.seq(A.Literal(b"["), ctx.ws, graph, ctx.ws, A.Literal(b"]")), f"uniqueItems at {node.ptr}"
    )


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (numbers parsed as ``Decimal``: ``1 == 1.0``)."""
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(v)) for key, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, Decimal):
        return ("number", value)
    return (type(value).__name__, value)  # str, bool, None


def _all_unique(items: Any) -> bool:
    if not isinstance(items, list):
        return True
    return not any(json_equal(items[i], items[j]) for i in range(len(items)) for j in range(i))


def enumerate_strings(dfa: DFA, limit: int) -> list[bytes] | None:
    """Every string of a finite language, or None when it is infinite or has more than ``limit``."""
    if A.is_empty(dfa):
        return []
    out: list[bytes] = []
    trans = dfa.transitions
    on_path: set[int] = set()

    def walk(state: int, prefix: bytes) -> bool:
        if state in on_path:
            return False  # a cycle: infinite
        if dfa.accepting[state]:
            out.append(prefix)
            if len(out) > limit:
                return False
        on_path.add(state)
        row = trans[state]
        for b in np.flatnonzero(row >= 0).tolist():
            if not walk(int(row[b]), prefix + bytes([b])):
                return False
        on_path.discard(state)
        return True

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        ok = walk(dfa.start, b"")
    finally:
        sys.setrecursionlimit(old)
    return out if ok else None
