"""Mask sharing, partial walks, trie-walk shortcuts and the background fill, against direct checks.

The oracle steps every token's bytes through the DFA with numpy (no trie, no classes): a token is
allowed iff its walk never dies; EOS iff the state accepts.
"""

from __future__ import annotations

import functools
import itertools
import random
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import constrain
import constrain.masks.dfa_masks as dfa_masks_mod
from constrain import Grammar, GrammarMatcher, TokenizerInfo
from constrain.automata import regex_to_dfa
from constrain.compiler import CompiledGrammar, stop_background_precompute
from constrain.masks import MASK_WORKER, state_chains, token_trie
from constrain.masks.dfa_masks import FUTURE_MASKS, DFATokenMasks
from constrain.masks.sharing import agreement_depth, bounded_liveness_classes, byte_class_transitions

from .regex_family import regexes
from .shared_data import tokenizer_info

# Counters longer than the longest token (llama3: 128 bytes), UTF-8 classes, self-loops, escapes.
PATTERNS = [
    r"[^\n]{1,300}",
    r'\{"name": "[^"]{1,40}", "age": [0-9]{1,3}\}',
    r'"([^"\\]|\\.)*"',
    r"[A-Za-zÀ-ÖØ-öø-ÿ]+( [A-Za-zÀ-ÖØ-öø-ÿ]+)*",
    r"[一-鿿ぁ-ゖァ-ヺー]+(、[一-鿿ぁ-ゖァ-ヺー]+)*",
    r"[a-z ]{3,150}",
    r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,24}",
    r"(ab|[^a]){0,200}x",
]


