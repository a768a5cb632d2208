"""JSON Schema -> one byte-level DFA over the canonical serialisation of the instance.

**Canonical form.** The automaton reads JSON as ``json.dumps(value, ensure_ascii=False, separators=(",",
":"))`` writes it (whitespace: compact by default, or a bounded flexible mode), with one twist: object
keys come in the *schema's property order* at that place in the instance, then the other keys.
:func:`serialize_instance` writes exactly that form.

**Locations.** Every place in an instance (the root, the value of key ``k``, item ``i``) has a
*location*: the set of subschemas that apply there, gathered through ``$ref``, ``allOf``, ``anyOf``,
``oneOf``, ``not``, ``if``/``then``/``else`` and ``dependentSchemas``. The location fixes the key order
(the properties named anywhere in it, in first-seen order), so the languages of all those subschemas
agree on one canonical form and can be intersected, united and complemented exactly.

**Keywords as set operations.** A subschema's language is the intersection of its own keywords'
languages (``type`` with ``minimum``, ``pattern``, ``properties`` ...) and its applicators': ``allOf``
intersects, ``anyOf`` unites, ``oneOf`` is "in exactly one", ``not`` and ``else`` complement within the
location's *skeleton* (every canonical value at that location). Values that no schema constrains are
any JSON value nested at most ``max_any_depth`` deep (a finite automaton cannot count brackets); in a
recursive schema they are a hole for the exact language instead (below).

**Recursion.** A ``$ref`` cycle that comes back to a (subschema, location) pair still being compiled
leaves a *hole* there (two bytes no UTF-8 text holds) that stands for that pair's language. The
result is then a set of DFAs with holes, which :mod:`constrain.json_schema.recursion` turns into a
context-free grammar for the Earley engine: no depth cap. Once a schema recurses, large finished
languages (past ``_OUT_OF_LINE_STATES``) and any JSON value are kept out of line as holes too, so no
DFA inlines another's thousands of states. Holes pass through properties, items,
``$ref`` and ``anyOf`` (concatenation and union are exact on them). ``allOf``/``oneOf``/``not``/``if``
over a hole are exact where the operands' first bytes cannot overlap (``oneOf: [null, node]``), where
the other operand is a bare ``type`` (it only cuts first bytes) or repeats the same constraints; else
out-of-line holes are filled back in (any value: depth-capped), and a recursive hole left is refused.

What cannot be enforced exactly (``uniqueItems`` over an infinite item set, recursion inside
intersections, lookaround in ``pattern``) raises :class:`UnsupportedSchemaFeature` naming the keyword
and its JSON pointer, or is dropped with a warning under ``lenient=True``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import referencing
import referencing.exceptions
import referencing.jsonschema

from .. import automata as A
from ..exceptions import (
    ConstrainError,
    RegexSyntaxError,
    SchemaError,
    UnsupportedRegexFeature,
    UnsupportedSchemaFeature,
)
from ..regex import DFA, dfa_from_arrays, empty_dfa
from .recursion import HOLE, MAX_HOLES, RecursiveLanguage, fill_hole, has_holes, hole_edges, hole_indices

_DRAFTS = {
    "2020-12": referencing.jsonschema.DRAFT202012,
    "2019-09": referencing.jsonschema.DRAFT201909,
    "7": referencing.jsonschema.DRAFT7,
    "6": referencing.jsonschema.DRAFT6,
    "4": referencing.jsonschema.DRAFT4,
}
_DRAFT_ORDER = {"4": 4, "6": 6, "7": 7, "2019-09": 8, "2020-12": 9}
_META = {
    "https://json-schema.org/draft/2020-12/schema": "2020-12",
    "https://json-schema.org/draft/2019-09/schema": "2019-09",
    "http://json-schema.org/draft-07/schema": "7",
    "http://json-schema.org/draft-06/schema": "6",
    "http://json-schema.org/draft-04/schema": "4",
}

_TYPES = ("null", "boolean", "object", "array", "number", "string")
_INT_RE = r"-?(0|[1-9][0-9]*)"
_NUMBER_RE = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
_INTEGER_VALUE_RE = _INT_RE + r"(\.0+)?"
_ANY_CHARS = A.Regex(r"(?s).*", 0, True)
_ONE_CHAR = A.Regex(r"(?s).", 0, True)

# Keywords that only annotate: never constraints.
_ANNOTATIONS = {
    "$schema", "$id", "id", "$comment", "$defs", "definitions", "$anchor", "$dynamicAnchor",
    "$recursiveAnchor", "$vocabulary", "title", "description", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "contentSchema",
}  # fmt: skip

_EMPTY_SCHEMA: dict[str, Any] = {}


@dataclass(frozen=True)
class SchemaOptions:
    """How a schema becomes a language (see :meth:`constrain.Grammar.from_json_schema`)."""

    draft: str = "2020-12"
    formats: str = "assert"
    lenient: bool = False
    whitespace: str = "compact"
    max_whitespace: int = 2
    max_any_depth: int = 3
    property_order: str = "schema"


@dataclass(frozen=True, eq=False)
class _Node:
    schema: Any  # dict or bool
    ptr: str
    resolver: Any  # referencing.Resolver

    @property
    def key(self) -> tuple[Any, ...]:
        if isinstance(self.schema, dict):
            # The dynamic scope is part of the identity: it decides where a $dynamicRef lands, which
            # is the outermost resource with the anchor. So only each URI's outermost entry matters;
            # keeping just those bounds the scope, and a $ref cycle comes back to the same key.
            scope = tuple(dict.fromkeys(reversed([str(uri) for uri, _ in self.resolver.dynamic_scope()])))
            return (id(self.schema), str(self.resolver._base_uri), scope)
        return (bool(self.schema),)


@dataclass(frozen=True, eq=False)
class _Loc:
    nodes: tuple[_Node, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(n.key for n in self.nodes)


def _escape_ptr(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class SchemaCompiler:
    """Compiles one schema document; reused by :func:`serialize_instance` for the key order."""

    def __init__(
        self,
        schema: Any,
        options: SchemaOptions,
        registry: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(schema, (dict, bool)):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}")
        draft = options.draft
        if isinstance(schema, dict) and isinstance(schema.get("$schema"), str):
            draft = _META.get(schema["$schema"].rstrip("#"), draft)
        if draft not in _DRAFTS:
            raise SchemaError(f"unknown draft {draft!r}; use one of {sorted(_DRAFTS)}")
        self.draft = draft
        self.version = _DRAFT_ORDER[draft]
        self.options = options
        self.spec = _DRAFTS[draft]
        resources = []
        for uri, doc in (registry or {}).items():
            spec = self.spec
            if isinstance(doc, dict) and isinstance(doc.get("$schema"), str):
                meta = _META.get(doc["$schema"].rstrip("#"))
                if meta:
                    spec = _DRAFTS[meta]
            resources.append((uri, referencing.Resource.from_contents(doc, default_specification=spec)))
        root_resource = referencing.Resource.from_contents(schema, default_specification=self.spec)
        root_uri = root_resource.id() or ""
        # The drafts' own metaschemas ship with jsonschema (offline), so "$ref" to them resolves.
        import jsonschema_specifications

        reg: referencing.Registry[Any] = jsonschema_specifications.REGISTRY.with_resources(resources)
        reg = reg.with_resource(root_uri, root_resource)
        if root_uri != "":
            reg = reg.with_resource("", root_resource)
        self.registry = reg.crawl()
        self.root = _Node(schema, "#", self.registry.resolver(root_uri))
        self.ws: A.Expr = (
            A.Literal(b"")
            if options.whitespace == "compact"
            else A.Regex(f"[ \\n]{{0,{int(options.max_whitespace)}}}")
        )
        if options.whitespace not in ("compact", "flexible"):
            raise SchemaError(f"whitespace must be 'compact' or 'flexible', got {options.whitespace!r}")
        if options.property_order not in ("schema", "any"):
            raise SchemaError(f"property_order must be 'schema' or 'any', got {options.property_order!r}")
        if options.formats not in ("assert", "annotate"):
            raise SchemaError(f"formats must be 'assert' or 'annotate', got {options.formats!r}")
        self.dropped: list[tuple[str, str]] = []
        self._lang_memo: dict[tuple[Any, Any], DFA] = {}
        self._active: set[tuple[Any, Any]] = set()
        self._expand_memo: dict[tuple[Any, ...], tuple[_Node, ...]] = {}
        self._pattern_memo: dict[str, re.Pattern[str]] = {}
        self._synthetic: list[Any] = []  # synthetic schemas stay alive: node keys use id()
        # Recursion: a (node, location) met again while still being compiled becomes a hole.
        self._holes: dict[tuple[Any, Any], int] = {}
        self._hole_info: list[tuple[tuple[Any, Any], str, frozenset[int]]] = []  # key, pointer, first bytes
        # A hole made while its place is still being compiled is *recursive*. In a recursive schema
        # (``recursive``, set by compile_root) finished languages are kept out of line as holes too:
        # the large ones, and any JSON value (exact there, no depth cap). DFAs that embed them stay
        # small; a product that meets such a hole against overlapping bytes fills it back in.
        self.recursive = False
        self._recursive_holes: set[int] = set()
        self._hole_dfas: list[DFA] = []
        self._type_cuts: dict[int, tuple[DFA, frozenset[int]]] = {}  # id(a bare type's DFA) -> first bytes
        self._fingerprints: dict[int, str] = {}  # id(subschema) -> its constraints as sorted JSON
        self._any_hole: DFA | None = None
        self._inlined: dict[int, DFA] = {}  # out-of-line hole -> its language, filled in throughout
        self._filled: dict[int, tuple[DFA, DFA]] = {}  # id(dfa) -> (dfa, its out-of-line holes filled in)

    # ---- errors ---------------------------------------------------------------------------
    def unsupported(self, keyword: str, ptr: str, detail: str = "") -> None:
        """Raise :class:`UnsupportedSchemaFeature`, or record the dropped keyword under ``lenient``."""
        if self.options.lenient:
            self.dropped.append((keyword, ptr))
            return
        raise UnsupportedSchemaFeature(keyword, ptr, detail)

    # ---- navigation -----------------------------------------------------------------------
    def child(self, node: _Node, sub: Any, *path: object) -> _Node:
        ptr = node.ptr + "".join("/" + _escape_ptr(p) for p in path)
        if not isinstance(sub, (dict, bool)):
            raise SchemaError(f"expected a schema (object or boolean), got {type(sub).__name__}", ptr)
        resolver = node.resolver
        if isinstance(sub, dict):
            sub_id = self.spec.id_of(sub)
            if sub_id:
                resource = referencing.Resource.from_contents(sub, default_specification=self.spec)
                resolver = resolver.in_subresource(resource)
        return _Node(sub, ptr, resolver)

    def kw(self, node: _Node) -> dict[str, Any]:
        """The keywords in force: before 2019-09 a ``$ref`` hides its siblings."""
        s = node.schema
        if not isinstance(s, dict):
            return {}
        if self.version <= 7 and "$ref" in s:
            return {"$ref": s["$ref"]}
        return s

    def resolve(self, node: _Node, keyword: str) -> _Node:
        ref = self.kw(node)[keyword]
        if not isinstance(ref, str):
            raise SchemaError(f"{keyword} must be a string", node.ptr + "/" + keyword)
        if keyword == "$dynamicRef":
            return self._resolve_dynamic(node, ref)
        try:
            resolved = node.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise SchemaError(f"cannot resolve {keyword} {ref!r}: {e}", node.ptr + "/" + keyword) from None
        target_ptr = ref if ref.startswith("#") else str(resolved.resolver._base_uri) + ref[ref.find("#") :]
        sub = resolved.contents
        if not isinstance(sub, (dict, bool)):
            raise SchemaError(f"{keyword} {ref!r} does not point at a schema", node.ptr + "/" + keyword)
        return _Node(sub, target_ptr if "#" in ref else ref, resolved.resolver)

    def _resolve_dynamic(self, node: _Node, ref: str) -> _Node:
        # The resolver remembers the resources entered on the way here (the dynamic scope), and its
        # lookup of a $dynamicAnchor walks that scope as the spec says.
        try:
            resolved = node.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise SchemaError(f"cannot resolve $dynamicRef {ref!r}: {e}", node.ptr + "/$dynamicRef") from None
        sub = resolved.contents
        if not isinstance(sub, (dict, bool)):
            raise SchemaError(f"$dynamicRef {ref!r} does not point at a schema", node.ptr + "/$dynamicRef")
        return _Node(sub, ref, resolved.resolver)

    def expand(self, node: _Node) -> tuple[_Node, ...]:
        """The node and every subschema that applies in place with it (refs, applicators)."""
        memo = self._expand_memo.get(node.key)
        if memo is not None:
            return memo
        out: list[_Node] = []
        seen: set[tuple[Any, ...]] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if n.key in seen:
                continue
            seen.add(n.key)
            out.append(n)
            k = self.kw(n)
            found: list[_Node] = []
            for ref_kw in ("$ref", "$dynamicRef", "$recursiveRef"):
                if ref_kw in k and ref_kw != "$recursiveRef":
                    found.append(self.resolve(n, ref_kw))
            for app in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(self._list(n, app)):
                    found.append(self.child(n, sub, app, i))
            for single in ("not", "if", "then", "else"):
                if single in k:
                    found.append(self.child(n, k[single], single))
            dep_schemas = dict(k.get("dependentSchemas", {}))
            if "dependencies" in k:  # draft-07's keyword, honoured in every draft
                dep_schemas.update(
                    {p: s for p, s in k.get("dependencies", {}).items() if not isinstance(s, list)}
                )
            for name, sub in dep_schemas.items():
                kwname = "dependentSchemas" if "dependentSchemas" in k else "dependencies"
                found.append(self.child(n, sub, kwname, name))
            stack.extend(reversed(found))
        result = tuple(out)
        self._expand_memo[node.key] = result
        return result

    def _list(self, node: _Node, keyword: str) -> list[Any]:
        value = self.kw(node).get(keyword)
        if value is None:
            return []
        if not isinstance(value, list) or (keyword in ("allOf", "anyOf", "oneOf") and not value):
            raise SchemaError(f"{keyword} must be a non-empty array", node.ptr + "/" + keyword)
        return value

    def loc_of(self, nodes: Iterable[_Node]) -> _Loc:
        out: list[_Node] = []
        seen: set[tuple[Any, ...]] = set()
        for n in nodes:
            for m in self.expand(n):
                if m.key not in seen:
                    seen.add(m.key)
                    out.append(m)
        return _Loc(tuple(out))

    def keys(self, loc: _Loc) -> list[str]:
        """The location's key order: every property named by its schemas, first seen first."""
        names: dict[str, None] = {}
        for n in loc.nodes:
            k = self.kw(n)
            for p in k.get("properties", {}) or {}:
                names.setdefault(p)
            for p in k.get("required", []) or []:
                if isinstance(p, str):
                    names.setdefault(p)
            deps = dict(k.get("dependentRequired", {}) or {})
            if "dependencies" in k:
                deps.update(
                    {p: v for p, v in (k.get("dependencies", {}) or {}).items() if isinstance(v, list)}
                )
            for p, req in deps.items():
                names.setdefault(p)
                for q in req:
                    names.setdefault(q)
            for p in k.get("dependentSchemas", {}) or {}:
                names.setdefault(p)
            for p in k.get("dependencies", {}) or {}:
                names.setdefault(p)
        return list(names)

    def patterns(self, loc: _Loc) -> list[str]:
        pats: dict[str, None] = {}
        for n in loc.nodes:
            for p in self.kw(n).get("patternProperties", {}) or {}:
                pats.setdefault(p)
        return list(pats)

    def pattern_search(self, pattern: str, ptr: str) -> re.Pattern[str]:
        got = self._pattern_memo.get(pattern)
        if got is None:
            from .ecma_regex import ecma_to_python

            try:
                got = re.compile(ecma_to_python(pattern))
            except (re.error, RegexSyntaxError) as e:
                raise SchemaError(f"invalid regex {pattern!r}: {e}", ptr) from None
            self._pattern_memo[pattern] = got
        return got

    def _node_schemas_for_key(self, node: _Node, key: str) -> list[_Node]:
        k = self.kw(node)
        out: list[_Node] = []
        props = k.get("properties", {}) or {}
        if key in props:
            out.append(self.child(node, props[key], "properties", key))
        matched = False
        for p, sub in (k.get("patternProperties", {}) or {}).items():
            if self.pattern_search(p, node.ptr + "/patternProperties").search(key):
                matched = True
                out.append(self.child(node, sub, "patternProperties", p))
        if key not in props and not matched and "additionalProperties" in k:
            out.append(self.child(node, k["additionalProperties"], "additionalProperties"))
        return out

    def _node_schemas_for_class(self, node: _Node, klass: frozenset[str]) -> list[_Node]:
        k = self.kw(node)
        out = [
            self.child(node, sub, "patternProperties", p)
            for p, sub in (k.get("patternProperties", {}) or {}).items()
            if p in klass
        ]
        if not out and "additionalProperties" in k:
            out.append(self.child(node, k["additionalProperties"], "additionalProperties"))
        return out

    def _distinct(self, nodes: list[_Node]) -> list[_Node]:
        """In a recursive schema, ``nodes`` less those that repeat an earlier one's constraints (the same
        keywords besides annotations, from the same base URI): intersecting a recursive language with
        itself would otherwise be refused."""
        if not self.recursive or len(nodes) < 2:
            return nodes
        seen: set[tuple[str, str]] = set()
        out = []
        for n in nodes:
            key = (self._fingerprint(n.schema), str(n.resolver._base_uri))
            if key not in seen:
                seen.add(key)
                out.append(n)
        return out

    def _fingerprint(self, schema: Any) -> str:
        got = self._fingerprints.get(id(schema))
        if got is None:
            if isinstance(schema, dict):
                kept = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
                got = json.dumps(kept, sort_keys=True, default=repr)
            else:
                got = json.dumps(schema)
            self._fingerprints[id(schema)] = got
        return got

    def key_loc(self, loc: _Loc, key: str) -> _Loc:
        return self.loc_of(n for node in loc.nodes for n in self._node_schemas_for_key(node, key))

    def class_loc(self, loc: _Loc, klass: frozenset[str]) -> _Loc:
        return self.loc_of(n for node in loc.nodes for n in self._node_schemas_for_class(node, klass))

    def _items_split(self, node: _Node) -> tuple[list[_Node], _Node | None]:
        """(prefix item schemas, schema of the items after them) of one node."""
        k = self.kw(node)
        if self.version >= 9:
            prefix = [self.child(node, s, "prefixItems", i) for i, s in enumerate(k.get("prefixItems", []))]
            rest = self.child(node, k["items"], "items") if "items" in k else None
            return prefix, rest
        items = k.get("items")
        if isinstance(items, list):
            prefix = [self.child(node, s, "items", i) for i, s in enumerate(items)]
            rest = (
                self.child(node, k["additionalItems"], "additionalItems") if "additionalItems" in k else None
            )
            return prefix, rest
        return [], (self.child(node, items, "items") if items is not None else None)

    def prefix_len(self, loc: _Loc) -> int:
        return max((len(self._items_split(n)[0]) for n in loc.nodes), default=0)

    def item_loc(self, loc: _Loc, index: int) -> _Loc:
        """The location of item ``index`` (any index >= prefix_len(loc) shares one location)."""
        nodes: list[_Node] = []
        for n in loc.nodes:
            prefix, rest = self._items_split(n)
            if index < len(prefix):
                nodes.append(prefix[index])
            elif rest is not None:
                nodes.append(rest)
            k = self.kw(n)
            if "contains" in k:
                nodes.append(self.child(n, k["contains"], "contains"))
        return self.loc_of(nodes)

    def has_ref_cycle(self) -> bool:
        """True when following subschemas and ``$ref``/``$dynamicRef`` from the root can come back to
        a subschema on the way (a recursive schema). Static: nothing is compiled."""
        done: set[Any] = set()
        on_path: set[Any] = set()

        def children(n: _Node) -> Iterator[_Node]:
            k = self.kw(n)
            for ref_kw in ("$ref", "$dynamicRef"):
                if isinstance(k.get(ref_kw), str):
                    yield self.resolve(n, ref_kw)
            for kw in _SINGLE_SUBSCHEMA:
                if isinstance(k.get(kw), (dict, bool)):
                    yield self.child(n, k[kw], kw)
            for kw in _LIST_SUBSCHEMAS:
                if isinstance(k.get(kw), list):
                    for i, sub in enumerate(k[kw]):
                        if isinstance(sub, (dict, bool)):
                            yield self.child(n, sub, kw, i)
            for kw in _MAP_SUBSCHEMAS:
                if isinstance(k.get(kw), dict):
                    for name, sub in k[kw].items():
                        if isinstance(sub, (dict, bool)):
                            yield self.child(n, sub, kw, name)

        # Iterative depth-first search (schemas can be deep): meeting a node on the path closes a cycle.
        stack: list[tuple[_Node, Iterator[_Node] | None]] = [(self.root, None)]
        while stack:
            node, it = stack[-1]
            if it is None:
                if node.key in on_path:
                    return True
                if node.key in done or not isinstance(node.schema, dict):
                    stack.pop()
                    continue
                on_path.add(node.key)
                it = children(node)
                stack[-1] = (node, it)
            nxt = next(it, None)
            if nxt is None:
                on_path.discard(node.key)
                done.add(node.key)
                stack.pop()
            else:
                stack.append((nxt, None))
        return False

    # ---- languages ------------------------------------------------------------------------
    def any_value(self, depth: int) -> DFA:
        """Any canonical JSON value nested at most ``depth`` deep (keys in any order); in a recursive
        schema, the hole for any JSON value at all (see :meth:`_any_value_hole`)."""
        return self._any_value_hole() if self.recursive else self._capped_any_value(depth)

    def _capped_any_value(self, depth: int) -> DFA:
        """Any canonical JSON value nested at most ``depth`` deep, as a DFA (cached per process)."""
        key = (depth, self.options.whitespace, self.options.max_whitespace)
        got = _ANY_CACHE.get(key)
        if got is not None:
            return got
        ws = self.ws
        scalar = A.alt(A.Regex(r"null|true|false|" + _NUMBER_RE), self._string_expr(_ANY_CHARS))
        parts: list[A.Expr] = [scalar]
        if depth > 0:
            inner = A.Embed(self._capped_any_value(depth - 1))
            member = A.seq(self._string_expr(_ANY_CHARS), ws, A.Literal(b":"), ws, inner)
            parts += [self._bracketed(b"[", inner, b"]"), self._bracketed(b"{", member, b"}")]
        dfa = A.build(A.alt(*parts), f"<any JSON value, depth {depth}>")
        _ANY_CACHE[key] = dfa
        return dfa

    def _any_value_hole(self) -> DFA:
        """The hole standing for any JSON value, its language defined by itself: exact at any depth.

        The context-free engine is needed anyway once a schema recurses, and the hole keeps every
        DFA that holds an unconstrained value small. Products that meet it against concrete bytes
        fill it with the depth-capped DFA instead (:meth:`_fill_in`)."""
        if self._any_hole is None:
            key = (_ANY_KEY, ())
            hole = self._any_hole = self._new_hole(key, "#", _VALUE_FIRST, recursive=False)
            ws = self.ws
            scalar = A.alt(A.Regex(r"null|true|false|" + _NUMBER_RE), self._string_expr(_ANY_CHARS))
            inner = A.Embed(hole)
            member = A.seq(self._string_expr(_ANY_CHARS), ws, A.Literal(b":"), ws, inner)
            parts = [scalar, self._bracketed(b"[", inner, b"]"), self._bracketed(b"{", member, b"}")]
            self._lang_memo[key] = A.build(A.alt(*parts), "<any JSON value>")
        return self._any_hole

    def _fill_in(self, dfa: DFA) -> DFA:
        """``dfa`` with its out-of-line holes filled in (any value: the depth-capped DFA)."""
        got = self._filled.get(id(dfa))
        if got is None:
            out = dfa
            for idx in hole_indices(dfa):
                if idx not in self._recursive_holes:
                    out = fill_hole(out, idx, self._inlined_language(idx))
            got = self._filled[id(dfa)] = (dfa, out)
        return got[1]

    def _inlined_language(self, idx: int) -> DFA:
        got = self._inlined.get(idx)
        if got is None:
            key = self._hole_info[idx][0]
            if key == (_ANY_KEY, ()):
                got = self._capped_any_value(self.options.max_any_depth + 1)
            else:
                got = self._fill_in(self._lang_memo[key])
            self._inlined[idx] = got
        return got

    def _bracketed(self, open_: bytes, item: A.Expr, close: bytes) -> A.Expr:
        """``open_ (item (, item)*)? close``: an array or object of any length."""
        sep = A.seq(self.ws, A.Literal(b","), self.ws)
        items = A.Repeat(A.seq(item, A.Repeat(A.seq(sep, item), 0, None)), 0, 1)
        return A.seq(A.Literal(open_), self.ws, items, self.ws, A.Literal(close))

    @staticmethod
    def _string_expr(content: A.Expr) -> A.Expr:
        return A.seq(A.Literal(b'"'), content, A.Literal(b'"'))

    def skeleton(self, loc: _Loc) -> DFA:
        """Every canonical value at ``loc``: the universe for ``not`` and ``else``."""
        if not loc.nodes:
            return self.any_value(self.options.max_any_depth)
        if not any(_STRUCTURAL & self.kw(n).keys() for n in loc.nodes):
            # No schema here shapes keys or items: the skeleton is one level of "any value" more.
            return self.any_value(self.options.max_any_depth + 1)
        return self.lang(_Node(_EMPTY_SCHEMA, loc.nodes[0].ptr, loc.nodes[0].resolver), loc)

    def compile_root(self) -> DFA | RecursiveLanguage:
        """The DFA of the whole schema, or DFAs with holes where ``$ref`` recurses."""
        loc = self.loc_of([self.root])
        with contextlib.suppress(ConstrainError):  # a broken $ref: compiling reports it where it is met
            self.recursive = self.has_ref_cycle()
        dfa = self.lang(self.root, loc)
        if self.dropped:
            listed = ", ".join(f"{kw} at {ptr}" for kw, ptr in self.dropped)
            warnings.warn(
                f"lenient=True dropped keywords it cannot enforce: {listed}", UserWarning, stacklevel=3
            )
        if not has_holes(dfa):
            return dfa
        holes: dict[int, DFA] = {}
        todo = [dfa]
        while todo:
            d = todo.pop()
            mids = np.unique(d.transitions[:, HOLE])
            for mid in mids[mids >= 0].tolist():
                for idx in np.flatnonzero(d.transitions[mid] >= 0).tolist():
                    if idx not in holes:
                        holes[idx] = self._lang_memo[self._hole_info[idx][0]]
                        todo.append(holes[idx])
        if not self._recursive_holes & holes.keys():
            # The cycle is out of the root's reach: a DFA (the regular engine) where it fits.
            with contextlib.suppress(UnsupportedRegexFeature):
                return self._fill_in(dfa)
        return RecursiveLanguage(dfa, holes, {i: self._hole_info[i][1] for i in holes})

    # ---- recursion ------------------------------------------------------------------------
    def _hole(self, key: tuple[Any, Any], node: _Node) -> DFA:
        """A stand-in for the language of ``key``, still being compiled: the bytes ``0xFF idx``."""
        idx = self._holes.get(key)
        if idx is None:
            return self._new_hole(key, node.ptr, self._first_bytes_of_node(node, frozenset()), recursive=True)
        return self._hole_dfas[idx]

    def _new_hole(self, key: tuple[Any, Any], ptr: str, first: frozenset[int], *, recursive: bool) -> DFA:
        idx = len(self._hole_info)
        if idx >= MAX_HOLES:
            detail = f"more than {MAX_HOLES} recursive places in one schema"
            raise UnsupportedSchemaFeature("$ref", ptr, detail)
        self._holes[key] = idx
        self._hole_info.append((key, ptr, first))
        if recursive:
            self._recursive_holes.add(idx)
        self._hole_dfas.append(A.build(A.Literal(bytes([HOLE, idx])), f"hole {idx}: {ptr}"))
        return self._hole_dfas[idx]

    def _first_bytes_of_node(self, node: _Node, seen: frozenset[Any]) -> frozenset[int]:
        """Bytes a value valid under ``node`` may start with (an over-approximation)."""
        if node.schema is False:
            return frozenset()
        if not isinstance(node.schema, dict) or node.key in seen:
            return _VALUE_FIRST
        seen = seen | {node.key}
        k = self.kw(node)
        out = _VALUE_FIRST
        if "type" in k:
            out &= frozenset(b for t in self._types(node, k) for b in _TYPE_FIRST[t])
        if isinstance(k.get("enum"), list):
            out &= frozenset(_json_bytes(v)[0] for v in k["enum"])
        if "const" in k and self.version >= 6:
            out &= frozenset({_json_bytes(k["const"])[0]})
        for ref_kw in ("$ref", "$dynamicRef"):
            if ref_kw in k:
                out &= self._first_bytes_of_node(self.resolve(node, ref_kw), seen)
        for i, sub in enumerate(self._list(node, "allOf")):
            out &= self._first_bytes_of_node(self.child(node, sub, "allOf", i), seen)
        for app in ("anyOf", "oneOf"):
            if app in k:
                subs = [self.child(node, sub, app, i) for i, sub in enumerate(self._list(node, app))]
                out &= frozenset().union(*[self._first_bytes_of_node(n, seen) for n in subs])
        return out

    def _first_bytes(self, dfa: DFA) -> frozenset[int]:
        """Bytes the values of ``dfa`` may start with; a hole contributes its place's first bytes."""
        row = dfa.transitions[dfa.start]
        out = {b for b in np.flatnonzero(row >= 0).tolist() if b != HOLE}
        for idx, _ in hole_edges(dfa, dfa.start):
            out |= self._hole_info[idx][2]
        return frozenset(out)

    def _refuse_recursive(self, op: str, dfas: tuple[DFA, ...]) -> UnsupportedSchemaFeature:
        found = [i for d in dfas for i in hole_indices(d)]
        idx = next((i for i in found if i in self._recursive_holes), found[0])
        return UnsupportedSchemaFeature(
            "$ref",
            self._hole_info[idx][1],
            f"recursive schema combined by {op} with other constraints: the context-free engine "
            "handles recursion through properties, items, $ref and anyOf, not inside allOf/oneOf/not/if",
        )

    def _intersect(self, *dfas: DFA) -> DFA:
        """``A.intersect``, exact with recursive operands when their first bytes rule out overlap."""
        if self._any_hole is not None and len(dfas) > 1:
            # Any value and X is X: every operand holds only values.
            dfas = tuple(d for d in dfas if d is not self._any_hole) or dfas[:1]
        if len(dfas) < 2 or not any(has_holes(d) for d in dfas):
            return A.intersect(*dfas)
        cuts = [self._type_cuts[id(d)][1] for d in dfas if id(d) in self._type_cuts]
        rest = [d for d in dfas if id(d) not in self._type_cuts]
        if cuts and rest:
            # Every operand's values lie in the location's skeleton: a bare type only cuts first bytes.
            inner = self._intersect(*rest)
            cut = self._cut_first_bytes(inner, frozenset.intersection(*cuts))
            if cut is not None:
                return cut
        # X and X is X: equal subschemas (two names for one schema) build equal minimal DFAs.
        dfas = tuple(d for i, d in enumerate(dfas) if not any(_same_dfa(d, e) for e in dfas[:i]))
        if len(dfas) == 1:
            return dfas[0]
        firsts = [self._first_bytes(d) for d in dfas]
        if any(not (a & b) for i, a in enumerate(firsts) for b in firsts[i + 1 :]):
            return empty_dfa("disjoint recursive values")
        dfas = tuple(self._fill_in(d) for d in dfas)
        if not any(has_holes(d) for d in dfas):
            return A.intersect(*dfas)
        raise self._refuse_recursive("allOf", dfas)

    def _difference(self, a: DFA, b: DFA) -> DFA:
        """``A.difference``, exact with recursive operands when their first bytes rule out overlap."""
        if not has_holes(a) and not has_holes(b):
            return A.difference(a, b)
        if b is self._any_hole:
            return empty_dfa("not any value")
        if not (self._first_bytes(a) & self._first_bytes(b)):
            return a
        a, b = self._fill_in(a), self._fill_in(b)
        if not has_holes(a) and not has_holes(b):
            return A.difference(a, b)
        raise self._refuse_recursive("not/oneOf/if", (a, b))

    def lang(self, node: _Node, loc: _Loc) -> DFA:
        """The DFA of ``node``'s constraints for a value at ``loc``."""
        key = (node.key, loc.key)
        got = self._lang_memo.get(key)
        if got is not None:
            return self._out_of_line(key, node, got)
        if key in self._active:
            return self._hole(key, node)
        self._active.add(key)
        try:
            dfa = self._lang(node, loc)
        except UnsupportedRegexFeature as e:
            if e.pattern.startswith(("object at", "array at", "contains at", "<")):
                # An automaton size limit, hit while combining this subschema's parts.
                keyword = next((kw for kw in _SIZE_KEYWORDS if kw in self.kw(node)), "type")
                raise UnsupportedSchemaFeature(keyword, f"{node.ptr}/{keyword}", str(e)) from None
            raise
        finally:
            self._active.discard(key)
        self._lang_memo[key] = dfa
        out = self._out_of_line(key, node, dfa)
        if self.recursive and self.kw(node).keys() - _ANNOTATIONS == {"type"}:
            # A bare type: intersections cut first bytes instead of building a product (see _intersect).
            first = self._type_first_bytes(node, self.kw(node))
            if first is not None:
                self._type_cuts[id(out)] = (out, first)
        return out

    def _out_of_line(self, key: tuple[Any, Any], node: _Node, dfa: DFA) -> DFA:
        """In a recursive schema, a hole for a large finished language (or one out of line already)."""
        idx = self._holes.get(key)
        if idx is not None and (idx not in self._recursive_holes or dfa.num_states > _OUT_OF_LINE_STATES):
            return self._hole_dfas[idx]
        if self.recursive and dfa.num_states > _OUT_OF_LINE_STATES and len(self._hole_info) < MAX_HOLES:
            return self._new_hole(key, node.ptr, self._first_bytes(dfa), recursive=False)
        return dfa

    def _lang(self, node: _Node, loc: _Loc) -> DFA:
        if node.schema is True:
            return self.skeleton(loc)
        if node.schema is False:
            return empty_dfa("false")
        k = self.kw(node)
        # A bare "type" beside applicators is kept as the first bytes it allows: the applicators'
        # values already lie in this location's skeleton, so cutting their first bytes is the
        # intersection, and it needs no product against holes.
        type_first = self._bare_type_first_bytes(node, k)
        # None stands for "every value at this location" until a complement needs it spelled out.
        result = None if type_first is not None else self._own(node, k, loc)

        def meet(current: DFA | None, other: DFA) -> DFA:
            return other if current is None else self._intersect(current, other)

        for ref_kw in ("$ref", "$dynamicRef"):
            if ref_kw in k and (result is None or not A.is_empty(result)):
                result = meet(result, self.lang(self.resolve(node, ref_kw), loc))
        if "$recursiveRef" in k:
            self.unsupported("$recursiveRef", node.ptr + "/$recursiveRef", "dynamic scope is not implemented")
        for i, sub in enumerate(self._list(node, "allOf")):
            result = meet(result, self.lang(self.child(node, sub, "allOf", i), loc))
        if "anyOf" in k:
            subs = [
                self.lang(self.child(node, s, "anyOf", i), loc)
                for i, s in enumerate(self._list(node, "anyOf"))
            ]
            result = meet(result, A.union(*subs))
        if "oneOf" in k:
            subs = [
                self.lang(self.child(node, s, "oneOf", i), loc)
                for i, s in enumerate(self._list(node, "oneOf"))
            ]
            exactly_one = []
            for i, s in enumerate(subs):
                others = [o for j, o in enumerate(subs) if j != i]
                exactly_one.append(self._difference(s, A.union(*others)) if others else s)
            result = meet(result, A.union(*exactly_one))
        if "not" in k:
            sub = self.lang(self.child(node, k["not"], "not"), loc)
            result = self._difference(result if result is not None else self.skeleton(loc), sub)
        if "if" in k and ("then" in k or "else" in k):
            cond = self.lang(self.child(node, k["if"], "if"), loc)
            universe = result if result is not None else self.skeleton(loc)
            yes = self._intersect(universe, cond)
            if "then" in k:
                yes = self._intersect(yes, self.lang(self.child(node, k["then"], "then"), loc))
            no = self._difference(universe, cond)
            if "else" in k:
                no = self._intersect(no, self.lang(self.child(node, k["else"], "else"), loc))
            result = A.union(yes, no)
        result = self._dependent_schemas(node, k, loc, result)
        if k.get("uniqueItems") is True:
            result = self._unique_items(node, k, result if result is not None else self.skeleton(loc))
        for unevaluated in ("unevaluatedProperties", "unevaluatedItems"):
            if unevaluated in k:
                result = self._unevaluated(node, k, loc, unevaluated, result)
        if type_first is not None:
            cut = self._cut_first_bytes(result, type_first) if result is not None else None
            if cut is not None:
                return cut
            own = self._own(node, k, loc)
            assert own is not None  # "type" is an own keyword
            return own if result is None else self._intersect(own, result)
        return result if result is not None else self.skeleton(loc)

    def _bare_type_first_bytes(self, node: _Node, k: dict[str, Any]) -> frozenset[int] | None:
        """In a recursive schema, the first bytes ``type`` allows when it is the node's only own keyword
        and only ``$ref``/``allOf``/``anyOf``/``oneOf`` sit beside it; else None."""
        if not self.recursive or "type" not in k or (k.keys() & _NOT_BESIDE_BARE_TYPE):
            return None
        if not k.keys() & {"$ref", "$dynamicRef", "allOf", "anyOf", "oneOf"}:
            return None
        return self._type_first_bytes(node, k)

    def _type_first_bytes(self, node: _Node, k: dict[str, Any]) -> frozenset[int] | None:
        """The first bytes of the values ``type`` allows; None when it allows integers but not all
        numbers (they share first bytes)."""
        types = self._types(node, k)
        if "integer" in types:
            return None
        return frozenset(b for t in types for b in _TYPE_FIRST[t])

    def _cut_first_bytes(self, dfa: DFA, allowed: frozenset[int]) -> DFA | None:
        """The values of ``dfa`` that start with an ``allowed`` byte; None where a hole at the start
        may start with both allowed and other bytes."""
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
                first = self._hole_info[idx][2]
                if not first <= allowed:
                    if first & allowed:
                        return None
                    mid[idx] = -1
            row[HOLE] = n + 1
            extra.append(mid)
        table = np.concatenate([trans, np.stack(extra)]).astype(np.int32)
        accepting = np.concatenate([dfa.accepting, np.zeros(len(extra), dtype=bool)])
        return dfa_from_arrays(table, accepting, n, dfa.pattern)

    # ---- per-type keywords ----------------------------------------------------------------
    def _types(self, node: _Node, k: dict[str, Any]) -> list[str]:
        t = k.get("type")
        if t is None:
            return list(_TYPES)
        names = [t] if isinstance(t, str) else t
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise SchemaError("type must be a string or an array of strings", node.ptr + "/type")
        out: list[str] = []
        for x in names:
            if x not in (*_TYPES, "integer"):
                raise SchemaError(f"unknown type {x!r}", node.ptr + "/type")
            if x == "integer" and "number" in names:
                continue
            if x not in out:
                out.append(x)
        return out

    def _own(self, node: _Node, k: dict[str, Any], loc: _Loc) -> DFA | None:
        if node.schema is not _EMPTY_SCHEMA and not (_OWN_KEYWORDS & k.keys()):
            return None
        values: list[Any] | None = None
        if "enum" in k:
            if not isinstance(k["enum"], list):
                raise SchemaError("enum must be an array", node.ptr + "/enum")
            values = list(k["enum"])
        if "const" in k and self.version >= 6:
            values = [k["const"]] if values is None else [v for v in values if _json_equal(v, k["const"])]
        types = self._types(node, k)
        if values is not None:
            # Only the enum's own types matter (and building the others could need recursion).
            present = {t for v in values for t in _json_types(v)}
            types = [t for t in types if t in present]
        parts: list[DFA] = []
        for t in types:
            if t == "null":
                parts.append(A.build(A.Literal(b"null")))
            elif t == "boolean":
                parts.append(A.build(A.Regex("true|false")))
            elif t in ("number", "integer"):
                parts.append(self._number(node, k, integer=t == "integer"))
            elif t == "string":
                parts.append(self._string(node, k))
            elif t == "array":
                parts.append(self._array(node, k, loc))
            elif t == "object":
                parts.append(self._object(node, k, loc))
        result = A.union(*parts) if parts else empty_dfa("no type")
        if values is not None:
            forms: set[bytes] = set()
            for v in values:
                forms.update(self.value_forms(v, loc))
            literals = A.build(A.alt(*[A.Literal(f) for f in sorted(forms)])) if forms else empty_dfa("enum")
            result = self._intersect(result, literals)
        return result

    def value_forms(self, value: Any, loc: _Loc) -> set[bytes]:
        """The canonical texts of an ``enum``/``const`` value: ``1`` also as ``1.0``, and object keys
        in any order where the location does not fix it (small objects only)."""
        return {f.encode() for f in self._forms(value, loc, [0])}

    def _forms(self, value: Any, loc: _Loc, budget: list[int]) -> list[str]:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return [json.dumps(value, ensure_ascii=False)]
        if isinstance(value, int):
            return [str(value), f"{value}.0"]
        if isinstance(value, float):
            text = json.dumps(value)
            return [text, str(int(value))] if value.is_integer() and math.isfinite(value) else [text]
        if isinstance(value, list):
            combos = [""]
            for i, item in enumerate(value):
                sub = self._forms(item, self.item_loc(loc, i) if loc.nodes else loc, budget)
                combos = [c + ("," if i else "") + f for c in combos for f in sub][:256]
            return ["[" + c + "]" for c in combos]
        if isinstance(value, dict):
            known = self.keys(loc) if loc.nodes else []
            fixed = [n for n in known if n in value] if self.options.property_order == "schema" else []
            free = [n for n in value if n not in fixed]
            orders = (
                [fixed + list(p) for p in itertools.permutations(free)] if len(free) <= 4 else [fixed + free]
            )
            out: list[str] = []
            for order in orders:
                combos = [""]
                for i, name in enumerate(order):
                    if not loc.nodes:
                        child = loc
                    elif name in known:
                        child = self.key_loc(loc, name)
                    else:
                        klass = frozenset(
                            p for p in self.patterns(loc) if self.pattern_search(p, "").search(name)
                        )
                        child = self.class_loc(loc, klass)
                    sub = self._forms(value[name], child, budget)
                    head = ("," if i else "") + json.dumps(name, ensure_ascii=False) + ":"
                    combos = [c + head + f for c in combos for f in sub][:256]
                out.extend("{" + c + "}" for c in combos)
            return out[:1024]
        return [json.dumps(value, ensure_ascii=False)]

    def _number(self, node: _Node, k: dict[str, Any], integer: bool) -> DFA:
        bounds: dict[str, Any] = {}
        for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if name in k:
                v = k[name]
                if isinstance(v, bool) and name.startswith("exclusive") and self.version <= 4:
                    bounds[name] = v
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise SchemaError(f"{name} must be a number", f"{node.ptr}/{name}")
                bounds[name] = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        lo = hi = None
        lo_ex = hi_ex = False
        if "minimum" in bounds:
            lo = bounds["minimum"]
            lo_ex = bounds.get("exclusiveMinimum") is True
        if "maximum" in bounds:
            hi = bounds["maximum"]
            hi_ex = bounds.get("exclusiveMaximum") is True
        for name, is_lo in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            v = bounds.get(name)
            if isinstance(v, Decimal):
                if is_lo and (lo is None or v >= lo):
                    lo, lo_ex = v, True
                elif not is_lo and (hi is None or v <= hi):
                    hi, hi_ex = v, True
        if lo is None and hi is None:
            base = A.build(A.Regex(_INTEGER_VALUE_RE if integer else _NUMBER_RE))
        else:
            from .numbers import number_range_regex

            pattern = number_range_regex(
                lo, hi, exclusive_minimum=lo_ex, exclusive_maximum=hi_ex, integer=integer
            )
            base = A.build(A.Regex(pattern))
        if "multipleOf" in bounds:
            m = bounds["multipleOf"]
            if m <= 0:
                raise SchemaError("multipleOf must be greater than 0", f"{node.ptr}/multipleOf")
            from .numbers import multiple_of_dfa

            try:
                mult = multiple_of_dfa(m, integer=integer, pointer=f"{node.ptr}/multipleOf")
            except UnsupportedSchemaFeature as e:
                self.unsupported("multipleOf", f"{node.ptr}/multipleOf", e.detail)
            else:
                base = self._intersect(base, mult)
        return base

    def _string(self, node: _Node, k: dict[str, Any]) -> DFA:
        content: list[DFA] = []
        lo = k.get("minLength", 0)
        hi = k.get("maxLength")
        for name, v in (("minLength", lo), ("maxLength", hi)):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v)
            ):
                raise SchemaError(f"{name} must be a non-negative integer", f"{node.ptr}/{name}")
        if lo or hi is not None:
            top = int(hi) if hi is not None else int(lo)
            if top > _MAX_COUNTED_LENGTH:
                name = "maxLength" if hi is not None else "minLength"
                self.unsupported(name, f"{node.ptr}/{name}", f"a length bound of {top} is too large to count")
            else:
                content.append(_length_dfa(int(lo), None if hi is None else int(hi)))
        if "pattern" in k:
            p = k["pattern"]
            if not isinstance(p, str):
                raise SchemaError("pattern must be a string", f"{node.ptr}/pattern")
            dfa = self._pattern_dfa(p, f"{node.ptr}/pattern")
            if dfa is not None:
                content.append(dfa)
        if "format" in k and self.options.formats == "assert" and isinstance(k["format"], str):
            from .formats import format_max_length, format_regex

            regex = format_regex(k["format"])
            if regex is not None:
                content.append(A.build(A.Regex(regex, 0, True)))
                longest = format_max_length(k["format"])
                if longest is not None:
                    content.append(_length_dfa(0, longest))
            elif k["format"] in _UNENFORCEABLE_FORMATS:
                self.unsupported("format", f"{node.ptr}/format", f"format {k['format']!r} is not regular")
        body = self._intersect(*content) if content else A.build(_ANY_CHARS)
        return A.build(self._string_expr(A.Embed(body)))

    def _pattern_dfa(self, pattern: str, ptr: str) -> DFA | None:
        from .ecma_regex import search_regex

        try:
            return A.build(A.Regex(search_regex(pattern), 0, True))
        except UnsupportedRegexFeature as e:
            self.unsupported(ptr.rsplit("/", 1)[-1], ptr, str(e))
            return None
        except RegexSyntaxError as e:
            raise SchemaError(f"invalid regex {pattern!r}: {e}", ptr) from None

    def _key_dfa(self, pattern: str, ptr: str) -> DFA | None:
        """Quoted keys whose decoded text matches ``pattern`` (search semantics)."""
        body = self._pattern_dfa(pattern, ptr)
        return None if body is None else A.build(self._string_expr(A.Embed(body)))

    # ---- arrays ---------------------------------------------------------------------------
    def _count(self, node: _Node, k: dict[str, Any], name: str) -> int | None:
        v = k.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
            raise SchemaError(f"{name} must be a non-negative integer", f"{node.ptr}/{name}")
        return int(v)

    def _array(self, node: _Node, k: dict[str, Any], loc: _Loc) -> DFA:
        prefix, rest = self._items_split(node)
        width = self.prefix_len(loc)
        lo = self._count(node, k, "minItems") or 0
        hi = self._count(node, k, "maxItems")
        values: dict[int, DFA] = {}

        def value(i: int) -> DFA:
            i = min(i, width)  # every index past the prefixes shares one location
            got = values.get(i)
            if got is None:
                iloc = self.item_loc(loc, i)
                sub = prefix[i] if i < len(prefix) else rest
                got = values[i] = self.lang(sub, iloc) if sub is not None else self.skeleton(iloc)
            return got

        # Node i = "i items so far"; with no maxItems the last node loops and means "at least i".
        chain = hi if hi is not None else max(width, lo) + 1
        if chain - max(width, lo) > 512:
            self.unsupported("maxItems", f"{node.ptr}/maxItems", "more than 512 counted items")
            chain, hi = max(width, lo) + 1, None
        edges: list[tuple[int, int, A.Expr]] = []
        n_nodes = 1
        for i in range(chain):
            v = value(i)
            if A.is_empty(v):
                break
            edges.append((i, i + 1, A.seq(self._sep(i), A.Embed(v))))
            n_nodes = i + 2
        else:
            if hi is None and not A.is_empty(value(chain)):
                edges.append((chain, chain, A.seq(self._sep(1), A.Embed(value(chain)))))
        finals = tuple(i for i in range(n_nodes) if i >= lo and (hi is None or i <= hi))
        graph = A.Graph(n_nodes, 0, finals, tuple(edges))
        result = A.build(
            A.seq(A.Literal(b"["), self.ws, graph, self.ws, A.Literal(b"]")), f"array at {node.ptr}"
        )
        if "contains" in k and self.version >= 6:
            result = self._intersect(result, self._contains(node, k, loc))
        return result

    def _sep(self, count: int) -> A.Expr:
        return A.Literal(b"") if count == 0 else A.seq(self.ws, A.Literal(b","), self.ws)

    def _contains(self, node: _Node, k: dict[str, Any], loc: _Loc) -> DFA:
        lo = self._count(node, k, "minContains") if self.version >= 8 else None
        hi = self._count(node, k, "maxContains") if self.version >= 8 else None
        lo = 1 if lo is None else lo
        empty = _Node(_EMPTY_SCHEMA, node.ptr, node.resolver)
        if lo == 0 and hi is None:
            return self._array(empty, {}, loc)
        if (hi if hi is not None else lo) > 512:
            self.unsupported("contains", f"{node.ptr}/contains", "counts beyond 512")
            return self._array(empty, {}, loc)
        cnode = self.child(node, k["contains"], "contains")
        width = self.prefix_len(loc)
        top_pos = width + 1  # positions saturate here (also tells "first item" from the rest)
        cap = hi + 1 if hi is not None else lo  # matches saturate at lo when unbounded above

        def nid(p: int, c: int) -> int:
            return p * (cap + 1) + c

        edges: list[tuple[int, int, A.Expr]] = []
        for p in range(top_pos + 1):
            iloc = self.item_loc(loc, min(p, width))
            skel = self.skeleton(iloc)
            hit = self.lang(cnode, iloc)
            yes, no = self._intersect(skel, hit), self._difference(skel, hit)
            nxt = min(p + 1, top_pos)
            for c in range(cap + 1):
                if not A.is_empty(no):
                    edges.append((nid(p, c), nid(nxt, c), A.seq(self._sep(p), A.Embed(no))))
                c2 = min(c + 1, cap) if hi is None else c + 1
                if not A.is_empty(yes) and (hi is None or c2 <= hi):
                    edges.append((nid(p, c), nid(nxt, c2), A.seq(self._sep(p), A.Embed(yes))))
        finals = tuple(
            nid(p, c)
            for p in range(top_pos + 1)
            for c in range(cap + 1)
            if c >= lo and (hi is None or c <= hi)
        )
        graph = A.Graph((top_pos + 1) * (cap + 1), 0, finals, tuple(edges))
        return A.build(
            A.seq(A.Literal(b"["), self.ws, graph, self.ws, A.Literal(b"]")), f"contains at {node.ptr}"
        )

    # ---- objects --------------------------------------------------------------------------
    def _object(self, node: _Node, k: dict[str, Any], loc: _Loc) -> DFA:
        names = self.keys(loc)
        pats = self.patterns(loc)
        if len(pats) > 6:
            self.unsupported(
                "patternProperties", f"{node.ptr}/patternProperties", "more than 6 patterns at one place"
            )
            pats = pats[:6]
        required = k.get("required", []) if self.version >= 4 else []
        if not isinstance(required, list):
            raise SchemaError("required must be an array", f"{node.ptr}/required")
        lo = self._count(node, k, "minProperties") or 0
        hi = self._count(node, k, "maxProperties")
        key_names: A.DFA | None = None
        if "propertyNames" in k and self.version >= 6:
            pn = self.child(node, k["propertyNames"], "propertyNames")
            key_names = self.lang(pn, self.loc_of([pn]))

        slots: list[tuple[bytes, DFA | None, bool]] = []  # (quoted key, value or None=absent, required)
        for name in names:
            subs = self._distinct(self._node_schemas_for_key(node, name))
            kloc = self.key_loc(loc, name)
            value = self._intersect(*[self.lang(s, kloc) for s in subs]) if subs else self.skeleton(kloc)
            quoted = _json_bytes(name)
            allowed = not A.is_empty(value) and (key_names is None or key_names.matches(quoted))
            is_required = name in required
            if not allowed and is_required:
                return empty_dfa(f"object at {node.ptr}: required {name!r} cannot be present")
            slots.append((quoted, value if allowed else None, is_required))

        tail: list[tuple[DFA, DFA]] = []
        not_names = A.build(A.alt(*[A.Literal(_json_bytes(n)) for n in names])) if names else None
        any_key = A.build(self._string_expr(_ANY_CHARS))
        for mask in range(1 << len(pats)):
            klass = frozenset(p for i, p in enumerate(pats) if mask >> i & 1)
            key_dfa = any_key
            for i, p in enumerate(pats):
                d = self._key_dfa(p, f"{node.ptr}/patternProperties")
                if d is None:
                    continue
                key_dfa = self._intersect(key_dfa, d) if mask >> i & 1 else self._difference(key_dfa, d)
            if not_names is not None:
                key_dfa = self._difference(key_dfa, not_names)
            if key_names is not None:
                key_dfa = self._intersect(key_dfa, key_names)
            if A.is_empty(key_dfa):
                continue
            subs = self._distinct(self._node_schemas_for_class(node, klass))
            cloc = self.class_loc(loc, klass)
            value = self._intersect(*[self.lang(s, cloc) for s in subs]) if subs else self.skeleton(cloc)
            if not A.is_empty(value):
                tail.append((key_dfa, value))
        return self._object_graph(node, slots, tail, lo, hi)

    def _object_graph(
        self,
        node: _Node,
        slots: list[tuple[bytes, DFA | None, bool]],
        tail: list[tuple[DFA, DFA]],
        lo: int,
        hi: int | None,
    ) -> DFA:
        if hi is not None and hi > 256:
            self.unsupported("maxProperties", f"{node.ptr}/maxProperties", "more than 256 counted members")
            hi = None
        if lo > 256:
            self.unsupported("minProperties", f"{node.ptr}/minProperties", "more than 256 counted members")
            lo = 0
        if self.options.property_order == "any" and len(slots) <= _ANY_ORDER_MAX_KEYS:
            # Every order of the named keys, with other keys anywhere between them.
            orders = [list(p) for p in itertools.permutations(slots)]
            return A.union(*[self._object_order(node, order, tail, lo, hi, True) for order in orders])
        return self._object_order(node, slots, tail, lo, hi, False)

    def _object_order(
        self,
        node: _Node,
        slots: list[tuple[bytes, DFA | None, bool]],
        tail: list[tuple[DFA, DFA]],
        lo: int,
        hi: int | None,
        tail_anywhere: bool,
    ) -> DFA:
        """Objects whose named keys come in the order of ``slots``; nodes count the members so far."""
        ws = self.ws
        top = hi if hi is not None else max(lo, 1)
        n = len(slots)

        def nid(i: int, c: int) -> int:
            return i * (top + 1) + c

        def bump(c: int) -> int | None:
            if hi is not None:
                return c + 1 if c + 1 <= hi else None
            return min(c + 1, top)

        edges: list[tuple[int, int, A.Expr]] = []
        for i, (quoted, value, is_required) in enumerate(slots):
            for c in range(top + 1):
                if not is_required:
                    edges.append((nid(i, c), nid(i + 1, c), A.Literal(b"")))
                c2 = bump(c)
                if value is not None and c2 is not None:
                    member = A.seq(self._sep(c), A.Literal(quoted), ws, A.Literal(b":"), ws, A.Embed(value))
                    edges.append((nid(i, c), nid(i + 1, c2), member))
        for key_dfa, value in tail:
            for i in range(n + 1) if tail_anywhere else (n,):
                for c in range(top + 1):
                    c2 = bump(c)
                    if c2 is None:
                        continue
                    member = A.seq(self._sep(c), A.Embed(key_dfa), ws, A.Literal(b":"), ws, A.Embed(value))
                    edges.append((nid(i, c), nid(i, c2), member))
        finals = tuple(nid(n, c) for c in range(top + 1) if c >= lo)
        graph = A.Graph((n + 1) * (top + 1), 0, finals, tuple(edges))
        return A.build(A.seq(A.Literal(b"{"), ws, graph, ws, A.Literal(b"}")), f"object at {node.ptr}")

    def _dependent_schemas(self, node: _Node, k: dict[str, Any], loc: _Loc, result: DFA | None) -> DFA | None:
        deps_req: dict[str, list[str]] = (
            dict(k.get("dependentRequired", {}) or {}) if self.version >= 8 else {}
        )
        deps_sch: dict[str, tuple[Any, str]] = {}
        if self.version >= 8:
            deps_sch = {p: (s, "dependentSchemas") for p, s in (k.get("dependentSchemas", {}) or {}).items()}
        if "dependencies" in k:
            for p, v in (k.get("dependencies", {}) or {}).items():
                if isinstance(v, list):
                    deps_req[p] = v
                else:
                    deps_sch[p] = (v, "dependencies")
        if not deps_req and not deps_sch:
            return result
        empty = _Node(_EMPTY_SCHEMA, node.ptr, node.resolver)
        for prop, req in deps_req.items():
            absent = self._presence(empty, loc, {prop: False})
            present = self._presence(empty, loc, {prop: True, **{q: True for q in req}})
            non_objects = self._non_objects(loc)
            rule = A.union(absent, present, non_objects)
            result = rule if result is None else self._intersect(result, rule)
        for prop, (sub, kwname) in deps_sch.items():
            absent = self._presence(empty, loc, {prop: False})
            present = self._intersect(
                self._presence(empty, loc, {prop: True}), self.lang(self.child(node, sub, kwname, prop), loc)
            )
            rule = A.union(absent, present, self._non_objects(loc))
            result = rule if result is None else self._intersect(result, rule)
        return result

    def _non_objects(self, loc: _Loc) -> DFA:
        skel = self.skeleton(loc)
        return self._difference(skel, A.build(A.Regex(r"\{(?s:.*)")))

    def _presence(self, empty: _Node, loc: _Loc, want: dict[str, bool]) -> DFA:
        """Objects at ``loc`` where each key in ``want`` is present (True) or absent (False)."""
        names = self.keys(loc)
        slots: list[tuple[bytes, DFA | None, bool]] = []
        for name in names:
            value = self.skeleton(self.key_loc(loc, name))
            w = want.get(name)
            slots.append((_json_bytes(name), None if w is False else value, w is True))
        pats = self.patterns(loc)
        tail: list[tuple[DFA, DFA]] = []
        any_key = A.build(self._string_expr(_ANY_CHARS))
        not_names = A.build(A.alt(*[A.Literal(_json_bytes(n)) for n in names])) if names else None
        for mask in range(1 << min(len(pats), 6)):
            klass = frozenset(p for i, p in enumerate(pats) if mask >> i & 1)
            key_dfa = any_key
            for i, p in enumerate(pats[:6]):
                d = self._key_dfa(p, f"{empty.ptr}/patternProperties")
                if d is not None:
                    key_dfa = self._intersect(key_dfa, d) if mask >> i & 1 else self._difference(key_dfa, d)
            if not_names is not None:
                key_dfa = self._difference(key_dfa, not_names)
            if not A.is_empty(key_dfa):
                tail.append((key_dfa, self.skeleton(self.class_loc(loc, klass))))
        return self._object_graph(empty, slots, tail, 0, None)

    # ---- keywords beyond regular languages ----------------------------------------------------
    def _unique_items(self, node: _Node, k: dict[str, Any], result: DFA) -> DFA:
        hi = self._count(node, k, "maxItems")
        if hi is not None and hi <= 1:
            return result
        result = self._fill_in(result)
        if has_holes(result):
            self.unsupported("uniqueItems", f"{node.ptr}/uniqueItems", "the arrays hold recursive values")
            return result
        arrays = self._intersect(result, A.build(A.Regex(r"\[(?s:.*)")))
        strings = enumerate_strings(arrays, 5000)
        if strings is None:
            self.unsupported(
                "uniqueItems", f"{node.ptr}/uniqueItems", "the set of possible arrays is infinite"
            )
            return result
        others = self._difference(result, arrays)
        keep = [s for s in strings if _all_unique(json.loads(s))]
        finite = A.build(A.alt(*[A.Literal(s) for s in keep])) if keep else empty_dfa("uniqueItems")
        return A.union(others, finite)

    def _evaluated(self, node: _Node) -> _Evaluated:
        """What ``node`` evaluates regardless of branches, and the branching applicators it holds."""
        ev = _Evaluated()
        stack = [node]
        seen: set[tuple[Any, ...]] = set()
        while stack:
            n = stack.pop()
            if n.key in seen or not isinstance(n.schema, dict):
                continue
            seen.add(n.key)
            kk = self.kw(n)
            ev.names.update(dict.fromkeys(kk.get("properties", {}) or {}))
            ev.patterns.update(dict.fromkeys(kk.get("patternProperties", {}) or {}))
            if "additionalProperties" in kk or ("unevaluatedProperties" in kk and n is not node):
                ev.all_props = True
            p_items, rest = self._items_split(n)
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
                    stack.append(self.resolve(n, ref_kw))
            for i, sub in enumerate(kk.get("allOf", []) or []):
                stack.append(self.child(n, sub, "allOf", i))
        return ev

    def _branch_options(
        self, kind: str, owner: _Node, loc: _Loc, keyword: str, ptr: str
    ) -> list[tuple[DFA, _Evaluated]] | None:
        """The ways one branching applicator can come out: (language of that outcome, what it evaluates)."""
        k = self.kw(owner)
        skel = self.skeleton(loc)

        def member(sub: Any, *path: object) -> tuple[DFA, list[tuple[DFA | None, _Evaluated]]] | None:
            n = self.child(owner, sub, *path)
            scenarios = self._scenarios(n, loc, keyword, ptr)
            return None if scenarios is None else (self.lang(n, loc), scenarios)

        def valid_ways(m: tuple[DFA, list[tuple[DFA | None, _Evaluated]]]) -> list[tuple[DFA, _Evaluated]]:
            return [(m[0] if c is None else self._intersect(m[0], c), ev) for c, ev in m[1]]

        options: list[tuple[DFA, _Evaluated]] = []
        if kind in ("anyOf", "oneOf"):
            members = [member(sub, kind, i) for i, sub in enumerate(k[kind])]
            if any(m is None for m in members):
                return None
            ms = [m for m in members if m is not None]
            if len(ms) > 6:
                self.unsupported(keyword, ptr, f"{kind} with more than 6 branches")
                return None
            for mask in range(1, 1 << len(ms)):
                if kind == "oneOf" and mask & (mask - 1):
                    continue
                combos: list[tuple[DFA, _Evaluated]] = [(skel, _Evaluated())]
                for i, m in enumerate(ms):
                    if mask >> i & 1:
                        combos = [
                            (self._intersect(lang, way), ev.merged(way_ev))
                            for lang, ev in combos
                            for way, way_ev in valid_ways(m)
                        ]
                    else:
                        combos = [(self._difference(lang, m[0]), ev) for lang, ev in combos]
                    combos = [(lang, ev) for lang, ev in combos if not A.is_empty(lang)]
                    if len(options) + len(combos) > 64:
                        self.unsupported(keyword, ptr, "more than 64 combinations of branches")
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
                yes = [(self._intersect(a, b), ea.merged(eb)) for a, ea in yes for b, eb in valid_ways(then)]
            no: list[tuple[DFA, _Evaluated]] = [(self._difference(skel, cond[0]), _Evaluated())]
            if other is not None:
                no = [(self._intersect(no[0][0], b), eb) for b, eb in valid_ways(other)]
            return [(lang, ev) for lang, ev in yes + no if not A.is_empty(lang)]
        if kind == "dependentSchemas":
            empty = _Node(_EMPTY_SCHEMA, owner.ptr, owner.resolver)
            opts: list[tuple[DFA, _Evaluated]] = [(skel, _Evaluated())]
            for prop, sub in (k["dependentSchemas"] or {}).items():
                got = member(sub, "dependentSchemas", prop)
                if got is None:
                    return None
                nxt: list[tuple[DFA, _Evaluated]] = []
                absent_rule = A.union(self._presence(empty, loc, {prop: False}), self._non_objects(loc))
                present_rule = self._presence(empty, loc, {prop: True})
                for lang, ev in opts:
                    nxt.append((self._intersect(lang, absent_rule), ev))
                    for way, way_ev in valid_ways(got):
                        nxt.append((self._intersect(lang, present_rule, way), ev.merged(way_ev)))
                opts = [(lang, ev) for lang, ev in nxt if not A.is_empty(lang)]
            return opts
        self.unsupported(keyword, ptr, f"evaluation depends on {kind} at {owner.ptr}")
        return None

    def _scenarios(
        self, node: _Node, loc: _Loc, keyword: str, ptr: str
    ) -> list[tuple[DFA | None, _Evaluated]] | None:
        """The ways ``node``'s branching applicators can come out, each with what it then evaluates."""
        base = self._evaluated(node)
        if keyword == "unevaluatedItems" and base.contains:
            self.unsupported(keyword, ptr, f"evaluation depends on contains at {base.contains[0].ptr}")
            return None
        scenarios: list[tuple[DFA | None, _Evaluated]] = [(None, base)]
        for kind, owner in base.branches:
            options = self._branch_options(kind, owner, loc, keyword, ptr)
            if options is None:
                return None
            scenarios = [
                (lang if cond is None else self._intersect(cond, lang), ev.merged(opt_ev))
                for cond, ev in scenarios
                for lang, opt_ev in options
            ]
            scenarios = [(c, ev) for c, ev in scenarios if c is None or not A.is_empty(c)]
            if len(scenarios) > 64:
                self.unsupported(keyword, ptr, "more than 64 combinations of branches")
                return None
        return scenarios

    def _unevaluated(
        self, node: _Node, k: dict[str, Any], loc: _Loc, keyword: str, result: DFA | None
    ) -> DFA | None:
        ptr = f"{node.ptr}/{keyword}"
        sub = k[keyword]
        if sub is True:
            return result
        self.child(node, sub, keyword)  # a schema, or SchemaError
        got = self._scenarios(node, loc, keyword, ptr)
        if got is None:
            return result
        scenarios = got
        parts: list[DFA] = []
        for cond, ev in scenarios:
            if keyword == "unevaluatedProperties":
                if ev.all_props:
                    syn = None
                else:
                    synthetic: dict[str, Any] = {
                        "properties": dict.fromkeys(ev.names, True),
                        "patternProperties": dict.fromkeys(ev.patterns, True),
                        "additionalProperties": sub,
                    }
            elif ev.all_items:
                syn = None
            elif self.version >= 9:
                synthetic = {"prefixItems": [True] * ev.prefix, "items": sub}
            else:
                synthetic = {"items": [True] * ev.prefix, "additionalItems": sub}
            if not (keyword == "unevaluatedProperties" and ev.all_props) and not (
                keyword == "unevaluatedItems" and ev.all_items
            ):
                self._synthetic.append(synthetic)
                syn = self.lang(_Node(synthetic, node.ptr, node.resolver), loc)
            piece = syn if cond is None else (cond if syn is None else self._intersect(cond, syn))
            parts.append(piece if piece is not None else self.skeleton(loc))
        rule = A.union(*parts)
        return rule if result is None else self._intersect(result, rule)


