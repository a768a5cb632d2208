"""The DFA network run with a stack (:mod:`constrain.masks.pushdown`): recursive schemas and exact
unconstrained values.

Oracles: every token's bytes stepped one by one through the automaton (whose acceptance is checked
against ``jsonschema`` in test_json_schema_recursion.py and test_exact_any.py) for every mask along a
teacher-forced path, and the Earley engine's masks (a different engine over the same language).
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest

import constrain
from constrain import Grammar, GrammarMatcher
from constrain.caches import clear_all
from constrain.json_schema import SchemaOptions, schema_to_language, serialize_instance
from constrain.json_schema.recursion import build_earley
from constrain.masks import pushdown
from constrain.masks.pushdown import NotDeterministic, PushdownAutomaton, PushdownTokenMasks, pushdown_tables
from constrain_tools.recursive_schemas import ANY_JSON, COMMENTS, TREE

from .shared_data import hf_tokenizer, tokenizer_info

BARE_PROPERTY = {"type": "object", "properties": {"a": {}, "n": {"type": "integer"}}, "required": ["n"]}


def _deep(depth: int) -> Any:
    value: Any = ['x\\"y', 1.5, None]
    for i in range(depth):
        value = [value, {"k": i}] if i % 2 else {"k": value, "z": [True]}
    return value


CASES = [
    ("bare property", BARE_PROPERTY, {"a": _deep(9), "n": 3}),
    ("any json", ANY_JSON, _deep(12)),
    ("tree", TREE, {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]}),
    ("comments", COMMENTS, {"thread": {"author": "ann", "replies": [{"author": "bob", "replies": []}]}}),
]


def _compiled(schema: Any, info: Any) -> constrain.CompiledGrammar:
    return constrain.compile(Grammar.from_json_schema(schema, max_any_depth=None), info)


def _oracle_row(auto: PushdownTokenMasks, config: int, info: Any) -> np.ndarray:
    """The mask by stepping every token's bytes through the automaton (EOS where it may end)."""
    words = np.zeros(auto.num_words, dtype=np.uint32)
    special = set(info.special_ids)
    for tid, data in enumerate(info.token_bytes):
        if data and tid not in special and auto.step(config, data) >= 0:
            words[tid >> 5] |= np.uint32(1 << (tid & 31))
    if auto.is_final(config):
        for tid in info.eos_ids:
            words[tid >> 5] |= np.uint32(1 << (tid & 31))
    return words.view(np.int32)


@pytest.mark.parametrize(("name", "schema", "instance"), CASES, ids=[c[0] for c in CASES])
def test_masks_equal_stepping_every_token(name: str, schema: Any, instance: Any) -> None:
    info = tokenizer_info("smollm2-49k")
    compiled = _compiled(schema, info)
    auto = compiled.automaton
    assert isinstance(auto, PushdownTokenMasks), name
    text = serialize_instance(instance, schema)
    ids = hf_tokenizer("smollm2-49k").encode(text, add_special_tokens=False).ids
    m = GrammarMatcher(compiled)
    out = np.zeros((1, compiled.num_words), dtype=np.int32)
    for i, tid in enumerate(ids):
        m.fill_next_token_bitmask(out)
        if i % 3 == 0 or i == len(ids) - 1:  # the oracle steps all 49k tokens: every third state
            np.testing.assert_array_equal(
                out[0], _oracle_row(auto, m.state, info), err_msg=f"{name} step {i}"
            )
        assert (out[0, tid >> 5] >> (tid & 31)) & 1, (name, i)
        assert m.accept_token(tid), (name, i)
    assert m.can_end()
    m.fill_next_token_bitmask(out)
    np.testing.assert_array_equal(out[0], _oracle_row(auto, m.state, info))


