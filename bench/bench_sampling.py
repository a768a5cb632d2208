"""Sampling under a constraint: KL to the exact conditional on enumerable problems (masked decoding, SMC
over AWRS, ASAp) and AWRS against full masking with SmolLM2 (checks per token, time per token).

The logic is ``constrain_tools.sampling_bench`` (also ``constrain bench sampling``); see its docstring.

Usage::

    python bench/bench_sampling.py [--part a|b|all] [--png OUT.png] [--limit 5] [--json OUT.json]
"""

from __future__ import annotations

from constrain_tools.sampling_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
