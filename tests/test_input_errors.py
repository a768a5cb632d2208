"""Every malformed input to the public API is refused up front with a typed error naming what to fix.

A table per entry point: the input, the class expected (always a ``ConstrainError`` subclass) and what
the error must carry (the JSON pointer and keyword of a schema, the line of a grammar, the argument's
name). The oracle for the ASCII default of regexes is Python's own ``re`` with ``re.ASCII``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import constrain
from constrain import (
    EmptyLanguageError,
    Grammar,
    GrammarError,
    InputTooLargeError,
    InvalidInputError,
    MatcherUsageError,
    RegexSyntaxError,
    SchemaError,
    TokenizerError,
    TokenizerInfo,
    UnsupportedRegexFeature,
)
from constrain.exceptions import ArgumentError, EmptyGrammarError

from .shared_data import tokenizer_path

TINY = TokenizerInfo.from_vocab([b"a", b"b", b"1", b'"', b"{", b"}", b""], eos_ids=[6], name="tiny")

# ---- JSON Schema ---------------------------------------------------------------------------------------

# (schema, error class, pointer, keyword): pointer/keyword None means "not checked"
SCHEMA_CASES: list[tuple[Any, type[Exception], str | None, str | None]] = [
    ({"properties": []}, SchemaError, "/properties", "properties"),
    ({"properties": {"a": 1}}, SchemaError, "/properties/a", "properties"),
    ({"type": "object", "required": [1, 2]}, SchemaError, None, "required"),
    ({"type": "strin"}, SchemaError, "/type", "type"),
    ({"items": {"minItems": -1}}, SchemaError, "/items/minItems", "minItems"),
    ({"allOf": {}}, SchemaError, "/allOf", "allOf"),
    ({"$defs": {"a": {"enum": 3}}}, SchemaError, "/$defs/a/enum", "enum"),
    ({"type": []}, SchemaError, "/type", "type"),  # the 2020-12 metaschema wants one type at least
    (b"\xff\xfe", SchemaError, None, None),
    ("{not json", SchemaError, None, None),
    (12, SchemaError, None, None),
    ("[1, 2]", SchemaError, None, None),
    ({"minimum": float("nan")}, SchemaError, "/minimum", None),
    ({"enum": [{1, 2}]}, SchemaError, "/enum/0", None),
    ({1: {"type": "string"}}, SchemaError, "", None),
    ("/dev/zero", SchemaError, None, None),
    (Path("/dev/zero"), SchemaError, None, None),
    (Path("/nonexistent/schema.json"), SchemaError, None, None),
    ("not a path and not json", SchemaError, None, None),
]


@pytest.mark.parametrize(("schema", "cls", "pointer", "keyword"), SCHEMA_CASES, ids=lambda v: repr(v)[:40])
def test_malformed_schemas_are_schema_errors(
    schema: Any, cls: type[Exception], pointer: Any, keyword: Any
) -> None:
    with pytest.raises(cls) as info:
        Grammar.from_json_schema(schema)
    if pointer is not None:
        assert info.value.pointer == pointer, str(info.value)  # type: ignore[attr-defined]
    if keyword is not None:
        assert info.value.keyword == keyword, str(info.value)  # type: ignore[attr-defined]


def test_required_with_integers_names_the_member() -> None:
    with pytest.raises(SchemaError) as info:
        Grammar.from_json_schema({"type": "object", "required": [1, 2]})
    assert info.value.pointer in ("/required/0", "/required/1")
    assert "required" in str(info.value) and "string" in str(info.value)


def test_deeply_nested_schema_is_typed() -> None:
    schema: Any = {"type": "integer"}
    for _ in range(5000):
        schema = {"items": schema}
    with pytest.raises(constrain.ConstrainError):
        Grammar.from_json_schema(schema)
    with pytest.raises(constrain.ConstrainError):
        Grammar.from_json_schema('{"items": ' * 5000 + "{}" + "}" * 5000)


def test_metaschema_of_the_declared_draft() -> None:
    # draft 4 has boolean exclusiveMaximum; 2020-12 wants a number
    d4 = {"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 3, "exclusiveMaximum": True}
    Grammar.from_json_schema(d4)
    with pytest.raises(SchemaError) as info:
        Grammar.from_json_schema({"maximum": 3, "exclusiveMaximum": True})
    assert info.value.pointer == "/exclusiveMaximum"
    # a registry document that names its draft is checked too
    with pytest.raises(SchemaError) as info:
        Grammar.from_json_schema(
            {"$ref": "http://example.com/a"},
            registry={
                "http://example.com/a": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": 5}
            },
        )
    assert "http://example.com/a" in str(info.value) and info.value.pointer == "/type"


# (schema, pointer where the language became empty)
EMPTY_CASES: list[tuple[Any, str]] = [
    (False, ""),
    ({"enum": []}, "/enum"),
    ({"not": {}}, "/not"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, ""),
    ({"type": "string", "minLength": 5, "maxLength": 2}, ""),
    ({"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]}, "/properties/a/enum"),
    ({"allOf": [{"type": "string"}, {"allOf": [{"enum": []}]}]}, "/allOf/1/allOf/0/enum"),
    ({"anyOf": [{"enum": []}, False]}, "/anyOf"),
    ({"const": "x", "type": "integer"}, ""),
    (
        {
            "$defs": {"n": {"type": "object", "properties": {"x": {"$ref": "#/$defs/n"}}, "required": ["x"]}},
            "$ref": "#/$defs/n",
        },
        "",
    ),
]


@pytest.mark.parametrize(("schema", "pointer"), EMPTY_CASES, ids=lambda v: repr(v)[:40])
def test_empty_languages_are_refused_at_compile_time(schema: Any, pointer: str) -> None:
    with pytest.raises(EmptyLanguageError) as info:
        Grammar.from_json_schema(schema)
    assert info.value.pointer == pointer, str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_schemas_that_allow_something_still_compile() -> None:
    # an empty branch that another branch makes up for is not an error
    grammar = Grammar.from_json_schema({"anyOf": [{"enum": []}, {"const": 1}]})
    matcher = constrain.GrammarMatcher(constrain.compile(grammar, TINY))
    assert matcher.accept_token(2) and matcher.can_end()


# (option, bad value)
BAD_OPTIONS = [
    ("draft", "3"),
    ("formats", "check"),
    ("lenient", "yes"),
    ("whitespace", "any"),
    ("max_whitespace", -1),
    ("max_whitespace", "2"),
    ("max_any_depth", 10**6),
    ("property_order", None),
    ("registry", [1]),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_bad_schema_options_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        Grammar.from_json_schema({"type": "string"}, **{option: value})
    assert option in str(info.value)


def test_unknown_keyword_arguments_are_named() -> None:
    for call in (
        lambda: Grammar.from_json_schema({}, lenientt=True),
        lambda: Grammar.from_regex("a", flag=re.I),
        lambda: Grammar.from_lark('start: "a"', begin="start"),
        lambda: TokenizerInfo.from_file(tokenizer_path("gpt2-50k"), eos=0),
        lambda: TokenizerInfo.from_vocab([b"a"]),  # eos_ids missing
    ):
        with pytest.raises(ArgumentError) as info:
            call()
        assert isinstance(info.value, TypeError) and isinstance(info.value, InvalidInputError)
        assert any(name in str(info.value) for name in ("lenientt", "flag", "begin", "eos", "eos_ids"))


def test_generation_options_are_checked() -> None:
    from constrain.generation import compile_constraint

    with pytest.raises(InvalidInputError, match="'typo'"):
        compile_constraint(TINY, regex="a+", schema_options={"typo": 1})
    with pytest.raises(InvalidInputError, match="'typo'"):
        compile_constraint(TINY, schema={"type": "string"}, schema_options={"typo": 1, "lenient": True})
    with pytest.raises(InvalidInputError, match="'method'"):
        compile_constraint(TINY, grammar=Grammar.from_regex("a"), schema_options={"method": "awrs"})
    assert compile_constraint(TINY, schema={"type": "string"}, schema_options={"lenient": True}) is not None


# ---- regexes ------------------------------------------------------------------------------------------

REGEX_CASES: list[tuple[Any, int, type[Exception]]] = [
    ("(", 0, RegexSyntaxError),
    ("a{2,1}", 0, RegexSyntaxError),
    ("(" * 5000 + "a" + ")" * 5000, 0, UnsupportedRegexFeature),
    ("(?:" * 3000 + "a" + ")" * 3000, 0, UnsupportedRegexFeature),
    ("[^\\x00-\\U0010ffff]", 0, EmptyLanguageError),
    ("a{0}b[^\\s\\S]", 0, EmptyLanguageError),
    ("a(?=b)", 0, UnsupportedRegexFeature),
    ("a", re.ASCII | re.UNICODE, RegexSyntaxError),
    ("a", 1 << 12, UnsupportedRegexFeature),
    (b"a", 0, InvalidInputError),
    (None, 0, InvalidInputError),
]


@pytest.mark.parametrize(("pattern", "flags", "cls"), REGEX_CASES, ids=lambda v: repr(v)[:30])
def test_bad_regexes(pattern: Any, flags: int, cls: type[Exception]) -> None:
    with pytest.raises(cls):
        Grammar.from_regex(pattern, flags)


def test_regex_flags_must_be_an_int() -> None:
    with pytest.raises(InvalidInputError, match="flags"):
        Grammar.from_regex("a", "i")  # type: ignore[arg-type]


# text, whether the default (ASCII) grammar of each pattern accepts it: checked against re with re.ASCII
ASCII_PATTERNS = [r"\d{4}", r"\w+", r"\s", r"(?i)k", r"[\d\w]+\s?"]
SAMPLES = ["1234", "١٢٣٤", "🯸🯸🯸🯸", "abc", "héé", "日本", " ", "\u2003", "\u00a0", "k", "K", "\u212a", "a1 "]


@pytest.mark.parametrize("pattern", ASCII_PATTERNS)
def test_classes_are_ascii_by_default(pattern: str) -> None:
    ascii_dfa = Grammar.from_regex(pattern).to_dfa()
    unicode_dfa = Grammar.from_regex(pattern, re.UNICODE).to_dfa()
    inline_dfa = Grammar.from_regex(
        "(?u)" + pattern.removeprefix("(?i)"), re.I if "(?i)" in pattern else 0
    ).to_dfa()
    for text in SAMPLES:
        data = text.encode()
        assert ascii_dfa.matches(data) == bool(re.fullmatch(pattern, text, re.ASCII)), (pattern, text)
        assert unicode_dfa.matches(data) == bool(re.fullmatch(pattern, text)), (pattern, text)
        assert inline_dfa.matches(data) == bool(re.fullmatch(pattern, text)), (pattern, text)
    assert Grammar.from_regex(r"\d").flags & re.ASCII
    assert not Grammar.from_regex(r"\d", re.UNICODE).flags & re.ASCII


def test_schema_patterns_are_ecma_ascii_classes() -> None:
    # ECMA-262 without the u flag: \d is [0-9] and \w is [A-Za-z0-9_] (\s is Unicode white space there)
    dfa = Grammar.from_json_schema({"type": "string", "pattern": "^\\d+\\w*$"}).to_dfa()
    assert dfa.matches(b'"12ab"')
    assert not dfa.matches('"١٢"'.encode())
    assert not dfa.matches('"1é"'.encode())
    space = Grammar.from_json_schema({"type": "string", "pattern": "^\\s$"}).to_dfa()
    assert space.matches('"\u2003"'.encode())  # ECMA's WhiteSpace includes the Unicode spaces


# ---- Lark ---------------------------------------------------------------------------------------------


def test_lark_inputs() -> None:
    with pytest.raises(GrammarError) as info:
        Grammar.from_lark("start: ")
    assert info.value.line == 1
    with pytest.raises(EmptyGrammarError) as empty:
        Grammar.from_lark('x: "b"\nstart: a\na: a "x"')
    assert isinstance(empty.value, EmptyLanguageError) and isinstance(empty.value, GrammarError)
    assert empty.value.line == 2
    with pytest.raises(GrammarError) as info:
        Grammar.from_lark('start: "a" b\n')
    assert info.value.line is not None
    for bad in (
        lambda: Grammar.from_lark(b'start: "a"'),  # type: ignore[arg-type]
        lambda: Grammar.from_lark('start: "a"', start=1),  # type: ignore[arg-type]
        lambda: Grammar.from_lark("missing.lark"),
        lambda: Grammar.from_lark(name=3),  # type: ignore[arg-type]
        lambda: Grammar.from_lark(),
    ):
        with pytest.raises(InvalidInputError):
            bad()


# ---- tokenizers ---------------------------------------------------------------------------------------


def test_tokenizer_files_must_be_regular_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    with pytest.raises(TokenizerError, match="not a regular file"):
        TokenizerInfo.from_file("/dev/zero")
    with pytest.raises(SchemaError, match="not a regular file"):
        Grammar.from_json_schema("/dev/zero")
    assert time.perf_counter() - started < 30  # a refusal, not a read of /dev/zero (a loose sanity bound)
    with pytest.raises(InvalidInputError):
        TokenizerInfo.from_file(3)  # type: ignore[arg-type]
    with pytest.raises(TokenizerError):
        TokenizerInfo.from_file("bad\0path")
    from constrain import validation

    big = tmp_path / "big.json"
    big.write_text(json.dumps({"type": "string", "description": "x" * 2000}))
    monkeypatch.setattr(validation, "MAX_SCHEMA_FILE_BYTES", 1000)
    monkeypatch.setattr(validation, "MAX_TOKENIZER_FILE_BYTES", 1000)
    with pytest.raises(InputTooLargeError):
        Grammar.from_json_schema(big)
    with pytest.raises(InputTooLargeError):
        TokenizerInfo.from_file(big)


def _tokenizer_json(vocab: dict[str, int], added: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": added or []})


def test_tokenizer_vocabularies_with_bad_ids(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    for text, match in [
        (_tokenizer_json({"a": 0, "b": 0, "</s>": 1}), "two tokens"),
        (_tokenizer_json({"a": 0, "b": 2_000_000_000}), "too large"),
        (_tokenizer_json({"a": 0}, [{"id": 2_000_000_000, "content": "</s>", "special": True}]), "too large"),
        (_tokenizer_json({"a": 0}, [{"id": 1, "content": "x"}, {"id": 1, "content": "y"}]), "two tokens"),
        (_tokenizer_json({"a": 0}, [{"id": True, "content": "x"}]), "not an integer"),
    ]:
        path.write_text(text)
        with pytest.raises(TokenizerError, match=match):
            TokenizerInfo.from_file(path, eos_ids=0)
    with pytest.raises(TokenizerError):
        TokenizerInfo.from_tokenizer(object())


# ---- the matcher's bitmask ----------------------------------------------------------------------------


def test_read_only_or_out_of_range_bitmask_rows() -> None:
    matcher = constrain.GrammarMatcher(constrain.compile(Grammar.from_regex("a+"), TINY))
    bitmask = np.zeros((2, 1), dtype=np.int32)
    bitmask.setflags(write=False)
    with pytest.raises(MatcherUsageError, match="read-only"):
        matcher.fill_next_token_bitmask(bitmask, 0)
    writable = np.zeros((2, 1), dtype=np.int32)
    for row in (-1, 2):
        with pytest.raises(MatcherUsageError, match="out of range"):
            matcher.fill_next_token_bitmask(writable, row)
    assert not writable.any()


# ---- the Hugging Face processors ----------------------------------------------------------------------


def test_hf_processor_inputs() -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    from constrain.adapters.hf import JSONSchemaLogitsProcessor, RegexLogitsProcessor

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_path("smollm2-49k")), eos_token="<|endoftext|>"
    )
    with pytest.raises(InvalidInputError, match="'typo'"):
        JSONSchemaLogitsProcessor({"type": "string"}, tok, typo=1)
    with pytest.raises(SchemaError):
        JSONSchemaLogitsProcessor({"properties": []}, tok)
    with pytest.raises(RegexSyntaxError):
        RegexLogitsProcessor("(", tok)
    proc = RegexLogitsProcessor("yes|no", tok)
    vocab = proc.info.vocab_size
    ids = torch.zeros((2, 3), dtype=torch.long)
    for input_ids, scores in [
        (ids.float(), torch.zeros((2, vocab))),
        (ids[0], torch.zeros((2, vocab))),
        (ids, torch.zeros((3, vocab))),
        (ids, torch.zeros((2, vocab), dtype=torch.long)),
        (ids, torch.zeros((2, vocab - 1))),
        (ids.tolist(), torch.zeros((2, vocab))),
    ]:
        with pytest.raises(InvalidInputError):
            proc(input_ids, scores)  # type: ignore[arg-type]
    scores = proc(ids, torch.zeros((2, vocab)))
    assert torch.isfinite(scores).sum().item() > 0


# ---- the CLI ------------------------------------------------------------------------------------------


def test_cli_refuses_bad_input_before_loading_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    from constrain.cli import main

    # exit code 2 and the reason; the model is never loaded (these return at once)
    assert main(["generate-json", "--schema", '{"properties": []}', "--prompt", "x"]) == 2
    assert "/properties" in capsys.readouterr().err
    assert main(["generate-json", "--schema", '{"enum": []}', "--prompt", "x"]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["generate", "--regex", "(", "--prompt", "x"]) == 2
    assert "regex" in capsys.readouterr().err


# ---- issue 20, smaller gaps: the keyword blamed for a size limit, lenient, generation ---------------


def test_a_size_limit_blames_the_length_keyword_not_type() -> None:
    """``{"format": "uri", "maxLength": 2048}`` was reported at ``#/type``: the product of the format
    with the length bound is what grew (here with a small limit, so that it is quick)."""
    from constrain.exceptions import UnsupportedSchemaFeature
    from constrain.limits import Limits

    with pytest.raises(UnsupportedSchemaFeature) as err:
        Grammar.from_json_schema({"format": "date", "maxLength": 12}, limits=Limits(max_dfa_states=60))
    assert (err.value.keyword, err.value.pointer) == ("maxLength", "#/maxLength")


def test_lenient_drops_a_keyword_past_a_size_limit_with_a_warning() -> None:
    from constrain.exceptions import UnsupportedSchemaFeature
    from constrain.limits import Limits

    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "boolean"} for i in range(6)},
        "additionalProperties": False,
    }
    small = Limits(max_dfa_states=60)
    with pytest.raises(UnsupportedSchemaFeature) as err:
        Grammar.from_json_schema(schema, limits=small)
    assert (err.value.keyword, err.value.pointer) == ("properties", "#/properties")
    with pytest.warns(UserWarning, match="properties at #/properties"):
        grammar = Grammar.from_json_schema(schema, limits=small, lenient=True)
    # looser, as documented: the named properties are no longer enforced, additionalProperties still is
    dfa = grammar.to_dfa()
    assert dfa.matches(b"{}") and not dfa.matches(b'{"p0":true}')


def test_generation_refuses_a_prompt_past_the_context(lm: tuple[Any, Any]) -> None:
    from constrain.generation import generate

    model, _tok = lm
    with pytest.raises(InputTooLargeError, match="context holds"):
        generate(" hello" * (model.config.max_position_embeddings + 10), regex="[ab]", max_new_tokens=2)


def test_generation_dead_end_is_typed(lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A state where no token is allowed (a vocabulary that cannot spell the language) is a DeadEndError
    for greedy and sampled decoding alike (it was "engine bug" and a torch RuntimeError)."""
    from constrain.generation import DeadEndError, TemperatureSampler, run
    from constrain.matcher import GrammarMatcher
    from constrain.models import tokenizer_info_for

    model, tok = lm
    info = tokenizer_info_for(tok)
    compiled = constrain.compile(Grammar.from_regex("ab"), info)

    def nothing_allowed(self: Any, bitmask: Any, index: int = 0) -> None:
        bitmask[index] = 0

    monkeypatch.setattr(GrammarMatcher, "fill_next_token_bitmask", nothing_allowed)
    for sampler in (None, TemperatureSampler(1.0)):
        with pytest.raises(DeadEndError, match="first step") as err:
            run(model, info, tok("Hi")["input_ids"], GrammarMatcher(compiled), sampler=sampler, seed=0)
        assert err.value.token_ids == [] and isinstance(err.value, constrain.ConstrainError)


