"""Many ``patternProperties`` at one place, against ``jsonschema``.

The keys a pattern does not name are split into classes (the set of patterns each key matches), one
pattern at a time, keeping only the classes that exist: 22 patterns with prefixes of their own make 23
classes, not 2**22. More than 64 classes is a named refusal.
"""

from __future__ import annotations

import itertools
import string
import warnings
from typing import Any

import jsonschema
import pytest

from constrain.exceptions import UnsupportedSchemaFeature
from constrain.json_schema.compiler import SchemaOptions, schema_to_dfa, serialize_instance

VALUES: list[Any] = [1, "s", True, None]


def _agrees(schema: dict[str, Any], keys: list[str]) -> int:
    """Every object of one or two of ``keys`` with each value of :data:`VALUES`: the automaton accepts
    its text (:func:`serialize_instance`: named keys first) exactly when ``jsonschema`` says it is
    valid. Returns how many were checked."""
    dfa = schema_to_dfa(schema)
    validator = jsonschema.Draft202012Validator(schema)
    checked = 0
    for n in (1, 2):
        for names in itertools.permutations(keys, n):
            for values in itertools.product(VALUES, repeat=n):
                instance = dict(zip(names, values, strict=True))
                text = serialize_instance(instance, schema)
                assert dfa.matches(text.encode()) == validator.is_valid(instance), text
                checked += 1
    return checked


def test_many_prefix_patterns() -> None:
    letters = string.ascii_lowercase[:22]
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "patternProperties": {
            f"^{c}-": {"type": "integer"} if i % 2 else {"type": "string"} for i, c in enumerate(letters)
        },
        "additionalProperties": {"type": "boolean"},
    }
    keys = ["name", "a-1", "b-x", "c-", "v-q", "z-1", "other", "a"]
    assert _agrees(schema, keys) > 100


def test_overlapping_patterns() -> None:
    schema = {
        "type": "object",
        "patternProperties": {
            "a": {"type": "string"},
            "b": {"type": ["string", "integer"]},
            "c": {"enum": ["s", 1, None]},
            "^x": {"type": "null"},
            "[0-9]$": {"not": {"type": "boolean"}},
        },
        "additionalProperties": False,
    }
    keys = ["a", "b", "ab", "abc", "bc", "xa", "x", "q1", "a1", "zz"]
    assert _agrees(schema, keys) > 100


def test_more_than_64_classes_is_a_named_refusal() -> None:
    # any set of these letters may occur in one key: 2**7 classes
    schema = {"type": "object", "patternProperties": {c: {"type": "string"} for c in "abcdefg"}}
    with pytest.raises(UnsupportedSchemaFeature, match="more than 64 classes") as e:
        schema_to_dfa(schema)
    assert e.value.keyword == "patternProperties"
    assert e.value.pointer == "#/patternProperties"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema_to_dfa(schema, SchemaOptions(lenient=True, max_any_depth=2))
    assert any("patternProperties" in str(w.message) for w in caught)
