"""Caches bounded in bytes, single-flight compiles, and pickling of compiled grammars and matchers.

Oracles: build counts (a wrapper counts the real builds), object identity, the masks of an unpickled
matcher against the original's along a teacher-forced path (the tokenizer's own encoding of a valid
output), and numpy's own ``nbytes``.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import operator
import pickle
import threading
import types
from typing import Any

import numpy as np
import pytest

import constrain
from constrain import caches
from constrain.caches import LRUCache, estimate_nbytes, parse_size, set_cache_limits
from constrain.compiler import Compiler, default_compiler
from constrain.exceptions import ConstrainError, InvalidInputError, SchemaError
from constrain.grammar import Grammar
from constrain.matcher import GrammarMatcher

from .shared_data import hf_tokenizer, tokenizer_info

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
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}},
    },
    "required": ["name", "age"],
}
# (grammar, a valid output) for each engine
CASES: dict[str, tuple[Any, str]] = {
    "regex": (lambda: Grammar.from_regex(r"[a-z]{2,8}-\d{3}"), "wxyz-042"),
    "json_schema": (lambda: Grammar.from_json_schema(PERSON), '{"name":"Ada L.","age":36,"tags":["bb","a"]}'),
    "recursive_schema": (
        lambda: Grammar.from_json_schema(TREE),
        '{"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]}',
    ),
    "lark": (lambda: Grammar.from_lark(name="json"), '{"a": [1, 2.5, {"b": null}], "c": "x"}'),
}


# ---- sizes and bounds --------------------------------------------------------------------------------


def test_estimate_counts_each_buffer_once() -> None:
    a = np.zeros(1000, dtype=np.int64)
    assert estimate_nbytes(a) == 8000
    # views and repeated references count the base once; containers add their own size
    both = estimate_nbytes([a, a[10:20], a.reshape(10, 100), {"x": a}])
    assert 8000 < both < 8000 + 2000
    cyclic: list[Any] = [np.ones(500, dtype=np.uint8)]
    cyclic.append(cyclic)
    assert 500 < estimate_nbytes(cyclic) < 1000
    assert estimate_nbytes({"skip": threading.Lock(), "f": len}) < 1000

    class Shared:
        def __init__(self) -> None:
            self.table = np.zeros(10_000, dtype=np.uint8)

    assert estimate_nbytes([Shared()]) > 10_000
    assert estimate_nbytes([Shared()], exclude=(Shared,)) < 200


def test_parse_size() -> None:
    assert parse_size("512M") == 512 << 20
    assert parse_size("2g") == 2 << 30
    assert parse_size("1.5K") == 1536
    assert parse_size("100") == 100
    with pytest.raises(InvalidInputError, match="not a size"):
        parse_size("lots")


def test_lru_bounded_by_bytes_and_entries() -> None:
    cache: LRUCache[np.ndarray] = LRUCache("test", max_entries=10, max_bytes=10_000)
    for i in range(20):
        cache.get_or_build(i, lambda: np.zeros(3000, dtype=np.uint8))
        assert cache.nbytes <= 10_000
    assert len(cache) == 3 and cache.stats().evictions == 17
    assert 17 in cache and 19 in cache and 16 not in cache  # least recently used out first
    cache.get(17)
    cache.get_or_build(20, lambda: np.zeros(3000, dtype=np.uint8))
    assert 17 in cache and 18 not in cache
    # the newest entry stays even alone over the bound; lowering a bound evicts at once
    big = cache.get_or_build("big", lambda: np.zeros(50_000, dtype=np.uint8))
    assert len(cache) == 1 and cache.get("big") is big
    cache.set_limits(max_entries=0)
    assert len(cache) == 0
    with pytest.raises(InvalidInputError, match="max_bytes"):
        cache.set_limits(max_bytes=-1)


def test_a_sweep_keeps_the_newest_entry_alone_over_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured again (a sweep), the newest entry stays even alone over the bound: evicting it freed
    nothing and the next ask built it again (a 188 MiB schema automaton was built twice per compile)."""
    monkeypatch.setattr(caches, "REMEASURE_S", 0.0)
    cache: LRUCache[np.ndarray] = LRUCache("test", max_entries=10, max_bytes=10_000)
    builds = []

    def build() -> np.ndarray:
        builds.append(1)
        return np.zeros(50_000, dtype=np.uint8)

    big = cache.get_or_build("big", build)
    cache.get_or_build("other", lambda: np.zeros(10, dtype=np.uint8))  # stored, swept: "big" is older
    assert "big" not in cache
    again = cache.get_or_build("big", build)
    assert again is not big and len(builds) == 2
    assert cache.get_or_build("big", build) is again and len(builds) == 2  # kept through the sweeps
    assert cache.nbytes > cache.max_bytes and len(cache) >= 1


