"""The JSON Schema compiler and the automata algebra under it, checked against ``jsonschema`` and ``re``.

Each table row is a schema with instances; the expected verdict comes from ``jsonschema`` itself (the
oracle), and the automaton must agree on the instance's canonical serialisation.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import warnings
from pathlib import Path

import jsonschema
import pytest

import constrain
from constrain import automata as A
from constrain.exceptions import SchemaError, UnsupportedSchemaFeature
from constrain.json_schema import detect_draft, load_schema
from constrain.json_schema.compiler import SchemaOptions, schema_to_dfa, serialize_instance

# (schema, instances); the verdict for each instance is jsonschema's.
TABLE: list[tuple[dict, list]] = [
    (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 3}},
            "required": ["a"],
        },
        [
            {"a": 1},
            {"a": 1, "b": "xy"},
            {"b": "x"},
            {"a": "x"},
            {"a": 1, "b": "long"},
            {"a": 1, "c": [1, {"d": 2}]},
        ],
    ),
    (
        {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
        [[True], [], [True, False, True, True], [1]],
    ),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["x", None, 1]),
    ({"not": {"type": "integer"}}, [1, 1.5, "a", {"a": 1}, [1], None]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 2.5, 3, "x"]),
    ({"enum": [1, "a", {"x": [1]}]}, [1, 1.0, "a", {"x": [1]}, 2, {"x": [2]}]),
    ({"type": "object", "additionalProperties": False, "properties": {"x": {}}}, [{"x": 1}, {"y": 1}, {}]),
    (
        {
            "properties": {"foo": {"type": "array", "maxItems": 3}, "bar": {}},
            "required": ["foo"],
            "minProperties": 2,
        },
        [{"foo": [1], "bar": []}, {"foo": [1]}, {"foo": [1, 2, 3, 4], "bar": 1}],
    ),
    (
        {"contains": {"const": 5}, "maxContains": 2, "minContains": 2},
        [[5, 5], [5, 1, 5], [5], [5, 5, 5], "x"],
    ),
    ({"dependentRequired": {"a": ["b"]}}, [{"a": 1}, {"a": 1, "b": 2}, {"b": 1}, 3]),
    (
        {"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}, "else": {"required": ["c"]}},
        [{"a": 1}, {"a": 1, "b": 1}, {"a": 2, "c": 1}, {"a": 2}],
    ),
    (
        {"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        [[1, "a"], [1], [1, "a", 2], ["a"]],
    ),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "a", "abcd", 'a"', "\U0001f600é", "a\n"]),
    (
        {"uniqueItems": True, "prefixItems": [{"type": "boolean"}, {"type": "boolean"}], "items": False},
        [[True, False], [True, True], [False]],
    ),
    (
        {"type": "integer", "minimum": -5, "exclusiveMaximum": 12, "multipleOf": 3},
        [-3, 0, 9, 12, 10, -6, 3.0],
    ),
    ({"type": "number", "minimum": 0.5, "maximum": 2.25}, [0.5, 0.49, 2.25, 2.26, 1, "1"]),
    ({"type": "string", "pattern": "^[a-c]+$"}, ["abc", "abd", "", "a"]),
    ({"type": "string", "format": "date"}, ["2024-02-29", "2023-02-29", "2024-13-01", "x"]),
    (
        {"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
        [{"x-a": 1, "b": "s"}, {"x-a": "s"}, {"b": 1}, {}],
    ),
    ({"propertyNames": {"maxLength": 2}}, [{"ab": 1}, {"abc": 1}, {}]),
    (
        {
            "properties": {"a": {}},
            "unevaluatedProperties": False,
            "anyOf": [{"properties": {"b": {}}}, {"required": ["c"]}],
        },
        [{"a": 1, "b": 2}, {"c": 1}, {"a": 1}, {"d": 1}],
    ),
    (
        {"$defs": {"pos": {"type": "integer", "minimum": 1}}, "items": {"$ref": "#/$defs/pos"}},
        [[1, 2], [0], []],
    ),
]


@pytest.mark.parametrize(("schema", "instances"), TABLE, ids=[json.dumps(s)[:60] for s, _ in TABLE])
def test_schema_agrees_with_jsonschema(schema: dict, instances: list) -> None:
    dfa = schema_to_dfa(schema, SchemaOptions(formats="assert", max_any_depth=3))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for instance in instances:
        text = serialize_instance(instance, schema)
        assert dfa.matches(text.encode()) == validator.is_valid(instance), (schema, text)


def test_counted_optional_members_against_jsonschema() -> None:
    # Optional named, pattern and additional members under minProperties/maxProperties: each member's
    # value is one copy per count it reaches (objects._object_order). Every subset of five members, each
    # with a valid and an invalid value (3**5 instances), against jsonschema.
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}, "c": {"type": "boolean"}},
        "patternProperties": {"^p": {"type": "null"}},
        "additionalProperties": {"type": "string", "maxLength": 1},
        "minProperties": 1,
        "maxProperties": 3,
    }
    values: dict[str, list] = {
        "a": [1, "1"],
        "b": ["x", "z"],
        "c": [True, 0],
        "p1": [None, 1],
        "q": ["s", "ss"],
    }
    dfa = schema_to_dfa(schema, SchemaOptions(formats="assert", max_any_depth=3))
    validator = jsonschema.Draft202012Validator(schema)
    names = list(values)
    verdicts = []
    for mask in range(1 << len(names)):
        present = [n for i, n in enumerate(names) if mask >> i & 1]
        for choice in itertools.product(*(values[n] for n in present)):
            instance = dict(zip(present, choice))
            text = serialize_instance(instance, schema)
            verdicts.append(validator.is_valid(instance))
            assert dfa.matches(text.encode()) == verdicts[-1], text
    assert len(verdicts) == 3**5 and 0 < sum(verdicts) < len(verdicts)


def test_keys_follow_the_schema_order_then_the_others() -> None:
    schema = {"properties": {"b": {}, "a": {}}}
    assert serialize_instance({"z": 1, "a": 2, "b": 3}, schema) == '{"b":3,"a":2,"z":1}'
    dfa = schema_to_dfa(schema)
    assert dfa.matches(b'{"b":3,"a":2,"z":1}')
    assert not dfa.matches(b'{"a":2,"b":3}')  # declared keys come in schema order


def test_any_property_order_accepts_every_order_and_stays_exact() -> None:
    schema = {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}
    dfa = schema_to_dfa(schema, SchemaOptions(property_order="any", max_any_depth=3))
    validator = jsonschema.Draft202012Validator(schema)
    for text in [
        '{"a":1,"b":"x"}',
        '{"b":"x","a":1}',
        '{"z":0,"a":1}',
        '{"b":"x","z":[],"a":1}',
        '{"b":"x"}',
    ]:
        assert dfa.matches(text.encode()) == validator.is_valid(json.loads(text)), text
    negated = schema_to_dfa({"not": schema}, SchemaOptions(property_order="any", max_any_depth=3))
    assert not negated.matches(b'{"b":"x","a":1}') and negated.matches(b'{"b":1,"a":1}')
    opts = SchemaOptions(property_order="any")
    assert serialize_instance({"b": "x", "a": 1}, schema, options=opts) == '{"b":"x","a":1}'


def test_flexible_whitespace_is_bounded() -> None:
    dfa = schema_to_dfa({"type": "array", "items": {"type": "integer"}}, SchemaOptions(whitespace="flexible"))
    assert dfa.matches(b"[ 1,\n 2 ]")
    assert dfa.matches(b"[1,2]")
    assert not dfa.matches(b"[1,    2]")  # more than max_whitespace=2


def test_unconstrained_values_nest_to_the_configured_depth() -> None:
    dfa = schema_to_dfa({"type": "object"}, SchemaOptions(max_any_depth=1))
    assert dfa.matches(b'{"a":[1]}')
    assert not dfa.matches(b'{"a":[[1]]}')


def test_schema_errors_carry_the_pointer() -> None:
    with pytest.raises(SchemaError) as e:
        schema_to_dfa({"properties": {"a": {"minLength": -1, "type": "string"}}})
    assert e.value.pointer == "#/properties/a/minLength"
    with pytest.raises(SchemaError, match="cannot resolve"):
        schema_to_dfa({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaError, match="not valid JSON"):
        constrain.Grammar.from_json_schema('{"type": ')


def test_unsupported_keyword_is_named_with_its_pointer() -> None:
    with pytest.raises(UnsupportedSchemaFeature) as e:
        schema_to_dfa({"properties": {"tags": {"type": "array", "uniqueItems": True}}})
    assert e.value.keyword == "uniqueItems"
    assert e.value.pointer == "#/properties/tags/uniqueItems"


def test_recursion_is_refused_not_truncated() -> None:
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    with pytest.raises(UnsupportedSchemaFeature, match="recursive"):
        schema_to_dfa(tree)


def test_lenient_drops_with_a_warning_listing_the_keywords() -> None:
    schema = {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": "(?=a)b"}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dfa = schema_to_dfa(schema, SchemaOptions(lenient=True))
    message = " ".join(str(w.message) for w in caught)
    assert "uniqueItems at #/uniqueItems" in message and "pattern at #/items/pattern" in message
    assert dfa.matches(b'["x","x"]')


def test_remote_refs_resolve_only_from_the_registry() -> None:
    schema = {"$ref": "http://example.com/item.json"}
    with pytest.raises(SchemaError, match="cannot resolve"):
        schema_to_dfa(schema)
    dfa = schema_to_dfa(schema, registry={"http://example.com/item.json": {"type": "integer"}})
    assert dfa.matches(b"12") and not dfa.matches(b'"x"')


def test_grammar_from_json_schema_matches_through_real_tokens() -> None:
    info = constrain.TokenizerInfo.from_vocab(
        [bytes([b]) for b in range(256)] + [b'{"', b'":', b"true", b""], eos_ids=[259]
    )
    grammar = constrain.Grammar.from_json_schema(
        {"properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    )
    matcher = constrain.GrammarMatcher(constrain.compile(grammar, info))
    for tid in (256, *b"ok", 257, 258):
        assert matcher.accept_token(tid)
    assert not matcher.can_end()
    assert matcher.accept_token(ord("}"))
    assert matcher.can_end()


# ---- the automata algebra against re -------------------------------------------------------------

_ALPHABET = "ab1"


def _random_strings(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6))) for _ in range(n)]


@pytest.mark.parametrize(("p", "q"), [("a*b", "[ab]{2,3}"), ("(ab)*", "a.*"), ("1?a+", "[^b]*"), ("", "a|")])
def test_set_operations_agree_with_re(p: str, q: str) -> None:
    rng = random.Random(f"{p}|{q}")
    a, b = A.regex_dfa(p), A.regex_dfa(q)
    inter, uni, diff = A.intersect(a, b), A.union(a, b), A.difference(a, b)
    for s in _random_strings(rng, 300):
        in_p, in_q = re.fullmatch(p, s) is not None, re.fullmatch(q, s) is not None
        assert inter.matches(s.encode()) == (in_p and in_q)
        assert uni.matches(s.encode()) == (in_p or in_q)
        assert diff.matches(s.encode()) == (in_p and not in_q)


def test_json_string_mode_reads_canonical_escapes() -> None:
    dfa = A.regex_dfa(r"(?s)a.b", 0, True)
    for text, ok in [('a"b', True), ("a\nb", True), ("a\\b", True), ("aéb", True), ("ab", False)]:
        assert dfa.matches(json.dumps(text, ensure_ascii=False)[1:-1].encode()) == ok, text
    assert not dfa.matches(b"a\\u0022b")  # only the canonical escape of '"'


# ------------------------------------------------------------------------------------------------
# Loading: one rule for paths versus JSON text, used by every entry point


PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_a_file_whose_name_starts_with_f_is_read_by_every_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "foo.json"  # "f" once made the string look like JSON text ("false")
    path.write_text(json.dumps(PERSON), encoding="utf-8")
    expected = constrain.Grammar.from_json_schema(PERSON)
    assert constrain.Grammar.from_json_schema(str(path)) == expected
    assert constrain.Grammar.from_json_schema(path) == expected
    # generate_json, the HF adapter and the CLI read schemas through this same loader
    assert load_schema(str(path)) == PERSON
    assert load_schema(path) == PERSON


def test_load_schema_forms() -> None:
    assert load_schema(PERSON) is PERSON
    assert load_schema(True) is True
    assert load_schema(json.dumps(PERSON)) == PERSON
    assert load_schema("  true ") is True
    assert load_schema(json.dumps(PERSON).encode()) == PERSON
    assert load_schema(bytearray(b'{"type": "string"}')) == {"type": "string"}
    grammar = constrain.Grammar.from_json_schema(json.dumps(PERSON).encode())
    assert grammar == constrain.Grammar.from_json_schema(PERSON)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("person.json", "neither JSON text nor an existing file"),
        ("type: object", "neither JSON text nor an existing file"),
        ('{"type": ', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{nope", "not valid JSON"),
        (Path("/nonexistent/schema.json"), "cannot read schema file"),
        (42, "got int"),
    ],
)
def test_load_schema_errors_say_what_is_wrong(schema: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        load_schema(schema)
    with pytest.raises(SchemaError, match=message):
        constrain.Grammar.from_json_schema(schema)


def test_a_pydantic_model_class_is_a_schema() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str

    assert load_schema(Person) == Person.model_json_schema()
    grammar = constrain.Grammar.from_json_schema(Person)
    assert grammar == constrain.Grammar.from_json_schema(Person.model_json_schema())


def test_a_json_file_that_is_not_json_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.json.*not valid JSON"):
        load_schema(str(path))


def test_draft_detection() -> None:
    assert detect_draft({"$schema": "http://json-schema.org/draft-07/schema#"}) == "7"
    assert detect_draft({"$schema": "https://json-schema.org/draft/2019-09/schema"}) == "2019-09"
    assert detect_draft({}, "2020-12") == "2020-12"
    assert detect_draft({"$schema": "https://json-schema.org/draft-07/schema"}, "2020-12") == "2020-12"
    assert detect_draft({"$schema": "https://json-schema.org/draft-07/schema"}, by_marker=True) == "7"
    # "$schema" wins over the draft the caller assumes: draft-04's boolean exclusiveMaximum
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 3, "exclusiveMaximum": True}
    dfa = schema_to_dfa(draft4)
    assert dfa.matches(b"2") and not dfa.matches(b"3")


# ------------------------------------------------------------------------------------------------
# Canonical key order: the one order both the compiled grammar and serialize_instance use


@pytest.mark.parametrize("whitespace", ["compact", "flexible"])
def test_serialized_instances_are_in_the_order_the_grammar_accepts(whitespace: str) -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
        "required": ["c"],
        "dependentRequired": {"d": ["e"]},
        "additionalProperties": {"type": "integer"},
    }
    instance = {"z": 1, "e": 5, "a": "x", "d": 4, "c": 3, "b": 2}
    text = serialize_instance(instance, schema)
    assert list(json.loads(text)) == ["b", "a", "c", "d", "e", "z"]
    options = SchemaOptions(whitespace=whitespace)
    dfa = schema_to_dfa(schema, options)
    assert dfa.matches(text.encode())
    # any other order of the named keys is not canonical
    assert not dfa.matches(json.dumps(instance, separators=(",", ":")).encode())
    compiled = constrain.compile(
        constrain.Grammar.from_json_schema(schema, whitespace=whitespace), _bytes_vocab()
    )
    matcher = constrain.GrammarMatcher(compiled)
    for byte in text.encode():
        assert matcher.accept_token(byte)
    assert matcher.can_end()


def _bytes_vocab() -> constrain.TokenizerInfo:
    """One token per byte (token 256 is EOS)."""
    return constrain.TokenizerInfo.from_vocab([bytes([b]) for b in range(256)] + [b"</s>"], eos_ids=[256])


MERGED_ALL_OF = {
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 0}},
    "allOf": [
        {"$ref": "#/$defs/a", "description": "a lone $ref is followed"},
        {"$ref": "#/$defs/b"},
        {
            "properties": {"z": {"enum": [1, 2]}},
            "additionalProperties": {"type": "boolean"},
            "maxProperties": 3,
        },
        {"required": ["x"], "type": "object"},  # "type" keeps this one a product
    ],
    "$defs": {
        "a": {"properties": {"x": {"maximum": 5}, "y": {"type": "string"}}},
        "b": {"properties": {"y": {"maxLength": 2}}, "required": ["y"], "minProperties": 2},
    },
}


def test_object_only_all_of_subschemas_are_merged_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """allOf subschemas with only object keywords are built into the parent's object, not intersected
    afterwards: the same language as the product (both inclusions empty) and jsonschema's verdicts on
    instances around every bound."""
    from constrain.json_schema import compiler as compiler_mod
    from constrain.json_schema import objects

    seen: list[int] = []
    real = objects.merged_conjuncts

    def spy(ctx, node, k):  # type: ignore[no-untyped-def]
        got = real(ctx, node, k)
        seen.append(len(got))
        return got

    monkeypatch.setattr(compiler_mod, "merged_conjuncts", spy)
    merged = schema_to_dfa(MERGED_ALL_OF)
    assert max(seen) == 3  # a, b and the third; the one with "type" is not merged
    monkeypatch.setattr(compiler_mod, "merged_conjuncts", lambda ctx, node, k: [])
    product = schema_to_dfa(MERGED_ALL_OF)
    assert A.is_empty(A.difference(merged, product)) and A.is_empty(A.difference(product, merged))
    validator = jsonschema.Draft202012Validator(MERGED_ALL_OF)
    instances = [
        {"x": 0, "y": "ab"},
        {"x": 5, "y": ""},
        {"x": 6, "y": "ab"},
        {"x": -1, "y": "a"},
        {"x": 1, "y": "abc"},
        {"x": 1},
        {"y": "a", "z": 1},
        {"x": 1, "y": "a", "z": 2},
        {"x": 1, "y": "a", "z": 3},
        {"x": 1, "y": "a", "w": True},
        {"x": 1, "y": "a", "w": 1},
        {"x": 1, "y": "a", "z": 1, "w": False},
        {"x": 1, "y": 7},
    ]
    for instance in instances:
        text = serialize_instance(instance, MERGED_ALL_OF)
        assert merged.matches(text.encode()) == validator.is_valid(instance), text


@pytest.mark.parametrize("draft", ["4", "6", "7", "2020-12"])
def test_if_then_else_only_from_draft_7(draft: str) -> None:
    """``if``/``then``/``else`` came with draft 7: before it they are unknown keywords, ignored, as
    jsonschema's validators ignore them (MaskBench o3385, o39097: valid instances were refused)."""
    import jsonschema

    from constrain.json_schema import SchemaOptions, schema_to_dfa, serialize_instance

    schema = {
        "type": "object",
        "properties": {"kind": {"type": "string"}, "n": {"type": "integer"}},
        "additionalProperties": False,
        "if": {"properties": {"kind": {"enum": ["a"]}}},
        "then": {"required": ["n"]},
        "else": {"properties": {"n": {"maximum": 3}}},
    }
    validator = {
        "4": jsonschema.Draft4Validator,
        "6": jsonschema.Draft6Validator,
        "7": jsonschema.Draft7Validator,
    }
    check = validator.get(draft, jsonschema.Draft202012Validator)(schema)
    dfa = schema_to_dfa(schema, SchemaOptions(draft=draft))
    instances = [{"kind": "a"}, {"kind": "a", "n": 9}, {"kind": "b", "n": 9}, {"kind": "b", "n": 2}, {}]
    verdicts = [check.is_valid(i) for i in instances]
    assert dfa.matches(b'{"kind":"a"}') == (draft in ("4", "6"))  # the then branch needs "n" from draft 7
    for instance, expected in zip(instances, verdicts):
        assert dfa.matches(serialize_instance(instance, schema).encode()) == expected, (draft, instance)
