"""Memory of the context-free engine: bounded by the live parses, not by their history (issue 20).

The Earley automaton frees the configurations no matcher's history holds (``EarleyAutomaton.collect``)
and the masks keep to a byte budget; the masks stay exactly those of an automaton that never collects.
No timing asserts; the deep test takes a few seconds.
"""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import numpy as np
import pytest

import constrain
import constrain.grammars
from constrain import Grammar, GrammarMatcher
from constrain.cfg import build_automaton, earley, parse_lark
from constrain.cfg.token_masks import compile_cfg

from .shared_data import hf_tokenizer, tokenizer_info

TOKENIZER = "smollm2-49k"


def _json_pair(tok: str = TOKENIZER) -> tuple[constrain.CompiledGrammar, constrain.CompiledGrammar]:
    """The json grammar compiled twice over separate automata: a reference, and one that collects at
    every growth of its tables (budget 0) and keeps only 8 masks."""
    info = tokenizer_info(tok)
    grammar = Grammar.from_lark(name="json")
    source = constrain.grammars.load("json")
    reference = compile_cfg(grammar, info, build_automaton(parse_lark(source)))
    eager = build_automaton(parse_lark(source))
    eager._budget = 0
    collecting = compile_cfg(grammar, info, eager)
    collecting.automaton._max_masks = 8
    return reference, collecting


def _random_json(rng: random.Random, depth: int = 0) -> object:
    r = rng.random()
    if depth > 5 or r < 0.3:
        return rng.choice([1, -2.5e3, "x\ny", None, True, "héllo", 0, ""])
    if r < 0.65:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_json(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_masks_are_exact_while_collecting() -> None:
    """Along random JSON documents with rollbacks, a forked matcher and explicit collections, every
    mask, forced-token list and shortest completion equals the non-collecting automaton's."""
    reference, collecting = _json_pair()
    auto = collecting.automaton.earley
    tok = hf_tokenizer(TOKENIZER)
    rng = random.Random(7)
    collections = 0
    for _ in range(4):
        text = json.dumps(_random_json(rng), indent=rng.choice([None, 1]))
        ids = tok.encode(text, add_special_tokens=False).ids
        a, b = GrammarMatcher(reference), GrammarMatcher(collecting)
        side_a = side_b = None
        i = 0
        while i < len(ids):
            assert np.array_equal(a.next_token_mask(), b.next_token_mask()), (text, i)
            if i % 4 == 0:
                auto.collect()
                collections += 1
            if i > 3 and rng.random() < 0.1:
                k = rng.randint(1, 3)
                a.rollback(k)
                b.rollback(k)
                i -= k
                continue
            if i == len(ids) // 2:  # a fork that goes its own way keeps its states through collections
                side_a, side_b = a.fork(), b.fork()
                assert side_a.accept_bytes(b" ") and side_b.accept_bytes(b" ")
            assert a.accept_token(ids[i]) and b.accept_token(ids[i])
            i += 1
            if i % 13 == 0:
                assert a.forced_tokens() == b.forced_tokens()
                assert a.shortest_completion() == b.shortest_completion()
        assert a.can_end() and b.can_end()
        if side_a is not None and side_b is not None:
            auto.collect()
            assert np.array_equal(side_a.next_token_mask(), side_b.next_token_mask())
            assert side_a.shortest_completion() == side_b.shortest_completion()
    assert collections > 10


def test_collection_frees_what_no_history_holds() -> None:
    """Configurations of a dropped matcher, and those only a mask walk visited, are freed; the live
    history keeps its ids; freed ids are reused."""
    _, collecting = _json_pair()
    auto = collecting.automaton.earley
    m = GrammarMatcher(collecting)
    for _ in range(50):
        m.next_token_mask()
        assert m.accept_bytes(b"[")
    kept = list(m._history)
    other = GrammarMatcher(collecting)
    for _ in range(80):
        other.next_token_mask()
        assert other.accept_bytes(b'{"a":')
    built = auto.num_live_configs
    del other
    gc.collect()
    auto.collect()
    assert auto.num_live_configs <= len(set(kept)) + 1 < built
    assert m._history == kept
    assert m.accept_bytes(b"1" + b"]" * 50) and m.can_end()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_deep_nesting_runs_in_bounded_memory() -> None:
    """20,000 nested ``[`` (a mask filled at every fourth): the tables stay within a few times their
    budget and RSS grows by a fraction of what keeping every configuration took (with a mask at every
    depth, +1.3 GB and +1.8 GB at the peak before; about +100 MB now); rolling back frees it. Default
    budgets, a fresh automaton."""
    info = tokenizer_info(TOKENIZER)
    compiled = compile_cfg(
        Grammar.from_lark(name="json"), info, build_automaton(parse_lark(constrain.grammars.load("json")))
    )
    auto = compiled.automaton.earley
    bitmask = constrain.allocate_token_bitmask(1, info.vocab_size)
    bracket = info.token_ids_by_bytes[b"["]
    m = GrammarMatcher(compiled)
    gc.collect()
    start = _rss_mb()
    peak = start
    max_tables = 0
    for i in range(20_000):
        if i % 4 == 0:  # masks at every fourth depth: a few seconds
            m.fill_next_token_bitmask(bitmask)
        assert m.accept_token(bracket)
        if i % 500 == 0:
            peak = max(peak, _rss_mb())
            max_tables = max(max_tables, auto.table_bytes)
    deep = _rss_mb()
    peak = max(peak, deep)
    assert max_tables < 6 * earley.TABLE_BUDGET
    assert compiled.automaton.num_cached_states <= compiled.automaton._max_masks
    assert peak - start < 400, f"RSS grew by {peak - start:.0f} MB"
    m.rollback(m.num_steps)
    assert auto.num_live_configs <= 2 and auto.table_bytes < earley.TABLE_BUDGET // 2
    released = _rss_mb()
    assert released - start < 0.5 * (deep - start) + 16, (start, deep, released)
    assert m.accept_bytes(b"[[]]") and m.can_end()
