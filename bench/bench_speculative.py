"""Speculative decoding on JSONSchemaBench: each drafter composition against no speculation, in one run.

    python bench/bench_speculative.py --limit 10 --json bench/results/speculative.json

See constrain_tools.speculative_bench for the arms and the figures.
"""

from __future__ import annotations

from constrain_tools.speculative_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
