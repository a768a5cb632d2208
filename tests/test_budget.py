"""Compile budgets (issue 20, item 4) and the shortest completion at any nesting (item 6)."""

from __future__ import annotations

import json

import pytest

import constrain
from constrain import CompileBudget, CompileBudgetExceeded, Grammar, GrammarMatcher
from constrain.budget import budget_scope

from .shared_data import tokenizer_info

# A schema whose compile builds many products of object automata: far more work than 1 ms.
HEAVY = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "array", "items": {"type": "integer"}, "maxItems": 3} for i in range(12)
    },
    "not": {"required": ["p0", "p1"]},
}


def test_a_tiny_budget_refuses_with_the_pointer() -> None:
    with pytest.raises(CompileBudgetExceeded) as err, budget_scope(CompileBudget(seconds=1e-9)):
        Grammar.from_json_schema(json.loads(json.dumps(HEAVY)) | {"title": "tiny budget"})
    assert err.value.pointer.startswith("#")
    assert "budget" in str(err.value)
    assert isinstance(err.value, constrain.ConstrainError)


def test_default_budget_lets_ordinary_schemas_compile() -> None:
    info = tokenizer_info("gpt2-50k")
    compiled = constrain.compile(
        Grammar.from_json_schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
        info,
        budget=CompileBudget(seconds=60),
    )
    assert GrammarMatcher(compiled).accept_bytes(b'{"a":1}')


def test_budget_is_checked() -> None:
    with pytest.raises(constrain.InvalidInputError):
        CompileBudget(seconds=-1)


@pytest.mark.parametrize("depth", [17, 60, 500])
def test_shortest_completion_closes_any_nesting(depth: int) -> None:
    """A* with the grammar's lower bound: depth 500 of the json grammar closes with 500 brackets (the
    breadth-first search gave up at depth 17)."""
    info = tokenizer_info("gpt2-50k")
    m = GrammarMatcher(constrain.compile(Grammar.from_lark(name="json"), info))
    assert m.accept_bytes(b'{"a":' + b"[" * depth)
    assert m.completion_bytes() == b"0" + b"]" * depth + b"}" or m.completion_bytes() == b"]" * depth + b"}"
    for t in m.shortest_completion():
        assert m.accept_token(t)
    assert m.can_end()
