"""JSON Schema -> one byte-level DFA over the canonical serialisation of the instance.

**Canonical form.** The automaton reads JSON as ``json.dumps(value, ensure_ascii=False, separators=(",",
":"))`` writes it (whitespace: compact by default, or a bounded flexible mode), with one twist: object
keys come in the *schema's property order* at that place in the instance, then the other keys
(:mod:`.key_order`). :func:`serialize_instance` writes exactly that form.

**Keywords as set operations.** Every place in an instance has a *location* (:mod:`.locations`): the
subschemas that apply there. A subschema's language at a location is the intersection of its own
keywords' languages (``type`` with :mod:`.numbers`, :mod:`.strings`, :mod:`.arrays`, :mod:`.objects`,
``enum``/``const`` in :mod:`.values`) and its applicators' (:mod:`.applicators`), then the dependencies,
``uniqueItems`` (:mod:`.unique_items`) and ``unevaluated*`` (:mod:`.unevaluated`). Values that no schema
constrain are, by default (``max_any_depth=None``), a hole for the exact language of any JSON value; with
an int ``max_any_depth`` they are any value nested at most that deep, inlined (a finite automaton cannot
count brackets).

**Recursion.** A ``$ref`` cycle leaves *holes* (:mod:`.holes`), as unconstrained values do; the DFAs
with holes run with a stack (:mod:`constrain.masks.pushdown`) where the next byte decides every push and
pop, else as a context-free grammar for the Earley engine (:mod:`.recursion`): no depth cap.

What cannot be enforced exactly (``uniqueItems`` over an infinite item set, recursion inside
intersections, lookaround in ``pattern``) raises :class:`UnsupportedSchemaFeature` naming the keyword
and its JSON pointer, or is dropped with a warning under ``lenient=True``.

This module holds the compilation's shared state (:class:`CompileContext`) and dispatches each
subschema to the stages.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..automata.counted import CountedDFA, ImpureCountMark, counted_dfa, has_count_marks
from ..budget import budget_scope, pointer_scope
from ..budget import check as budget_check
from ..exceptions import (
    CompileBudgetExceeded,
    ConstrainError,
    UnsupportedRegexFeature,
    UnsupportedSchemaFeature,
)
from ..limits import current_limits, limits_scope
from . import holes
from .applicators import apply_applicators
from .arrays import array_language
from .holes import HoleTable, LangKey
from .key_order import serialize_value
from .keywords import OWN_KEYWORDS, SIZE_KEYWORDS, STRUCTURAL
from .loading import load_schema
from .locations import Location, Locations
from .numbers import number_language
from .objects import dependencies_language, merged_conjuncts, object_language
from .options import SchemaOptions
from .recursion import ONE_VALUE_AT_ITS_QUOTE, RecursiveLanguage, count_refusal
from .references import EMPTY_SCHEMA, SchemaDocument, SchemaNode
from .strings import string_language
from .unevaluated import unevaluated_language
from .unique_items import unique_items_language
from .values import capped_any_value, enum_language, enum_values, json_types, types_of

#: With ``max_any_depth=None``, the depth of an unconstrained value where an intersection (``allOf``,
#: ``not``, ``if``) has to inline it into a DFA.
CAPPED_DEPTH_WHEN_EXACT = 3

#: The depth :func:`schema_to_dfa` caps unconstrained values at when it is given no options.
DFA_ANY_DEPTH = 3


class CompileContext:
    """The state of compiling one schema document, passed to every stage.

    Attributes:
        options: the compile options.
        doc: the document and its references (:mod:`.references`).
        places: locations over it (:mod:`.locations`).
        ws: the whitespace allowed between tokens.
        recursive: the schema has a ``$ref`` cycle (set by :func:`compile_root`).
        outline: large languages go out of line although the schema does not recurse (the retry of
            :func:`schema_to_language` for a schema too large for one DFA).
        size_refusal: the refusal raised when a language grew past a size limit, if any.
        estimate_refusals: refuse an object early, before building it, when its values alone hold
            more states than one DFA may (the retry then keeps them out of line at once).
        holes: the holes and what the recursion-aware set operations remember (:mod:`.holes`).
        lang_memo: (node key, location key) -> language, for every language compiled so far.
        dropped: (keyword, pointer) of the keywords ``lenient=True`` dropped.
        count_past: a ``maxLength`` past this is counted beside the DFA (a count mark,
            :mod:`constrain.automata.counted`) instead of built in layers (or refused, past
            ``limits.max_counted_length``); the root is then a
            :class:`~constrain.automata.counted.CountedDFA`. None (the default): never; the token
            engine's path sets it (:func:`schema_to_language`).
        counted: (pointer, bound) of each ``maxLength`` counted so.
    """

    def __init__(
        self, schema: Any, options: SchemaOptions, registry: Mapping[str, Any] | None = None
    ) -> None:
        self.options = options
        self.doc = SchemaDocument(schema, options.draft, registry)
        self.places = Locations(self.doc)
        self.ws: A.Expr = (
            A.Literal(b"")
            if options.whitespace == "compact"
            else A.Regex(f"[ \\n]{{0,{int(options.max_whitespace)}}}")
        )
        self.recursive = False
        self.outline = False
        self.size_refusal: UnsupportedSchemaFeature | None = None
        self.estimate_refusals = True
        self.refused_on_estimate = False
        self._outline_possible: bool | None = None
        self.holes = HoleTable()
        self.lang_memo: dict[LangKey, DFA] = {}
        self.dropped: list[tuple[str, str]] = []
        self.count_past: int | None = None
        self.counted: list[tuple[str, int]] = []
        self.synthetic: list[Any] = []  # synthetic schemas stay alive: node keys use id()
        self._active: set[LangKey] = set()

    def unsupported(self, keyword: str, ptr: str, detail: str = "") -> None:
        """Raise :class:`UnsupportedSchemaFeature`, or record the dropped keyword under ``lenient``."""
        if self.options.lenient:
            self.dropped.append((keyword, ptr))
            return
        raise UnsupportedSchemaFeature(keyword, ptr, detail)

    def _dropping(self, node: SchemaNode, keyword: str) -> SchemaNode | None:
        """Under ``lenient``: ``node`` without ``keyword``, whose automaton grew past a size limit
        (recorded as dropped, for the warning); None where it cannot be dropped (not a size keyword)."""
        schema = node.schema
        if keyword not in _BLAMED or not isinstance(schema, dict) or keyword not in schema:
            return None
        self.dropped.append((keyword, f"{node.ptr}/{keyword}"))
        looser = {k: v for k, v in schema.items() if k != keyword}
        self.synthetic.append(looser)  # kept alive: node keys use id()
        return node.beside(looser)

    def reset_attempt(self) -> None:
        """Forget the refused attempt's state (what was being compiled, the refusal); keep the
        languages it finished, and the keywords ``lenient`` dropped in them (the warning names them)."""
        self._active.clear()
        self.size_refusal = None

    def outline_possible(self) -> bool:
        """Whether a schema too large for one DFA can keep its large languages out of line instead:
        values exact at any depth (a network is run anyway), no recursion (it has its own holes), and
        no product that would fill the holes back in (:func:`.holes.products_meet_holes`)."""
        if self.recursive or not self.exact_any:
            return False
        if self._outline_possible is None:
            self._outline_possible = not holes.products_meet_holes(self)
        return self._outline_possible

    def too_large_to_inline(self, node: SchemaNode, keyword: str, states: int) -> None:
        """Refuse ``node`` early when its parts hold more than ``max_dfa_states`` states and the schema
        can keep them out of line instead (:func:`schema_to_language` retries): building the DFA only
        to hit the limit would cost seconds."""
        most = current_limits().max_dfa_states
        if states <= most or self.outline or not self.estimate_refusals:
            return
        if self.outline_possible():
            detail = f"its parts hold {states} automaton states, more than {most} for one DFA"
            self.size_refusal = UnsupportedSchemaFeature(keyword, f"{node.ptr}/{keyword}", detail)
            self.refused_on_estimate = True
            raise self.size_refusal

    def sep(self, count: int) -> A.Expr:
        """What comes before an item or member after ``count`` others: nothing, or a comma."""
        return A.Literal(b"") if count == 0 else A.seq(self.ws, A.Literal(b","), self.ws)

    def bracketed(self, open_: bytes, item: A.Expr, close: bytes) -> A.Expr:
        """``open_ (item (, item)*)? close``: an array or object of any length."""
        sep = A.seq(self.ws, A.Literal(b","), self.ws)
        items = A.Repeat(A.seq(item, A.Repeat(A.seq(sep, item), 0, None)), 0, 1)
        return A.seq(A.Literal(open_), self.ws, items, self.ws, A.Literal(close))

    def intersect(self, *dfas: DFA) -> DFA:
        """Intersection, exact over holes where it can be (:func:`.holes.intersect`)."""
        return holes.intersect(self, *dfas)

    def difference(self, a: DFA, b: DFA) -> DFA:
        """Difference, exact over holes where it can be (:func:`.holes.difference`)."""
        return holes.difference(self, a, b)

    @property
    def exact_any(self) -> bool:
        """Unconstrained values are exact at any depth (``max_any_depth=None``): a hole, like recursion."""
        return self.options.max_any_depth is None

    @property
    def capped_depth(self) -> int:
        """The depth an unconstrained value is capped at where it is inlined in a DFA."""
        depth = self.options.max_any_depth
        return CAPPED_DEPTH_WHEN_EXACT if depth is None else depth

    def any_value(self, depth: int) -> DFA:
        """Any canonical JSON value nested at most ``depth`` deep (keys in any order); in a recursive
        schema, or with ``max_any_depth=None``, the hole for any JSON value at all."""
        if self.recursive or self.exact_any:
            return holes.any_value_hole(self)
        return capped_any_value(self, depth)

    def skeleton(self, loc: Location) -> DFA:
        """Every canonical value at ``loc``: the universe for ``not`` and ``else``."""
        if not loc.nodes:
            return self.any_value(self.capped_depth)
        if not any(STRUCTURAL & self.doc.keywords(n).keys() for n in loc.nodes):
            # No schema here shapes keys or items: the skeleton is one level of "any value" more.
            return self.any_value(self.capped_depth + 1)
        return self.lang(loc.nodes[0].empty_beside(), loc)

    def lang(self, node: SchemaNode, loc: Location) -> DFA:
        """The DFA of ``node``'s constraints for a value at ``loc`` (a hole where it recurses)."""
        key = (node.key, loc.key)
        got = self.lang_memo.get(key)
        if got is not None:
            return holes.out_of_line(self, key, node, got)
        if key in self._active:
            return holes.hole_for(self, key, node)
        self._active.add(key)
        looser: SchemaNode | None = None
        refusal: UnsupportedSchemaFeature | None = None
        try:
            with pointer_scope(node.ptr):
                budget_check("the subschema")
                dfa = _node_language(self, node, loc)
        except UnsupportedRegexFeature as e:
            if e.pattern.startswith(("object at", "array at", "contains at", "<")):
                # An automaton size limit, hit while combining this subschema's parts.
                keyword = next((kw for kw in _BLAMED if kw in self.doc.keywords(node)), "type")
                refusal = UnsupportedSchemaFeature(keyword, f"{node.ptr}/{keyword}", str(e))
                looser = self._dropping(node, keyword) if self.options.lenient else None
                if looser is None:
                    self.size_refusal = refusal
                    raise refusal from None
            else:
                raise
        finally:
            self._active.discard(key)
        if looser is not None and refusal is not None:
            # lenient: the subschema without the keyword that blew up, unless that is too large too
            try:
                dfa = self.lang(looser, loc)
            except UnsupportedSchemaFeature as again:
                if isinstance(again, CompileBudgetExceeded):
                    raise
                refusal.args = (f"{refusal} (lenient: without it, still too large: {again.detail})",)
                raise refusal from None
        self.lang_memo[key] = dfa
        out = holes.out_of_line(self, key, node, dfa)
        holes.note_bare_type(self, node, out)
        return out