def _measuring_cache() -> tuple[LRUCache[str], list[str]]:
    """A cache of strings whose size is 1 each, and the list of the values it measures, in order."""
    measured: list[str] = []

    def sizeof(value: str) -> int:
        measured.append(value)
        return 1

    return LRUCache("test", max_entries=10, max_bytes=1_000, sizeof=sizeof), measured


def test_a_sweep_measures_the_stalest_entries_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep after a build measures stale entries stalest first and stops when its time budget is
    spent (at least one each time): measuring them all took 146 ms with 113 compiled schemas cached,
    paid by one build's caller. With a budget of 0, one entry per sweep, and every entry in turn."""
    monkeypatch.setattr(caches, "REMEASURE_S", 0.0)
    monkeypatch.setattr(caches, "SWEEP_BUDGET_S", 0.0)
    cache, measured = _measuring_cache()
    for name in "abc":
        cache.get_or_build(name, lambda name=name: name)
    # each build measures its value, then its sweep the stalest entry: "a" (alone), "a", "b"
    assert measured == ["a", "a", "b", "a", "c", "b"]
    measured.clear()
    for name in "xyz":
        cache.get_or_build(name, lambda name=name: name)
    assert measured[0::2] == ["x", "y", "z"]
    assert sorted(measured[1::2]) == ["a", "b", "c"]  # every older entry in turn, none twice
    assert cache.nbytes == 6


def test_hits_measure_one_stale_entry_per_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hit measures its entry again when stale, but at most one hit per period does so in a whole
    cache: with many hot entries, each one's measure every second was a steady cost in the hits."""
    clock = [100.0]
    monkeypatch.setattr(caches, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    cache, measured = _measuring_cache()
    for name in "ab":
        cache.put(name, name)
    measured.clear()
    clock[0] += caches.REMEASURE_S  # both stale now
    assert cache.get("a") == "a" and cache.get("b") == "b"
    assert measured == ["a"]
    clock[0] += caches.REMEASURE_S
    assert cache.get("b") == "b" and cache.get("a") == "a"
    assert measured == ["a", "b"]  # the next period, the first stale entry hit


def test_compiler_byte_bound_holds_with_real_masks() -> None:
    info = tokenizer_info("gpt2-50k")
    bound = 400_000  # a few dozen mask rows of 6.3 KB
    c = Compiler(max_bytes=bound)
    for i in range(12):
        compiled = c.compile(Grammar.from_regex(f"(x{i}|y)[a-z]{{1,{i + 3}}}[0-9]{{2}}"), info)
        GrammarMatcher(compiled).next_token_mask()
        assert c.nbytes <= bound or len(c) == 1
    assert c.stats().evictions > 0 and 1 <= len(c) < 12
    assert compiled.nbytes > 0  # a compiled grammar measures itself as the cache does
    assert c.compile(compiled.grammar, info) is compiled  # the newest is kept
    with pytest.raises(InvalidInputError, match="max_bytes"):
        Compiler(max_bytes=-5)


def test_growth_after_compile_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caches, "REMEASURE_S", 0.0)
    info = tokenizer_info("gpt2-50k")
    c = Compiler()
    g = Grammar.from_regex(r"[a-z]{0,300}")  # many states, masks filled on use
    compiled = c.compile(g, info)
    before = c.nbytes
    m = GrammarMatcher(compiled)
    for _ in range(200):
        m.next_token_mask()
        assert m.accept_bytes(b"q")
    c.compile(g, info)  # a hit measures the entry again
    assert c.nbytes > before


