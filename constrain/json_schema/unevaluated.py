"""``unevaluatedProperties`` and ``unevaluatedItems``.

What a subschema *evaluates* (the keys of its ``properties`` and ``patternProperties``, its item prefix,
everything under ``additionalProperties`` or ``items``) depends on which branches of its ``anyOf``,
``oneOf``, ``if`` and ``dependentSchemas`` hold. So the value's language is split into *scenarios*: a
condition (the language where those branches come out one way) with what is then evaluated. Within a
scenario the keyword is a synthetic schema (``properties`` of the evaluated names set to ``true``,
``additionalProperties`` the unevaluated schema; the same with items), compiled like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA
from ..limits import DEFAULT_LIMITS, current_limits
from .locations import Location
from .objects import non_objects, presence
from .references import SchemaNode

if TYPE_CHECKING:
    from .compiler import CompileContext

MAX_SCENARIOS = DEFAULT_LIMITS.max_scenarios
MAX_BRANCHES = DEFAULT_LIMITS.max_branches

Scenario = tuple[DFA | None, "Evaluated"]  # (condition, None: always; what is evaluated under it)
Way = tuple[DFA, "Evaluated"]


@dataclass
class Evaluated:
    """Annotations a subschema produces for ``unevaluated*``: the keys and items it evaluates."""

    names: dict[str, None] = field(default_factory=dict)
    patterns: dict[str, None] = field(default_factory=dict)
    prefix: int = 0
    all_props: bool = False
    all_items: bool = False
    branches: list[tuple[str, SchemaNode]] = field(default_factory=list)
    contains: list[SchemaNode] = field(default_factory=list)

    def merge(self, other: Evaluated) -> None:
        """Add what ``other`` evaluates (not its branches)."""
        self.names.update(other.names)
        self.patterns.update(other.patterns)
        self.prefix = max(self.prefix, other.prefix)
        self.all_props |= other.all_props
        self.all_items |= other.all_items

    def merged(self, other: Evaluated) -> Evaluated:
        """A copy of what this evaluates, with :meth:`merge` of ``other``."""
        out = Evaluated()
        out.merge(self)
        out.merge(other)
        return out


def unevaluated_language(
    ctx: CompileContext, node: SchemaNode, k: dict[str, Any], loc: Location, keyword: str, result: DFA | None
) -> DFA | None:
    """``result`` (None: every value at ``loc``) under ``keyword``, one of the ``unevaluated*``."""
    ptr = f"{node.ptr}/{keyword}"
    sub = k[keyword]
    if sub is True:
        return result
    ctx.doc.child(node, sub, keyword)  # a schema, or SchemaError
    scenarios = _scenarios(ctx, node, loc, keyword, ptr)
    if scenarios is None:
        return result
    parts: list[DFA] = []
    for cond, ev in scenarios:
        synthetic: dict[str, Any]
        if keyword == "unevaluatedProperties":
            covered = ev.all_props
            synthetic = {
                "properties": dict.fromkeys(ev.names, True),
                "patternProperties": dict.fromkeys(ev.patterns, True),
                "additionalProperties": sub,
            }
        else:
            covered = ev.all_items
            if ctx.doc.version >= 9:
                synthetic = {"prefixItems": [True] * ev.prefix, "items": sub}
            else:
                synthetic = {"items": [True] * ev.prefix, "additionalItems": sub}
        syn = None
        if not covered:
            ctx.synthetic.append(synthetic)  # kept alive: node keys use id()
            syn = ctx.lang(node.beside(synthetic), loc)
        piece = syn if cond is None else (cond if syn is None else ctx.intersect(cond, syn))
        parts.append(piece if piece is not None else ctx.skeleton(loc))
    rule = A.union(*parts)
    return rule if result is None else ctx.intersect(result, rule)


def _evaluated(ctx: CompileContext, node: SchemaNode) -> Evaluated:
    """What ``node`` evaluates regardless of branches, and the branching applicators it holds."""
    doc = ctx.doc
    ev = Evaluated()
    stack = [node]
    seen: set[tuple[Any, ...]] = set()
    while stack:
        n = stack.pop()
        if n.key in seen or not isinstance(n.schema, dict):
            continue
        seen.add(n.key)
        kk = doc.keywords(n)
        ev.names.update(dict.fromkeys(kk.get("properties", {}) or {}))
        ev.patterns.update(dict.fromkeys(kk.get("patternProperties", {}) or {}))
        if "additionalProperties" in kk or ("unevaluatedProperties" in kk and n is not node):
            ev.all_props = True
        p_items, rest = ctx.places.items_split(n)
        ev.prefix = max(ev.prefix, len(p_items))
        if rest is not None or ("unevaluatedItems" in kk and n is not node):
            ev.all_items = True
        if "contains" in kk:
            ev.contains.append(n)
        for dyn in ("anyOf", "oneOf", "if", "dependentSchemas", "$recursiveRef"):
            if dyn in kk:
                ev.branches.append((dyn, n))
        for ref_kw in ("$ref", "$dynamicRef"):
            if ref_kw in kk:
                stack.append(doc.resolve(n, ref_kw))
        for i, sub in enumerate(kk.get("allOf", []) or []):
            stack.append(doc.child(n, sub, "allOf", i))
    return ev


def _scenarios(
    ctx: CompileContext, node: SchemaNode, loc: Location, keyword: str, ptr: str
) -> list[Scenario] | None:
    """The ways ``node``'s branching applicators can come out, each with what it then evaluates."""
    base = _evaluated(ctx, node)
    if keyword == "unevaluatedItems" and base.contains:
        ctx.unsupported(keyword, ptr, f"evaluation depends on contains at {base.contains[0].ptr}")
        return None
    scenarios: list[Scenario] = [(None, base)]
    for kind, owner in base.branches:
        options = _branch_options(ctx, kind, owner, loc, keyword, ptr)
        if options is None:
            return None
        scenarios = [
            (lang if cond is None else ctx.intersect(cond, lang), ev.merged(opt_ev))
            for cond, ev in scenarios
            for lang, opt_ev in options
        ]
        scenarios = [(c, ev) for c, ev in scenarios if c is None or not A.is_empty(c)]
        most = current_limits().max_scenarios
        if len(scenarios) > most:
            ctx.unsupported(keyword, ptr, f"more than {most} combinations of branches")
            return None
    return scenarios