#: Where a subschema's automaton grows past a size limit, the first of these it has is blamed (and
#: dropped under ``lenient``): the combining keywords, then the counting ones (``type`` otherwise).
_BLAMED = (
    *SIZE_KEYWORDS,
    "maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties", "maxContains",
    "minContains", "multipleOf", "format", "pattern", "propertyNames", "contains",
)  # fmt: skip


def _node_language(ctx: CompileContext, node: SchemaNode, loc: Location) -> DFA:
    if node.schema is True:
        return ctx.skeleton(loc)
    if node.schema is False:
        return empty_dfa("false")
    k = ctx.doc.keywords(node)
    # allOf subschemas with only object keywords are built into this node's object (no product)
    merged = merged_conjuncts(ctx, node, k)
    # A bare "type" beside applicators is kept as the first bytes it allows: the applicators' values
    # already lie in this location's skeleton, so cutting their first bytes is the intersection, and
    # it needs no product against holes.
    type_first = None if merged else holes.bare_type_first_bytes(ctx, node, k)
    # None stands for "every value at this location" until a complement needs it spelled out.
    merged_nodes = [m for _, m in merged]
    result = None if type_first is not None else own_language(ctx, node, k, loc, merged_nodes)
    result = apply_applicators(ctx, node, k, loc, result, {i for i, _ in merged})
    result = dependencies_language(ctx, node, k, loc, result)
    if k.get("uniqueItems") is True:
        result = unique_items_language(ctx, node, k, loc, result if result is not None else ctx.skeleton(loc))
    for unevaluated in ("unevaluatedProperties", "unevaluatedItems"):
        if unevaluated in k:
            result = unevaluated_language(ctx, node, k, loc, unevaluated, result)
    if type_first is not None:
        cut = holes.cut_first_bytes(ctx, result, type_first) if result is not None else None
        if cut is not None:
            return cut
        own = own_language(ctx, node, k, loc)
        assert own is not None  # "type" is an own keyword
        return own if result is None else ctx.intersect(own, result)
    return result if result is not None else ctx.skeleton(loc)