def test_set_cache_limits_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_cache = caches.get_cache("compiled")
    regex_cache = caches.get_cache("regex_dfa")
    saved = (compiled_cache.max_entries, compiled_cache.max_bytes, regex_cache.max_bytes)
    try:
        constrain.set_cache_limits(max_bytes="64M", max_entries=7, regex_dfa=12345)
        assert default_compiler().max_bytes == 64 << 20 and default_compiler().max_entries == 7
        assert regex_cache.max_bytes == 12345
        with pytest.raises(InvalidInputError, match="no cache named 'nope'"):
            set_cache_limits(nope=1)
    finally:
        compiled_cache.set_limits(saved[0], saved[1])
        regex_cache.set_limits(None, saved[2])
    monkeypatch.setenv(caches.ENV_VAR, "3M")
    assert Compiler().max_bytes == 3 << 20
    monkeypatch.setenv(caches.ENV_VAR, "compiled=2K, regex_dfa=1G")
    assert Compiler().max_bytes == 2048 and caches.default_max_bytes("regex_dfa") == 1 << 30
    monkeypatch.setenv(caches.ENV_VAR, "huge")
    with pytest.raises(InvalidInputError, match="CONSTRAIN_CACHE_MAX_BYTES"):
        Compiler()
    stats = caches.cache_stats()
    assert {"compiled", "json_schema_automaton", "regex_dfa", "regex_to_dfa"} <= set(stats)


# ---- single flight -----------------------------------------------------------------------------------


