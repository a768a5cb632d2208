"""Split walks (dense states' masks from their future up to the next quote, shared across grammars),
against the direct oracle of test_mask_sharing: every token stepped through the DFA with numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import constrain.json_schema.strings as strings_mod
import constrain.masks.dfa_masks as dfa_masks_mod
from constrain import Grammar, GrammarMatcher, TokenizerInfo
from constrain.automata import DFA, regex_to_dfa
from constrain.cfg.token_masks import lexeme_token_sets
from constrain.compiler import CompiledGrammar, clear_caches
from constrain.json_schema import SchemaOptions, schema_to_language, serialize_instance
from constrain.json_schema.recursion import build_earley
from constrain.masks import token_trie
from constrain.masks.dfa_masks import FUTURE_MASKS, DFATokenMasks
from constrain.masks.sharing import canonical_future, split_future, table_agreement

from .regex_family import regexes
from .shared_data import tokenizer_info
from .test_mask_sharing import _live_strings, direct_allowed, mask_ids

CUT = np.zeros(256, dtype=np.bool_)
CUT[[0x22, 0x5C]] = True


def _dfa_schema(schema: object) -> Grammar:
    """A schema's grammar with unconstrained values capped, so that it is one DFA (these tests are
    about DFA masks; the default, exact values at any depth, runs such schemas with a stack)."""
    return Grammar.from_json_schema(schema, max_any_depth=3)


def _lazy(
    grammar: Grammar, info: TokenizerInfo, split: bool, monkeypatch: pytest.MonkeyPatch
) -> CompiledGrammar:
    """A compiled grammar with no mask computed ahead (every fill is a first visit)."""
    monkeypatch.setattr(dfa_masks_mod, "SPLIT_WALKS", split)
    dfa = grammar.to_automaton()
    assert isinstance(dfa, DFA)
    return CompiledGrammar(
        grammar, info, DFATokenMasks(dfa, token_trie(info), info.eos_ids, background=False)
    )


SCHEMAS = [
    (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "tag": {"type": "string", "maxLength": 40},
                "note": {"type": "string", "minLength": 2},
                "age": {"type": "integer"},
            },
            "required": ["name", "tag", "note", "age"],
        },
        {"name": 'Ada "Countess" Lovelace', "tag": "métier: analyste, 1843", "note": "ok\\", "age": 36},
    ),
    (  # additional keys allowed: each key position is a dense state that spells known names too
        {"type": "object", "properties": {"alpha": {"type": "number"}, "beta": {"type": "string"}}},
        {"alpha": 1.5, "beta": "x", "gamma": "free text, 東京", "delta": [1, "two"]},
    ),
]


@pytest.mark.parametrize("tok", ["llama3-128k", "mistral-32k"])
@pytest.mark.parametrize("case", range(len(SCHEMAS)))
def test_split_masks_match_oracle_along_a_path(tok: str, case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mask on a teacher-forced path is the oracle's, and split walks did the dense ones.

    mistral's longest token (25 bytes) is longer than its split depth (12), so the long-token walk runs."""
    info = tokenizer_info(tok)
    schema, instance = SCHEMAS[case]
    grammar = _dfa_schema(schema)
    compiled = _lazy(grammar, info, True, monkeypatch)
    text = serialize_instance(instance, schema)
    ids = info.encode_fragment(text)
    assert ids is not None and info.decode_bytes(ids) == text.encode()
    m = GrammarMatcher(compiled)
    states = [m.state]
    for t in ids:
        assert t in mask_ids(compiled, m.state)
        assert m.accept_token(t)
        states.append(m.state)
    for s in states:
        assert mask_ids(compiled, s) == direct_allowed(compiled, s), s
    assert compiled.automaton._cache.plain_walks > 0  # "name" (case 0), the free keys (case 1)
    if case == 0:
        assert compiled.automaton._cache.split_walks > 0  # "tag" and "note" are bounded