@functools.cache
def _token_matrix(info: TokenizerInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, padded bytes [T, L], lengths) of every ordinary token."""
    ids = [
        t for t, b in enumerate(info.token_bytes) if b and t not in info.special_ids and t not in info.eos_ids
    ]
    lengths = np.array([len(info.token_bytes[t]) for t in ids], dtype=np.int64)
    data = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
    for row, t in enumerate(ids):
        data[row, : lengths[row]] = np.frombuffer(info.token_bytes[t], dtype=np.uint8)
    return np.array(ids, dtype=np.int64), data, lengths


def direct_allowed(compiled: CompiledGrammar, state: int) -> set[int]:
    """Allowed ids at ``state`` by stepping each token through the DFA (vectorised over tokens)."""
    info = compiled.tokenizer_info
    ids, data, lengths = _token_matrix(info)
    trans = compiled.automaton.dfa.transitions
    states = np.full(ids.shape[0], state, dtype=np.int64)
    for col in range(data.shape[1]):
        active = (lengths > col) & (states >= 0)
        if not active.any():
            break
        states[active] = trans[states[active], data[active, col]]
    out = set(ids[states >= 0].tolist())
    if compiled.automaton.dfa.accepting[state]:
        out.update(info.eos_ids)
    return out


def mask_ids(compiled: CompiledGrammar, state: int) -> set[int]:
    bits = np.unpackbits(compiled.state_mask(state).view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits[: compiled.tokenizer_info.vocab_size]).tolist())


def _fresh(pattern: str, info: TokenizerInfo, background: bool) -> CompiledGrammar:
    # not through constrain.compile: its cache would share masks between the two modes
    masks = DFATokenMasks(regex_to_dfa(pattern), token_trie(info), info.eos_ids, background=background)
    return CompiledGrammar(Grammar.from_regex(pattern), info, masks)


def _random_walk_states(compiled: CompiledGrammar, rnd: random.Random, steps: int) -> list[int]:
    """Sample allowed tokens (long ones often, to reach deep counter states); the states visited."""
    m = GrammarMatcher(compiled)
    eos = set(compiled.tokenizer_info.eos_ids)
    seen = [m.state]
    for _ in range(steps):
        choices = [t for t in m.allowed_token_ids().tolist() if t not in eos]
        if not choices:
            break
        if rnd.random() < 0.5:
            sizes = [len(compiled.tokenizer_info.token_bytes[t]) for t in choices]
            top = max(sizes)
            choices = [t for t, n in zip(choices, sizes) if n >= top - 2]
        assert m.accept_token(rnd.choice(choices))
        seen.append(m.state)
    return seen


@pytest.fixture(autouse=True)
def _no_worker_left() -> object:
    yield
    assert stop_background_precompute(), "background mask worker did not stop"


@pytest.mark.parametrize("tok_name", ["llama3-128k", "mistral-32k"])
@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_masks_equal_direct_check_along_random_walks(tok_name: str, background: bool, pattern: str) -> None:
    info = tokenizer_info(tok_name)
    compiled = _fresh(pattern, info, background)
    rnd = random.Random(hash((tok_name, pattern, background)) & 0xFFFF)
    visited: list[int] = []
    for _ in range(2):
        visited += _random_walk_states(compiled, rnd, 40)
    for state in dict.fromkeys(visited):
        assert mask_ids(compiled, state) == direct_allowed(compiled, state), (pattern, state)
    if background:  # whatever the worker stored is right too
        stop_background_precompute()
        class_of = compiled.automaton.mask_classes()
        for c, mask in list(compiled.automaton._cache.by_class.items())[:25]:
            state = int(np.flatnonzero(class_of == c)[0])
            bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: info.vocab_size]
            assert set(np.flatnonzero(bits).tolist()) == direct_allowed(compiled, state), (pattern, c)


def test_counter_states_share_masks_and_walk_partially() -> None:
    info = tokenizer_info("llama3-128k")
    # Futures cached by earlier tests (shared by every grammar of the tokenizer) would serve the states
    # near the bound without a partial walk: the count below then depends on the test order.
    FUTURE_MASKS.clear()
    compiled = _fresh(r"[^\n]{1,500}", info, background=False)
    m = GrammarMatcher(compiled)
    text = ("Structured generation constrains a language model, one token at a time. " * 7).encode()
    ids = _greedy(info, text[:480])
    states = [m.state]
    for t in ids:
        assert m.accept_token(t)
        m.next_token_mask()
        states.append(m.state)
    assert (
        compiled.automaton.num_mask_classes is not None
        and compiled.automaton.num_mask_classes < compiled.automaton.dfa.num_states // 3
    )
    assert compiled.automaton.num_walks < len(set(states)) // 2  # far-from-the-bound positions share one mask
    assert compiled.automaton._cache.partial_walks > 0  # near the bound: reuse of the previous mask
    for state in states[::7] + states[-5:]:
        assert mask_ids(compiled, state) == direct_allowed(compiled, state)


def _greedy(info: TokenizerInfo, data: bytes) -> list[int]:
    lookup = {b: i for i, b in enumerate(info.token_bytes) if b and i not in info.special_ids}
    out, pos = [], 0
    while pos < len(data):
        end = next(e for e in range(min(len(data), pos + 16), pos, -1) if data[pos:e] in lookup)
        out.append(lookup[data[pos:end]])
        pos = end
    return out


@pytest.mark.parametrize("tok_name", ["llama3-128k", "mistral-32k"])
def test_walk_fast_equals_walk_for_every_state_and_length(tok_name: str) -> None:
    """The shortcuts (self-loop subtrees, length cut) never change a bit."""
    info = tokenizer_info(tok_name)
    trie = token_trie(info)
    extra = [
        r"[^\n]{1,20}",
        r"(\\.|[^\\])*",
        r"[ -~]*[0-9]",
        r"[^ ]{1,60}",
        r"[^\n]{1,300}",
        r"[a-z ]{3,150}",
    ]
    for pattern in [*PATTERNS[1:5], *extra, PATTERNS[7]]:
        dfa = regex_to_dfa(pattern)
        chains = state_chains(dfa.transitions, trie.max_depth)
        n = dfa.num_states
        for state in sorted({*range(min(n, 40)), *random.Random(n).sample(range(n), min(n, 25))}):
            ref = np.zeros(trie.num_words, dtype=np.uint32)
            trie.walk(dfa.transitions, state, ref)
            for k in (0, 1, 3, 7):
                got = np.zeros(trie.num_words, dtype=np.uint32)
                trie.walk_fast(dfa.transitions, state, got, chains, k)
                expected = ref & ~trie.short_mask(k)
                assert np.array_equal(got, expected), (pattern, state, k)
            for k in (7, 16, 33):  # token by token, longest first (the deep partial walks)
                got = np.zeros(trie.num_words, dtype=np.uint32)
                count = trie.walk_long(dfa.transitions, state, got, chains, k)
                expected = ref & ~trie.short_mask(k)
                assert np.array_equal(got, expected), ("walk_long", pattern, state, k)
                assert count == int(np.unpackbits(expected.view(np.uint8)).sum())


def _live_strings(dfa_trans: np.ndarray, state: int, alphabet: list[int], depth: int) -> frozenset[bytes]:
    out = set()
    for n in range(1, depth + 1):
        for word in itertools.product(alphabet, repeat=n):
            s = state
            for b in word:
                s = int(dfa_trans[s, b])
                if s < 0:
                    break
            if s >= 0:
                out.add(bytes(word))
    return frozenset(out)


@settings(max_examples=60, deadline=None)
@given(regexes, st.integers(1, 3))
def test_bounded_classes_and_agreement_match_brute_force(pattern: str, depth: int) -> None:
    dfa = regex_to_dfa(pattern)
    trans = dfa.transitions
    # one byte per class of equal columns is enough to enumerate every distinguishable string
    _, first = np.unique(trans.T, axis=0, return_index=True)
    alphabet = sorted(int(b) for b in first)
    if len(alphabet) ** depth > 3000 or dfa.num_states > 40:
        depth = 1
    live = [_live_strings(trans, s, alphabet, depth) for s in range(dfa.num_states)]
    class_of, num = bounded_liveness_classes(dfa, depth)
    assert num == len(set(class_of.tolist()))
    trans_c = byte_class_transitions(dfa)
    for s, t in itertools.combinations(range(dfa.num_states), 2):
        same = live[s] == live[t] and dfa.accepting[s] == dfa.accepting[t]
        assert (class_of[s] == class_of[t]) == same, (pattern, s, t)
        k = agreement_depth(trans_c, s, t, depth, 10_000)
        for n in range(1, depth + 1):
            agree = {w for w in live[s] if len(w) <= n} == {w for w in live[t] if len(w) <= n}
            assert agree == (k >= n), (pattern, s, t, n, k)


@pytest.mark.parametrize(
    "pattern", [r"[a-z]{1,30}@[a-z]{1,30}", r"[^\n]{1,200}", r'"([^"\\]|\\.)*"', r"[é-ü]{2,140}"]
)
def test_background_fills_ahead_and_stops(pattern: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker alone (batched, with partial walks) computes every class; each mask is exact."""
    # Its time budget is not what is tested here; a slow machine must not end the job early.
    monkeypatch.setattr(dfa_masks_mod, "BACKGROUND_MAX_SECONDS", 60.0)
    info = tokenizer_info("llama3-128k")
    compiled = _fresh(pattern, info, background=True)
    GrammarMatcher(compiled).next_token_mask()  # the first mask starts the worker
    num = int(compiled.automaton.mask_classes().max()) + 1
    deadline = time.monotonic() + 60
    while len(compiled.automaton._cache.by_class) < num and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(compiled.automaton._cache.by_class) == num
    assert stop_background_precompute() and not MASK_WORKER.running
    class_of = compiled.automaton.mask_classes()
    for c in random.Random(3).sample(range(num), min(num, 40)):
        state = int(np.flatnonzero(class_of == c)[0])
        assert mask_ids(compiled, state) == direct_allowed(compiled, state), (pattern, c)
    m = GrammarMatcher(compiled)
    walks = compiled.automaton.num_walks
    for t in _greedy(info, "éêü".encode() if "é" in pattern else b'"ab' if '"' in pattern else b"abc"):
        assert m.accept_token(t)
        m.next_token_mask()
    assert compiled.automaton.num_walks == walks  # every mask was already there


