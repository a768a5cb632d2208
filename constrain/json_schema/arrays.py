"""Array keywords as languages: ``prefixItems``/``items``/``additionalItems``, ``minItems``,
``maxItems``, ``contains``, ``minContains`` and ``maxContains``.

An array is a chain of item languages (node ``i`` = "``i`` items so far"); every index past the longest
prefix shares one location, so the chain ends in a loop when no ``maxItems`` bounds it. ``contains``
is a product of that position with a count of matching items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA
from ..exceptions import SchemaError
from ..limits import DEFAULT_LIMITS, current_limits
from .locations import Location
from .references import SchemaNode

if TYPE_CHECKING:
    from .compiler import CompileContext

#: Counted items (``maxItems`` past the prefixes, ``minContains``/``maxContains``) are refused past this.
MAX_COUNTED_ITEMS = DEFAULT_LIMITS.max_counted_items


def count_keyword(node: SchemaNode, k: dict[str, Any], name: str) -> int | None:
    """The non-negative integer value of keyword ``name`` (``minItems``, ``maxProperties``, ...), if given."""
    v = k.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
        raise SchemaError(f"{name} must be a non-negative integer", f"{node.ptr}/{name}")
    return int(v)


def array_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location) -> DFA:
    """The arrays ``node``'s array keywords allow at ``loc``."""
    prefix, rest = ctx.places.items_split(node)
    width = ctx.places.prefix_len(loc)
    lo = count_keyword(node, k, "minItems") or 0
    hi = count_keyword(node, k, "maxItems")
    values: dict[int, DFA] = {}

    def value(i: int) -> DFA:
        i = min(i, width)  # every index past the prefixes shares one location
        got = values.get(i)
        if got is None:
            iloc = ctx.places.item_loc(loc, i)
            sub = prefix[i] if i < len(prefix) else rest
            got = values[i] = ctx.lang(sub, iloc) if sub is not None else ctx.skeleton(iloc)
        return got

    # Node i = "i items so far"; with no maxItems the last node loops and means "at least i".
    chain = hi if hi is not None else max(width, lo) + 1
    most = current_limits().max_counted_items
    if chain - max(width, lo) > most:
        ctx.unsupported("maxItems", f"{node.ptr}/maxItems", f"more than {most} counted items")
        chain, hi = max(width, lo) + 1, None
    edges: list[tuple[int, int, A.Expr]] = []
    n_nodes = 1
    for i in range(chain):
        v = value(i)
        if A.is_empty(v):
            break
        edges.append((i, i + 1, A.seq(ctx.sep(i), A.Embed(v))))
        n_nodes = i + 2
    else:
        if hi is None and not A.is_empty(value(chain)):
            edges.append((chain, chain, A.seq(ctx.sep(1), A.Embed(value(chain)))))
    finals = tuple(i for i in range(n_nodes) if i >= lo and (hi is None or i <= hi))
    graph = A.Graph(n_nodes, 0, finals, tuple(edges))
    result = A.build(A.seq(A.Literal(b"["), ctx.ws, graph, ctx.ws, A.Literal(b"]")), f"array at {node.ptr}")
    if "contains" in k and ctx.doc.version >= 6:
        result = ctx.intersect(result, contains_language(ctx, node, k, loc))
    return result


def contains_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location) -> DFA:
    """The arrays at ``loc`` with between ``minContains`` (1) and ``maxContains`` items in ``contains``."""
    lo = count_keyword(node, k, "minContains") if ctx.doc.version >= 8 else None
    hi = count_keyword(node, k, "maxContains") if ctx.doc.version >= 8 else None
    lo = 1 if lo is None else lo
    if lo == 0 and hi is None:
        return array_language(ctx, node.empty_beside(), {}, loc)
    most = current_limits().max_counted_items
    if (hi if hi is not None else lo) > most:
        ctx.unsupported("contains", f"{node.ptr}/contains", f"counts beyond {most}")
        return array_language(ctx, node.empty_beside(), {}, loc)
    cnode = ctx.doc.child(node, k["contains"], "contains")
    width = ctx.places.prefix_len(loc)
    top_pos = width + 1  # positions saturate here (also tells "first item" from the rest)
    cap = hi + 1 if hi is not None else lo  # matches saturate at lo when unbounded above

    def nid(p: int, c: int) -> int:
        return p * (cap + 1) + c

    edges: list[tuple[int, int, A.Expr]] = []
    for p in range(top_pos + 1):
        iloc = ctx.places.item_loc(loc, min(p, width))
        skel = ctx.skeleton(iloc)
        hit = ctx.lang(cnode, iloc)
        yes, no = ctx.intersect(skel, hit), ctx.difference(skel, hit)
        nxt = min(p + 1, top_pos)
        for c in range(cap + 1):
            if not A.is_empty(no):
                edges.append((nid(p, c), nid(nxt, c), A.seq(ctx.sep(p), A.Embed(no))))
            c2 = min(c + 1, cap) if hi is None else c + 1
            if not A.is_empty(yes) and (hi is None or c2 <= hi):
                edges.append((nid(p, c), nid(nxt, c2), A.seq(ctx.sep(p), A.Embed(yes))))
    finals = tuple(
        nid(p, c) for p in range(top_pos + 1) for c in range(cap + 1) if c >= lo and (hi is None or c <= hi)
    )
    graph = A.Graph((top_pos + 1) * (cap + 1), 0, finals, tuple(edges))
    return A.build(A.seq(A.Literal(b"["), ctx.ws, graph, ctx.ws, A.Literal(b"]")), f"contains at {node.ptr}")
