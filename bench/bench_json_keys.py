"""The cost of the duplicate-key tracker (constrain.json_keys) per decoding step, teacher-forced.

For each MaskBench schema (the first ``--limit`` of each subset that compile and whose first valid
instance the grammar accepts), the canonical text of that instance is encoded with the tokenizer and
walked token by token, with the tracker (the default for JSON Schema grammars)
and without it (the automaton alone, as before). Each step times ``fill_next_token_bitmask`` (the
hot path: one torch bitmask reused) and ``accept_token``. The masks of both walks are checked equal
at every step first (the instances repeat no key, so the tracker must not change a mask). Prints the
mean over all steps of each step's least time in ``--repeat`` walks, also apart for the steps where the
tracker had work to do (where a token could complete a key its object has) and the others; then one
fill at a few hand-made steps where the tracker works.

    python bench/bench_json_keys.py [--tokenizer smollm2-49k] [--limit 8] [--repeat 5]
                                    [--subsets Github_easy,Kubernetes,Snowplow,Glaiveai2K]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from constrain import GrammarMatcher, allocate_token_bitmask, compile
from constrain_tools import suites as S
from constrain_tools.harness import shared_dir


def _bare(m: GrammarMatcher) -> GrammarMatcher:
    """The same matcher without the key tracker (the automaton alone)."""
    return m._fork(track_keys=False)


def _walk(m: GrammarMatcher, ids: list[int], bitmask: Any) -> tuple[list[float], list[float], list[bool]]:
    """Teacher-force ``ids``: per step, the fill's and the accept's seconds, and whether the tracker
    watched."""
    fills, accepts, watched = [], [], []
    m.reset()
    m.fill_next_token_bitmask(bitmask, 0)  # validates the target: the timed fills take the hot path
    clock = time.perf_counter
    for t in ids:
        js = m._json
        watched.append(bool(js is not None and js[-1][4]))
        t0 = clock()
        m.fill_next_token_bitmask(bitmask, 0)
        t1 = clock()
        ok = m.accept_token(t)
        t2 = clock()
        if not ok:
            raise RuntimeError("the walk was rejected")
        fills.append(t1 - t0)
        accepts.append(t2 - t1)
    return fills, accepts, watched


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="smollm2-49k")
    ap.add_argument("--subsets", default="Github_easy,Kubernetes,Snowplow,Glaiveai2K")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    shared = Path(shared_dir())
    tok = S.TextTokenizer.from_file(shared / "tokenizers" / f"{args.tokenizer}.tokenizer.json")
    suite = S.load_maskbench(S.DEFAULT_MASKBENCH_PATH, subsets=args.subsets.split(","), limit=args.limit)
    engine = S.Engine.default()
    walks: list[tuple[str, GrammarMatcher, list[int]]] = []
    for case in suite.cases:
        valid = [t for t in case.instances if t.valid]
        if not valid:
            continue
        try:
            grammar = engine.grammar_from_schema(case.schema, registry={}, formats="assert", draft=case.draft)
            compiled = compile(grammar, tok.info)
            text = engine.serialize(
                valid[0].data, case.schema, registry={}, formats="assert", draft=case.draft
            )
        except Exception:  # noqa: BLE001 - a schema the engine refuses is not part of this bench
            continue
        ids = list(tok.encode(text))
        m = GrammarMatcher(compiled)
        if not all(m.accept_token(t) for t in ids):
            continue
        walks.append((f"{case.file} / {case.group}", m, ids))
    bitmask = allocate_token_bitmask(1, tok.info.vocab_size)
    # Check first: with and without the tracker, the same masks at every step.
    for name, m, ids in walks:
        bare = _bare(m)
        m.reset()
        bare.reset()
        for t in ids:
            if not np.array_equal(m.next_token_mask(), bare.next_token_mask()):
                raise SystemExit(f"{name}: the tracker changed a mask of a text without repeated keys")
            m.accept_token(t)
            bare.accept_token(t)
    steps = sum(len(ids) for _, _, ids in walks)
    print(f"{len(walks)} schemas, {steps} steps, tokenizer {args.tokenizer}")
    # Per step, the least of --repeat walks of each kind (with and without, interleaved): the machine's
    # other load only ever adds time.
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1

    watched_total = 0
    for _, m, ids in walks:
        bare = _bare(m)
        runs: dict[str, list[tuple[list[float], list[float], list[bool]]]] = {"with": [], "without": []}
        for r in range(args.repeat):
            order = [("with", m), ("without", bare)] if r % 2 == 0 else [("without", bare), ("with", m)]
            for name, matcher in order:
                runs[name].append(_walk(matcher, ids, bitmask))
        watched = runs["with"][0][2]
        watched_total += sum(watched)
        for name in ("with", "without"):
            fills = np.min([f for f, _, _ in runs[name]], axis=0)
            accepts = np.min([a for _, a, _ in runs[name]], axis=0)
            for f, a, w in zip(fills.tolist(), accepts.tolist(), watched, strict=True):
                add(f"fill {name}", f)
                add(f"fill {name} ({'watched' if w else 'other'} steps)", f)
                add(f"accept {name}", a)
    print(f"watched steps (where a token could complete a key the object has): {watched_total} of {steps}")
    for name in sorted(sums):
        print(f"{name:32s} mean {sums[name] / counts[name] * 1e6:6.2f} µs over {counts[name]} steps")
    _key_end_steps(tok.info, bitmask)


# The steps where the tracker works (rare in MaskBench's instances): one fill, least of 7 x 500.
KEY_END_STEPS = [
    ("inside a key equal so far to a present one", b'{"name":1,"id":2,"name'),
    ("inside a key, no present key to complete", b'{"name":1,"id":2,"zz'),
    ("the key ends in a backslash", b'{"name":1,"a\\\\":2,"a\\'),
    ('the object has the key "" (tokens such as "":)', b'{"":1,"b":2'),
]


def _key_end_steps(info: Any, bitmask: Any) -> None:
    from constrain import CompileBudget, Grammar, budget_scope

    with budget_scope(CompileBudget(seconds=None)):
        schema = {"type": "object", "additionalProperties": {"type": "integer"}}
        compiled = compile(Grammar.from_json_schema(schema), info)
    for label, prefix in KEY_END_STEPS:
        got = {}
        m = GrammarMatcher(compiled)
        if not m.accept_bytes(prefix):
            raise SystemExit(f"{prefix!r} was rejected")
        for name, matcher in (("with", m), ("without", _bare(m))):
            matcher.fill_next_token_bitmask(bitmask, 0)
            best = []
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(500):
                    matcher.fill_next_token_bitmask(bitmask, 0)
                best.append((time.perf_counter() - t0) / 500)
            got[name] = min(best) * 1e6
        print(f"{label:48s} fill with {got['with']:6.2f} µs, without {got['without']:6.2f} µs")


if __name__ == "__main__":
    main()