@dataclass
class _Evaluated:
    """Annotations a subschema produces for ``unevaluated*``: the keys and items it evaluates."""

    names: dict[str, None] = field(default_factory=dict)
    patterns: dict[str, None] = field(default_factory=dict)
    prefix: int = 0
    all_props: bool = False
    all_items: bool = False
    branches: list[tuple[str, _Node]] = field(default_factory=list)
    contains: list[_Node] = field(default_factory=list)

    def merge(self, other: _Evaluated) -> None:
        self.names.update(other.names)
        self.patterns.update(other.patterns)
        self.prefix = max(self.prefix, other.prefix)
        self.all_props |= other.all_props
        self.all_items |= other.all_items

    def copy(self) -> _Evaluated:
        out = _Evaluated()
        out.merge(self)
        return out

    def merged(self, other: _Evaluated) -> _Evaluated:
        out = self.copy()
        out.merge(other)
        return out


_UNENFORCEABLE_FORMATS = {"regex"}
_TYPE_FIRST = {
    "null": b"n", "boolean": b"tf", "object": b"{", "array": b"[", "string": b'"',
    "number": b"-0123456789", "integer": b"-0123456789",
}  # fmt: skip
_VALUE_FIRST = frozenset(b"".join(_TYPE_FIRST.values()))


