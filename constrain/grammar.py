"""``Grammar``: what the user wants the output to look like, before it meets a tokenizer.

A grammar is a small immutable description: a regex, a JSON Schema or a Lark grammar.
:func:`constrain.compile` turns it, together with a :class:`~constrain.TokenizerInfo`, into a
:class:`~constrain.CompiledGrammar`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .automata import DFA, regex_to_dfa
from .automata.counted import CountedDFA
from .automata.regex import ascii_by_default
from .budget import CompileBudget, as_budget, budget_scope
from .caches import bounded_cache
from .exceptions import (
    CompileBudgetExceeded,
    ConstrainError,
    EmptyGrammarError,
    EmptyLanguageError,
    GrammarError,
    InvalidInputError,
    SchemaError,
    UnsupportedSchemaFeature,
)
from .limits import DEFAULT_LIMITS, Limits, current_limits, limits_scope
from .validation import check_choice, check_type, checked_arguments

if TYPE_CHECKING:
    from .cfg.earley import EarleyAutomaton
    from .json_schema.recursion import CountedPushdown
    from .masks.pushdown import PushdownAutomaton

_ALLOWED_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE | re.VERBOSE | re.MULTILINE


@dataclass(frozen=True)
class Grammar:
    """An output language. Build one with a ``from_*`` constructor.

    Attributes:
        kind: ``"regex"``, ``"json_schema"`` or ``"lark"``.
        source: the pattern text, the schema as canonical JSON text, or the Lark grammar text.
        flags: ``re`` flags for a regex.
        options: the compile options of a JSON Schema, as sorted ``(name, value)`` pairs; for a Lark
            grammar ``start`` (the start rule) and ``import_dir`` (where relative imports resolve).
    """

    kind: str
    source: str
    flags: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    @checked_arguments
    def from_regex(cls, pattern: str, flags: int | re.RegexFlag = 0) -> Grammar:
        """A regular expression in Python ``re`` syntax; the whole output must match.

        ``\\d``, ``\\w``, ``\\s`` and case-insensitive matching are ASCII unless ``flags`` holds
        ``re.UNICODE`` (or the pattern an inline ``(?u)``): the output is what
        ``re.fullmatch(pattern, text, flags | re.ASCII)`` accepts, as in JSON Schema's ECMA-262
        ``pattern`` (a Unicode ``\\d`` lets a model write a year in Braille digits). The grammar's
        ``flags`` record the choice.

        The pattern is parsed here, so syntax errors and unsupported constructs (lookaround,
        backreferences, word boundaries) raise immediately.

        Raises:
            InvalidInputError: ``pattern`` is not a ``str`` or ``flags`` not an ``int``.
            RegexSyntaxError: the pattern does not parse.
            UnsupportedRegexFeature: the pattern uses a construct no finite automaton can enforce.
            EmptyLanguageError: the pattern matches no string at all (``[^\\s\\S]``).
        """
        if not isinstance(pattern, str):
            raise InvalidInputError(f"Grammar.from_regex expects a str pattern, got {type(pattern).__name__}")
        check_type("Grammar.from_regex", "flags", flags, int, "re flags (an int such as re.IGNORECASE)")
        grammar = cls("regex", pattern, ascii_by_default(pattern, int(flags)))
        dfa = grammar.to_dfa()  # validate now, not at first use
        if not dfa.accepting.any():
            raise EmptyLanguageError(f"regex {pattern!r:.200} matches no string")
        return grammar

    @classmethod
    @checked_arguments
    def from_json_schema(
        cls,
        schema: Any,
        *,
        registry: Mapping[str, Any] | None = None,
        draft: str = "2020-12",
        formats: str = "assert",
        lenient: bool = False,
        whitespace: str = "compact",
        max_whitespace: int = 2,
        max_any_depth: int | None = None,
        property_order: str = "schema",
        limits: Limits | None = None,
        budget: CompileBudget | float | None = None,
    ) -> Grammar:
        """A JSON Schema (a dict, a boolean, JSON text as ``str`` or ``bytes``, a path, or a pydantic
        model class; :func:`constrain.json_schema.load_schema` reads it).

        The output is the instance in canonical form: compact JSON (or, with ``whitespace="flexible"``,
        up to ``max_whitespace`` spaces or newlines between tokens), object keys in the schema's
        property order then any others; see :mod:`constrain.json_schema.compiler`.

        Args:
            registry: URI -> schema document, for remote ``$ref``s (nothing is fetched).
            draft: the draft to assume when the schema has no ``$schema``: "2020-12", "2019-09", "7",
                "6" or "4".
            formats: "assert" enforces ``format``; "annotate" ignores it (the spec's default).
            lenient: drop keywords that cannot be enforced exactly, with a warning listing them,
                instead of raising :class:`~constrain.exceptions.UnsupportedSchemaFeature`.
            max_any_depth: how deep values that no schema constrains (``{}``, ``"type": "object"``
                alone) may nest. ``None`` (the default): any depth, exactly; such values are holes
                (as a recursive schema's ``$ref``s are), run with a stack or by the Earley engine
                (bench/README.md, "Exact any value"); where ``allOf``/``not``/``if`` meets such a
                value it is still capped, at depth 3. An int caps them everywhere, so that a schema
                without ``$ref`` cycles has one DFA (:meth:`to_dfa`).
            property_order: "schema" (named keys in the schema's order, then the others) or "any"
                (any order, for objects that name at most 4 keys; larger ones keep the schema order).
            limits: the size limits of this compile (:class:`constrain.limits.Limits`: automaton
                states, counted repeats, enumerated arrays...); default
                :data:`~constrain.limits.DEFAULT_LIMITS`. Part of the grammar (two limits, two cache
                entries).
            budget: bounds this compile (a :class:`~constrain.CompileBudget` or CPU seconds; default:
                the open :func:`~constrain.budget_scope`, else 7 s); past it
                :class:`~constrain.exceptions.CompileBudgetExceeded`. Not part of the grammar.

        The schema (and every ``registry`` document) is first checked against its draft's
        metaschema with ``jsonschema``, so a malformed one is refused with the keyword and JSON pointer
        to fix (``{"required": [1]}``: ``required`` at ``/required/0``) before anything is compiled.

        Raises:
            InvalidInputError: an option has the wrong type or value (the message names it).
            SchemaError: the schema is malformed: not JSON, not valid against its metaschema, a
                dangling ``$ref``... (``pointer`` and ``keyword`` say where and what).
            UnsupportedSchemaFeature: a keyword cannot be enforced exactly (keyword and pointer).
            EmptyLanguageError: no JSON value is valid (``{"enum": []}``, a contradictory ``allOf``);
                ``pointer`` names where the language became empty, as closely as can be told.
        """
        from .json_schema import SchemaOptions, load_schema
        from .json_schema.loading import DRAFTS, as_json_value, check_schema, detect_draft

        where = "Grammar.from_json_schema"
        if isinstance(draft, int) and not isinstance(draft, bool):
            draft = str(draft)  # draft=7 means "7"
        check_choice(where, "draft", draft, tuple(DRAFTS))
        check_choice(where, "formats", formats, ("assert", "annotate"))
        check_type(where, "lenient", lenient, bool, "True or False")
        check_choice(where, "whitespace", whitespace, ("compact", "flexible"))
        check_type(where, "max_whitespace", max_whitespace, int, "an int")
        if max_any_depth is not None:
            check_type(where, "max_any_depth", max_any_depth, int, "an int or None")
        if not 0 <= max_whitespace <= _MAX_WHITESPACE:
            raise InvalidInputError(
                f"{where}: max_whitespace must be in 0..{_MAX_WHITESPACE}, got {max_whitespace}"
            )
        if max_any_depth is not None and not 0 <= max_any_depth <= _MAX_ANY_DEPTH:
            raise InvalidInputError(
                f"{where}: max_any_depth must be in 0..{_MAX_ANY_DEPTH}, got {max_any_depth}"
            )
        check_choice(where, "property_order", property_order, ("schema", "any"))
        if limits is not None and not isinstance(limits, Limits):
            raise InvalidInputError(
                f"{where}: limits must be a constrain.limits.Limits, got {type(limits).__name__}"
            )
        if registry is not None and not isinstance(registry, Mapping):
            raise InvalidInputError(
                f"{where}: registry must map URIs to schema documents, got {type(registry).__name__}"
            )

        doc = as_json_value(load_schema(schema))
        if not isinstance(doc, (dict, bool)):
            raise SchemaError(f"a schema is a JSON object or a boolean, got JSON {type(doc).__name__}")
        check_schema(doc, draft)
        docs: dict[str, Any] = {}
        for uri, d in (registry or {}).items():
            if not isinstance(uri, str):
                raise InvalidInputError(f"{where}: registry keys are URIs (str), got {uri!r:.80}")
            docs[uri] = as_json_value(
                load_schema(d) if not isinstance(d, str) else d, f"registry document {uri}"
            )
            if not isinstance(docs[uri], (dict, bool)):
                raise SchemaError(f"registry document {uri!r} is not a schema (an object or a boolean)")
            # Only a document that names its draft is checked: remote documents are often written for
            # another draft than the root's, without saying so.
            if detect_draft(docs[uri]) is None:
                continue
            try:
                check_schema(docs[uri], draft)
            except SchemaError as e:
                detail = str(e).rsplit(" (at ", 1)[0]
                raise SchemaError(f"registry document {uri!r}: {detail}", e.pointer, e.keyword) from None
        opts = SchemaOptions(
            draft=draft,
            formats=formats,
            lenient=lenient,
            whitespace=whitespace,
            max_whitespace=max_whitespace,
            max_any_depth=max_any_depth,
            property_order=property_order,
            limits=limits or DEFAULT_LIMITS,
        )
        reg = tuple(sorted((uri, json.dumps(d, sort_keys=True)) for uri, d in docs.items()))
        options = tuple(sorted((*opts.pairs(), ("registry", reg))))
        grammar = cls("json_schema", json.dumps(doc, ensure_ascii=False), 0, options)
        try:
            with budget_scope(as_budget(budget, f"{where}: budget")):
                automaton = grammar.to_automaton()  # compile now: errors surface here, and it is cached
        except GrammarError as e:
            if "generates no string" not in str(e):
                raise
            # The context-free engine found that the start symbol derives nothing (a recursion that
            # never bottoms out, such as a required property whose schema is the object itself).
            raise EmptyLanguageError(
                "no JSON value is valid against the schema: its language is empty", ""
            ) from None
        if isinstance(automaton, CountedDFA):
            automaton = automaton.dfa
        if isinstance(automaton, DFA) and not automaton.accepting.any():
            pointer = _where_empty(doc, opts, docs)
            raise EmptyLanguageError(
                "no JSON value is valid against the schema: its language is empty", pointer
            )
        return grammar

    @classmethod
    @checked_arguments
    def from_lark(
        cls,
        text_or_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        start: str = "start",
    ) -> Grammar:
        """A Lark grammar: EBNF text, a path to a ``.lark`` file, or ``name=`` of a shipped grammar.

        Lark itself parses the grammar (``%import common.*``, templates, ``?rule``, ``%ignore``), so
        a grammar means what it means in Lark; the output may be any string Lark's Earley parser
        accepts with ``lexer="dynamic_complete"`` (see :mod:`constrain.cfg.earley`).

        Raises:
            InvalidInputError: the arguments have the wrong types, or the file cannot be read.
            GrammarError: Lark rejects the grammar (``line`` and ``column`` locate the problem), or
                the start rule derives no string.
            UnsupportedFeatureError: a terminal uses lookaround or has no pattern (``%declare``).
        """
        from .cfg import automaton_for, read_grammar_text

        check_type("Grammar.from_lark", "start", start, str, "the name of a rule (a str)")
        if name is not None:
            check_type("Grammar.from_lark", "name", name, str, "the name of a shipped grammar (a str)")
        text, import_dir = read_grammar_text(text_or_path, name)
        options = (("import_dir", import_dir or ""), ("start", str(start)))
        try:
            automaton_for(text, str(start), import_dir or "")  # validate now: errors surface here
        except GrammarError as e:
            if "generates no string" not in str(e) or isinstance(e, EmptyGrammarError):
                raise
            hit = re.search(rf"^[ \t]*[?!]?{re.escape(str(start))}\b", text, re.MULTILINE)
            line = text.count("\n", 0, hit.start()) + 1 if hit else None
            raise EmptyGrammarError(
                f"rule {start!r} derives no string: every expansion needs itself or a rule that derives "
                "nothing (the grammar's language is empty)",
                line,
                1 if hit else None,
            ) from None
        return cls("lark", text, 0, options)

    def schema_options(self) -> dict[str, Any]:
        """The JSON Schema compile options as a dict (registry decoded)."""
        opts = dict(self.options)
        opts["registry"] = {uri: json.loads(text) for uri, text in opts.get("registry", ())}
        return opts

    def to_dfa(self) -> DFA:
        """The byte-level DFA of this grammar (cached).

        Raises:
            InvalidInputError: the language is context-free (a Lark grammar, a JSON Schema whose
                ``$ref``s recurse, or one with unconstrained values under ``max_any_depth=None``, the
                default); use :meth:`to_automaton`, or cap such values with an int ``max_any_depth``.
        """
        got = self.to_automaton()
        if isinstance(got, CountedDFA):
            raise InvalidInputError(
                f"this {self.kind} grammar counts a long maxLength beside its automaton: it has no single "
                "DFA (constrain.compile enforces it)"
            )
        if not isinstance(got, DFA):
            hint = ""
            if self.kind == "json_schema" and self.schema_options().get("max_any_depth") is None:
                hint = " (if its only holes are unconstrained values, max_any_depth=3 gives a DFA)"
            raise InvalidInputError(f"this {self.kind} grammar is context-free: it has no single DFA{hint}")
        return got

    def to_automaton(self) -> DFA | CountedDFA | EarleyAutomaton | PushdownAutomaton | CountedPushdown:
        """The grammar's automaton (cached): a byte DFA for regular languages, a DFA network run with a
        stack for a JSON Schema with holes whose every push and pop the next byte decides
        (:mod:`constrain.masks.pushdown`), else the Earley configuration automaton of :mod:`constrain.cfg`
        (Lark grammars, other recursive JSON Schemas); a JSON Schema with a ``maxLength`` counted beside
        the automaton (past ``json_schema.strings.COUNT_PAST``) gives a
        :class:`~constrain.automata.counted.CountedDFA` or ``CountedPushdown``."""
        if self.kind == "regex":
            return regex_to_dfa(self.source, self.flags)
        if self.kind == "json_schema":
            return _json_schema_automaton(self)
        if self.kind == "lark":
            from .cfg import automaton_for

            opts = dict(self.options)
            return automaton_for(
                self.source, str(opts.get("start", "start")), str(opts.get("import_dir", ""))
            )
        raise InvalidInputError(f"unknown grammar kind {self.kind!r}")


_MAX_WHITESPACE = 64  # more spaces between two tokens only lets a model ramble
_MAX_ANY_DEPTH = 64  # unconstrained values nested deeper are rarely wanted and cost states per level


def _where_empty(doc: Any, options: Any, registry: Mapping[str, Any]) -> str:
    """The JSON pointer where a schema's language became empty, as closely as can be told (the root
    ``""`` at least): the language of every subschema is compiled again, and the walk goes down from the
    root through empty subschemas that make their parent empty (an ``allOf`` member, a required
    property), to a ``false``, an empty ``enum`` or ``type``, or the subschema whose keywords
    contradict each other."""
    import warnings

    from .json_schema.compiler import CompileContext, compile_root

    ctx = CompileContext(doc, options, registry)
    try:
        with warnings.catch_warnings(), limits_scope(options.limits):
            warnings.simplefilter("ignore")
            compile_root(ctx)
    except (ConstrainError, RecursionError):
        return ""
    pointers: dict[int, str] = {}

    def walk(node: Any, ptr: str) -> None:
        if isinstance(node, dict):
            pointers.setdefault(id(node), ptr)
            for k, v in node.items():
                walk(v, f"{ptr}/{_escape(k)}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{ptr}/{i}")

    walk(doc, "")
    empty = set()
    for (node_key, _loc), dfa in ctx.lang_memo.items():
        if isinstance(node_key, tuple) and len(node_key) == 3 and not dfa.accepting.any():
            ptr = pointers.get(node_key[0])
            if ptr is not None:
                empty.add(ptr)
    return _descend(doc, "", empty)


def _descend(schema: Any, ptr: str, empty: set[str]) -> str:
    if not isinstance(schema, dict):
        return ptr  # false
    for keyword in ("enum", "type"):
        if schema.get(keyword) == []:
            return f"{ptr}/{keyword}"
    if schema.get("not") is True or schema.get("not") == {}:
        return f"{ptr}/not"
    members = schema.get("allOf")
    if isinstance(members, list):
        for i, sub in enumerate(members):
            if f"{ptr}/allOf/{i}" in empty or sub is False:
                return _descend(sub, f"{ptr}/allOf/{i}", empty)
    properties = schema.get("properties")
    required = schema.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        for name in required:
            sub_ptr = f"{ptr}/properties/{_escape(str(name))}"
            if name in properties and (sub_ptr in empty or properties[name] is False):
                return _descend(properties[name], sub_ptr, empty)
    for keyword in ("anyOf", "oneOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list) and all(
            f"{ptr}/{keyword}/{i}" in empty or b is False for i, b in enumerate(branches)
        ):
            return f"{ptr}/{keyword}"
    return ptr


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@bounded_cache(maxsize=128, name="json_schema_automaton")
def _json_schema_automaton(
    grammar: Grammar,
) -> DFA | CountedDFA | EarleyAutomaton | PushdownAutomaton | CountedPushdown:
    from .json_schema import SchemaOptions, schema_to_language
    from .json_schema.recursion import build_automaton
    from .json_schema.strings import COUNT_PAST, COUNTED

    registry = grammar.schema_options()["registry"]
    options = SchemaOptions.from_pairs(grammar.options)
    schema = json.loads(grammar.source)

    def automaton(
        count_past: int,
    ) -> DFA | CountedDFA | EarleyAutomaton | PushdownAutomaton | CountedPushdown:
        got = schema_to_language(schema, options, registry, count_past=count_past)
        return got if isinstance(got, (DFA, CountedDFA)) else build_automaton(got)

    with limits_scope(options.limits):  # the schema's limits reach the automata it builds (constrain.limits)
        layered = current_limits().max_counted_length
        first = min(COUNT_PAST, layered)
        try:
            return automaton(first)
        except UnsupportedSchemaFeature as refusal:
            if first == layered or COUNTED not in str(refusal) or isinstance(refusal, CompileBudgetExceeded):
                raise
        # A counted maxLength that a product or a union at its quote meets: layers where they fit.
        return automaton(layered)
