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
from .caches import bounded_cache
from .exceptions import InvalidInputError

if TYPE_CHECKING:
    from .cfg.earley import EarleyAutomaton

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
    def from_regex(cls, pattern: str, flags: int | re.RegexFlag = 0) -> Grammar:
        """A regular expression in Python ``re`` syntax; the whole output must match (``re.fullmatch``).

        The pattern is parsed here, so syntax errors and unsupported constructs (lookaround,
        backreferences, word boundaries) raise immediately.

        Raises:
            RegexSyntaxError: the pattern does not parse.
            UnsupportedRegexFeature: the pattern uses a construct no finite automaton can enforce.
        """
        if not isinstance(pattern, str):
            raise InvalidInputError(f"Grammar.from_regex expects a str pattern, got {type(pattern).__name__}")
        grammar = cls("regex", pattern, int(flags))
        grammar.to_dfa()  # validate now, not at first use
        return grammar

    @classmethod
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
        max_any_depth: int = 3,
        property_order: str = "schema",
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
            max_any_depth: how deep values that no schema constrains may nest (in a recursive
                schema they are exact at any depth where no intersection meets them).
            property_order: "schema" (named keys in the schema's order, then the others) or "any"
                (any order, for objects that name at most 4 keys; larger ones keep the schema order).

        Raises:
            SchemaError: the schema is malformed (the message has its JSON pointer).
            UnsupportedSchemaFeature: a keyword cannot be enforced exactly (keyword and pointer).
        """
        from .json_schema import SchemaOptions, load_schema

        doc = load_schema(schema)
        opts = SchemaOptions(
            draft=str(draft),
            formats=formats,
            lenient=bool(lenient),
            whitespace=whitespace,
            max_whitespace=int(max_whitespace),
            max_any_depth=int(max_any_depth),
            property_order=property_order,
        )
        reg = tuple(sorted((uri, json.dumps(d, sort_keys=True)) for uri, d in (registry or {}).items()))
        options = tuple(sorted((*opts.pairs(), ("registry", reg))))
        grammar = cls("json_schema", json.dumps(doc, ensure_ascii=False), 0, options)
        grammar.to_automaton()  # compile now: errors surface here, and the automaton is cached
        return grammar

    @classmethod
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
            GrammarError: Lark rejects the grammar (``line`` and ``column`` locate the problem).
            UnsupportedFeatureError: a terminal uses lookaround or has no pattern (``%declare``).
        """
        from .cfg import automaton_for, read_grammar_text

        text, import_dir = read_grammar_text(text_or_path, name)
        options = (("import_dir", import_dir or ""), ("start", str(start)))
        automaton_for(text, str(start), import_dir or "")  # validate now: errors surface here
        return cls("lark", text, 0, options)

    def schema_options(self) -> dict[str, Any]:
        """The JSON Schema compile options as a dict (registry decoded)."""
        opts = dict(self.options)
        opts["registry"] = {uri: json.loads(text) for uri, text in opts.get("registry", ())}
        return opts

    def to_dfa(self) -> DFA:
        """The byte-level DFA of this grammar (cached).

        Raises:
            InvalidInputError: the language is context-free (a Lark grammar, or a JSON Schema whose
                ``$ref``s recurse); use :meth:`to_automaton`.
        """
        got = self.to_automaton()
        if not isinstance(got, DFA):
            raise InvalidInputError(f"this {self.kind} grammar is context-free: it has no single DFA")
        return got

    def to_automaton(self) -> DFA | EarleyAutomaton:
        """The grammar's automaton (cached): a byte DFA for regular languages, else the Earley
        configuration automaton of :mod:`constrain.cfg` (Lark grammars, recursive JSON Schemas)."""
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


@bounded_cache(maxsize=128)
def _json_schema_automaton(grammar: Grammar) -> DFA | EarleyAutomaton:
    from .json_schema import SchemaOptions, schema_to_language
    from .json_schema.recursion import build_automaton

    registry = grammar.schema_options()["registry"]
    got = schema_to_language(json.loads(grammar.source), SchemaOptions.from_pairs(grammar.options), registry)
    return got if isinstance(got, DFA) else build_automaton(got)
