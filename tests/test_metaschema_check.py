"""The metaschema check: ``jsonschema-rs`` decides, ``jsonschema`` (the oracle) words the errors.

The fast validator must accept exactly what ``jsonschema`` accepts: on every schema of the JSON Schema
Test Suite and the MaskBench sample, and on broken copies of them (a keyword's value replaced by one of
the wrong type), which gives both answers plenty of refusals to agree on.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from constrain.exceptions import SchemaError
from constrain.json_schema.loading import (
    _fast_meta_validator,
    _meta_validator,
    check_schema,
    detect_draft,
)

from .shared_data import SHARED

SUITE = SHARED / "data" / "json-schema-test-suite" / "tests"
MASKBENCH = SHARED / "data" / "jsonschemabench" / "maskbench" / "data"

#: Wrong-typed values for keywords, to break a schema against its metaschema.
_BREAKS: list[tuple[str, Any]] = [
    ("type", 5),
    ("type", "integr"),
    ("required", [1]),
    ("minLength", -1),
    ("maxItems", 1.5),
    ("properties", []),
    ("items", 3),
    ("enum", {}),
    ("pattern", 7),
    ("additionalProperties", "no"),
    ("allOf", []),
    ("$ref", 0),
    ("multipleOf", 0),
    ("uniqueItems", "yes"),
]


def _schemas() -> Iterator[tuple[str, Any, str]]:
    if not SHARED.exists():
        pytest.skip(f"../shared is absent (no {SHARED}); CI provides it beside the checkout")
    for folder, draft in (("draft2020-12", "2020-12"), ("draft7", "7")):
        for path in sorted((SUITE / folder).glob("*.json")):
            for i, group in enumerate(json.loads(path.read_text())):
                yield f"{folder}/{path.name}#{i}", group["schema"], draft
    for path in sorted(MASKBENCH.glob("*.json"))[::4]:
        record = json.loads(path.read_text())
        schema = record.get("schema", record) if isinstance(record, dict) else record
        yield path.name, schema, "2020-12"


def _broken(schema: Any, rng: random.Random) -> Any:
    """``schema`` with one keyword (at the root, or in its first property) set to a wrong value."""
    keyword, value = rng.choice(_BREAKS)
    out = copy.deepcopy(schema) if isinstance(schema, dict) else {}
    target = out
    props = out.get("properties")
    if isinstance(props, dict) and props and rng.random() < 0.5:
        first = next(iter(props))
        if isinstance(props[first], dict):
            target = props[first]
    target[keyword] = value
    return out


def test_fast_check_accepts_exactly_what_jsonschema_accepts() -> None:
    rng = random.Random(19)
    checked = refused = 0
    for name, schema, default in _schemas():
        draft = detect_draft(schema, default)
        fast = _fast_meta_validator(draft)
        if fast is None:
            pytest.skip("jsonschema-rs has no wheel here (the check falls back to jsonschema)")
        for doc in (schema, _broken(schema, rng)):
            want = _meta_validator(draft).is_valid(doc)
            assert fast.is_valid(doc) == want, (name, draft, json.dumps(doc)[:300])
            checked += 1
            refused += not want
    # both answers were exercised, many times
    assert checked > 1800 and refused > 800, (checked, refused)


@pytest.mark.parametrize(
    ("schema", "pointer", "keyword"),
    [
        ({"required": [1]}, "/required/0", "required"),
        ({"properties": {"a": {"type": "integr"}}}, "/properties/a/type", "type"),
        ({"minLength": -1}, "/minLength", "minLength"),
    ],
)
def test_refusals_keep_jsonschemas_pointer_and_keyword(schema: Any, pointer: str, keyword: str) -> None:
    with pytest.raises(SchemaError) as got:
        check_schema(schema, "2020-12")
    assert got.value.pointer == pointer
    assert got.value.keyword == keyword


def test_values_it_cannot_convert_fall_back_to_jsonschema() -> None:
    check_schema({"maximum": 10**400}, "2020-12")  # jsonschema accepts it; no crash either way
    with pytest.raises(SchemaError):
        check_schema({"maximum": "10"}, "2020-12")
