"""Objects written as tables (:mod:`constrain.json_schema.object_tables`) against the graph
construction they replace.

The oracle is the other construction (an NFA of the member graph, the subset construction,
minimisation; ``object_tables.DIRECT`` off): every object of the schemas here is built both ways and
the two minimal DFAs must be the same table. Instances are checked against ``jsonschema`` as well.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from constrain.automata import DFA
from constrain.automata.regex import regex_dfa
from constrain.compiler import clear_caches
from constrain.grammar import Grammar
from constrain.json_schema import object_tables, objects

from .shared_data import SHARED

MASKBENCH_SAMPLE = SHARED / "data" / "jsonschemabench" / "maskbench" / "data"

STRING = {"type": "string"}
INTEGER = {"type": "integer"}

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {"type": "object", "additionalProperties": False},
    {"type": "object", "properties": {"a": INTEGER}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"a": INTEGER, "b": STRING}},
    {"type": "object", "properties": {"a": INTEGER, "b": STRING}, "required": ["b"]},
    # names that share prefixes, all optional, with and without other keys
    {"type": "object", "properties": {"a": INTEGER, "ab": STRING, "abc": {"type": "boolean"}, "b": INTEGER}},
    {
        "type": "object",
        "properties": {"a": INTEGER, "ab": STRING, "abc": {"type": "boolean"}},
        "additionalProperties": False,
    },
    # escaped and non-ASCII names, an empty name
    {"type": "object", "properties": {'q"uote': INTEGER, "back\\slash": STRING, "é": INTEGER, "": STRING}},
    # required in the middle, optional around it; other keys with a schema of their own
    {
        "type": "object",
        "properties": {"x": INTEGER, "y": STRING, "z": INTEGER},
        "required": ["y"],
        "additionalProperties": {"type": "number"},
    },
    # a property that cannot be present, and one class of pattern keys
    {"type": "object", "properties": {"no": False, "yes": INTEGER}, "additionalProperties": False},
    {"type": "object", "patternProperties": {"^p": INTEGER}, "additionalProperties": False},
    {"type": "object", "propertyNames": {"maxLength": 3}, "properties": {"ab": INTEGER}},
    # nested objects, arrays of objects, enums and consts as values
    {
        "type": "object",
        "properties": {
            "inner": {"type": "object", "properties": {"k": {"enum": ["v", 1, None]}}, "required": ["k"]},
            "list": {"type": "array", "items": {"type": "object", "properties": {"c": {"const": 2}}}},
        },
        "required": ["list"],
    },
]


def _both_ways(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Build every object both ways from now on; the counter says how many were written as tables,
    how many left to the graph, and how many differed (with the object's pointer)."""
    seen: Counter[str] = Counter()
    graph_way = objects._object_order

    def both(ctx, node, slots, tail, counts, anywhere):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(object_tables, "DIRECT", False)
        expected = graph_way(ctx, node, slots, tail, counts, anywhere)
        monkeypatch.setattr(object_tables, "DIRECT", True)
        got = graph_way(ctx, node, slots, tail, counts, anywhere)
        direct = object_tables.object_table(slots, tail, counts, "check") is not None
        same = (
            got.num_states == expected.num_states
            and got.start == expected.start
            and np.array_equal(got.accepting, expected.accepting)
            and np.array_equal(got.transitions, expected.transitions)
        )
        seen["table" if direct and ctx.options.whitespace == "compact" and not anywhere else "graph"] += 1
        if not same:
            seen[f"differs at {node.ptr}"] += 1
        return got

    monkeypatch.setattr(objects, "_object_order", both)
    return seen


def _build(schema: Any) -> Any:
    clear_caches(keep_constants=True)
    return Grammar.from_json_schema(schema).to_automaton()


def test_handwritten_objects_are_the_same_table_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _both_ways(monkeypatch)
    for schema in SCHEMAS:
        _build(schema)
    assert not [k for k in seen if k.startswith("differs")], seen
    assert seen["table"] >= len(SCHEMAS), seen  # each schema has at least one object written as a table