_MAX_COUNTED_LENGTH = 10_000
_ANY_ORDER_MAX_KEYS = 4  # property_order="any": objects naming more keys keep the schema order
_SIZE_KEYWORDS = (
    "properties", "patternProperties", "additionalProperties", "items", "prefixItems", "allOf", "anyOf",
    "oneOf", "not", "if", "$ref", "enum",
)  # fmt: skip
_ANY_CACHE: dict[tuple[Any, ...], DFA] = {}
_ANY_KEY = ("<any JSON value>",)  # the any-value hole's key in a recursive schema
#: in a recursive schema, a subschema's DFA past this many states is kept out of line (a hole)
_OUT_OF_LINE_STATES = 256
_STRUCTURAL = {
    "properties", "required", "dependentRequired", "dependentSchemas", "dependencies", "patternProperties",
    "additionalProperties", "items", "prefixItems", "additionalItems", "contains",
}  # fmt: skip
_NOT_BESIDE_BARE_TYPE = {
    "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "format", "items", "prefixItems", "additionalItems", "minItems",
    "maxItems", "contains", "properties", "patternProperties", "additionalProperties", "required",
    "propertyNames", "minProperties", "maxProperties", "not", "if", "then", "else", "dependentSchemas",
    "dependencies", "dependentRequired", "uniqueItems", "unevaluatedProperties", "unevaluatedItems",
    "$recursiveRef",
}  # fmt: skip
_OWN_KEYWORDS = {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "format", "items", "prefixItems", "additionalItems", "minItems",
    "maxItems", "contains", "properties", "patternProperties", "additionalProperties", "required",
    "propertyNames", "minProperties", "maxProperties",
}  # fmt: skip