def _branch_options(
    ctx: CompileContext, kind: str, owner: SchemaNode, loc: Location, keyword: str, ptr: str
) -> list[Way] | None:
    """The ways one branching applicator can come out: (language of that outcome, what it evaluates)."""
    k = ctx.doc.keywords(owner)
    skel = ctx.skeleton(loc)

    def member(sub: Any, *path: object) -> tuple[DFA, list[Scenario]] | None:
        n = ctx.doc.child(owner, sub, *path)
        scenarios = _scenarios(ctx, n, loc, keyword, ptr)
        return None if scenarios is None else (ctx.lang(n, loc), scenarios)

    def valid_ways(m: tuple[DFA, list[Scenario]]) -> list[Way]:
        return [(m[0] if c is None else ctx.intersect(m[0], c), ev) for c, ev in m[1]]

    options: list[Way] = []
    if kind in ("anyOf", "oneOf"):
        members = [member(sub, kind, i) for i, sub in enumerate(k[kind])]
        if any(m is None for m in members):
            return None
        ms = [m for m in members if m is not None]
        if len(ms) > current_limits().max_branches:
            ctx.unsupported(keyword, ptr, f"{kind} with more than {current_limits().max_branches} branches")
            return None
        for mask in range(1, 1 << len(ms)):
            if kind == "oneOf" and mask & (mask - 1):
                continue
            combos: list[Way] = [(skel, Evaluated())]
            for i, m in enumerate(ms):
                if mask >> i & 1:
                    combos = [
                        (ctx.intersect(lang, way), ev.merged(way_ev))
                        for lang, ev in combos
                        for way, way_ev in valid_ways(m)
                    ]
                else:
                    combos = [(ctx.difference(lang, m[0]), ev) for lang, ev in combos]
                combos = [(lang, ev) for lang, ev in combos if not A.is_empty(lang)]
                most = current_limits().max_scenarios
                if len(options) + len(combos) > most:
                    ctx.unsupported(keyword, ptr, f"more than {most} combinations of branches")
                    return None
            options.extend(combos)
        return options
    if kind == "if":
        cond = member(k["if"], "if")
        if cond is None:
            return None
        then = member(k["then"], "then") if "then" in k else None
        other = member(k["else"], "else") if "else" in k else None
        yes = valid_ways(cond)
        if then is not None:
            yes = [(ctx.intersect(a, b), ea.merged(eb)) for a, ea in yes for b, eb in valid_ways(then)]
        no: list[Way] = [(ctx.difference(skel, cond[0]), Evaluated())]
        if other is not None:
            no = [(ctx.intersect(no[0][0], b), eb) for b, eb in valid_ways(other)]
        return [(lang, ev) for lang, ev in yes + no if not A.is_empty(lang)]
    if kind == "dependentSchemas":
        empty = owner.empty_beside()
        opts: list[Way] = [(skel, Evaluated())]
        for prop, sub in (k["dependentSchemas"] or {}).items():
            got = member(sub, "dependentSchemas", prop)
            if got is None:
                return None
            nxt: list[Way] = []
            absent_rule = A.union(presence(ctx, empty, loc, {prop: False}), non_objects(ctx, loc))
            present_rule = presence(ctx, empty, loc, {prop: True})
            for lang, ev in opts:
                nxt.append((ctx.intersect(lang, absent_rule), ev))
                for way, way_ev in valid_ways(got):
                    nxt.append((ctx.intersect(lang, present_rule, way), ev.merged(way_ev)))
            opts = [(lang, ev) for lang, ev in nxt if not A.is_empty(lang)]
        return opts
    ctx.unsupported(keyword, ptr, f"evaluation depends on {kind} at {owner.ptr}")
    return None
