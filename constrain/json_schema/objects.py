"""Object keywords as languages: ``properties``, ``patternProperties``, ``additionalProperties``,
``required``, ``propertyNames``, ``minProperties``, ``maxProperties``, and the dependencies
(``dependentRequired``, ``dependentSchemas``, draft-07's ``dependencies``).

An object is a graph over (named keys passed, members so far): the location's named keys come as
optional or required *slots* in the canonical key order (:mod:`.key_order`), then any number of other
members, one edge per class of unnamed keys (which ``patternProperties`` patterns they match).
Where the graph is deterministic as written (compact separators, no member counts, at most one class
of other keys), :mod:`.object_tables` writes its table directly instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..exceptions import SchemaError
from ..limits import DEFAULT_LIMITS, current_limits
from .arrays import count_keyword
from .holes import cut_first_bytes, distinct
from .key_order import location_keys
from .keywords import ANNOTATIONS
from .locations import Location
from .object_tables import Slot, object_table
from .references import SchemaNode
from .strings import any_string_dfa, key_dfa
from .values import json_bytes

if TYPE_CHECKING:
    from .compiler import CompileContext

#: Other members: (language of their quoted keys, language of their values), one per class of keys.
Tail = list[tuple[DFA, DFA]]

MAX_PATTERNS = DEFAULT_LIMITS.max_patterns  # patternProperties at one place
MAX_KEY_CLASSES = DEFAULT_LIMITS.max_key_classes  # the sets of patterns keys match, at one place
MAX_COUNTED_MEMBERS = DEFAULT_LIMITS.max_counted_members
ANY_ORDER_MAX_KEYS = 4  # property_order="any": objects naming more keys keep the schema order


#: The keywords of an ``allOf`` subschema that :func:`merged_conjuncts` folds into its parent's object.
MERGEABLE = frozenset({
    "properties", "patternProperties", "additionalProperties", "required", "minProperties",
    "maxProperties", "propertyNames",
})  # fmt: skip


def merged_conjuncts(
    ctx: CompileContext, node: SchemaNode, k: dict[str, Any]
) -> list[tuple[int, SchemaNode]]:
    """The ``allOf`` subschemas of ``node`` (each through a lone ``$ref``) that hold only object
    keywords (:data:`MERGEABLE`) and annotations, with their indices: their object constraints are
    built into ``node``'s own object, not intersected with it afterwards.

    Exact: at one location every object language is a product over the location's keys (each key's
    value, which keys are required, how many members, which names), so the intersection is one object
    whose key values are intersected, ``required`` united and the counts narrowed; and these keywords
    say nothing of non-objects. It replaces a product of object automata, which for seven conjuncts
    naming a hundred properties each took 16 s, by one object (npm-package-json-lint's ``rules``)."""
    doc = ctx.doc
    out: list[tuple[int, SchemaNode]] = []
    for i, sub in enumerate(doc.subschema_list(node, "allOf")):
        child = doc.child(node, sub, "allOf", i)
        for _ in range(16):  # a lone $ref (annotations beside it): its target
            ck = doc.keywords(child)
            if not isinstance(child.schema, dict) or ck.keys() - ANNOTATIONS != {"$ref"}:
                break
            child = doc.resolve(child, "$ref")
        if not isinstance(child.schema, dict):
            continue
        rest = doc.keywords(child).keys() - ANNOTATIONS
        if rest and rest <= MERGEABLE:
            out.append((i, child))
    return out


def object_language(
    ctx: CompileContext,
    node: SchemaNode,
    k: dict[str, Any],
    loc: Location,
    merged: Sequence[SchemaNode] = (),
) -> DFA:
    """The objects ``node``'s object keywords allow at ``loc``, with those of the ``merged`` subschemas
    (:func:`merged_conjuncts`)."""
    names = location_keys(ctx.doc, loc)
    pats = ctx.places.patterns(loc)
    if len(pats) > current_limits().max_patterns:
        detail = f"more than {current_limits().max_patterns} patterns at one place"
        ctx.unsupported("patternProperties", f"{node.ptr}/patternProperties", detail)
        pats = pats[: current_limits().max_patterns]
    owners = [(node, k), *((m, ctx.doc.keywords(m)) for m in merged)]
    required: list[Any] = []
    lo = 0
    hi: int | None = None
    key_names: DFA | None = None
    for part, pk in owners:
        req = pk.get("required", []) if ctx.doc.version >= 4 else []
        if not isinstance(req, list):
            raise SchemaError("required must be an array", f"{part.ptr}/required")
        required.extend(req)
        lo = max(lo, count_keyword(part, pk, "minProperties") or 0)
        most = count_keyword(part, pk, "maxProperties")
        hi = most if hi is None else hi if most is None else min(hi, most)
        if "propertyNames" in pk and ctx.doc.version >= 6:
            pn = ctx.doc.child(part, pk["propertyNames"], "propertyNames")
            names_here = ctx.lang(pn, ctx.places.of([pn]))
            key_names = names_here if key_names is None else ctx.intersect(key_names, names_here)

    slots: list[Slot] = []
    for name in names:
        subs = distinct(ctx, [s for part, _ in owners for s in ctx.places.schemas_for_key(part, name)])
        kloc = ctx.places.key_loc(loc, name)
        value = ctx.intersect(*[ctx.lang(s, kloc) for s in subs]) if subs else ctx.skeleton(kloc)
        quoted = json_bytes(name)
        allowed = not A.is_empty(value) and (key_names is None or key_names.matches(quoted))
        is_required = name in required
        if not allowed and is_required:
            return empty_dfa(f"object at {node.ptr}: required {name!r} cannot be present")
        slots.append((quoted, value if allowed else None, is_required))

    def class_value(klass: frozenset[str]) -> DFA:
        subs = distinct(ctx, [s for part, _ in owners for s in ctx.places.schemas_for_class(part, klass)])
        cloc = ctx.places.class_loc(loc, klass)
        return ctx.intersect(*[ctx.lang(s, cloc) for s in subs]) if subs else ctx.skeleton(cloc)

    tail: Tail = []
    ptr = f"{node.ptr}/patternProperties"
    if not pats and key_names is None:
        # One class, the keys that are no name: never empty, so its value comes first; where that is
        # empty ("additionalProperties": false) the keys' language (a product) is not built at all.
        value = class_value(frozenset())
        if not A.is_empty(value):
            tail.extend((keys, value) for _, keys in _key_classes(ctx, ptr, pats, names, key_names))
    else:
        for klass, keys in _key_classes(ctx, ptr, pats, names, key_names):
            value = class_value(klass)
            if not A.is_empty(value):
                tail.append((keys, value))
    parts = sum(v.num_states for _, v, _ in slots if v is not None) + sum(v.num_states for _, v in tail)
    ctx.too_large_to_inline(node, "properties", parts)
    return object_graph(ctx, node, slots, tail, lo, hi)


def _key_classes(
    ctx: CompileContext, ptr: str, pats: list[str], names: list[str], key_names: DFA | None
) -> Iterator[tuple[frozenset[str], DFA]]:
    """Each non-empty class of unnamed keys: (the patterns they match, their quoted texts' language),
    in the order of their bit masks (pattern ``i`` is bit ``i``).

    The classes are split one pattern at a time and empty ones dropped at once, so the products follow
    the classes that exist (about one per pattern where the patterns hardly overlap), not all 2**n.

    More than ``Limits.max_key_classes`` classes are refused (``ctx.unsupported``).
    """
    keys = any_string_dfa()
    if names:
        keys = ctx.difference(keys, A.build(A.alt(*[A.Literal(json_bytes(n)) for n in names])))
    if key_names is not None:
        keys = ctx.intersect(keys, key_names)
    classes = [] if A.is_empty(keys) else [(0, keys)]
    for i, p in enumerate(pats):
        d = key_dfa(ctx, p, ptr)
        if d is None:  # dropped (lenient): the pattern's bit set or not, the same keys (looser, as before)
            split = classes + [(mask | 1 << i, k) for mask, k in classes]
        else:
            split = []
            for mask, k in classes:
                for bits, part in ((mask | 1 << i, ctx.intersect(k, d)), (mask, ctx.difference(k, d))):
                    if not A.is_empty(part):
                        split.append((bits, part))
        most = current_limits().max_key_classes
        if len(split) > most:
            detail = f"its patterns split the keys into more than {most} classes"
            ctx.unsupported("patternProperties", ptr, detail)
            break  # lenient: the patterns from this one on are dropped
        classes = split
    for mask, k in sorted(classes, key=lambda c: c[0]):
        yield frozenset(p for i, p in enumerate(pats) if mask >> i & 1), k


def object_graph(
    ctx: CompileContext, node: SchemaNode, slots: list[Slot], tail: Tail, lo: int, hi: int | None
) -> DFA:
    """Objects with the named ``slots`` and ``tail`` members, ``lo`` to ``hi`` members in all."""
    if hi is not None and hi > current_limits().max_counted_members:
        detail = f"more than {current_limits().max_counted_members} counted members"
        ctx.unsupported("maxProperties", f"{node.ptr}/maxProperties", detail)
        hi = None
    if lo > current_limits().max_counted_members:
        detail = f"more than {current_limits().max_counted_members} counted members"
        ctx.unsupported("minProperties", f"{node.ptr}/minProperties", detail)
        lo = 0
    if ctx.options.property_order == "any" and len(slots) <= ANY_ORDER_MAX_KEYS:
        # Every order of the named keys, with other keys anywhere between them.
        orders = [list(p) for p in itertools.permutations(slots)]
        return A.union(*[_object_order(ctx, node, order, tail, (lo, hi), True) for order in orders])
    return _object_order(ctx, node, slots, tail, (lo, hi), False)


def _object_order(
    ctx: CompileContext,
    node: SchemaNode,
    slots: list[Slot],
    tail: Tail,
    counts: tuple[int, int | None],
    tail_anywhere: bool,
) -> DFA:
    """Objects whose named keys come in the order of ``slots``; nodes count the members so far."""
    if not tail_anywhere and ctx.options.whitespace == "compact":
        direct = object_table(slots, tail, counts, f"object at {node.ptr}")
        if direct is not None:
            return direct
    lo, hi = counts
    ws = ctx.ws
    top = hi if hi is not None else max(lo, 1)
    n = len(slots)

    def nid(i: int, c: int) -> int:
        return i * (top + 1) + c

    def bump(c: int) -> int | None:
        if hi is not None:
            return c + 1 if c + 1 <= hi else None
        return min(c + 1, top)

    # A member is its key (after the separator its count asks for) then its value, through a node of
    # its own per target count: the members that reach the same count share one copy of the value
    # (without, every count had its copy, which the subset construction built and minimisation merged).
    edges: list[tuple[int, int, A.Expr]] = []
    entries: dict[tuple[object, int], int] = {}
    num_nodes = (n + 1) * (top + 1)

    def member(src: int, dst: int, c: int, key: A.Expr, value: DFA, which: object) -> None:
        nonlocal num_nodes
        entry = entries.get((which, dst))
        if entry is None:
            entry = entries[(which, dst)] = num_nodes
            num_nodes += 1
            edges.append((entry, dst, A.Embed(value)))
        edges.append((src, entry, A.seq(ctx.sep(c), key, ws, A.Literal(b":"), ws)))

    for i, (quoted, value, is_required) in enumerate(slots):
        for c in range(top + 1):
            if not is_required:
                edges.append((nid(i, c), nid(i + 1, c), A.Literal(b"")))
            c2 = bump(c)
            if value is not None and c2 is not None:
                member(nid(i, c), nid(i + 1, c2), c, A.Literal(quoted), value, i)
    for t, (keys, value) in enumerate(tail):
        for i in range(n + 1) if tail_anywhere else (n,):
            for c in range(top + 1):
                c2 = bump(c)
                if c2 is None:
                    continue
                member(nid(i, c), nid(i, c2), c, A.Embed(keys), value, ("tail", t))
    finals = tuple(nid(n, c) for c in range(top + 1) if c >= lo)
    graph = A.Graph(num_nodes, 0, finals, tuple(edges))
    return A.build(A.seq(A.Literal(b"{"), ws, graph, ws, A.Literal(b"}")), f"object at {node.ptr}")


def dependencies_language(
    ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location, result: DFA | None
) -> DFA | None:
    """``result`` (None: every value at ``loc``) under ``dependentRequired``, ``dependentSchemas`` and
    ``dependencies``: where the named key is present, the others must be / the subschema holds."""
    version = ctx.doc.version
    deps_req: dict[str, list[str]] = dict(k.get("dependentRequired", {}) or {}) if version >= 8 else {}
    deps_sch: dict[str, tuple[Any, str]] = {}
    if version >= 8:
        deps_sch = {p: (s, "dependentSchemas") for p, s in (k.get("dependentSchemas", {}) or {}).items()}
    if "dependencies" in k:
        for p, v in (k.get("dependencies", {}) or {}).items():
            if isinstance(v, list):
                deps_req[p] = v
            else:
                deps_sch[p] = (v, "dependencies")
    if not deps_req and not deps_sch:
        return result
    empty = node.empty_beside()
    for prop, req in deps_req.items():
        absent = presence(ctx, empty, loc, {prop: False})
        present = presence(ctx, empty, loc, {prop: True, **{q: True for q in req}})
        rule = A.union(absent, present, non_objects(ctx, loc))
        result = rule if result is None else ctx.intersect(result, rule)
    for prop, (sub, kwname) in deps_sch.items():
        absent = presence(ctx, empty, loc, {prop: False})
        present = ctx.intersect(
            presence(ctx, empty, loc, {prop: True}), ctx.lang(ctx.doc.child(node, sub, kwname, prop), loc)
        )
        rule = A.union(absent, present, non_objects(ctx, loc))
        result = rule if result is None else ctx.intersect(result, rule)
    return result


def non_objects(ctx: CompileContext, loc: Location) -> DFA:
    """The values at ``loc`` that are not objects: those not starting with ``{``."""
    skeleton = ctx.skeleton(loc)
    cut = cut_first_bytes(ctx, skeleton, _NOT_BRACE, unfold=True)
    return cut if cut is not None else ctx.difference(skeleton, A.build(A.Regex(r"\{(?s:.*)")))


_NOT_BRACE = frozenset(range(256)) - {ord("{")}


def presence(ctx: CompileContext, empty: SchemaNode, loc: Location, want: dict[str, bool]) -> DFA:
    """Objects at ``loc`` where each key in ``want`` is present (True) or absent (False)."""
    names = location_keys(ctx.doc, loc)
    slots: list[Slot] = []
    for name in names:
        value = ctx.skeleton(ctx.places.key_loc(loc, name))
        w = want.get(name)
        slots.append((json_bytes(name), None if w is False else value, w is True))
    pats = ctx.places.patterns(loc)[: current_limits().max_patterns]
    tail: Tail = [
        (keys, ctx.skeleton(ctx.places.class_loc(loc, klass)))
        for klass, keys in _key_classes(ctx, f"{empty.ptr}/patternProperties", pats, names, None)
    ]
    return object_graph(ctx, empty, slots, tail, 0, None)
