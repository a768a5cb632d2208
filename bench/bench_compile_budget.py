"""Large real schemas under the default compile budget: how long until the answer, and how much memory.

Each schema is compiled in a fresh process (``Grammar.from_json_schema`` + ``compile`` for llama3-128k,
the default budget of 7 s of CPU time unless ``--budget``), after a small warm-up schema so that numba's
JIT is out of the figure. Printed per schema: the outcome (``compiled`` or the error class and its
message's head), wall and CPU seconds of the compile, and the process's peak RSS.

The defaults are the two JSONSchemaBench schemas issue 20 named (JsonSchemaStore cloudify and
Github_ultra o13020: 39-44 s and up to 2 GB before a refusal on 2026-12-04).

Usage::

    python bench/bench_compile_budget.py [SCHEMA.json ...] [--budget S] [--tokenizer PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_SCHEMAS = [
    SHARED / "data" / "jsonschemabench" / "data" / "JsonSchemaStore" / "cloudify.json",
    SHARED / "data" / "jsonschemabench" / "data" / "Github_ultra" / "o13020.json",
]
DEFAULT_TOKENIZER = SHARED / "tokenizers" / "llama3-128k.tokenizer.json"

CHILD = r"""
import json, resource, sys, time
import constrain
from constrain import CompileBudget, Grammar, budget_scope
from constrain.budget import UNLIMITED
info = constrain.TokenizerInfo.from_file(sys.argv[2])
constrain.compile(Grammar.from_json_schema({"type": "object", "properties": {"a": {"type": "string"}}}), info)
schema = json.load(open(sys.argv[1]))
budget = CompileBudget(seconds=float(sys.argv[3])) if float(sys.argv[3]) > 0 else UNLIMITED
t0, c0 = time.perf_counter(), time.thread_time()
try:
    with budget_scope(budget):  # one budget for both stages (schema -> automaton -> token masks)
        constrain.compile(Grammar.from_json_schema(schema), info)
    outcome = "compiled"
except constrain.ConstrainError as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
print(json.dumps({"outcome": outcome, "wall_s": time.perf_counter() - t0, "cpu_s": time.thread_time() - c0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> int:
    """Run each schema in its own process and print one line per schema."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("schemas", nargs="*", type=Path, help="JSON Schema files (default: issue 20's two)")
    p.add_argument(
        "--budget", type=float, default=7.0, help="CPU seconds (default 7, the library default; 0: none)"
    )
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = p.parse_args(argv)
    schemas = args.schemas or DEFAULT_SCHEMAS
    missing = [s for s in [*schemas, args.tokenizer] if not s.exists()]
    if missing:
        print(f"missing: {', '.join(map(str, missing))} (../shared beside the checkout has them)")
        return 2
    print(f"| schema | outcome | wall s | CPU s | peak RSS MB |  (budget {args.budget:g} s CPU)")
    print("|---|---|--:|--:|--:|")
    for schema in schemas:
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(schema), str(args.tokenizer), str(args.budget)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = run.stdout.strip().splitlines()
        if run.returncode != 0 or not lines:
            tail = run.stderr.strip()[-200:]
            print(f"| {schema.name} | process failed (exit {run.returncode}): {tail} | | | |")
            continue
        r = json.loads(lines[-1])
        print(
            f"| {schema.parent.name}/{schema.name} | {r['outcome']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