def test_maskbench_objects_are_the_same_table_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    if not MASKBENCH_SAMPLE.is_dir():
        pytest.skip(f"../shared is absent (no {MASKBENCH_SAMPLE}); CI provides it beside the checkout")
    seen = _both_ways(monkeypatch)
    from constrain.budget import budget_scope
    from constrain.exceptions import ConstrainError

    files = sorted(MASKBENCH_SAMPLE.glob("*.json"))
    picked = _every_subset(files, 8)
    for path in picked:
        try:
            with budget_scope(0.5):  # CPU seconds each (every object twice): the largest are left out
                _build(json.loads(path.read_text())["schema"])
        except ConstrainError:
            continue  # refused, or past the budget; the suites cover those
    assert not [k for k in seen if k.startswith("differs")], seen
    assert seen["table"] > 500, seen


def _every_subset(files: list[Path], per: int) -> list[Path]:
    """The first ``per`` records of each MaskBench subset (the file name before ``---``, or before its
    number)."""
    taken: Counter[str] = Counter()
    out = []
    for p in files:
        subset = p.stem.split("---")[0] if "---" in p.stem else p.stem.rsplit("_", 1)[0]
        if taken[subset] < per:
            taken[subset] += 1
            out.append(p)
    return out


INSTANCES: list[tuple[int, str]] = [
    (3, '{"a":1}'),
    (3, "{}"),
    (3, '{"a":1,"b":2}'),
    (4, '{"b":"x"}'),
    (4, '{"a":1}'),
    (4, '{"a":1,"b":"x"}'),
    (4, '{"b":"x","a":1}'),  # keys in another order than the schema's: not the canonical text
    (5, '{"ab":"s","abc":true,"b":3}'),
    (5, '{"abc":true,"zz":[1,{}]}'),
    (6, '{"abc":true}'),
    (6, '{"abcd":true}'),
    (7, '{"q\\"uote":1,"back\\\\slash":"s","\u00e9":2,"":"e"}'),
    (7, '{"q\\"uote":"no"}'),
    (8, '{"y":"s","other":1.5}'),
    (8, '{"x":1,"other":1.5}'),
    (8, '{"x":1,"y":"s","z":2,"w":"not a number"}'),
    (9, '{"yes":1}'),
    (9, '{"no":1}'),
    (10, '{"pa":1,"pb":2}'),
    (10, '{"q":1}'),
    (11, '{"ab":1,"xyz":2}'),
    (11, '{"long":1}'),
    (12, '{"inner":{"k":null},"list":[{"c":2},{}]}'),
    (12, '{"inner":{},"list":[]}'),
]


@pytest.mark.parametrize(("index", "text"), INSTANCES)
def test_tables_accept_what_jsonschema_accepts(index: int, text: str) -> None:
    schema = SCHEMAS[index]
    auto = _build(schema)
    value = json.loads(text)
    canonical = json.dumps(value, separators=(",", ":"), ensure_ascii=False) == text and _in_schema_order(
        schema, value
    )
    expected = jsonschema.Draft202012Validator(schema).is_valid(value) and canonical
    accepts = auto.matches if isinstance(auto, DFA) else auto.accepts
    assert accepts(text.encode()) == expected


def _in_schema_order(schema: dict[str, Any], value: Any) -> bool:
    """Whether the named keys of ``value`` come in the order ``schema`` names them (what the engine
    writes), other keys after them (one level: the instances above are checked one level deep)."""
    if not isinstance(value, dict):
        return True
    names = list(schema.get("properties", {}))
    order = [names.index(k) if k in names else len(names) for k in value]
    return order == sorted(order)


def test_what_a_table_cannot_write_is_left_to_the_graph() -> None:
    """Member counts, two classes of other keys, and a value that could go on with "," are refused
    (None), never written wrong."""
    integer = regex_dfa(r"-?[0-9]+")
    key = regex_dfa(r'"[a-z]+"')
    slots: list[object_tables.Slot] = [(b'"a"', integer, True)]
    assert object_tables.object_table(slots, [], (0, None), "ok") is not None
    assert object_tables.object_table(slots, [], (1, None), "min") is None
    assert object_tables.object_table(slots, [], (0, 3), "max") is None
    assert object_tables.object_table(slots, [(key, integer), (key, integer)], (0, None), "two") is None
    goes_on = regex_dfa(r"1,?")
    assert object_tables.object_table([(b'"a"', goes_on, True)], [], (0, None), "comma") is None
    colon_key = regex_dfa(r'"k":?')
    assert object_tables.object_table([], [(colon_key, integer)], (0, None), "colon") is None