@pytest.mark.parametrize(("name", "schema", "instance"), CASES, ids=[c[0] for c in CASES])
def test_masks_equal_the_earley_engines(name: str, schema: Any, instance: Any) -> None:
    from constrain.cfg.token_masks import compile_earley_masks

    info = tokenizer_info("llama3-128k")
    compiled = _compiled(schema, info)
    lang = schema_to_language(schema, SchemaOptions(max_any_depth=None), ())
    earley = compile_earley_masks(build_earley(lang), compiled.trie, info.eos_ids)
    ids = (
        hf_tokenizer("llama3-128k").encode(serialize_instance(instance, schema), add_special_tokens=False).ids
    )
    m = GrammarMatcher(compiled)
    e_state = earley.start
    for i, tid in enumerate(ids):
        np.testing.assert_array_equal(compiled.automaton.mask(m.state), earley.mask(e_state), err_msg=f"{i}")
        assert m.accept_token(tid)
        e_state = earley.step(e_state, info.token_bytes[tid])
        assert e_state >= 0
    assert earley.is_final(e_state) and m.can_end()


def test_string_bodies_cross_through_the_quote_tokens_trie() -> None:
    """A state whose every way to a push or pop reads a quote walks its crossing tokens in the trie of
    the tokens with a cut byte: the same ids as the whole trie's walk, at every such state of the tree
    network (over an empty stack and under one return state)."""
    info = tokenizer_info("llama3-128k")
    auto = _compiled(TREE, info).automaton
    assert isinstance(auto, PushdownTokenMasks) and auto._quote_trie is not None
    tabs = auto.pushdown.tables
    quote = np.uint64(1) << np.uint64(ord('"'))
    bodies = np.flatnonzero((tabs.necessary[:, 0] & quote) != 0)
    assert bodies.size
    returns = sorted(set(tabs.edge_ret.tolist()))
    crossing = 0
    for g in bodies.tolist():
        for stack in ((), (returns[0],)):
            got = auto._walk(g, stack, False)
            whole = auto._quote_trie
            auto._quote_trie = None
            try:
                expected = auto._walk(g, stack, False)
            finally:
                auto._quote_trie = whole
            assert (got is None) == (expected is None), g
            if got is not None and expected is not None:
                assert sorted(got.tolist()) == sorted(expected.tolist()), g
                crossing += got.size
    assert crossing > 0


def test_a_shallow_stack_key_pops_below_it_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # With masks keyed by the top 2 return states, tokens such as "]]]" pop below the key: the walk is
    # redone with the whole stack, and every mask still equals the oracle.
    monkeypatch.setattr(pushdown, "STACK_KEY_DEPTH", 2)
    info = tokenizer_info("smollm2-49k")
    compiled = _compiled(ANY_JSON, info)
    auto = compiled.automaton
    assert isinstance(auto, PushdownTokenMasks)
    m = GrammarMatcher(compiled)
    text = json.dumps([[[[[[1]]], [[["a"]]]]]], separators=(",", ":"))
    for i in range(len(text)):
        np.testing.assert_array_equal(auto.mask(m.state), _oracle_row(auto, m.state, info), err_msg=text[:i])
        assert m.accept_bytes(text[i])
    assert m.can_end()


def test_deep_nesting_has_no_cap() -> None:
    compiled = _compiled(BARE_PROPERTY, tokenizer_info("llama3-128k"))
    deep = json.dumps(_deep(400), separators=(",", ":"))
    m = GrammarMatcher(compiled)
    assert m.accept_bytes('{"a":' + deep)
    assert not m.can_end()
    assert m.accept_bytes(',"n":1}')
    assert m.can_end()
    bad = GrammarMatcher(compiled)
    assert not bad.accept_bytes('{"a":' + deep[:-1] + "}")  # a bracket closed by the wrong kind