def _same_dfa(a: DFA, b: DFA) -> bool:
    return a is b or (
        a.start == b.start
        and np.array_equal(a.accepting, b.accepting)
        and np.array_equal(a.transitions, b.transitions)
    )


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[x], b[x]) for x in a)
    return bool(a == b)


def _json_types(value: Any) -> tuple[str, ...]:
    """The JSON Schema types ``value`` belongs to (an integral number is both number and integer)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean",)
    if isinstance(value, (int, float)):
        integral = isinstance(value, int) or (math.isfinite(value) and value.is_integer())
        return ("number", "integer") if integral else ("number",)
    if isinstance(value, str):
        return ("string",)
    if isinstance(value, list):
        return ("array",)
    return ("object",)


def _all_unique(items: Any) -> bool:
    if not isinstance(items, list):
        return True
    return not any(_json_equal(items[i], items[j]) for i in range(len(items)) for j in range(i))


def _length_dfa(lo: int, hi: int | None) -> DFA:
    """JSON string contents of ``lo`` to ``hi`` code points, as layered copies of the one-char DFA."""
    if hi is not None and hi < lo:
        return empty_dfa("minLength > maxLength")
    top = hi if hi is not None else lo
    if top > 20_000:
        raise UnsupportedSchemaFeature("maxLength", "", f"a length bound of {top} is too large to count")
    char = A.build(_ONE_CHAR)
    acc_states = np.flatnonzero(char.accepting)
    # The one-char automaton has a single accepting state with no way out: it is the next layer's start.
    (final,) = acc_states.tolist()
    inner = [s for s in range(char.num_states) if s != final and s != char.start]
    local = {char.start: 0, **{s: i + 1 for i, s in enumerate(inner)}}
    width = len(local)
    layers = top + 1
    n = layers * width
    trans = np.full((n, 256), -1, dtype=np.int32)
    for layer in range(layers):
        base = layer * width
        for s, i in local.items():
            row = char.transitions[s]
            for b in np.flatnonzero(row >= 0).tolist():
                t = int(row[b])
                if t == final:
                    if layer + 1 < layers:
                        trans[base + i, b] = (layer + 1) * width
                    elif hi is None:
                        trans[base + i, b] = layer * width  # saturate: stay on the last layer
                else:
                    trans[base + i, b] = base + local[t]
    accepting = np.zeros(n, dtype=bool)
    for layer in range(lo, layers):
        accepting[layer * width] = True
    return dfa_from_arrays(trans, accepting, 0, f"length {lo}..{hi}")


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

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        ok = walk(dfa.start, b"")
    finally:
        sys.setrecursionlimit(old)
    return out if ok else None


def serialize_value(compiler: SchemaCompiler, value: Any, loc: _Loc) -> str:
    """The canonical text of ``value`` at ``loc``: compact, object keys in the location's order."""
    if isinstance(value, dict):
        schema_order = loc.nodes and compiler.options.property_order == "schema"
        order = [n for n in compiler.keys(loc) if n in value] if schema_order else []
        order += [n for n in value if n not in order]
        parts = []
        for name in order:
            if not loc.nodes:
                child = loc
            elif name in compiler.keys(loc):
                child = compiler.key_loc(loc, name)
            else:
                pats = compiler.patterns(loc)
                klass = frozenset(p for p in pats if compiler.pattern_search(p, "").search(name))
                child = compiler.class_loc(loc, klass)
            parts.append(
                json.dumps(name, ensure_ascii=False) + ":" + serialize_value(compiler, value[name], child)
            )
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        items = [
            serialize_value(compiler, v, compiler.item_loc(loc, i) if loc.nodes else loc)
            for i, v in enumerate(value)
        ]
        return "[" + ",".join(items) + "]"
    return json.dumps(value, ensure_ascii=False)