@pytest.mark.parametrize(
    "pattern",
    [
        r'"[^"\\]{0,60}"(, "[a-z]{1,5}")?',
        r'\{"a": "([^"\\]|\\.)*", "b": "([^"\\]|\\.){3,50}"\}',
        r'"[^"\\\n]{1,200}"',
        r"[^\n]{1,300}",
    ],
)
def test_every_dense_state_matches_whole_walks(pattern: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All states in breadth-first order (so each split walk may reuse the previous one): split
    against whole walks, and the oracle on a sample."""
    info = tokenizer_info("llama3-128k")
    grammar = Grammar.from_regex(pattern)
    whole = _lazy(grammar, info, False, monkeypatch)
    split = _lazy(grammar, info, True, monkeypatch)
    from constrain.masks.sharing import bfs_state_order

    order = bfs_state_order(split.automaton.dfa).tolist()
    for i, s in enumerate(order[:300]):
        got = split.automaton._walk(int(s))
        assert np.array_equal(got, whole.automaton._walk(int(s))), (pattern, s)
        if i % 25 == 0:
            assert mask_ids(split, int(s)) == direct_allowed(split, int(s))
    assert split.automaton._cache.split_walks + split.automaton._cache.plain_walks > 0


def test_string_bodies_share_one_future_across_grammars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the plain walk is not taken, the body of any plain string property, in any schema, is one
    future (the plain body's); an object key with additional keys allowed, which tracks the known
    names, is the same future."""
    info = tokenizer_info("llama3-128k")
    FUTURE_MASKS.clear()
    dfa_masks_mod._PLAIN_FUTURES.clear()
    monkeypatch.setattr(dfa_masks_mod, "PLAIN_FIRST_PAIRS", 1)  # every plain check gives up
    monkeypatch.setattr(dfa_masks_mod, "PLAIN_MAX_PAIRS", 1)
    first = _lazy(
        _dfa_schema({"type": "object", "properties": {"a": {"type": "string"}}}),
        info,
        True,
        monkeypatch,
    )
    m = GrammarMatcher(first)
    assert m.accept_bytes(b'{"a":"')
    m.next_token_mask()
    assert first.automaton._cache.split_misses == 1
    other = _lazy(
        _dfa_schema({"type": "array", "items": {"type": "object", "properties": {"zz": {"type": "string"}}}}),
        info,
        True,
        monkeypatch,
    )
    m = GrammarMatcher(other)
    assert m.accept_bytes(b'[{"zz":"')
    m.next_token_mask()
    assert m.accept_bytes(b'x"},{"')  # a key: "zz" or any other name
    m.next_token_mask()
    assert other.automaton._cache.split_walks == 2
    assert other.automaton._cache.split_misses == 0


def test_plain_string_body_is_a_tokenizer_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unconstrained string body's future mask is kept per tokenizer (not in FUTURE_MASKS), survives
    ``clear_caches(keep_constants=True)`` and is rebuilt after a full clear; its masks equal the oracle."""
    from constrain.compiler import clear_caches

    info = tokenizer_info("smollm2-49k")
    clear_caches()
    monkeypatch.setattr(dfa_masks_mod, "PLAIN_FIRST_PAIRS", 1)  # split walks, not the plain walk
    monkeypatch.setattr(dfa_masks_mod, "PLAIN_MAX_PAIRS", 1)
    schema = {"type": "object", "properties": {"s": {"type": "string"}, "t": {"type": "string"}}}

    def body_mask(prefix: bytes) -> tuple[int, np.ndarray]:
        compiled = _lazy(_dfa_schema(schema), info, True, monkeypatch)
        m = GrammarMatcher(compiled)
        assert m.accept_bytes(prefix)
        mask = m.next_token_mask().copy()
        body_state.append((compiled, m))
        return compiled.automaton._cache.split_misses, mask

    body_state: list[tuple[CompiledGrammar, GrammarMatcher]] = []
    misses, mask = body_mask(b'{"s":"')
    assert misses == 1 and len(FUTURE_MASKS) == 0, "the plain body is the constant, not a cache entry"
    assert dfa_masks_mod._PLAIN_FUTURES[token_trie(info)][1] is not None
    clear_caches(keep_constants=True)
    misses, again = body_mask(b'{"s":"')
    assert misses == 0 and np.array_equal(mask, again)
    misses, _ = body_mask(b'{"s":"x","t":"')  # the other property's body: the same constant
    assert misses == 0
    clear_caches()
    misses, _ = body_mask(b'{"s":"')
    assert misses == 1
    compiled = body_state[0][0]
    dfa = compiled.automaton.dfa
    state = dfa.start
    for b in b'{"s":"':
        state = int(dfa.transitions[state, b])
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: info.vocab_size]
    assert set(np.flatnonzero(bits).tolist()) == direct_allowed(compiled, state)

    # A free key that also spells long known names: its canonical future has more states than a full
    # merge guarantees (a missed merge), and the level-by-level check still finds the plain body.
    long_names = ("a_very_long_property_name_indeed", "another_quite_long_property_name", "x")
    keyed_schema = {"type": "object", "properties": {n: {"type": "integer"} for n in long_names}}
    keyed = _lazy(_dfa_schema(keyed_schema), info, True, monkeypatch)
    dfa = keyed.automaton.dfa
    state = int(dfa.transitions[int(dfa.transitions[dfa.start, ord("{")]), ord('"')])
    trie = token_trie(info)
    depth = dfa_masks_mod._split_depth(trie)
    cut = dfa_masks_mod._cut_of(trie)
    assert cut is not None
    table = canonical_future(split_future(dfa.transitions, state, cut[0], depth, 512), depth)
    assert table.shape[0] > depth + 1 and table.tobytes() != dfa_masks_mod._PLAIN_FUTURES[trie][0]
    m = GrammarMatcher(keyed)
    assert m.accept_bytes(b'{"')
    key_mask = m.next_token_mask().copy()
    assert keyed.automaton._cache.split_walks == 1 and keyed.automaton._cache.split_misses == 0
    bits = np.unpackbits(key_mask.view(np.uint8), bitorder="little")[: info.vocab_size]
    assert set(np.flatnonzero(bits).tolist()) == direct_allowed(keyed, state)

    # ... and a body bounded closer than the split depth is not the plain one
    short = _dfa_schema({"type": "string", "maxLength": 5}).to_automaton()
    body = int(short.transitions[short.start, ord('"')])
    table = canonical_future(split_future(short.transitions, body, cut[0], depth, 512), depth)
    plain = dfa_masks_mod._PLAIN_FUTURES[trie]
    assert not dfa_masks_mod._is_plain_future(table, table.tobytes(), plain, depth)


def test_bounded_body_reuses_the_previous_future(monkeypatch: pytest.MonkeyPatch) -> None:
    """Near a maxLength bound each position is a new future; it copies the short tokens of the
    previous one (a partial walk) and stays exact."""
    info = tokenizer_info("llama3-128k")
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 30}}}
    compiled = _lazy(_dfa_schema(schema), info, True, monkeypatch)
    m = GrammarMatcher(compiled)
    assert m.accept_bytes(b'{"s":"')
    for ch in "abcdefghijklmnopqrstuvwxyz0123":
        mask = mask_ids(compiled, m.state)
        assert mask == direct_allowed(compiled, m.state)
        assert m.accept_bytes(ch.encode())
    assert compiled.automaton._cache.partial_walks > 0


@settings(max_examples=60, deadline=None)
@given(regexes, st.integers(1, 3))
def test_canonical_future_and_agreement_match_brute_force(pattern: str, depth: int) -> None:
    """Walking the canonical table keeps alive exactly the strings of at most ``depth`` bytes without a
    cut byte that the state keeps alive; equal tables mean equal such strings; table_agreement is the
    depth up to which two states' strings agree."""
    dfa = regex_to_dfa(pattern)
    trans = dfa.transitions
    _, first = np.unique(trans.T, axis=0, return_index=True)
    alphabet = sorted(int(b) for b in first if not CUT[int(b)])
    if not alphabet or len(alphabet) ** depth > 3000 or dfa.num_states > 30:
        depth = 1
    cut_trans = trans.copy()
    cut_trans[:, CUT] = -1
    tables = []
    for s in range(dfa.num_states):
        raw = split_future(trans, s, CUT, depth, 10_000)
        table = canonical_future(raw, depth)
        assert _live_strings(table, 0, alphabet, depth) == _live_strings(cut_trans, s, alphabet, depth)
        tables.append(table)
    live = [_live_strings(cut_trans, s, alphabet, depth) for s in range(dfa.num_states)]
    for s, t in itertools.combinations(range(dfa.num_states), 2):
        if np.array_equal(tables[s], tables[t]):
            assert live[s] == live[t], (pattern, s, t)
        k = table_agreement(tables[s], tables[t], depth, 10_000)
        for n in range(1, depth + 1):
            agree = {w for w in live[s] if len(w) <= n} == {w for w in live[t] if len(w) <= n}
            assert agree == (k >= n), (pattern, s, t, n, k)


def test_split_future_gives_up_past_the_cap() -> None:
    dfa = regex_to_dfa(r"[a-z]{0,100}")
    assert split_future(dfa.transitions, dfa.start, CUT, 64, 16).shape[0] == 0
    assert split_future(dfa.transitions, dfa.start, CUT, 64, 1000).shape[0] == 65  # rows up to 64 bytes


def test_precompute_ahead_takes_dense_states_from_plain_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile-time masks of string bodies come from plain walks and are exact."""
    monkeypatch.setattr(dfa_masks_mod, "EAGER_BUDGET_S", 60.0)  # a slow machine must not stop it early
    info = tokenizer_info("llama3-128k")
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    compiled = _lazy(_dfa_schema(schema), info, True, monkeypatch)
    auto = compiled.automaton
    assert isinstance(auto, DFATokenMasks)
    assert auto.precompute_ahead() > 0
    assert auto._cache.plain_walks >= 2  # both bodies
    for state in range(auto.dfa.num_states):
        assert mask_ids(compiled, state) == direct_allowed(compiled, state), state


def test_lexeme_walk_matches_the_plain_lexeme_walk() -> None:
    """The Earley masks' per-lexeme walk with the chain shortcut gives the plain walk's sets."""
    info = tokenizer_info("llama3-128k")
    trie = token_trie(info)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "kids": {"type": "array", "items": {"$ref": "#"}},
        },
    }
    # the Earley engine's automaton (the schema itself runs on the pushdown network by default)
    auto = build_earley(schema_to_language(schema, SchemaOptions(), ()))
    dfas = auto.dfas
    checked = 0
    for dfa in dfas:
        for q in range(dfa.num_states):
            a = np.zeros(trie.num_words, dtype=np.uint32)
            b = a.copy()
            sub_a = lexeme_token_sets(
                dfa.transitions,
                dfa.accepting,
                q,
                trie.nodes,
                trie.dup_start,
                trie.dup_end,
                trie.sorted_ids,
                trie.max_depth,
                a,
            )
            sub_b = trie.lexeme_sets(dfa.transitions, dfa.accepting, q, b)
            assert np.array_equal(a, b) and np.array_equal(sub_a, sub_b), q
            checked += 1
    assert checked > 10


PLAIN_CASES = [
    # (schema, prefixes that end in a dense state, which of them are plain string bodies)
    (
        {
            "type": "object",
            "properties": {
                "free": {"type": "string"},
                "bounded": {
                    "type": "string",
                    "maxLength": 40,
                },  # past the split depth, under the longest token
                "short": {"type": "string", "maxLength": 3},
                "escaped": {"type": "string", "pattern": "^[^x]*$"},
                **{f"name_{i}_{'y' * i}": {"type": "integer"} for i in range(12)},
            },
        },
        [
            b'{"free":"',
            b'{"free":"caf\xc3\xa9 ',
            b'{"bounded":"',
            b'{"bounded":"ab',
            b'{"short":"',
            b'{"escaped":"',
            b'{"',
            b'{"name_1',
            b'{"zz',
        ],
        [True, True, False, False, False, False, True, True, True],
    ),
    (  # no free keys: a key is a choice of names, never a plain body
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        [b'{"a":"', b'{"'],
        [True, False],
    ),
]


@pytest.mark.parametrize("case", range(len(PLAIN_CASES)))
def test_plain_walks_only_for_plain_bodies_and_exact(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state gets the plain body's constant mask (+ its cut walk) only where its future up to a cut
    byte is the unconstrained body at every length: a string of any text, a free key that also spells
    the declared names; not a bounded one (maxLength past the split depth included) or a pattern. Every
    mask equals the oracle's, which steps each token through the DFA."""
    info = tokenizer_info("llama3-128k")
    schema, prefixes, plain = PLAIN_CASES[case]
    for prefix, expect in zip(prefixes, plain, strict=True):
        compiled = _lazy(_dfa_schema(schema), info, True, monkeypatch)
        m = GrammarMatcher(compiled)
        assert m.accept_bytes(prefix), prefix
        assert mask_ids(compiled, m.state) == direct_allowed(compiled, m.state), prefix
        cache = compiled.automaton._cache
        assert (cache.plain_walks == 1) == expect, (prefix, cache.plain_walks)


def test_plain_closure_verdicts() -> None:
    """plain_closure: equal for a string of any text, differ for bounded ones and patterns, undecided
    past its bound."""
    from constrain.masks.sharing import closure_columns, plain_closure

    plain, p0 = dfa_masks_mod._plain_string_body()
    every = np.flatnonzero(~CUT).astype(np.int64)  # every byte not cut: the reference reading
    for schema, verdict in [
        ({"type": "string"}, "plain"),
        ({"type": "string", "minLength": 2}, "plain"),  # differs only at the quote: the cut walk's part
        ({"type": "string", "maxLength": 100}, "differ"),
        ({"type": "string", "pattern": "^[a-z]*$"}, "differ"),
        ({"type": "string", "format": "email"}, "differ"),
    ]:
        dfa = _dfa_schema(schema).to_automaton()
        assert isinstance(dfa, DFA)
        body = int(dfa.transitions[dfa.start, ord('"')])
        columns = closure_columns(dfa, plain, CUT)
        assert len(columns) < len(every) // 2  # one byte per class the two tables treat alike
        code, met = plain_closure(dfa.transitions, body, plain, p0, columns, 4096)
        assert {1: "plain", 0: "differ", -1: "over"}[code] == verdict, schema
        assert met[0] == body
        ref_code, ref_met = plain_closure(dfa.transitions, body, plain, p0, every, 4096)
        assert ref_code == code and sorted(ref_met.tolist()) == sorted(met.tolist()), schema
    bounded = _dfa_schema({"type": "string", "maxLength": 100}).to_automaton()
    assert isinstance(bounded, DFA)
    body = int(bounded.transitions[bounded.start, ord('"')])
    assert plain_closure(bounded.transitions, body, plain, p0, every, 4)[0] == -1  # undecided


def test_futures_read_by_class_equal_futures_read_by_byte() -> None:
    """split_future_columns over the DFA's byte classes (cut bytes apart) and future_key's compact form
    give the same canonical future as the 256-column reading, and the same key as the 256-column table
    (whatever the grouping), at every dense state of several schemas and regexes."""
    from constrain.masks.sharing import future_key, split_future_columns

    info = tokenizer_info("smollm2-49k")
    depth = 21
    grammars = [_dfa_schema(schema) for schema, _ in SCHEMAS] + [
        Grammar.from_regex(r'"[^"\\]{0,60}"(, "[a-z]{1,5}")?'),
        _dfa_schema({"type": "object", "properties": {"u": {"type": "string", "format": "uri"}}}),
    ]
    checked = 0
    for grammar in grammars:
        dfa = grammar.to_automaton()
        assert isinstance(dfa, DFA)
        masks = DFATokenMasks(dfa, token_trie(info), info.eos_ids, background=False)
        class_of, columns = masks._future_classes()
        assert (class_of[CUT] == -1).all() and not CUT[columns].any()
        every = np.arange(256, dtype=np.int64)
        for state in range(dfa.num_states):
            if int((dfa.transitions[state] >= 0).sum()) < 16:
                continue
            full = split_future(dfa.transitions, state, CUT, depth, 512)
            by_class = split_future_columns(dfa.transitions, state, columns, depth, 512)
            assert full.shape[0] == by_class.shape[0]
            if not full.shape[0]:
                continue
            canon = canonical_future(full, depth)
            byte_map, compact = future_key(canonical_future(by_class, depth), class_of)
            np.testing.assert_array_equal(compact[:, byte_map], canon)
            ref_map, ref_compact = future_key(canon, every)
            assert byte_map.tobytes() + compact.tobytes() == ref_map.tobytes() + ref_compact.tobytes()
            checked += 1
    assert checked > 50


def test_plain_closure_to_a_depth_sees_a_bound_only_within_it() -> None:
    """With a depth, plain_closure compares strings of at most that many bytes: at a position ``r``
    characters before ``maxLength`` every string of ``d`` bytes fits iff ``r >= d`` (``d`` ASCII
    characters are the longest in characters), whatever bytes the classes read."""
    from constrain.masks.sharing import closure_columns, plain_closure

    plain, p0 = dfa_masks_mod._plain_string_body()
    bounded = _dfa_schema({"type": "string", "maxLength": 30}).to_automaton()
    assert isinstance(bounded, DFA)
    columns = closure_columns(bounded, plain, CUT)
    state = int(bounded.transitions[bounded.start, ord('"')])
    for position in range(31):
        left = 30 - position
        for depth in (0, 1, 5, 21, 29, 30, 31):
            code, met = plain_closure(bounded.transitions, state, plain, p0, columns, 4096, depth)
            assert code == (1 if left >= depth else 0), (position, depth)
            assert met.tolist() == [state]
        if left:
            for b in "é".encode():  # a two-byte character
                state = int(bounded.transitions[state, b])


def test_cut_token_trie_walks_exactly_the_tokens_with_a_cut_byte() -> None:
    """The trie of the tokens holding a quote or backslash walks, from any state, the tokens with one
    that the oracle (every token stepped through the DFA) allows."""
    info = tokenizer_info("llama3-128k")
    trie = token_trie(info)
    cut = dfa_masks_mod._cut_of(trie)
    assert cut is not None
    sub = cut[2]
    holders = {t for t, b in enumerate(info.token_bytes) if b and (b'"' in b or b"\\" in b)}
    assert set(sub.sorted_ids.tolist()) == holders - set(info.special_ids) - set(info.eos_ids)
    grammar = _dfa_schema(SCHEMAS[0][0])
    compiled = CompiledGrammar(
        grammar, info, DFATokenMasks(grammar.to_automaton(), trie, info.eos_ids, background=False)
    )
    dfa = compiled.automaton.dfa
    for state in range(0, dfa.num_states, max(1, dfa.num_states // 40)):
        words = np.zeros(trie.num_words, dtype=np.uint32)
        count = sub.walk(dfa.transitions, state, words)
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")[: info.vocab_size]
        got = set(np.flatnonzero(bits).tolist())
        assert got == direct_allowed(compiled, state) & holders and count == len(got), state


def test_a_long_bounded_string_checks_plainness_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A string bounded past the pair bound is undecided at its first position; the positions the
    check met skip it (each would cost a full check), and their masks stay exact."""
    info = tokenizer_info("llama3-128k")
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3000}}}
    # layers, as a bound this long is built where counting beside the automaton cannot be exact
    monkeypatch.setattr(strings_mod, "COUNT_PAST", 1_000_000)
    clear_caches(keep_constants=True)
    compiled = _lazy(_dfa_schema(schema), info, True, monkeypatch)
    m = GrammarMatcher(compiled)
    assert m.accept_bytes(b'{"s":"')
    cache = compiled.automaton._cache
    for ch in "ab c":
        assert mask_ids(compiled, m.state) == direct_allowed(compiled, m.state)
        assert m.accept_bytes(ch.encode())
        assert m.state in cache.not_plain
    assert cache.plain_walks == 0 and cache.split_walks == 4
