"""The in-place applicators as set operations on languages at one location: ``$ref`` and
``$dynamicRef`` intersect, ``allOf`` intersects, ``anyOf`` unites, ``oneOf`` is "in exactly one",
``not`` and ``if``/``then``/``else`` complement within the location's *skeleton* (every canonical value
there). Over recursive languages these go through :mod:`.holes`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA
from ..exceptions import ConstrainError
from .locations import Location
from .references import SchemaDocument, SchemaNode

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
        if exclusive_branches(doc, node):
            # At most one branch can hold (a discriminator): "exactly one" is "at least one".
            return _after_one_of(ctx, node, k, loc, meet(result, A.union(*subs)))
        exactly_one = []
        for i, s in enumerate(subs):
            others = [o for j, o in enumerate(subs) if j != i]
            exactly_one.append(ctx.difference(s, A.union(*others)) if others else s)
        result = meet(result, A.union(*exactly_one))
    return _after_one_of(ctx, node, k, loc, result)


def _after_one_of(
    ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location, result: DFA | None
) -> DFA | None:
    """:func:`apply_applicators` from ``not`` on."""
    doc = ctx.doc
    if "not" in k:
        sub = ctx.lang(doc.child(node, k["not"], "not"), loc)
        result = ctx.difference(result if result is not None else ctx.skeleton(loc), sub)
    if "if" in k and ("then" in k or "else" in k) and doc.version >= 7:  # draft 7 brought if/then/else
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


def exclusive_branches(doc: SchemaDocument, node: SchemaNode) -> bool:
    """Whether no value can satisfy two of ``node``'s ``oneOf`` branches: their ``type``s are disjoint,
    or a discriminator keeps them apart (one property every branch requires, each branch allowing
    it only the values of its own ``const`` or ``enum`` of strings, booleans or null, no value
    shared by two branches, and objects only: ``type: object`` on ``node`` or on every branch).
    Then ``oneOf`` is ``anyOf``, a union, which stays exact where the branches hold unconstrained
    values (``additionalProperties: true``): the difference would fill those in and outgrow any
    automaton."""
    branches = [doc.child(node, sub, "oneOf", i) for i, sub in enumerate(doc.subschema_list(node, "oneOf"))]
    if len(branches) < 2:
        return False
    implied = [_types_implied(doc, b) for b in branches]
    types = [t for t in implied if t is not None]
    if len(types) == len(implied) and all(not (a & b) for i, a in enumerate(types) for b in types[i + 1 :]):
        return True  # values of different types (an integer is a number)
    facts = [_discriminators(doc, b) for b in branches]
    if not (_object_only(doc.keywords(node)) or all(objects for objects, _ in facts)):
        return False
    common = set.intersection(*(set(values) for _, values in facts))
    for key in common:
        seen: set[tuple[str, Any]] = set()
        total = 0
        for _, values in facts:
            seen |= values[key]
            total += len(values[key])
        if len(seen) == total:  # pairwise disjoint
            return True
    return False


def _ref_chain(doc: SchemaDocument, node: SchemaNode) -> Iterator[dict[str, Any]]:
    """The keywords of ``node`` and of the ``$ref`` targets under it (a few hops): conjunctions, so
    what each implies, the whole chain implies."""
    for _ in range(8):
        k = doc.keywords(node)
        yield k
        if not isinstance(k.get("$ref"), str):
            return
        try:
            node = doc.resolve(node, "$ref")
        except ConstrainError:
            return


def _types_implied(doc: SchemaDocument, node: SchemaNode) -> frozenset[str] | None:
    """The JSON types ``node``'s ``type`` (and the ``$ref`` chain under it) allows, ``integer`` read
    as ``number``; None where nothing restricts them."""
    out: frozenset[str] | None = None
    for k in _ref_chain(doc, node):
        t = k.get("type")
        if isinstance(t, str):
            t = [t]
        if isinstance(t, list) and all(isinstance(x, str) for x in t):
            mine = frozenset("number" if x == "integer" else x for x in t)
            out = mine if out is None else out & mine
    return out


def _object_only(k: dict[str, Any]) -> bool:
    t = k.get("type")
    return t == "object" or t == ["object"]


def _discriminators(doc: SchemaDocument, node: SchemaNode) -> tuple[bool, dict[str, set[tuple[str, Any]]]]:
    """What ``node`` and the ``$ref`` chain under it (conjunctions) imply: whether values are objects
    only, and per required property with a ``const`` or ``enum`` of strings, booleans or null, the
    values it may take (tagged by type: ``True`` is not ``1`` in JSON Schema)."""
    objects = False
    required: set[str] = set()
    allowed: dict[str, set[tuple[str, Any]]] = {}
    for k in _ref_chain(doc, node):
        objects = objects or _object_only(k)
        req = k.get("required")
        if isinstance(req, list):
            required.update(r for r in req if isinstance(r, str))
        props = k.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                values = _const_values(sub, doc.version)
                if values is not None:
                    allowed[key] = allowed[key] & values if key in allowed else values
    return objects, {key: v for key, v in allowed.items() if key in required}


def _const_values(sub: Any, version: int) -> set[tuple[str, Any]] | None:
    """The values a property schema's own ``const`` (draft 6 on) / ``enum`` allow (None: not such a
    list, or one the draft ignores: before 2019-09 a ``$ref`` hides its siblings)."""
    if not isinstance(sub, dict) or (version <= 7 and "$ref" in sub):
        return None
    if "const" in sub and version >= 6:
        values = [sub["const"]]
    elif isinstance(sub.get("enum"), list):
        values = sub["enum"]
    else:
        return None
    out: set[tuple[str, Any]] = set()
    for v in values:
        if isinstance(v, str):
            out.add(("s", v))
        elif isinstance(v, bool):
            out.add(("b", v))
        elif v is None:
            out.add(("n", None))
        else:
            return None  # numbers (1 == 1.0), arrays, objects: not compared here
    return out
