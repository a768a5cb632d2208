"""Schemas too large for one DFA: their large languages go out of line (issue 19, compile failures).

A schema that does not recurse compiles to one DFA; where that DFA grows past ``max_dfa_states`` and
values are exact at any depth (``max_any_depth=None``, the default), the compile is retried with
every large subschema kept as a hole, so an object embeds it instead of copying its states, and the
network runs on the pushdown engine. Here ``max_dfa_states`` is lowered so that a small schema takes
that path; the same schema as one DFA (default limits) is the long-tested reference: the two must
accept the same texts and give the same masks, and agree with ``jsonschema`` (the oracle).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest

import constrain
from constrain import Grammar
from constrain.automata import DFA
from constrain.compiler import clear_caches
from constrain.exceptions import UnsupportedSchemaFeature
from constrain.json_schema import serialize_instance
from constrain.limits import Limits
from constrain.masks.pushdown import PushdownAutomaton

from .shared_data import hf_tokenizer, tokenizer_info


@pytest.fixture(autouse=True)
def _string_layers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These schemas are large through their long strings' layers, as where a maxLength meets a
    product or a union (a bound past 256 is otherwise counted beside the automaton: small)."""
    from constrain.json_schema import strings

    monkeypatch.setattr(strings, "COUNT_PAST", 1_000_000)
    clear_caches(keep_constants=True)  # no automaton compiled with the other threshold
    yield
    clear_caches(keep_constants=True)


LARGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 300},
        "tags": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "k": {"type": "string", "maxLength": 300},
                    "v": {"type": "integer", "minimum": 0, "maximum": 99999},
                },
                "required": ["k"],
                "additionalProperties": False,
            },
        },
        "meta": {
            "type": "object",
            "properties": {
                "note": {"type": "string", "minLength": 2, "maxLength": 400},
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                "kind": {"oneOf": [{"type": "string", "maxLength": 280}, {"type": "integer"}]},
            },
            "additionalProperties": False,
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}
#: One DFA of LARGE has 26,456 states, its largest out-of-line language about 4,200.
LIMITS = Limits(max_dfa_states=6000)


def _string(rng: random.Random, longest: int) -> str:
    n = rng.choice([0, 1, 2, rng.randrange(0, longest + 30), longest, longest + 1])
    return "".join(rng.choice('ab é"\\\n/\u20ac') for _ in range(n))


def _instance(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"name": _string(rng, 300)}
    if rng.random() < 0.7:
        tags = []
        for _ in range(rng.randrange(0, 5)):
            tag: dict[str, Any] = {"k": _string(rng, 300)}
            if rng.random() < 0.5:
                tag["v"] = rng.choice([0, 7, 99999, 100000, -1])
            tags.append(tag)
        out["tags"] = tags
    if rng.random() < 0.7:
        meta: dict[str, Any] = {}
        if rng.random() < 0.6:
            meta["note"] = _string(rng, 400)
        if rng.random() < 0.5:
            meta["code"] = rng.choice(["ABC-1234", "AB-1234", "ABC-12345"])
        if rng.random() < 0.5:
            meta["kind"] = rng.choice([_string(rng, 280), 3, 2.5])
        out["meta"] = meta
    return out


def _compiled(
    schema: Any, max_any_depth: int | None, limits: Limits | None = None
) -> constrain.CompiledGrammar:
    grammar = Grammar.from_json_schema(schema, max_any_depth=max_any_depth, limits=limits)
    return constrain.compile(grammar, tokenizer_info("smollm2-49k"))


def _accepts(compiled: constrain.CompiledGrammar, text: str) -> bool:
    matcher = constrain.GrammarMatcher(compiled)
    return matcher.accept_bytes(text.encode()) and matcher.can_end()


def test_too_large_for_one_dfa_goes_out_of_line_only_in_exact_mode() -> None:
    assert isinstance(Grammar.from_json_schema(LARGE).to_automaton(), DFA)  # fits: one DFA
    network = Grammar.from_json_schema(LARGE, limits=LIMITS).to_automaton()
    assert isinstance(network, PushdownAutomaton)
    assert network.tables.num_states < 26_456
    with pytest.raises(UnsupportedSchemaFeature, match="exceeds 6000"):  # a capped DFA is asked for
        Grammar.from_json_schema(LARGE, max_any_depth=3, limits=LIMITS).to_automaton()
    # A product over objects would fill the holes back in: refused as before, naming the keyword.
    combined = {"allOf": [LARGE, {"type": "object", "required": ["tags"]}]}
    with pytest.raises(UnsupportedSchemaFeature, match="exceeds 6000") as got:
        Grammar.from_json_schema(combined, limits=LIMITS).to_automaton()
    assert got.value.pointer.startswith("#/allOf/0/")