def load_schema(schema: Any) -> Any:
    """A schema given as a dict, a boolean, JSON text or a path to a JSON file."""
    import os

    if isinstance(schema, (dict, bool)):
        return schema
    if isinstance(schema, os.PathLike) or (
        isinstance(schema, str) and not schema.lstrip().startswith(("{", "[", "t", "f"))
    ):
        path = os.fspath(schema)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except OSError as e:
            raise SchemaError(f"cannot read schema file {path!r}: {e}") from None
        except json.JSONDecodeError as e:
            raise SchemaError(
                f"schema file {path!r} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
    if isinstance(schema, (str, bytes)):
        try:
            return json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(
                f"schema text is not JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    raise SchemaError(f"cannot read a schema from {type(schema).__name__}")


_SINGLE_SUBSCHEMA = (
    "additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if", "then",
    "else", "unevaluatedProperties", "unevaluatedItems",
)  # fmt: skip
_LIST_SUBSCHEMAS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP_SUBSCHEMAS = ("properties", "patternProperties", "dependentSchemas", "dependencies")


def has_ref_cycle(schema: Any, registry: Mapping[str, Any] | None = None, draft: str = "2020-12") -> bool:
    """True when following subschemas and ``$ref``/``$dynamicRef`` from the root can come back to a
    subschema on the way (a recursive schema). Static: nothing is compiled."""
    return SchemaCompiler(load_schema(schema), SchemaOptions(draft=draft), registry).has_ref_cycle()


def schema_to_language(
    schema: Any, options: SchemaOptions | None = None, registry: Mapping[str, Any] | None = None
) -> DFA | RecursiveLanguage:
    """Compile a JSON Schema: one DFA, or DFAs with holes where ``$ref`` recurses (see ``recursion``)."""
    compiler = SchemaCompiler(load_schema(schema), options or SchemaOptions(), registry)
    try:
        return compiler.compile_root()
    except RecursionError:
        raise UnsupportedSchemaFeature("$ref", "#", "schema nesting too deep") from None


def schema_to_dfa(
    schema: Any, options: SchemaOptions | None = None, registry: Mapping[str, Any] | None = None
) -> DFA:
    """Compile a JSON Schema to the DFA of its canonical serialisations.

    Raises:
        UnsupportedSchemaFeature: the schema recurses (``$ref`` cycles), so no finite automaton
            exists; :func:`constrain.compile` takes such schemas through the context-free engine.
    """
    got = schema_to_language(schema, options, registry)
    if isinstance(got, RecursiveLanguage):
        first = min(got.pointers)
        raise UnsupportedSchemaFeature(
            "$ref", got.pointers[first], "recursive schema: no finite automaton; use constrain.compile"
        )
    return got


def serialize_instance(
    instance: Any,
    schema: Any,
    *,
    registry: Mapping[str, Any] | None = None,
    options: SchemaOptions | None = None,
) -> str:
    """The canonical compact text of ``instance`` that the schema's automaton reads."""
    compiler = SchemaCompiler(load_schema(schema), options or SchemaOptions(), registry)
    loc = compiler.loc_of([compiler.root])
    return serialize_value(compiler, instance, loc)


__all__ = [
    "ConstrainError",
    "RecursiveLanguage",
    "SchemaCompiler",
    "SchemaOptions",
    "has_ref_cycle",
    "schema_to_dfa",
    "schema_to_language",
    "serialize_instance",
]
