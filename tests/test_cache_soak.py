"""Soak: a few hundred distinct schemas compiled in one process stay within the caches' byte bounds, and
the process RSS stays within those bounds plus its baseline (and a margin for the allocator).

The schemas are bench/bench_soak.py's generated ones (small objects whose names, enums, patterns and
bounds differ per schema); each compiled grammar is walked along its shortest completion so its first
masks are filled, as a generation would. The bounds are set low (tens of MiB), so without byte bounds
the same run would hold several times as much (bench/bench_soak.py --compare draws both curves).
"""

from __future__ import annotations

import gc
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

import constrain
from constrain.caches import cache_stats, get_cache

from .shared_data import tokenizer_info

MiB = 1 << 20
COUNT = 300
BOUNDS = {
    "compiled": 16 * MiB,
    "json_schema_automaton": 6 * MiB,
    "regex_dfa": 2 * MiB,
    "regex_to_dfa": 2 * MiB,
}
ALLOCATOR_MARGIN = 64 * MiB  # freed rows that malloc keeps for reuse, numba and Python's own growth


def _soak_schema() -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_soak.py"
    spec = importlib.util.spec_from_file_location("bench_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.soak_schema


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from Linux /proc")
def test_soak_stays_within_the_byte_bounds() -> None:
    soak_schema = _soak_schema()
    info = tokenizer_info("gpt2-50k")
    saved = {name: (s.max_entries, s.max_bytes) for name, s in cache_stats().items()}
    try:
        for name, bound in BOUNDS.items():
            get_cache(name).set_limits(max_bytes=bound)
        constrain.compile(constrain.Grammar.from_regex("warm[0-9]"), info)
        gc.collect()
        baseline = _rss()
        peak = baseline
        for i in range(COUNT):
            compiled = constrain.compile(constrain.Grammar.from_json_schema(soak_schema(10_000 + i)), info)
            m = constrain.GrammarMatcher(compiled)
            for tok in m.shortest_completion():
                m.next_token_mask()
                assert m.accept_token(tok)
            assert m.can_end()
            del compiled, m
            if i % 10 == 9:
                for name, s in cache_stats(refresh=True).items():
                    if name in BOUNDS:
                        assert s.nbytes <= s.max_bytes or s.entries == 1, (name, s)
                peak = max(peak, _rss())
        stats = cache_stats()
        assert stats["compiled"].evictions > 0 and stats["json_schema_automaton"].evictions > 0
        growth, bounds = peak - baseline, sum(BOUNDS.values())
        assert growth <= bounds + ALLOCATOR_MARGIN, (
            f"RSS grew {growth / MiB:.0f} MiB over {COUNT} schemas; bounds {bounds / MiB:.0f} MiB"
        )
    finally:
        for name, (entries, nbytes) in saved.items():
            get_cache(name).set_limits(entries, nbytes)
