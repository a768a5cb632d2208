"""Reference resolution: a schema document as nodes that know where they are.

A :class:`SchemaNode` is one subschema with its JSON pointer and its ``referencing`` resolver (base
URI and dynamic scope). :class:`SchemaDocument` builds the registry (the document, the caller's remote
documents, the drafts' own metaschemas), and from a node reaches its children, the keywords in force,
and the targets of ``$ref`` / ``$dynamicRef`` (``$id``, ``$anchor`` and ``$dynamicAnchor`` through
``referencing``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import attrs
import referencing
import referencing.exceptions

from ..exceptions import SchemaError
from .keywords import LIST_SUBSCHEMAS, MAP_SUBSCHEMAS, SINGLE_SUBSCHEMA
from .loading import DRAFT_VERSION, DRAFTS, detect_draft

#: The empty schema that :meth:`SchemaNode.empty_beside` puts at a place: its language is the
#: location's skeleton with every structural keyword's shape (compared by identity).
EMPTY_SCHEMA: dict[str, Any] = {}


@dataclass(frozen=True, eq=False)
class SchemaNode:
    """One subschema (a dict or a boolean) at ``ptr``, with the resolver in force there."""

    schema: Any
    ptr: str
    resolver: Any  # referencing.Resolver

    @functools.cached_property
    def key(self) -> tuple[Any, ...]:
        """The node's identity: the subschema, its base URI and its dynamic scope (computed once: the
        compiler asks each node many times)."""
        if isinstance(self.schema, dict):
            # The dynamic scope is part of the identity: it decides where a $dynamicRef lands, which
            # is the outermost resource with the anchor. So only each URI's outermost entry matters;
            # keeping just those bounds the scope, and a $ref cycle comes back to the same key.
            scope = tuple(dict.fromkeys(reversed([str(uri) for uri, _ in self.resolver.dynamic_scope()])))
            return (id(self.schema), base_uri(self), scope)
        return (bool(self.schema),)

    def beside(self, schema: Any) -> SchemaNode:
        """Another (synthetic) schema at this node's place, with its resolver."""
        return SchemaNode(schema, self.ptr, self.resolver)

    def empty_beside(self) -> SchemaNode:
        """:data:`EMPTY_SCHEMA` at this node's place."""
        return self.beside(EMPTY_SCHEMA)


def base_uri(node: SchemaNode) -> str:
    """The base URI in force at ``node``."""
    return str(node.resolver._base_uri)


def escape_pointer(part: object) -> str:
    """One JSON pointer segment (``~`` and ``/`` escaped)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def _tolerant(spec: referencing.Specification[Any], id_keyword: str) -> referencing.Specification[Any]:
    """``spec`` with an ``id_of`` that names nothing for a boolean schema or a non-string id, as the
    validators read them: referencing's drafts 4 to 7 raise on both (``"id": {...}``, a property
    misplaced beside ``type``, was a crash here). A subresource naming its own ``$schema`` gets
    referencing's spec again; :class:`SchemaDocument` then falls back from the crawl."""
    base = spec.id_of

    def id_of(contents: Any) -> str | None:
        if not isinstance(contents, dict):
            return None
        if not isinstance(contents.get(id_keyword, ""), str):
            return None
        return base(contents)

    return attrs.evolve(spec, id_of=id_of)  # type: ignore[misc]  # an attrs class without stubs


def _spec_for(draft: str) -> referencing.Specification[Any]:
    return _tolerant(DRAFTS[draft], "id" if DRAFT_VERSION[draft] <= 4 else "$id")


