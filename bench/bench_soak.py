"""Memory soak: compile many distinct schemas in one process and draw the RSS curve.

Each schema is compiled with the default compiler (whose caches are bounded in bytes, see
``constrain.caches``), then a matcher walks its shortest completion, filling the token masks a generation
would need first. Every ``--every`` schemas the process RSS and the caches' estimated bytes are recorded;
at the end the caches are cleared and RSS recorded once more. Arms run in separate processes, so each
starts from the same baseline:

* ``bounded``: the library defaults (or ``--max-bytes``);
* ``unbounded`` (``--compare``): byte bounds lifted, only the entry bounds left (the behaviour before
  byte bounds).

Schemas: generated small objects (``soak_schema(i)``: property names, enums, patterns and bounds differ
with ``i``), then, with ``--maskbench N``, the first N MaskBench schemas of each subset from
``../shared/data/jsonschemabench`` (those that compile).

Usage::

    python bench/bench_soak.py [--count 600] [--maskbench 0] [--tokenizer llama3-128k] [--compare]
                               [--max-bytes 512M] [--max-entries 128] [--png bench/results/soak_rss.png]
                               [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def soak_schema(i: int) -> dict[str, Any]:
    """The ``i``-th generated schema: a small object whose property names, enums, patterns and bounds
    depend on ``i`` (so no two compile to the same grammar)."""
    rng = random.Random(i)
    props: dict[str, Any] = {}
    for k in range(rng.randint(2, 5)):
        name = f"{rng.choice(WORDS)}_{i}_{k}"
        kind = rng.randrange(5)
        if kind == 0:
            props[name] = {"type": "string", "maxLength": rng.randint(4, 40)}
        elif kind == 1:
            props[name] = {"enum": [f"{rng.choice(WORDS)}{i % 97}" for _ in range(rng.randint(2, 6))]}
        elif kind == 2:
            top = chr(ord("c") + i % 20)
            props[name] = {"type": "string", "pattern": f"^[a-{top}]{{1,{2 + i % 9}}}-[0-9]{{{1 + i % 4}}}$"}
        elif kind == 3:
            props[name] = {"type": "integer", "minimum": -(i % 50), "maximum": 100 + i}
        else:
            props[name] = {"type": "array", "items": {"type": "boolean"}, "maxItems": 1 + i % 6}
    names = list(props)
    return {
        "type": "object",
        "properties": props,
        "required": names[: rng.randint(1, len(names))],
        "additionalProperties": False,
    }


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _schemas(count: int, maskbench: int) -> list[Any]:
    out: list[Any] = [soak_schema(i) for i in range(count)]
    if maskbench:
        from constrain_tools.suites import load_maskbench

        root = SHARED / "data" / "jsonschemabench" / "maskbench-data.tar.xz"
        if root.exists():
            out += [c.schema for c in load_maskbench(root, limit=maskbench).cases]
        else:
            print(f"note: {root} is absent, MaskBench schemas skipped", file=sys.stderr)
    return out


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """One arm in this process: compile every schema, walk, record RSS and cache bytes."""
    import constrain
    from constrain.caches import cache_stats, get_cache
    from constrain.compiler import clear_caches

    info = constrain.TokenizerInfo.from_file(SHARED / "tokenizers" / f"{args.tokenizer}.tokenizer.json")
    constrain.compile(constrain.Grammar.from_regex("warm[0-9]"), info)  # numba kernels, the trie
    if args.arm == "unbounded":
        for name in cache_stats():
            get_cache(name).set_limits(max_bytes=1 << 60)
    elif args.max_bytes:
        constrain.set_cache_limits(max_bytes=args.max_bytes)
    if args.max_entries:
        constrain.set_cache_limits(max_entries=args.max_entries)
    bounds = {name: s.max_bytes for name, s in cache_stats().items()}
    base = rss_mib()
    points: list[tuple[int, float, float]] = [(0, base, 0.0)]
    failed = 0
    t0 = time.perf_counter()
    schemas = _schemas(args.count, args.maskbench)
    for i, schema in enumerate(schemas, 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = constrain.compile(constrain.Grammar.from_json_schema(schema), info)
            m = constrain.GrammarMatcher(compiled)
            for tok in m.shortest_completion():
                m.next_token_mask()
                m.accept_token(tok)
        except constrain.ConstrainError:
            failed += 1
        if i % args.every == 0 or i == len(schemas):
            est = sum(s.nbytes for s in cache_stats(refresh=False).values()) / (1 << 20)
            points.append((i, rss_mib(), est))
    seconds = time.perf_counter() - t0
    stats = {n: s.__dict__ for n, s in cache_stats(refresh=True).items()}
    before_clear = rss_mib()
    clear_caches()
    gc.collect()
    after_clear = rss_mib()
    trimmed = None
    try:  # glibc keeps freed heap pages; malloc_trim returns them (what RSS would be after a trim)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = round(rss_mib(), 1)
    except (OSError, AttributeError):
        pass
    return {
        "arm": args.arm,
        "tokenizer": args.tokenizer,
        "schemas": len(schemas),
        "failed": failed,
        "seconds": round(seconds, 1),
        "baseline_rss_mib": round(base, 1),
        "peak_rss_mib": round(max(p[1] for p in points), 1),
        "final_rss_mib": round(before_clear, 1),
        "after_clear_rss_mib": round(after_clear, 1),
        "after_trim_rss_mib": trimmed,
        "bounds_mib": {n: round(b / (1 << 20), 1) for n, b in bounds.items()},
        "caches": stats,
        "points": points,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """The RSS (solid) and estimated cache bytes (dashed) of each arm against schemas compiled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        xs = [p[0] for p in r["points"]]
        line = ax.plot(xs, [p[1] for p in r["points"]], label=f"{r['arm']}: RSS")[0]
        ax.plot(
            xs, [p[2] for p in r["points"]], "--", color=line.get_color(), label=f"{r['arm']}: cache estimate"
        )
    bound = results[0]["bounds_mib"].get("compiled")
    if bound is not None:
        ax.axhline(
            results[0]["baseline_rss_mib"] + bound,
            color="grey",
            lw=0.8,
            ls=":",
            label="baseline + compiled bound",
        )
    ax.set_xlabel("schemas compiled")
    ax.set_ylabel("MiB")
    ax.set_title(f"constrain compile soak ({results[0]['tokenizer']}, {results[0]['schemas']} schemas)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """Run the arms (each in a child process), print a summary, draw the curve."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=600, help="generated schemas (default 600)")
    p.add_argument("--maskbench", type=int, default=0, help="MaskBench schemas per subset to add (default 0)")
    p.add_argument("--tokenizer", default="llama3-128k")
    p.add_argument(
        "--max-bytes", default=None, help="compiled-grammar cache bound, e.g. 256M (default: library's)"
    )
    p.add_argument("--max-entries", type=int, default=None, help="compiled-grammar cache entries (both arms)")
    p.add_argument("--every", type=int, default=10, help="record every N schemas")
    p.add_argument("--compare", action="store_true", help="also run the arm without byte bounds")
    p.add_argument("--png", default=str(HERE / "results" / "soak_rss.png"))
    p.add_argument("--json", default=None)
    p.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # a child process runs one arm
    args = p.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args)))
        return 0
    results = []
    for arm in ["bounded", "unbounded"] if args.compare else ["bounded"]:
        cmd = [sys.executable, __file__, "--arm", arm, *(argv if argv is not None else sys.argv[1:])]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            f"{arm:9s} {r['schemas']} schemas ({r['failed']} failed) in {r['seconds']} s: RSS baseline "
            f"{r['baseline_rss_mib']} MiB, peak {r['peak_rss_mib']}, end {r['final_rss_mib']}, after "
            f"clear_caches {r['after_clear_rss_mib']} (after malloc_trim {r['after_trim_rss_mib']}); "
            f"compiled cache {r['caches']['compiled']['entries']} entries, "
            f"{r['caches']['compiled']['nbytes'] / (1 << 20):.1f} MiB "
            f"(bound {r['bounds_mib'].get('compiled')} MiB)"
        )
    plot(results, Path(args.png))
    print(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