def _race(n: int, fn: Any) -> list[Any]:
    """``fn()`` in ``n`` threads released at once; each thread's result or exception."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except BaseException as e:  # noqa: BLE001 - the test compares them
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_eight_threads_compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import constrain.compiler as compiler_mod

    info = tokenizer_info("gpt2-50k")
    real = compiler_mod._token_automaton
    builds: list[int] = []

    def slow(grammar: Grammar, tok: Any) -> Any:
        builds.append(1)
        time.sleep(0.3)  # every thread arrives while the first builds
        return real(grammar, tok)

    monkeypatch.setattr(compiler_mod, "_token_automaton", slow)
    c = Compiler()
    g = Grammar.from_regex(r"[0-9]{1,6}\.[0-9]{2}")
    results = _race(8, lambda: c.compile(g, info))
    assert len(builds) == 1
    assert all(r is results[0] for r in results) and isinstance(results[0], constrain.CompiledGrammar)
    assert c.stats().waits == 7


def test_eight_threads_share_one_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import constrain.compiler as compiler_mod

    builds: list[int] = []

    def failing(grammar: Grammar, tok: Any) -> Any:
        builds.append(1)
        time.sleep(0.3)
        raise ConstrainError("boom")

    monkeypatch.setattr(compiler_mod, "_token_automaton", failing)
    c = Compiler()
    g = Grammar.from_regex("q+")
    results = _race(8, lambda: c.compile(g, tokenizer_info("gpt2-50k")))
    assert len(builds) == 1
    assert isinstance(results[0], ConstrainError) and all(r is results[0] for r in results)
    assert len(c) == 0  # nothing cached: the next call builds again
    with pytest.raises(ConstrainError):
        c.compile(g, tokenizer_info("gpt2-50k"))
    assert len(builds) == 2


def test_eight_threads_build_a_schema_automaton_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import constrain.json_schema as js

    real = js.schema_to_language
    calls: list[int] = []
    gate = threading.Event()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        gate.wait(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(js, "schema_to_language", counted)
    schema = {"type": "object", "properties": {"single_flight_probe": {"enum": ["x", "y"]}}}
    results = _race(8, lambda: Grammar.from_json_schema(schema).to_automaton())
    assert len(calls) == 1 and all(r is results[0] for r in results)


def test_reentrant_build_does_not_deadlock() -> None:
    cache: LRUCache[int] = LRUCache("reentrant", max_entries=4, max_bytes=1000)

    def build() -> int:
        return cache.get_or_build("k", lambda: 1) + 1  # asks for its own key while building it

    assert cache.get_or_build("k", build) == 2


# ---- pickling ----------------------------------------------------------------------------------------


def _path(text: str) -> list[int]:
    ids: list[int] = hf_tokenizer("gpt2-50k").encode(text, add_special_tokens=False).ids
    return ids


@pytest.mark.parametrize("kind", sorted(CASES))
def test_pickle_round_trip_keeps_masks_along_a_path(kind: str) -> None:
    info = tokenizer_info("gpt2-50k")
    make, text = CASES[kind]
    compiled = constrain.compile(make(), info)
    path = _path(text)
    m = GrammarMatcher(compiled)
    half = len(path) // 2
    for tok in path[:half]:
        assert m.accept_token(tok)
    for copied in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), copy.copy(m)):
        assert isinstance(copied, GrammarMatcher) and copied.num_steps == m.num_steps
        twin = m.fork()
        for tok in path[half:]:
            assert np.array_equal(copied.next_token_mask(), twin.next_token_mask())
            assert copied.accept_token(tok) and twin.accept_token(tok)
        assert copied.can_end() and copied.accept_token(info.eos_ids[0]) and copied.is_terminated()
        copied.rollback(len(path) - half + 1)  # the history came along
        assert copied.state == m.state
    assert copy.deepcopy(compiled) is compiled and copy.copy(compiled) is compiled
    restored = pickle.loads(pickle.dumps(compiled))
    assert restored.grammar == compiled.grammar and restored.kind == compiled.kind
    fresh, orig = GrammarMatcher(restored), GrammarMatcher(compiled)
    for tok in path:
        assert np.array_equal(fresh.next_token_mask(), orig.next_token_mask())
        assert fresh.accept_token(tok) and orig.accept_token(tok)
    assert fresh.can_end()


def test_matchers_pickled_together_share_their_grammar() -> None:
    info = tokenizer_info("gpt2-50k")
    compiled = constrain.compile(Grammar.from_lark(name="json"), info)
    a, b = GrammarMatcher(compiled), GrammarMatcher(compiled)
    assert a.accept_bytes(b'{"k":')
    a2, b2 = pickle.loads(pickle.dumps([a, b]))
    assert a2.compiled is b2.compiled and a2.state == a.state and b2.state == b.state


def test_matchers_through_a_spawn_pool() -> None:
    info = tokenizer_info("gpt2-50k")
    text = '{"name":"Bo","age":7,"tags":["ccc"]}'
    compiled = constrain.compile(Grammar.from_json_schema(PERSON), info)
    m = GrammarMatcher(compiled)
    matchers, expected = [], []
    for tok in _path(text):
        matchers.append(m.fork())
        expected.append(m.allowed_token_ids())
        assert m.accept_token(tok)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.map(operator.methodcaller("allowed_token_ids"), matchers)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert np.array_equal(g, e)


def test_bad_schema_is_still_a_schema_error_under_single_flight() -> None:
    with pytest.raises(SchemaError):
        Grammar.from_json_schema(json.dumps({"type": 5}))


# ---- limits as options -------------------------------------------------------------------------------


def test_schema_limits_reach_every_stage() -> None:
    from constrain.exceptions import UnsupportedFeatureError
    from constrain.limits import DEFAULT_LIMITS, Limits, current_limits

    # (a minLength past the layers is refused; a maxLength past them would be counted instead)
    schema = {"type": "string", "minLength": 30}
    default = Grammar.from_json_schema(schema)
    assert "limits" not in dict(default.options)  # default grammars hash and compare as before
    with pytest.raises(UnsupportedFeatureError, match="minLength"):
        Grammar.from_json_schema(schema, limits=Limits(max_counted_length=20))
    with pytest.warns(UserWarning, match="minLength"):
        lenient = Grammar.from_json_schema(schema, limits=Limits(max_counted_length=20), lenient=True)
    assert lenient != default and dict(lenient.options)["limits"].max_counted_length == 20
    # the automata layer sees the schema's limits too (a product past the states limit)
    pattern = {"type": "string", "pattern": "^[a-f]{3,40}q[0-9]{2,17}$", "maxLength": 45}
    Grammar.from_json_schema(pattern)
    with pytest.raises(UnsupportedFeatureError):
        Grammar.from_json_schema({**pattern, "maxLength": 44}, limits=Limits(max_dfa_states=40))
    assert current_limits() is DEFAULT_LIMITS  # the scope ended with the compile
    with pytest.raises(InvalidInputError, match="max_dfa_states"):
        Limits(max_dfa_states=0)
    with pytest.raises(InvalidInputError, match="limits must be"):
        Grammar.from_json_schema(schema, limits={"max_dfa_states": 5})  # type: ignore[arg-type]


def test_limits_scope_bounds_a_regex_compile() -> None:
    from constrain.exceptions import UnsupportedRegexFeature
    from constrain.limits import Limits, limits_scope

    with limits_scope(Limits(max_nfa_states=200)), pytest.raises(UnsupportedRegexFeature, match="200"):
        Grammar.from_regex("(?:ab|cd){300}zz")
    assert Grammar.from_regex("(?:ab|cd){300}zz").kind == "regex"  # the default limits again


def test_clear_caches_trims_the_heap_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """``release=False`` clears every cache but leaves the heap's free pages where they are (the bench
    times a new schema as a serving process meets it); the default hands them back."""
    from constrain.compiler import clear_caches

    trims: list[bool] = []
    monkeypatch.setattr(caches, "release_memory", lambda: trims.append(True) or True)
    info = tokenizer_info("smollm2-49k")
    constrain.compile(Grammar.from_regex("[ab]+"), info)
    clear_caches(keep_constants=True, release=False)
    assert len(default_compiler()) == 0 and trims == []
    constrain.compile(Grammar.from_regex("[ab]+"), info)
    clear_caches(keep_constants=True)
    assert len(default_compiler()) == 0 and trims == [True]


def test_clear_caches_can_keep_the_grammar_independent_constants() -> None:
    """``keep_constants=True`` keeps a tokenizer's key tables and the any-value automata (the state of a
    process that has compiled a schema before); a plain ``clear_caches()`` drops them too."""
    from constrain import json_keys
    from constrain.compiler import clear_caches
    from constrain.json_schema import values

    info = tokenizer_info("smollm2-49k")
    compiled = constrain.compile(Grammar.from_json_schema({"type": "object"}), info)
    GrammarMatcher(compiled).next_token_mask()
    tables = json_keys.key_tables(info)
    any_dfas = dict(values._ANY_CACHE)
    assert any_dfas, "an unconstrained object builds the any-value automaton"

    clear_caches(keep_constants=True)
    assert json_keys.key_tables(info) is tables
    assert all(values._ANY_CACHE.get(k) is v for k, v in any_dfas.items())
    assert len(default_compiler()) == 0, "compiled grammars are cleared either way"

    clear_caches()
    assert not values._ANY_CACHE
    assert json_keys.key_tables(info) is not tables
