"""The canonical key order, shared by compilation and serialisation.

At each location the object keys come in the *schema's property order*: every property the location's
schemas name (``properties``, ``required``, ``dependentRequired``, ``dependentSchemas``,
``dependencies``), first seen first; then the instance's other keys in its own order.
:func:`location_keys` is the order the compiled object languages use; :func:`instance_key_order` puts
one instance's keys in it (for :func:`serialize_value` and the texts of ``enum``/``const`` objects).
With ``property_order="any"`` no key is fixed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .locations import Location
from .references import SchemaDocument

if TYPE_CHECKING:
    from .compiler import CompileContext


def location_keys(doc: SchemaDocument, loc: Location) -> list[str]:
    """The location's key order: every property named by its schemas, first seen first."""
    names: dict[str, None] = {}
    for n in loc.nodes:
        k = doc.keywords(n)
        for p in k.get("properties", {}) or {}:
            names.setdefault(p)
        for p in k.get("required", []) or []:
            if isinstance(p, str):
                names.setdefault(p)
        deps = dict(k.get("dependentRequired", {}) or {})
        if "dependencies" in k:
            deps.update({p: v for p, v in (k.get("dependencies", {}) or {}).items() if isinstance(v, list)})
        for p, req in deps.items():
            names.setdefault(p)
            for q in req:
                names.setdefault(q)
        for p in k.get("dependentSchemas", {}) or {}:
            names.setdefault(p)
        for p in k.get("dependencies", {}) or {}:
            names.setdefault(p)
    return list(names)


def instance_key_order(
    ctx: CompileContext, loc: Location, value: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """``(fixed, free)``: the keys of ``value`` that the location orders, in its order, then the others
    in the instance's order. ``fixed + free`` is the canonical order."""
    schema_order = bool(loc.nodes) and ctx.options.property_order == "schema"
    fixed = [n for n in location_keys(ctx.doc, loc) if n in value] if schema_order else []
    return fixed, [n for n in value if n not in fixed]


def member_location(ctx: CompileContext, loc: Location, name: str, known: list[str]) -> Location:
    """The location of the value of key ``name`` at ``loc`` (``known``: the location's keys)."""
    if not loc.nodes:
        return loc
    if name in known:
        return ctx.places.key_loc(loc, name)
    return ctx.places.class_loc(loc, ctx.places.pattern_class(loc, name))


def serialize_value(ctx: CompileContext, value: Any, loc: Location) -> str:
    """The canonical text of ``value`` at ``loc``: compact, object keys in the canonical order."""
    if isinstance(value, dict):
        fixed, free = instance_key_order(ctx, loc, value)
        known = location_keys(ctx.doc, loc) if loc.nodes else []
        parts = [
            json.dumps(name, ensure_ascii=False)
            + ":"
            + serialize_value(ctx, value[name], member_location(ctx, loc, name, known))
            for name in fixed + free
        ]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        items = [
            serialize_value(ctx, v, ctx.places.item_loc(loc, i) if loc.nodes else loc)
            for i, v in enumerate(value)
        ]
        return "[" + ",".join(items) + "]"
    return json.dumps(value, ensure_ascii=False)
