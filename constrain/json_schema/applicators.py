"""The in-place applicators as set operations on languages at one location: ``$ref`` and
``$dynamicRef`` intersect, ``allOf`` intersects, ``anyOf`` unites, ``oneOf`` is "in exactly one",
``not`` and ``if``/``then``/``else`` complement within the location's *skeleton* (every canonical value
there). Over recursive languages these go through :mod:`.holes`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA
from .locations import Location
from .references import SchemaNode

if TYPE_CHECKING:
    from .compiler import CompileContext


def apply_applicators(
    ctx: CompileContext,
    node: SchemaNode,
    k: dict[str, Any],
    loc: Location,
    result: DFA | None,
    merged: Collection[int] = (),
) -> DFA | None:
    """``result`` (None: every value at ``loc``, until a complement needs it spelled out) under
    ``node``'s in-place applicators; the ``allOf`` subschemas at the indices ``merged`` are already in
    ``result`` (:func:`~constrain.json_schema.objects.merged_conjuncts`)."""
    doc = ctx.doc

    def meet(current: DFA | None, other: DFA) -> DFA:
        return other if current is None else ctx.intersect(current, other)

    for ref_kw in ("$ref", "$dynamicRef"):
        if ref_kw in k and (result is None or not A.is_empty(result)):
            result = meet(result, ctx.lang(doc.resolve(node, ref_kw), loc))
    if "$recursiveRef" in k:
        ctx.unsupported("$recursiveRef", node.ptr + "/$recursiveRef", "dynamic scope is not implemented")
    for i, sub in enumerate(doc.subschema_list(node, "allOf")):
        if i not in merged:
            result = meet(result, ctx.lang(doc.child(node, sub, "allOf", i), loc))
    if "anyOf" in k:
        subs = [
            ctx.lang(doc.child(node, s, "anyOf", i), loc)
            for i, s in enumerate(doc.subschema_list(node, "anyOf"))
        ]
        result = meet(result, A.union(*subs))
    if "oneOf" in k:
        subs = [
            ctx.lang(doc.child(node, s, "oneOf", i), loc)
            for i, s in enumerate(doc.subschema_list(node, "oneOf"))
        ]
        exactly_one = []
        for i, s in enumerate(subs):
            others = [o for j, o in enumerate(subs) if j != i]
            exactly_one.append(ctx.difference(s, A.union(*others)) if others else s)
        result = meet(result, A.union(*exactly_one))
    if "not" in k:
        sub = ctx.lang(doc.child(node, k["not"], "not"), loc)
        result = ctx.difference(result if result is not None else ctx.skeleton(loc), sub)
    if "if" in k and ("then" in k or "else" in k):
        cond = ctx.lang(doc.child(node, k["if"], "if"), loc)
        universe = result if result is not None else ctx.skeleton(loc)
        yes = ctx.intersect(universe, cond)
        if "then" in k:
            yes = ctx.intersect(yes, ctx.lang(doc.child(node, k["then"], "then"), loc))
        no = ctx.difference(universe, cond)
        if "else" in k:
            no = ctx.intersect(no, ctx.lang(doc.child(node, k["else"], "else"), loc))
        result = A.union(yes, no)
    return result