def test_network_and_dfa_agree_with_jsonschema() -> None:
    network, single = _compiled(LARGE, None, LIMITS), _compiled(LARGE, 3)
    validator = jsonschema.Draft202012Validator(LARGE)
    rng = random.Random(11)
    seen = {True: 0, False: 0}
    for i in range(240):
        instance = _instance(rng)
        text = serialize_instance(instance, LARGE)
        if i % 4 == 3:  # break the text: drop one byte
            cut = rng.randrange(1, len(text) - 1)
            text = text[:cut] + text[cut + 1 :]
        try:
            expected = validator.is_valid(json.loads(text))
        except ValueError:
            expected = False
        got = _accepts(network, text)
        assert got == expected, text[:200]
        assert _accepts(single, text) == got, text[:200]
        seen[expected] += 1
    assert seen[True] >= 40 and seen[False] >= 40


def test_masks_equal_the_single_dfa_teacher_forced() -> None:
    """Every step of a tokenised instance: the network's mask is the one DFA's, bit for bit."""
    instance = {
        "name": "n" * 250 + "é",
        "tags": [{"k": "k" * 120, "v": 5}, {"k": ""}],
        "meta": {"note": "x" * 399, "code": "ABC-1234", "kind": "s" * 100},
    }
    jsonschema.validate(instance, LARGE)
    text = serialize_instance(instance, LARGE)
    ids = hf_tokenizer("smollm2-49k").encode(text, add_special_tokens=False).ids
    network = constrain.GrammarMatcher(_compiled(LARGE, None, LIMITS))
    single = constrain.GrammarMatcher(_compiled(LARGE, 3))
    for tid in ids:
        a, b = network.next_token_mask(), single.next_token_mask()
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert (int(a[tid >> 5]) >> (tid & 31)) & 1, tid
        assert network.accept_token(tid) and single.accept_token(tid)
    assert network.can_end() and single.can_end()


@pytest.mark.parametrize(
    "product",
    [
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},  # scalars only: outline stays on
        {"not": {"type": "null"}},
    ],
)
def test_scalar_products_keep_outlining(product: dict[str, Any]) -> None:
    schema = json.loads(json.dumps(LARGE))
    schema["properties"]["extra"] = product
    assert isinstance(Grammar.from_json_schema(schema, limits=LIMITS).to_automaton(), PushdownAutomaton)
    compiled = _compiled(schema, None, LIMITS)
    text = serialize_instance({"name": "a" * 280, "extra": 5}, schema)
    assert _accepts(compiled, text)
    assert not _accepts(compiled, text.replace("5}", "null}"))


def test_an_estimate_refusal_falls_back_to_building_the_one_dfa(monkeypatch: pytest.MonkeyPatch) -> None:
    """The early refusal (an object's values alone past the limit) is an estimate: where the retry out
    of line fails too, the one DFA is built after all, and its own refusal (or result) is what comes."""
    from constrain.compiler import clear_caches
    from constrain.json_schema import holes

    clear_caches(keep_constants=True)  # the other tests' automata for LARGE are cached

    def refuse(ctx: Any, key: Any, node: Any, dfa: Any) -> Any:
        if ctx.outline:  # the network outgrows the limit too
            ctx.size_refusal = UnsupportedSchemaFeature("type", node.ptr, "the retry failed")
            raise ctx.size_refusal
        return dfa

    # Two strings of about 4,200 states each: neither past the limit, together past it (the estimate).
    flat = {
        "type": "object",
        "properties": {"a": LARGE["properties"]["name"], "b": {"type": "string", "maxLength": 290}},
    }
    real_out_of_line = holes.out_of_line
    monkeypatch.setattr(holes, "out_of_line", refuse)
    with pytest.raises(UnsupportedSchemaFeature, match="exceeds 6000") as got:
        Grammar.from_json_schema(flat, limits=LIMITS).to_automaton()
    assert "parts hold" not in str(got.value) and "retry failed" not in str(got.value)
    # Without the monkeypatch, the estimate refuses before the DFA is built, and the retry succeeds.
    monkeypatch.setattr(holes, "out_of_line", real_out_of_line)
    assert isinstance(Grammar.from_json_schema(flat, limits=LIMITS).to_automaton(), PushdownAutomaton)

    # A refusal in the retry that is not about size (another keyword, the budget) is what comes.
    def other(ctx: Any, key: Any, node: Any, dfa: Any) -> Any:
        if ctx.outline:
            raise UnsupportedSchemaFeature("format", node.ptr, "stand-in for another keyword")
        return dfa

    clear_caches(keep_constants=True)
    monkeypatch.setattr(holes, "out_of_line", other)
    with pytest.raises(UnsupportedSchemaFeature, match="stand-in for another keyword"):
        Grammar.from_json_schema(flat, limits=LIMITS).to_automaton()


def test_lenient_drops_made_before_the_retry_are_still_named() -> None:
    """Languages the refused attempt finished are reused; a keyword ``lenient`` dropped in one of them
    must still be in the warning (the network is looser there, and says so)."""
    from constrain.compiler import clear_caches

    clear_caches(keep_constants=True)
    schema = json.loads(json.dumps(LARGE))
    schema["properties"]["meta"]["properties"]["code"]["pattern"] = "^(?=A)[A-Z]{3}-[0-9]{4}$"  # lookahead
    with pytest.warns(UserWarning, match=r"pattern at #/properties/meta/properties/code/pattern"):
        got = Grammar.from_json_schema(schema, limits=LIMITS, lenient=True).to_automaton()
    assert isinstance(got, PushdownAutomaton)