def test_background_off_and_cancel() -> None:
    info = tokenizer_info("llama3-128k")
    old = dfa_masks_mod.BACKGROUND_PRECOMPUTE
    dfa_masks_mod.BACKGROUND_PRECOMPUTE = False
    try:
        compiled = constrain.compile(Grammar.from_regex(r"[0-9]{2,9}x"), info)
        compiled.state_mask(compiled.automaton.dfa.start)
        assert not compiled.automaton._cache.submitted or not MASK_WORKER.running
    finally:
        dfa_masks_mod.BACKGROUND_PRECOMPUTE = old
    compiled = _fresh(r"[^\n]{1,400}", info, background=True)
    compiled.automaton.cancel_background()
    compiled.state_mask(compiled.automaton.dfa.start)
    stop_background_precompute()
    assert compiled.automaton.num_walks <= 2


def test_large_dfa_without_worker_skips_costly_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    info = tokenizer_info("mistral-32k")
    monkeypatch.setattr(dfa_masks_mod, "SYNC_PARTITION_MAX_STATES", 64)
    monkeypatch.setattr(dfa_masks_mod, "SYNC_PARTITION_MAX_WORK", 10)
    compiled = _fresh(r"[^\n]{1,120}", info, background=False)
    states = _random_walk_states(compiled, random.Random(5), 12)
    assert compiled.automaton.num_mask_classes is None  # states x byte classes over the bound: walk per state
    for state in dict.fromkeys(states):
        assert mask_ids(compiled, state) == direct_allowed(compiled, state)
    monkeypatch.setattr(dfa_masks_mod, "SYNC_PARTITION_MAX_WORK", 10**9)
    shared = _fresh(r"[^\n]{1,120}", info, background=False)
    _random_walk_states(shared, random.Random(5), 3)
    assert shared.automaton.num_mask_classes is not None


