"""Recursive JSON Schemas (``$ref`` cycles) through both engines for them, checked against ``jsonschema``.

The engines: the DFA network run with a stack (:mod:`constrain.masks.pushdown`, the default where the
next byte decides every push and pop) and the Earley engine (``CONSTRAIN_PUSHDOWN=0``, and every
network that is not deterministic); the ``engine`` fixture runs a test on each.

Oracles: ``jsonschema`` for validity of instances and of random walks; the canonical text of an
instance (:func:`serialize_instance`) must be accepted exactly when ``jsonschema`` accepts the
instance. No depth cap: nesting far deeper than ``max_any_depth`` is accepted.
"""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest

import constrain
from constrain.caches import clear_all
from constrain.cfg import EarleyAutomaton, EarleyTokenMasks
from constrain.exceptions import InvalidInputError, UnsupportedSchemaFeature
from constrain.json_schema import holes, recursion
from constrain.json_schema.compiler import schema_to_dfa, serialize_instance
from constrain.masks.pushdown import PushdownAutomaton, PushdownTokenMasks
from constrain_tools.recursive_schemas import ANY_JSON, COMMENTS, LINKED_LIST, TREE

from .test_json_schema_walks import llama3, random_walk

WIDE = {  # the shapes that kept large recursive schemas from compiling (MaskBench's WashingtonPost)
    "$defs": {
        # A bare "type" beside anyOf: cut to first bytes, not a product against the recursion.
        "node": {"type": "object", "anyOf": [{"$ref": "#/$defs/leaf"}, {"$ref": "#/$defs/branch"}]},
        "leaf": {
            "type": "object",
            "properties": {"name": {"type": "string"}, **{f"p{i}": {"type": "integer"} for i in range(8)}},
            "required": ["name"],
        },
        "branch": {
            "type": "object",
            "properties": {
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3},
                "meta": {},  # any value at all, at any depth
            },
            # A catch-all pattern repeating a property's constraints under another description.
            "patternProperties": {
                "^k": {"description": "x", "type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}
            },
            "required": ["kids"],
        },
    },
    "allOf": [{"$ref": "#/$defs/node"}, {"type": "object"}],  # a bare type under allOf too
}


