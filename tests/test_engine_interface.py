"""One engine interface: every grammar kind compiles to one CompiledGrammar and is walked by one
GrammarMatcher over the TokenAutomaton protocol; the loop's questions (must it end, how to finish,
what is forced) are the matcher's. Oracles: re.fullmatch, jsonschema, brute-force byte checks."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

import constrain
from constrain import CompiledGrammar, Grammar, GrammarMatcher, InvalidInputError, TokenizerInfo
from constrain.compiler import Compiler, TokenAutomaton, ensure_compiled

from .shared_data import tokenizer_info

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "v": {"type": "integer"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["v"],
        }
    },
    "$ref": "#/$defs/node",
}

GRAMMARS = {
    "regex": lambda: Grammar.from_regex(r"(ab|c)[0-9]{2}"),
    "json_schema": lambda: Grammar.from_json_schema(
        {"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": False}
    ),
    "recursive_schema": lambda: Grammar.from_json_schema(TREE),
    "lark": lambda: Grammar.from_lark(name="arithmetic"),
}


@pytest.mark.parametrize("kind", sorted(GRAMMARS))
def test_every_kind_is_one_compiled_grammar_and_one_matcher(kind: str) -> None:
    info = tokenizer_info("gpt2-50k")
    compiled = constrain.compile(GRAMMARS[kind](), info)
    assert type(compiled) is CompiledGrammar
    assert isinstance(compiled.automaton, TokenAutomaton)
    assert compiled.kind == ("context-free" if kind in ("recursive_schema", "lark") else "regular")
    m = GrammarMatcher(compiled)
    assert type(m) is GrammarMatcher and type(m.fork()) is GrammarMatcher
    # The mask agrees with stepping each allowed token's bytes (a sample: the automaton's own step).
    ids = m.allowed_token_ids()
    assert ids.shape[0] > 0
    auto = compiled.automaton
    for tid in ids[:: max(1, ids.shape[0] // 50)].tolist():
        if tid not in info.eos_ids:
            assert auto.step(m.state, info.token_bytes[tid]) >= 0


@pytest.mark.parametrize("kind", sorted(GRAMMARS))
def test_shortest_completion_reaches_an_end(kind: str) -> None:
    info = tokenizer_info("gpt2-50k")
    m = GrammarMatcher(constrain.compile(GRAMMARS[kind](), info))
    prefix = {
        "regex": b"a",
        "json_schema": b'{"a":',
        "recursive_schema": b'{"v":1,"kids":[{"v":',
        "lark": b"(1+",
    }
    assert m.accept_bytes(prefix[kind])
    assert not m.can_end()
    tokens = m.shortest_completion()
    assert not m.can_end()  # unchanged
    for t in tokens:
        assert m.accept_token(t)
    assert m.can_end()
    assert m.completion_bytes() == b""  # it may end now
    full = prefix[kind] + b"".join(info.token_bytes[t] for t in tokens)
    if kind == "regex":
        assert re.fullmatch(r"(ab|c)[0-9]{2}", full.decode())
    elif kind == "recursive_schema":
        jsonschema.validate(json.loads(full), TREE)


def test_must_end_only_where_nothing_may_follow() -> None:
    info = tokenizer_info("gpt2-50k")
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"ab?"), info))
    assert not m.must_end()
    assert m.accept_bytes(b"a")
    assert m.can_end() and not m.must_end()  # "b" may follow
    assert m.accept_bytes(b"b")
    assert m.must_end()
    lark = GrammarMatcher(constrain.compile(Grammar.from_lark('start: "x" "y"?'), info))
    assert lark.accept_bytes(b"x") and not lark.must_end()
    assert lark.accept_bytes(b"y") and lark.must_end()


def test_forced_bytes_on_both_engines() -> None:
    info = tokenizer_info("gpt2-50k")
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    for grammar in (
        Grammar.from_json_schema(schema),
        Grammar.from_lark('start: "{\\"name\\":" NAME "}"\nNAME: /[a-z]+/'),
    ):
        m = GrammarMatcher(constrain.compile(grammar, info))
        forced = m.forced_bytes()
        assert forced.startswith(b'{"name":')
        tokens = m.forced_tokens()
        assert (
            b"".join(info.token_bytes[t] for t in tokens)
            == forced[: sum(len(info.token_bytes[t]) for t in tokens)]
        )


def test_ensure_compiled_checks_what_it_gets() -> None:
    info = tokenizer_info("gpt2-50k")
    other = tokenizer_info("mistral-32k")
    g = Grammar.from_regex(r"[0-9]+")
    compiled = ensure_compiled(g, info)
    assert ensure_compiled(compiled, info) is compiled
    with pytest.raises(InvalidInputError, match="another tokenizer"):
        ensure_compiled(compiled, other)
    with pytest.raises(InvalidInputError, match="Grammar or a CompiledGrammar"):
        ensure_compiled("[0-9]+", info)  # type: ignore[arg-type]


def test_compiler_cache_is_bounded_and_clears() -> None:
    info = TokenizerInfo.from_vocab([b"", b"a", b"b", b"ab"], eos_ids=[0])
    c = Compiler(max_entries=2)
    grammars = [Grammar.from_regex(p) for p in ("a", "b", "ab", "a+")]
    first = c.compile(grammars[0], info)
    assert c.compile(grammars[0], info) is first
    for g in grammars[1:]:
        c.compile(g, info)
    assert len(c) == 2
    assert c.compile(grammars[0], info) is not first  # evicted, least recently used first
    c.clear()
    assert len(c) == 0
    with pytest.raises(InvalidInputError):
        Compiler(max_entries=-1)
    uncached = Compiler(max_entries=0)
    assert uncached.compile(grammars[0], info) is not uncached.compile(grammars[0], info)


def test_terminated_mask_is_eos_only_on_both_engines() -> None:
    info = tokenizer_info("gpt2-50k")
    for grammar in (Grammar.from_regex("a"), Grammar.from_lark('start: "a"')):
        m = GrammarMatcher(constrain.compile(grammar, info))
        assert m.accept_bytes(b"a") and m.accept_token(info.eos_ids[0])
        assert m.is_terminated() and m.must_end()
        assert np.array_equal(
            np.flatnonzero(np.unpackbits(m.next_token_mask().view(np.uint8), bitorder="little")),
            sorted(info.eos_ids),
        )