def own_language(
    ctx: CompileContext,
    node: SchemaNode,
    k: dict[str, Any],
    loc: Location,
    merged: Sequence[SchemaNode] = (),
) -> DFA | None:
    """The language of ``node``'s own keywords (``type``, ``enum``, ``const`` and the per-type
    keywords) at ``loc``, its objects with the ``merged`` subschemas' object keywords
    (:func:`~constrain.json_schema.objects.merged_conjuncts`); None when it has none."""
    if node.schema is not EMPTY_SCHEMA and not (OWN_KEYWORDS & k.keys()) and not merged:
        return None
    values = enum_values(ctx, node, k)
    types = types_of(node, k)
    if values is not None:
        # Only the enum's own types matter (and building the others could need recursion).
        present = {t for v in values for t in json_types(v)}
        types = [t for t in types if t in present]
    parts: list[DFA] = []
    for t in types:
        if t == "null":
            parts.append(A.engine_regex_dfa("null"))
        elif t == "boolean":
            parts.append(A.engine_regex_dfa("true|false"))
        elif t in ("number", "integer"):
            parts.append(number_language(ctx, node, k, integer=t == "integer"))
        elif t == "string":
            parts.append(string_language(ctx, node, k))
        elif t == "array":
            parts.append(array_language(ctx, node, k, loc))
        elif t == "object":
            parts.append(object_language(ctx, node, k, loc, merged))
    result = A.union(*parts) if parts else empty_dfa("no type")
    if values is not None:
        result = ctx.intersect(result, enum_language(ctx, values, loc))
    return result


