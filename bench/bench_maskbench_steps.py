"""MaskBench step bench: per-step mask fill time (p50/p90/p99/max/mean, step 0 excluded), time to first
mask and compile failures of constrain, xgrammar, llguidance and outlines-core on the same MaskBench
schemas and token paths, each engine in its own pinned single-threaded worker.

The logic is ``constrain_tools.maskbench_steps`` (also ``constrain bench maskbench-steps``); see its
docstring.

Usage::

    python bench/bench_maskbench_steps.py [--limit 300]
        [--engines constrain,xgrammar,llguidance,outlines-core]
        [--json OUT.json] [--md OUT.md] [--worst OUT.json]
"""

from __future__ import annotations

from constrain_tools.maskbench_steps import main

if __name__ == "__main__":
    raise SystemExit(main())
