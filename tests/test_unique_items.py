"""``uniqueItems`` over arrays of any length whose items take finitely many values, against ``jsonschema``.

Every array of up to ``LONGEST`` items drawn from each schema's candidate values (its own values, and
some it does not allow) is serialised the way the automaton reads it and checked both ways: the
automaton accepts it exactly when ``jsonschema`` says it is valid. Objects are also written with their
keys in every order, so that two texts of one value count as a repeat.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema
import pytest

from constrain.exceptions import UnsupportedSchemaFeature
from constrain.json_schema.compiler import SchemaOptions, schema_to_dfa, serialize_instance

LONGEST = 4

# (schema, candidate items)
CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True}, ["a", "b", "c", "d", 1]),
    ({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True}, [True, False, None]),
    (
        {"type": "array", "items": {"enum": ["x", None, True]}, "minItems": 2, "uniqueItems": True},
        ["x", None, True, False],
    ),
    (
        {"type": "array", "items": {"enum": ["a", "b", "c", "d"]}, "maxItems": 2, "uniqueItems": True},
        ["a", "b", "c", "d"],
    ),
    (
        {
            "type": "array",
            "prefixItems": [{"const": "head"}],
            "items": {"enum": ["a", "b", "head"]},
            "uniqueItems": True,
        },
        ["head", "a", "b"],
    ),
    (
        {"items": {"enum": ["a", "b", "c"]}, "contains": {"const": "b"}, "uniqueItems": True},
        ["a", "b", "c"],
    ),
    (
        {
            "type": "array",
            "items": {"enum": [{"k": "x", "v": "y"}, {"k": "y"}, ["a", "b"]]},
            "uniqueItems": True,
        },
        [{"k": "x", "v": "y"}, {"k": "y"}, ["a", "b"], ["b", "a"]],
    ),
    # not only arrays: the other types keep their languages
    ({"items": {"enum": ["a", "b"]}, "uniqueItems": True}, ["a", "b"]),
]


def _texts(value: Any) -> list[str]:
    """``value`` as compact JSON, objects with their keys in every order."""
    if isinstance(value, dict):
        out = []
        for order in itertools.permutations(value):
            for parts in itertools.product(*[_texts(value[key]) for key in order]):
                members = [json.dumps(key) + ":" + part for key, part in zip(order, parts, strict=True)]
                out.append("{" + ",".join(members) + "}")
        return out
    if isinstance(value, list):
        return ["[" + ",".join(parts) + "]" for parts in itertools.product(*[_texts(v) for v in value])]
    return [json.dumps(value)]


@pytest.mark.parametrize(("schema", "pool"), CASES, ids=[json.dumps(s)[:70] for s, _ in CASES])
def test_arrays_of_distinct_values_agree_with_jsonschema(schema: dict[str, Any], pool: list[Any]) -> None:
    dfa = schema_to_dfa(schema)
    validator = jsonschema.Draft202012Validator(schema)
    checked = 0
    for n in range(LONGEST + 1):
        for items in itertools.product(pool, repeat=n):
            valid = validator.is_valid(list(items))
            for text in _texts(list(items)):
                assert dfa.matches(text.encode()) == valid, (text, valid)
                checked += 1
    for other in ["a", 1, None, {"k": "x"}]:
        text = serialize_instance(other, schema)
        assert dfa.matches(text.encode()) == validator.is_valid(other), text
    assert checked > 20


def test_flexible_whitespace() -> None:
    schema = {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True}
    dfa = schema_to_dfa(schema, SchemaOptions(whitespace="flexible"))
    assert dfa.matches(b'[ "a" ,\n"b" ]') and dfa.matches(b'["b", "a"]') and dfa.matches(b"[ ]")
    assert not dfa.matches(b'[ "a" , "a" ]') and not dfa.matches(b'["b","a", "b"]')


def test_inside_an_object() -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y"]}, "uniqueItems": True}},
    }
    dfa = schema_to_dfa(schema)
    assert dfa.matches(b'{"tags":["y","x"]}') and dfa.matches(b'{"tags":[]}')
    assert not dfa.matches(b'{"tags":["x","x"]}')


def test_items_without_a_few_known_values_are_refused_with_the_keyword() -> None:
    for schema, pointer in [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "#/uniqueItems"),
        ({"type": "array", "uniqueItems": True}, "#/uniqueItems"),
        ({"properties": {"n": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}, None),
    ]:
        with pytest.raises(UnsupportedSchemaFeature, match="not a few known values") as e:
            schema_to_dfa(schema)
        assert e.value.keyword == "uniqueItems"
        assert e.value.pointer == (pointer or "#/properties/n/uniqueItems")


def test_too_many_sets_of_values_are_refused_unless_max_items_bounds_them() -> None:
    names = [f"v{i}" for i in range(20)]  # 2**20 sets of values
    schema: dict[str, Any] = {"type": "array", "items": {"enum": names}, "uniqueItems": True}
    with pytest.raises(UnsupportedSchemaFeature, match="take 20 distinct values: more than 5000 sets"):
        schema_to_dfa(schema)
    dfa = schema_to_dfa({**schema, "maxItems": 2})  # 1 + 20 + 190 sets
    assert dfa.matches(b'["v3","v17"]') and not dfa.matches(b'["v3","v3"]')
    assert not dfa.matches(b'["v1","v2","v3"]')