def compile_root(ctx: CompileContext) -> DFA | RecursiveLanguage | CountedDFA:
    """The DFA of the whole schema, or DFAs with holes where ``$ref`` recurses; with
    ``ctx.count_past``, a :class:`CountedDFA` where a ``maxLength`` is counted beside the DFA."""
    root = ctx.doc.root
    loc = ctx.places.of([root])
    with contextlib.suppress(ConstrainError):  # a broken $ref: compiling reports it where it is met
        ctx.recursive = ctx.doc.has_ref_cycle()
    dfa = ctx.lang(root, loc)
    if ctx.dropped:
        listed = ", ".join(f"{kw} at {ptr}" for kw, ptr in dict.fromkeys(ctx.dropped))  # once each
        warnings.warn(f"lenient=True dropped keywords it cannot enforce: {listed}", UserWarning, stacklevel=3)
    out = holes.finish(ctx, dfa)
    return _take_out_count_marks(ctx, out) if ctx.counted else out


def _take_out_count_marks(
    ctx: CompileContext, out: DFA | RecursiveLanguage
) -> DFA | RecursiveLanguage | CountedDFA:
    """The root with its count marks taken out (:func:`~constrain.automata.counted.counted_dfa`), or
    the refusal of the first counted ``maxLength`` where that cannot be exact."""
    if isinstance(out, RecursiveLanguage):
        if not any(has_count_marks(d) for d in (out.root, *out.holes.values())):
            return out
        return replace(out, counted=tuple(ctx.counted))  # the stack engine counts (build_automaton)
    if not has_count_marks(out):
        return out  # the counted strings were cut away (a false branch, a disjoint allOf)
    try:
        return counted_dfa(out)
    except ImpureCountMark:
        raise count_refusal(ctx.counted, ONE_VALUE_AT_ITS_QUOTE) from None


def has_ref_cycle(schema: Any, registry: Mapping[str, Any] | None = None, draft: str = "2020-12") -> bool:
    """True when following subschemas and ``$ref``/``$dynamicRef`` from the root can come back to a
    subschema on the way (a recursive schema). Static: nothing is compiled."""
    return SchemaDocument(load_schema(schema), draft, registry).has_ref_cycle()