ENGINES = {"pushdown": (PushdownAutomaton, PushdownTokenMasks), "earley": (EarleyAutomaton, EarleyTokenMasks)}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The engine's (automaton type, masks type), with it switched on (compiled grammars are cached:
    cleared). WIDE's root may start a leaf object or enter the recursive branch object on the same
    ``{``: not deterministic, so it stays on the Earley engine either way."""
    monkeypatch.setenv("CONSTRAIN_PUSHDOWN", "1" if request.param == "pushdown" else "0")
    clear_all(keep_constants=True)
    yield ENGINES[request.param]
    clear_all(keep_constants=True)


def _engine_for(schema: Any, engine: Any) -> Any:
    """The (automaton type, masks type) ``schema`` gets under ``engine`` (see :func:`engine`)."""
    return ENGINES["earley"] if schema is WIDE else engine


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(7 if depth > 0 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 7, -3, 2.5, 1e3])
    if kind == 3:
        return rng.choice(["", "ab", "abcdef", 'q"\\', "ann", "bob"])
    if kind == 4:
        return rng.randrange(12)
    if kind == 5:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = ["name", "children", "value", "next", "author", "score", "replies", "thread", "x"]
    keys += ["kids", "p1", "meta"]
    return {k: _random_value(rng, depth - 1) for k in rng.sample(keys, rng.randrange(4))}


def _mutations(rng: random.Random, value: Any, depth: int) -> Any:
    """``value`` with a random subvalue replaced (to make near-miss instances)."""
    if depth == 0 or not isinstance(value, (dict, list)) or not value or rng.random() < 0.3:
        return _random_value(rng, 2)
    if isinstance(value, dict):
        k = rng.choice(list(value))
        return {**value, k: _mutations(rng, value[k], depth - 1)}
    i = rng.randrange(len(value))
    return [*value[:i], _mutations(rng, value[i], depth - 1), *value[i + 1 :]]


SEEDS = {
    "tree": (TREE, [{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]}]),
    "linked_list": (LINKED_LIST, [{"value": 1, "next": {"value": 2, "next": {"value": 3, "next": None}}}]),
    "any_json": (ANY_JSON, [{"a": [1, {"b": [None, "x"]}], "c": {"d": {}}}]),
    "comments": (COMMENTS, [{"thread": {"author": "ann", "score": 3, "replies": [{"author": "bob"}]}}]),
    "wide": (WIDE, [{"kids": [{"name": "a", "p1": 2}, {"kids": [], "meta": [[{"m": [1]}]]}], "kx": "q"}]),
}


@pytest.mark.parametrize("out_of_line", [256, 4], ids=["default", "every-dfa-out-of-line"])
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_canonical_text_accepted_exactly_when_jsonschema_validates(
    name: str, out_of_line: int, monkeypatch: pytest.MonkeyPatch, engine: Any
) -> None:
    # With a tiny threshold nearly every subschema's language becomes a hole of its own, and every
    # DFA's segments stop at its junctions too (after "," and before "}").
    monkeypatch.setattr(holes, "OUT_OF_LINE_STATES", out_of_line)
    if out_of_line < 256:
        monkeypatch.setattr(recursion, "_JUNCTION_MIN_CUTS", 0)
    schema, seeds = SEEDS[name]
    automaton = constrain.Grammar.from_json_schema(schema).to_automaton()
    assert isinstance(automaton, _engine_for(schema, engine)[0])
    validator = jsonschema.Draft202012Validator(schema)
    rng = random.Random(name)
    instances = list(seeds)
    for _ in range(300):
        base = rng.choice(seeds)
        instances.append(_mutations(rng, base, 4) if rng.random() < 0.7 else _random_value(rng, 4))
    valid_seen = invalid_seen = 0
    for inst in instances:
        text = serialize_instance(inst, schema).encode()
        expected = validator.is_valid(inst)
        assert automaton.accepts(text) == expected, (name, text)
        valid_seen += expected
        invalid_seen += not expected
    assert valid_seen >= 1
    assert invalid_seen >= 50 or name == "any_json"  # every JSON value is valid there


def test_no_depth_cap(engine: Any) -> None:
    automaton = constrain.Grammar.from_json_schema(ANY_JSON, max_any_depth=2).to_automaton()
    assert isinstance(automaton, engine[0])
    deep: Any = 1
    for i in range(40):
        deep = [deep] if i % 2 else {"k": deep}
    assert automaton.accepts(json.dumps(deep, separators=(",", ":")).encode())
    assert not automaton.accepts(json.dumps(deep, separators=(",", ":")).encode()[:-1])
    node: Any = None
    for v in range(60):
        node = {"value": v, "next": node}
    ll = constrain.Grammar.from_json_schema(LINKED_LIST).to_automaton()
    assert isinstance(ll, engine[0])
    assert ll.accepts(serialize_instance(node, LINKED_LIST).encode())


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_random_token_walks_validate(name: str, engine: Any) -> None:
    schema, _ = SEEDS[name]
    compiled = constrain.compile(constrain.Grammar.from_json_schema(schema), llama3())
    assert isinstance(compiled.automaton, _engine_for(schema, engine)[1])
    validator = jsonschema.Draft202012Validator(schema)
    rng = random.Random(1)
    finished = 0
    for _ in range(6):
        walk = random_walk(compiled, rng)
        if walk.text is None:
            continue
        finished += 1
        value = json.loads(walk.text.decode("utf-8"))
        assert validator.is_valid(value), walk.text
    assert finished >= 3


def test_serialized_instances_walk_through_the_matcher_token_by_token() -> None:
    info = llama3()
    compiled = constrain.compile(constrain.Grammar.from_json_schema(COMMENTS), info)
    inst = {
        "thread": {
            "author": "ann",
            "replies": [{"author": "bob", "replies": [{"author": "ann", "score": 9}]}],
        }
    }
    m = constrain.GrammarMatcher(compiled)
    assert m.accept_bytes(serialize_instance(inst, COMMENTS).encode())
    assert m.can_end()
    bad = constrain.GrammarMatcher(compiled)
    assert not bad.accept_bytes(b'{"thread":{"author":"ann","replies":[{"author":"eve"')


def test_recursion_inside_intersections_is_refused_with_its_pointer() -> None:
    schema = {
        "$defs": {"t": {"properties": {"kids": {"items": {"$ref": "#/$defs/t"}}}}},
        "allOf": [{"$ref": "#/$defs/t"}, {"properties": {"kids": {"maxItems": 2}}}],
    }
    with pytest.raises(UnsupportedSchemaFeature) as e:
        constrain.Grammar.from_json_schema(schema)
    assert e.value.keyword == "$ref"
    assert e.value.pointer.startswith("#")
    assert "allOf" in str(e.value)


def test_nullable_ref_through_oneof_is_exact(engine: Any) -> None:
    # oneOf [null, object]: the branches start with different bytes, so "exactly one" is exact.
    automaton = constrain.Grammar.from_json_schema(LINKED_LIST).to_automaton()
    assert isinstance(automaton, engine[0])
    assert automaton.accepts(b'{"value":1,"next":null}')
    assert not automaton.accepts(b'{"value":1,"next":1}')


def test_dfa_only_entry_points_say_the_schema_is_recursive() -> None:
    with pytest.raises(UnsupportedSchemaFeature, match="recursive"):
        schema_to_dfa(TREE)
    with pytest.raises(InvalidInputError, match="context-free"):
        constrain.Grammar.from_json_schema(TREE).to_dfa()


def test_unconstrained_values_in_recursive_schemas_have_no_depth_cap(engine: Any) -> None:
    # "meta": {} is the any-value hole there, not the DFA capped at max_any_depth.
    automaton = constrain.Grammar.from_json_schema(WIDE, max_any_depth=2).to_automaton()
    assert isinstance(automaton, _engine_for(WIDE, engine)[0])
    deep: Any = "x"
    for i in range(30):
        deep = [deep] if i % 2 else {"m": deep}
    inst = {"kids": [], "meta": deep}
    assert jsonschema.Draft202012Validator(WIDE).is_valid(inst)
    assert automaton.accepts(serialize_instance(inst, WIDE).encode())
    assert not automaton.accepts(serialize_instance(inst, WIDE).encode().replace(b'"x"', b"x"))


def test_any_value_meeting_a_constraint_is_filled_in_depth_capped(engine: Any) -> None:
    # "not" over an unconstrained value needs bytes, not a hole: there the capped DFA stands in.
    schema = {
        "$defs": {
            "t": {
                "type": "object",
                "properties": {
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}},
                    "meta": {"not": {"type": "string"}},
                },
            }
        },
        "$ref": "#/$defs/t",
    }
    automaton = constrain.Grammar.from_json_schema(schema).to_automaton()
    assert isinstance(automaton, engine[0])
    validator = jsonschema.Draft202012Validator(schema)
    for inst in [
        {"meta": [1, {"a": None}]},
        {"meta": "s"},
        {"kids": [{"meta": 3}, {"kids": [{"meta": "no"}]}]},
        {"kids": [{"meta": {"x": [True]}}]},
        {"meta": None, "kids": []},
    ]:
        assert automaton.accepts(serialize_instance(inst, schema).encode()) == validator.is_valid(inst), inst


def test_junctions_are_after_structural_commas_and_before_closing_braces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recursion, "_JUNCTION_MIN_CUTS", 0)
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    dfa = schema_to_dfa(schema)
    stop = recursion._boundaries(dfa)

    def at(prefix: bytes) -> bool:
        return bool(stop[dfa.step(dfa.start, prefix)])

    assert at(b'{"a":"x,y",')  # the next member starts here
    assert at(b'{"a":"x"')  # a member's value ends: "," or "}" next
    assert not at(b'{"a":"x,')  # a comma inside a string
    assert not at(b'{"a":"x}')
    assert not at(b'{"b":12')  # inside a number (its digits loop)
