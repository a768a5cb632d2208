"""Cold start: how long a new process takes to its first mask, with numba's on-disk cache empty or warm.

Each measurement is a fresh ``python`` subprocess that times its phases: ``import constrain``; load the
tokenizer (``TokenizerInfo.from_file``); compile a small JSON Schema (``Grammar.from_json_schema`` +
``compile``, which also builds the tokenizer's vocabulary trie; ``budget_refused`` is 1 where the
default compile budget, which counts JIT time, refused it first and it was compiled again without a
budget); the first mask (``GrammarMatcher`` + ``next_token_mask``) and a short walk (20 fills along the
shortest completion). A last phase applies a mask to logits with the CPU kernel (it imports torch).
The scenarios:

* ``cleared``: ``$NUMBA_CACHE_DIR`` set to a new empty folder: what a fresh install paid before
  ``scripts/setup.sh`` warmed the cache (every ``@njit`` compiles in this process);
* ``warm (2nd run)``: the same folder again, now filled by the previous process;
* ``after warmup``: a new empty folder, ``python -m constrain warmup`` run once in it (what setup does),
  then the measurement;
* ``installed``: no ``$NUMBA_CACHE_DIR``: numba's default place for this checkout (``__pycache__``
  beside the sources), as it is on this machine now.

Wall seconds depend on the machine's load; ``cpu_*`` (the process's CPU time) and ``jit_kernels`` (how
many constrain kernels numba compiled in the measured process instead of loading them; their names are
printed) do not.

Usage::

    python bench/bench_cold_start.py [--tokenizer PATH] [--repeat 2] [--json OUT.json]
        [--scenarios cleared,warm,warmup,installed]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "tokenizers" / "smollm2-49k.tokenizer.json"

# The child: prints one JSON object with the seconds of each phase.
CHILD = r"""
import json, sys, time
c0 = time.process_time()
t0 = time.perf_counter()
import constrain
t1 = time.perf_counter()
info = constrain.TokenizerInfo.from_file(sys.argv[1])
t2 = time.perf_counter()
schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
          "age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
          "required": ["name", "age"], "additionalProperties": False}
from constrain.budget import UNLIMITED, budget_scope
refused = 0
try:  # the default compile budget counts JIT time: a cold cache can make it refuse this small schema
    compiled = constrain.compile(constrain.Grammar.from_json_schema(schema), info)
except constrain.ConstrainError:
    refused = 1
    with budget_scope(UNLIMITED):
        compiled = constrain.compile(constrain.Grammar.from_json_schema(schema), info, budget=UNLIMITED)
t3 = time.perf_counter()
m = constrain.GrammarMatcher(compiled)
m.next_token_mask()
t4 = time.perf_counter()
c4 = time.process_time()
for tid in m.shortest_completion()[:20]:
    m.accept_token(tid)
    m.next_token_mask()
t5 = time.perf_counter()
import torch
from constrain.kernels import allocate_token_bitmask, apply_token_bitmask_inplace
bm = allocate_token_bitmask(1, info.vocab_size)
m.fill_next_token_bitmask(bm, 0)
logits = torch.zeros((1, info.vocab_size))
apply_token_bitmask_inplace(logits, bm)
t6 = time.perf_counter()
from constrain.warmup import numba_kernels
jit = sorted(n for n, d in numba_kernels().items() if d.signatures and d.stats.cache_misses)
print(json.dumps({"jit_compiled": jit, "import": t1 - t0,
                  "tokenizer": t2 - t1, "compile": t3 - t2, "first_mask": t4 - t3,
                  "walk_20": t5 - t4, "apply_kernel": t6 - t5, "to_first_mask": t4 - t0, "total": t6 - t0,
                  "budget_refused": refused, "cpu_to_first_mask": c4 - c0,
                  "cpu_total": time.process_time() - c0}))
"""

PHASES = (
    "import",
    "tokenizer",
    "compile",
    "first_mask",
    "to_first_mask",
    "walk_20",
    "apply_kernel",
    "total",
    "cpu_to_first_mask",
    "cpu_total",
    "budget_refused",
)


def _env(cache_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return env


def measure(tokenizer: Path, cache_dir: Path | None) -> dict[str, float]:
    """One fresh process's phase times (seconds)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tokenizer)],
        env=_env(cache_dir),
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),  # not the checkout: `import constrain` finds the installed package
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["jit_kernels"] = len(result["jit_compiled"])
    return result


def warm_up(cache_dir: Path, tokenizer: Path) -> float:
    """Run ``python -m constrain warmup`` with ``cache_dir`` as numba's cache; its seconds."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "constrain", "warmup", "--tokenizer", str(tokenizer)],
        env=_env(cache_dir),
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if out.returncode != 0:
        raise SystemExit(f"constrain warmup failed:\n{out.stderr[-3000:]}")
    sys.stdout.write(out.stdout)
    return time.perf_counter() - t0


def cache_files(folder: Path) -> int:
    """How many numba cache entries (index files) a folder holds."""
    return sum(1 for _ in folder.rglob("*.nbi"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    p.add_argument("--repeat", type=int, default=2, help="measurements per scenario (default 2)")
    p.add_argument("--scenarios", default="cleared,warm,warmup,installed")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if not args.tokenizer.exists():
        sys.stderr.write(f"tokenizer not found: {args.tokenizer} (pass --tokenizer PATH)\n")
        return 2
    wanted = args.scenarios.split(",")
    rows: dict[str, list[dict[str, float]]] = {}
    extra: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="constrain-cold-"))
    try:
        if "cleared" in wanted or "warm" in wanted:
            for r in range(args.repeat):
                d = root / f"cleared{r}"
                d.mkdir()
                rows.setdefault("cleared", []).append(measure(args.tokenizer, d))
                extra.setdefault("cache_entries_after_one_run", cache_files(d))
                if "warm" in wanted:
                    rows.setdefault("warm (2nd run)", []).append(measure(args.tokenizer, d))
        if "warmup" in wanted:
            for r in range(args.repeat):
                d = root / f"warmup{r}"
                d.mkdir()
                extra.setdefault("warmup_s", []).append(round(warm_up(d, args.tokenizer), 2))
                extra.setdefault("cache_entries_after_warmup", cache_files(d))
                rows.setdefault("after warmup", []).append(measure(args.tokenizer, d))
        if "installed" in wanted:
            rows["installed"] = [measure(args.tokenizer, None) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {name: {k: sorted(m[k] for m in ms)[len(ms) // 2] for k in PHASES} for name, ms in rows.items()}
    sys.stdout.write(
        f"\nnew process to first mask, seconds (median of {args.repeat}; tokenizer {args.tokenizer.name})\n\n"
    )
    widths = [16] + [max(len(k), 8) for k in PHASES]
    head = ["scenario", *PHASES]
    sys.stdout.write("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |\n")
    sys.stdout.write("|" + "|".join("-" * (w + 2) for w in widths) + "|\n")
    for name, m in med.items():
        cells = [name.ljust(widths[0])] + [f"{m[k]:.2f}".rjust(w) for k, w in zip(PHASES, widths[1:])]
        sys.stdout.write("| " + " | ".join(cells) + " |\n")
    for k, v in extra.items():
        sys.stdout.write(f"{k}: {v}\n")
    for name, ms in rows.items():
        sys.stdout.write(f"JIT-compiled in the measured process, {name}: {ms[0]['jit_compiled']}\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"median_s": med, "runs": rows, **extra}, indent=1))
        sys.stdout.write(f"wrote {args.json}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