def schema_to_language(
    schema: Any,
    options: SchemaOptions | None = None,
    registry: Mapping[str, Any] | None = None,
    *,
    count_past: int | None = None,
) -> DFA | RecursiveLanguage | CountedDFA:
    """Compile a JSON Schema: one DFA, or DFAs with holes where ``$ref`` recurses (see ``recursion``).

    ``count_past``: count a ``maxLength`` past this beside the DFA (a
    :class:`~constrain.automata.counted.CountedDFA` comes back) instead of building its layers (past
    ``limits.max_counted_length``: instead of refusing it); for the token engine, which enforces the
    count. Under ``lenient`` nothing is counted (bounds too large for layers are dropped)."""
    loaded = load_schema(schema)
    ctx = CompileContext(loaded, options or SchemaOptions(), registry)
    ctx.count_past = None if ctx.options.lenient else count_past
    try:
        with budget_scope(), limits_scope(ctx.options.limits):  # caller's budget or the default one
            try:
                return compile_root(ctx)
            except UnsupportedSchemaFeature as refusal:
                # Too large for one DFA: where values are exact at any depth anyway (a network is
                # fine) and no product would fill holes back in, keep the large languages out of line.
                if refusal is not ctx.size_refusal or not ctx.outline_possible():
                    raise
                estimated = ctx.refused_on_estimate
                # The same context: the languages built so far are reused, put out of line as met.
                ctx.outline = True
                ctx.reset_attempt()
                try:
                    return compile_root(ctx)
                except UnsupportedSchemaFeature as again:
                    if not estimated or again is not ctx.size_refusal:
                        raise  # what stops the network: another keyword, the budget, its own size
                # The early refusal was an estimate, and out of line is too large as well: build the
                # one DFA after all (its own refusal, if any, names where it outgrew the limit).
                inline = CompileContext(loaded, ctx.options, registry)
                inline.estimate_refusals = False
                inline.count_past = ctx.count_past
                return compile_root(inline)
    except RecursionError:
        raise UnsupportedSchemaFeature("$ref", "#", "schema nesting too deep") from None


def schema_to_dfa(
    schema: Any, options: SchemaOptions | None = None, registry: Mapping[str, Any] | None = None
) -> DFA:
    """Compile a JSON Schema to the DFA of its canonical serialisations.

    A finite automaton cannot count brackets, so unconstrained values (``{}``) are capped: with no
    ``options``, at depth :data:`DFA_ANY_DEPTH`; with ``options``, at their ``max_any_depth``, which
    must then be an int for a schema that has such values.

    Raises:
        UnsupportedSchemaFeature: no finite automaton exists: the schema recurses (``$ref`` cycles;
            :func:`constrain.compile` takes it through a stack or the context-free engine), or it has
            unconstrained values and ``options.max_any_depth`` is ``None``.
    """
    options = options or SchemaOptions(max_any_depth=DFA_ANY_DEPTH)
    got = schema_to_language(schema, options, registry)
    if isinstance(got, DFA):
        return got
    if isinstance(got, CountedDFA):  # pragma: no cover - schema_to_language counts only when asked
        raise AssertionError("count marks in schema_to_dfa")
    if options.max_any_depth is None:
        capped = replace(options, max_any_depth=DFA_ANY_DEPTH)
        if not isinstance(schema_to_language(schema, capped, registry), RecursiveLanguage):
            raise UnsupportedSchemaFeature(
                "max_any_depth",
                "",
                "unconstrained values at any depth have no finite automaton; "
                "set max_any_depth to an int to cap them",
            )
    first = min(got.pointers)
    raise UnsupportedSchemaFeature(
        "$ref", got.pointers[first], "recursive schema: no finite automaton; use constrain.compile"
    )


def serialize_instance(
    instance: Any,
    schema: Any,
    *,
    registry: Mapping[str, Any] | None = None,
    options: SchemaOptions | None = None,
) -> str:
    """The canonical compact text of ``instance`` that the schema's automaton reads."""
    ctx = CompileContext(load_schema(schema), options or SchemaOptions(), registry)
    return serialize_value(ctx, instance, ctx.places.of([ctx.doc.root]))


__all__ = [
    "CompileContext",
    "ConstrainError",
    "RecursiveLanguage",
    "SchemaOptions",
    "compile_root",
    "has_ref_cycle",
    "load_schema",
    "own_language",
    "schema_to_dfa",
    "schema_to_language",
    "serialize_instance",
]