class SchemaDocument:
    """One schema document with its registry; navigation from node to node.

    Raises:
        SchemaError: the schema is not an object or a boolean, or the draft is unknown.
    """

    def __init__(self, schema: Any, draft: str, registry: Mapping[str, Any] | None = None) -> None:
        if not isinstance(schema, (dict, bool)):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}")
        draft = detect_draft(schema, draft) or draft  # "$schema" wins over the caller's default
        if draft not in DRAFTS:
            raise SchemaError(f"unknown draft {draft!r}; use one of {sorted(DRAFTS)}")
        self.draft = draft
        #: the draft's place in :data:`~constrain.json_schema.loading.DRAFT_VERSION` (2020-12 is 9)
        self.version = DRAFT_VERSION[draft]
        self.spec = _spec_for(draft)
        resources = []
        for uri, doc in (registry or {}).items():
            named = detect_draft(doc)
            spec = _spec_for(named) if named else self.spec
            resources.append((uri, spec.create_resource(doc)))
        root_resource = self.spec.create_resource(schema)
        root_uri = root_resource.id() or ""
        # The drafts' own metaschemas ship with jsonschema (offline), so "$ref" to them resolves.
        import jsonschema_specifications

        reg: referencing.Registry[Any] = jsonschema_specifications.REGISTRY.with_resources(resources)
        reg = reg.with_resource(root_uri, root_resource)
        if root_uri != "":
            reg = reg.with_resource("", root_resource)
        try:
            self.registry = reg.crawl()
        except (TypeError, AttributeError):
            # referencing's drafts 4 to 7 fail crawling some documents (a boolean or an array where
            # they expect a schema object); references still resolve, found as they are met.
            self.registry = reg
        self.root = SchemaNode(schema, "#", self.registry.resolver(root_uri))

    def child(self, node: SchemaNode, sub: Any, *path: object) -> SchemaNode:
        """The subschema ``sub`` found under ``node`` at ``path`` (entering its ``$id`` if it has one)."""
        ptr = node.ptr + "".join("/" + escape_pointer(p) for p in path)
        if not isinstance(sub, (dict, bool)):
            raise SchemaError(f"expected a schema (object or boolean), got {type(sub).__name__}", ptr)
        resolver = node.resolver
        if isinstance(sub, dict):
            sub_id = self.spec.id_of(sub)
            if sub_id:
                resource = referencing.Resource.from_contents(sub, default_specification=self.spec)
                resolver = resolver.in_subresource(resource)
        return SchemaNode(sub, ptr, resolver)

    def keywords(self, node: SchemaNode) -> dict[str, Any]:
        """The keywords in force: before 2019-09 a ``$ref`` hides its siblings."""
        s = node.schema
        if not isinstance(s, dict):
            return {}
        if self.version <= 7 and "$ref" in s:
            return {"$ref": s["$ref"]}
        return s

    def resolve(self, node: SchemaNode, keyword: str) -> SchemaNode:
        """The target of ``node``'s ``$ref`` or ``$dynamicRef`` (``keyword``)."""
        ref = self.keywords(node)[keyword]
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
        return SchemaNode(sub, target_ptr if "#" in ref else ref, resolved.resolver)

    def _resolve_dynamic(self, node: SchemaNode, ref: str) -> SchemaNode:
        # The resolver remembers the resources entered on the way here (the dynamic scope), and its
        # lookup of a $dynamicAnchor walks that scope as the spec says.
        try:
            resolved = node.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise SchemaError(f"cannot resolve $dynamicRef {ref!r}: {e}", node.ptr + "/$dynamicRef") from None
        sub = resolved.contents
        if not isinstance(sub, (dict, bool)):
            raise SchemaError(f"$dynamicRef {ref!r} does not point at a schema", node.ptr + "/$dynamicRef")
        return SchemaNode(sub, ref, resolved.resolver)

    def subschema_list(self, node: SchemaNode, keyword: str) -> list[Any]:
        """The array value of ``keyword`` ([] if absent; ``allOf``/``anyOf``/``oneOf`` must be non-empty)."""
        value = self.keywords(node).get(keyword)
        if value is None:
            return []
        if not isinstance(value, list) or (keyword in ("allOf", "anyOf", "oneOf") and not value):
            raise SchemaError(f"{keyword} must be a non-empty array", node.ptr + "/" + keyword)
        return value

    def subschemas(self, n: SchemaNode) -> Iterator[SchemaNode]:
        """The subschemas ``n`` applies directly: its ``$ref``/``$dynamicRef`` targets and the schemas in
        its applicator keywords."""
        k = self.keywords(n)
        for ref_kw in ("$ref", "$dynamicRef"):
            if isinstance(k.get(ref_kw), str):
                yield self.resolve(n, ref_kw)
        for kw in SINGLE_SUBSCHEMA:
            if isinstance(k.get(kw), (dict, bool)):
                yield self.child(n, k[kw], kw)
        for kw in LIST_SUBSCHEMAS:
            if isinstance(k.get(kw), list):
                for i, sub in enumerate(k[kw]):
                    if isinstance(sub, (dict, bool)):
                        yield self.child(n, sub, kw, i)
        for kw in MAP_SUBSCHEMAS:
            if isinstance(k.get(kw), dict):
                for name, sub in k[kw].items():
                    if isinstance(sub, (dict, bool)):
                        yield self.child(n, sub, kw, name)

    def reachable(self) -> Iterator[SchemaNode]:
        """Every subschema reachable from the root (through applicators and refs), each once."""
        seen: set[Any] = set()
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.key in seen or not isinstance(node.schema, dict):
                continue
            seen.add(node.key)
            yield node
            stack.extend(self.subschemas(node))

    def has_ref_cycle(self) -> bool:
        """True when following subschemas and ``$ref``/``$dynamicRef`` from the root can come back to
        a subschema on the way (a recursive schema). Static: nothing is compiled."""
        done: set[Any] = set()
        on_path: set[Any] = set()

        # Iterative depth-first search (schemas can be deep): meeting a node on the path closes a cycle.
        stack: list[tuple[SchemaNode, Iterator[SchemaNode] | None]] = [(self.root, None)]
        while stack:
            node, it = stack[-1]
            if it is None:
                if node.key in on_path:
                    return True
                if node.key in done or not isinstance(node.schema, dict):
                    stack.pop()
                    continue
                on_path.add(node.key)
                it = self.subschemas(node)
                stack[-1] = (node, it)
            nxt = next(it, None)
            if nxt is None:
                on_path.discard(node.key)
                done.add(node.key)
                stack.pop()
            else:
                stack.append((nxt, None))
        return False
