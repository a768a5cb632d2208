"""Locations: the set of subschemas that apply at one place in an instance.

The root, the value of key ``k`` and item ``i`` each have a location: the subschemas that reach that
place, closed under the keywords that apply in place (``$ref``, ``$dynamicRef``, ``allOf``, ``anyOf``,
``oneOf``, ``not``, ``if``/``then``/``else``, ``dependentSchemas``). All the languages built at one
location agree on one canonical form (its key order, :mod:`.key_order`), so they can be intersected,
united and complemented exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..exceptions import RegexSyntaxError, SchemaError
from .references import SchemaDocument, SchemaNode


@dataclass(frozen=True, eq=False)
class Location:
    """The subschemas that apply at one place, each once, in first-reached order."""

    nodes: tuple[SchemaNode, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        """The location's identity (its nodes' keys)."""
        return tuple(n.key for n in self.nodes)


class Locations:
    """Builds locations over one document, remembering in-place expansions and compiled patterns."""

    def __init__(self, doc: SchemaDocument) -> None:
        self.doc = doc
        self._expand_memo: dict[tuple[Any, ...], tuple[SchemaNode, ...]] = {}
        self._pattern_memo: dict[str, re.Pattern[str]] = {}

    def expand(self, node: SchemaNode) -> tuple[SchemaNode, ...]:
        """The node and every subschema that applies in place with it (refs, applicators)."""
        memo = self._expand_memo.get(node.key)
        if memo is not None:
            return memo
        doc = self.doc
        out: list[SchemaNode] = []
        seen: set[tuple[Any, ...]] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if n.key in seen:
                continue
            seen.add(n.key)
            out.append(n)
            k = doc.keywords(n)
            found: list[SchemaNode] = []
            for ref_kw in ("$ref", "$dynamicRef"):
                if ref_kw in k:
                    found.append(doc.resolve(n, ref_kw))
            for app in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(doc.subschema_list(n, app)):
                    found.append(doc.child(n, sub, app, i))
            for single in ("not", "if", "then", "else"):
                if single in k:
                    found.append(doc.child(n, k[single], single))
            dep_schemas = dict(k.get("dependentSchemas", {}))
            if "dependencies" in k:  # draft-07's keyword, honoured in every draft
                dep_schemas.update(
                    {p: s for p, s in k.get("dependencies", {}).items() if not isinstance(s, list)}
                )
            for name, sub in dep_schemas.items():
                kwname = "dependentSchemas" if "dependentSchemas" in k else "dependencies"
                found.append(doc.child(n, sub, kwname, name))
            stack.extend(reversed(found))
        result = tuple(out)
        self._expand_memo[node.key] = result
        return result

    def of(self, nodes: Iterable[SchemaNode]) -> Location:
        """The location where ``nodes`` apply (each expanded in place)."""
        out: list[SchemaNode] = []
        seen: set[tuple[Any, ...]] = set()
        for n in nodes:
            for m in self.expand(n):
                if m.key not in seen:
                    seen.add(m.key)
                    out.append(m)
        return Location(tuple(out))

    def patterns(self, loc: Location) -> list[str]:
        """The ``patternProperties`` patterns named at ``loc``, first seen first."""
        pats: dict[str, None] = {}
        for n in loc.nodes:
            for p in self.doc.keywords(n).get("patternProperties", {}) or {}:
                pats.setdefault(p)
        return list(pats)

    def pattern_search(self, pattern: str, ptr: str) -> re.Pattern[str]:
        """``pattern`` (ECMA-262) compiled for Python's ``re``, to test concrete keys."""
        got = self._pattern_memo.get(pattern)
        if got is None:
            from .ecma_regex import ecma_to_python

            try:
                got = re.compile(ecma_to_python(pattern))
            except (re.error, RegexSyntaxError) as e:
                raise SchemaError(f"invalid regex {pattern!r}: {e}", ptr) from None
            self._pattern_memo[pattern] = got
        return got

    def pattern_class(self, loc: Location, name: str) -> frozenset[str]:
        """The patterns at ``loc`` that key ``name`` matches."""
        return frozenset(p for p in self.patterns(loc) if self.pattern_search(p, "").search(name))

    def schemas_for_key(self, node: SchemaNode, key: str) -> list[SchemaNode]:
        """``node``'s subschemas for the value of key ``key`` (properties, patterns, additional)."""
        doc = self.doc
        k = doc.keywords(node)
        out: list[SchemaNode] = []
        props = k.get("properties", {}) or {}
        if key in props:
            out.append(doc.child(node, props[key], "properties", key))
        matched = False
        for p, sub in (k.get("patternProperties", {}) or {}).items():
            if self.pattern_search(p, node.ptr + "/patternProperties").search(key):
                matched = True
                out.append(doc.child(node, sub, "patternProperties", p))
        if key not in props and not matched and "additionalProperties" in k:
            out.append(doc.child(node, k["additionalProperties"], "additionalProperties"))
        return out

    def schemas_for_class(self, node: SchemaNode, klass: frozenset[str]) -> list[SchemaNode]:
        """``node``'s subschemas for the value of an unnamed key matching exactly the patterns ``klass``."""
        doc = self.doc
        k = doc.keywords(node)
        out = [
            doc.child(node, sub, "patternProperties", p)
            for p, sub in (k.get("patternProperties", {}) or {}).items()
            if p in klass
        ]
        if not out and "additionalProperties" in k:
            out.append(doc.child(node, k["additionalProperties"], "additionalProperties"))
        return out

    def key_loc(self, loc: Location, key: str) -> Location:
        """The location of the value of key ``key``."""
        return self.of(n for node in loc.nodes for n in self.schemas_for_key(node, key))

    def class_loc(self, loc: Location, klass: frozenset[str]) -> Location:
        """The location of the value of an unnamed key matching exactly the patterns ``klass``."""
        return self.of(n for node in loc.nodes for n in self.schemas_for_class(node, klass))

    def items_split(self, node: SchemaNode) -> tuple[list[SchemaNode], SchemaNode | None]:
        """(prefix item schemas, schema of the items after them) of one node."""
        doc = self.doc
        k = doc.keywords(node)
        if doc.version >= 9:
            prefix = [doc.child(node, s, "prefixItems", i) for i, s in enumerate(k.get("prefixItems", []))]
            rest = doc.child(node, k["items"], "items") if "items" in k else None
            return prefix, rest
        items = k.get("items")
        if isinstance(items, list):
            prefix = [doc.child(node, s, "items", i) for i, s in enumerate(items)]
            rest = (
                doc.child(node, k["additionalItems"], "additionalItems") if "additionalItems" in k else None
            )
            return prefix, rest
        return [], (doc.child(node, items, "items") if items is not None else None)

    def prefix_len(self, loc: Location) -> int:
        """The longest item prefix named at ``loc``."""
        return max((len(self.items_split(n)[0]) for n in loc.nodes), default=0)

    def item_loc(self, loc: Location, index: int) -> Location:
        """The location of item ``index`` (any index >= prefix_len(loc) shares one location)."""
        nodes: list[SchemaNode] = []
        for n in loc.nodes:
            prefix, rest = self.items_split(n)
            if index < len(prefix):
                nodes.append(prefix[index])
            elif rest is not None:
                nodes.append(rest)
            k = self.doc.keywords(n)
            if "contains" in k:
                nodes.append(self.doc.child(n, k["contains"], "contains"))
        return self.of(nodes)