@settings(max_examples=80, deadline=None)
@given(regexes, st.integers(0, 6))
def test_walk_fast_equals_walk_on_random_regexes(pattern: str, k: int) -> None:
    info = tokenizer_info("llama3-128k")
    trie = token_trie(info)
    dfa = regex_to_dfa(pattern)
    chains = state_chains(dfa.transitions, trie.max_depth)
    for state in range(min(dfa.num_states, 30)):
        ref = np.zeros(trie.num_words, dtype=np.uint32)
        trie.walk(dfa.transitions, state, ref)
        got = np.zeros(trie.num_words, dtype=np.uint32)
        trie.walk_fast(dfa.transitions, state, got, chains, k)
        assert np.array_equal(got, ref & ~trie.short_mask(k)), (pattern, state, k)
        got = np.zeros(trie.num_words, dtype=np.uint32)
        trie.walk_long(dfa.transitions, state, got, chains, 4 * k + 8)
        assert np.array_equal(got, ref & ~trie.short_mask(4 * k + 8)), ("walk_long", pattern, state, k)


@pytest.mark.parametrize(
    "pattern",
    [
        r'"([^"\\]|\\.)*"',
        r"[A-Za-zÀ-ÖØ-öø-ÿ]+( [A-Za-zÀ-ÖØ-öø-ÿ]+)*",
        r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,24}",
        r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    ],
)
def test_compile_precomputes_every_mask_of_a_small_dfa(pattern: str) -> None:
    info = tokenizer_info("llama3-128k")
    compiled = _fresh(pattern, info, background=False)
    assert compiled.num_cached_states == 0
    walked = compiled.automaton.precompute_ahead()
    assert walked == compiled.automaton.num_mask_classes and walked <= dfa_masks_mod.EAGER_MAX_CLASSES
    assert compiled.num_cached_states == compiled.automaton.dfa.num_states  # every fill is now a copy
    walks = compiled.automaton.num_walks
    for state in range(compiled.automaton.dfa.num_states):
        assert mask_ids(compiled, state) == direct_allowed(compiled, state), (pattern, state)
    assert compiled.automaton.num_walks == walks
    constrain.compiler.clear_caches()
    assert (
        constrain.compile(Grammar.from_regex(pattern), info).num_cached_states
        == compiled.automaton.dfa.num_states
    )


def test_compile_precomputes_the_nearest_classes_of_a_large_dfa_within_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = tokenizer_info("llama3-128k")
    pattern = r"[^\n]{1,400}"
    monkeypatch.setattr(dfa_masks_mod, "EAGER_BUDGET_S", 0.0)
    assert (
        _fresh(pattern, info, background=False).automaton.precompute_ahead() == 0
    )  # no budget, nothing walked
    monkeypatch.setattr(dfa_masks_mod, "EAGER_BUDGET_S", 10.0)
    monkeypatch.setattr(dfa_masks_mod, "EAGER_MAX_CLASSES", 4)
    compiled = _fresh(pattern, info, background=False)
    walked = compiled.automaton.precompute_ahead()
    assert walked == compiled.automaton.num_mask_classes > 4  # a big budget walks every class, in batches
    class_of = compiled.automaton.mask_classes()
    rnd = random.Random(11)
    for state in [
        compiled.automaton.dfa.start,
        1,
        2,
        *rnd.sample(range(compiled.automaton.dfa.num_states), 10),
    ]:
        assert int(class_of[state]) in compiled.automaton._cache.by_class
        assert mask_ids(compiled, state) == direct_allowed(compiled, state), state


def test_partial_walk_reference_stays_dense_across_sparse_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dfa_masks_mod, "SPLIT_WALKS", False)  # whole and partial walks only
    info = tokenizer_info("llama3-128k")
    compiled = _fresh(r'\{"name": "[^"]{1,40}", "age": [0-9]{1,3}\}', info, background=False)
    m = GrammarMatcher(compiled)
    assert m.accept_bytes(b'{"name": "Ad')
    dense = m.state
    m.next_token_mask()  # a dense body state: the reference from now on
    assert compiled.automaton._cache.last == dense
    assert m.accept_bytes("é".encode()[:1])  # halfway through a UTF-8 character: a sparse mask
    m.next_token_mask()
    assert compiled.automaton._cache.counts[m.state] < dfa_masks_mod.PARTIAL_WALK_MIN_TOKENS
    assert compiled.automaton._cache.last == dense  # not displaced by the sparse walk
    partial = compiled.automaton._cache.partial_walks
    assert m.accept_bytes("é".encode()[1:] + b"a")
    assert mask_ids(compiled, m.state) == direct_allowed(compiled, m.state)
    assert (
        compiled.automaton._cache.partial_walks == partial + 1
    )  # the next body position reused the dense mask