def test_networks_the_next_byte_does_not_decide_go_to_earley() -> None:
    # The root starts a plain object or enters the recursive one on the same "{".
    schema = {
        "$defs": {
            "t": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}
        },
        "anyOf": [{"$ref": "#/$defs/t"}, {"type": "object", "properties": {"leaf": {"type": "integer"}}}],
    }
    lang = schema_to_language(schema, SchemaOptions(), ())
    why = pushdown_tables(lang.root, lang.holes)
    assert isinstance(why, NotDeterministic) and "may both" in str(why)
    assert not isinstance(Grammar.from_json_schema(schema).to_automaton(), PushdownAutomaton)


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from constrain.cfg import EarleyAutomaton

    monkeypatch.setenv("CONSTRAIN_PUSHDOWN", "0")
    clear_all(keep_constants=True)
    try:
        assert isinstance(Grammar.from_json_schema(TREE).to_automaton(), EarleyAutomaton)
    finally:
        monkeypatch.delenv("CONSTRAIN_PUSHDOWN")
        clear_all(keep_constants=True)
    assert isinstance(Grammar.from_json_schema(TREE).to_automaton(), PushdownAutomaton)


def test_pickled_mid_generation_keeps_its_configurations() -> None:
    info = tokenizer_info("llama3-128k")
    compiled = _compiled(ANY_JSON, info)
    m = GrammarMatcher(compiled)
    assert m.accept_bytes('{"a":[[{"b":')
    state = m.state
    back = pickle.loads(pickle.dumps(compiled))
    auto = back.automaton
    assert isinstance(auto, PushdownTokenMasks)
    np.testing.assert_array_equal(auto.mask(state), compiled.automaton.mask(state))
    after = auto.step(state, b"1}]]}")
    assert after >= 0 and auto.is_final(after)


def test_suffix_candidate_sets_against_the_tokens() -> None:
    # Bit s of node n: some token under n has every candidate of the set s among its bytes from n's
    # depth on. Checked by brute force on 3,000 nodes of a real trie (the walk skips subtrees by it).
    compiled = _compiled(ANY_JSON, tokenizer_info("smollm2-49k"))
    trie = compiled.trie
    sets = pushdown.suffix_candidate_sets(trie)
    info = tokenizer_info("smollm2-49k")
    cands = pushdown.NECESSARY_CANDIDATES
    nodes = trie.nodes
    rng = np.random.default_rng(0)
    for n in rng.choice(trie.num_nodes, 3000, replace=False).tolist():
        d, skip = int(nodes[n, 1]), int(nodes[n, 2])
        lo, hi = trie.summary.tok_lo[n], trie.summary.tok_lo[skip]
        have = set()
        for tid in trie.sorted_ids[lo:hi].tolist():
            have.add(sum(1 << i for i, c in enumerate(cands) if c in info.token_bytes[tid][d:]))
        for s in range(128):
            expected = any(s & h == s for h in have)
            got = bool((int(sets[n, s >> 6]) >> (s & 63)) & 1)
            assert got == expected, (n, s)


def test_an_unconstrained_value_beside_a_string_branch_is_unfolded() -> None:
    # "a" may be a short string or any value: at its first byte '"' the DFA's string branch and the
    # any-value hole both go on. The hole is inlined one level there, so the network runs with a
    # stack; masks equal the oracle and acceptance equals jsonschema's.
    import jsonschema

    schema = {"type": "object", "properties": {"a": {"anyOf": [{"type": "string", "maxLength": 2}, {}]}}}
    lang = schema_to_language(schema, SchemaOptions(max_any_depth=None), ())
    assert isinstance(pushdown_tables(lang.root, lang.holes), NotDeterministic)
    info = tokenizer_info("smollm2-49k")
    compiled = _compiled(schema, info)
    auto = compiled.automaton
    assert isinstance(auto, PushdownTokenMasks)
    validator = jsonschema.Draft202012Validator(schema)
    for inst in [{"a": "xy"}, {"a": "long string"}, {"a": [[{"b": [1]}]]}, {"a": None}, {}, [1], "a"]:
        text = json.dumps(inst, separators=(",", ":"))
        assert auto.pushdown.accepts(text.encode()) == validator.is_valid(inst), text
        if not validator.is_valid(inst):
            continue
        m = GrammarMatcher(compiled)
        for ch in text:
            np.testing.assert_array_equal(auto.mask(m.state), _oracle_row(auto, m.state, info), err_msg=text)
            assert m.accept_bytes(ch)
        assert m.can_end()