@pytest.mark.parametrize(
    ("schema", "valid", "invalid"),
    [
        # a draft-04 subresource holding a boolean schema (JsonSchemaStore's updatecli config): the
        # referencing library's draft 4 fails crawling it
        (
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "x": {
                        "$schema": "http://json-schema.org/draft-04/schema",
                        "type": "object",
                        "properties": {"spec": True},
                    }
                },
                "required": ["x"],
            },
            {"x": {"spec": [1]}},
            {"x": 3},
        ),
        # "id" as a misplaced property in a draft-04 subresource: no identifier
        (
            {
                "type": "object",
                "properties": {
                    "a": {"$schema": "http://json-schema.org/draft-04/schema", "id": {"type": "integer"}}
                },
            },
            {"a": {"id": 1}},
            [],
        ),
    ],
)
def test_documents_referencing_cannot_crawl_still_compile(
    schema: dict[str, Any], valid: Any, invalid: Any
) -> None:
    """Where the referencing library raises on a document (not a schema error of ours), compiling goes
    on without its crawl: no crash, and the verdicts are jsonschema's."""
    import jsonschema

    from constrain.json_schema import serialize_instance

    dfa = Grammar.from_json_schema(schema).to_automaton()
    for instance in (valid, invalid):
        text = serialize_instance(instance, schema).encode()
        expected = jsonschema.validators.validator_for(schema)(schema).is_valid(instance)
        got = dfa.accepts(text) if hasattr(dfa, "accepts") else dfa.matches(text)
        assert got == expected, (instance, expected)
