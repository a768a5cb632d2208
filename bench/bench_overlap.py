"""Mask fill overlapped with the forward pass: time per output token with ``overlap`` on and off.

The decoding loop (``constrain.generation.run``) can fill the next step's mask on a worker thread while the
model runs, since the matcher's state is known before the logits are. This bench runs the same greedy,
non-speculative constrained generation with the overlap off and on, arms interleaved per case, checks the
tokens are identical first, and prints the time per output token and the ratio. On a CPU the forward pass
and the fill compete for the cores (``--threads`` torch threads plus one fill thread), so this is the
CPU stand-in for the GPU case, where the forward pass leaves the host free.

    python bench/bench_overlap.py [--repeats 3] [--max-new-tokens 64] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "tags": {"type": "array", "items": {"type": "string"}},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 60},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["name", "age", "languages"],
}

CASES: dict[str, dict[str, Any]] = {
    "schema:person": {"schema": PERSON, "prompt": "A JSON record for the mathematician Ada Lovelace."},
    "schema:tree": {"schema": TREE, "prompt": "A JSON tree of the files in a small Python project."},
    "lark:json": {"lark": "json", "prompt": "A JSON object describing a cat."},
    "regex:csv": {"regex": r"([a-z]{1,12},){3,8}[a-z]{1,12}", "prompt": "Some fruit names, comma separated:"},
}


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from constrain.compiler import compile as compile_grammar
    from constrain.generation import encode_prompt, run
    from constrain.grammar import Grammar
    from constrain.matcher import GrammarMatcher
    from constrain.models import default_model, tokenizer_info_for

    torch.set_num_threads(args.threads)
    model, tok = default_model()
    info = tokenizer_info_for(tok)
    rows: list[dict[str, Any]] = []
    for name, case in CASES.items():
        if "schema" in case:
            grammar = Grammar.from_json_schema(case["schema"])
        elif "lark" in case:
            grammar = Grammar.from_lark(name=case["lark"])
        else:
            grammar = Grammar.from_regex(case["regex"])
        compiled = compile_grammar(grammar, info)
        prompt = encode_prompt(tok, case["prompt"], None)
        times: dict[bool, list[float]] = {False: [], True: []}
        tokens: dict[bool, list[int]] = {}
        for _ in range(args.repeats):
            for overlap in (False, True):
                t0 = time.perf_counter()
                result = run(
                    model,
                    info,
                    prompt,
                    GrammarMatcher(compiled),
                    max_new_tokens=args.max_new_tokens,
                    on_budget="complete",
                    overlap=overlap,
                )
                elapsed = time.perf_counter() - t0 - result.stats.time_to_first_token_s
                n = max(1, result.stats.output_tokens - result.stats.completion_tokens - 1)
                times[overlap].append(1e3 * elapsed / n)
                if tokens.setdefault(overlap, result.token_ids) != result.token_ids:
                    raise SystemExit(f"{name}: a repeat gave other tokens (the bench is greedy)")
        if tokens[False] != tokens[True]:
            raise SystemExit(f"{name}: overlap changed the tokens: a bug")
        off, on = statistics.median(times[False]), statistics.median(times[True])
        rows.append(
            {
                "case": name,
                "tokens": len(tokens[True]),
                "ms_per_token_off": off,
                "ms_per_token_on": on,
                "ratio_on_off": on / off,
            }
        )
        print(
            f"{name:16} {len(tokens[True]):>4} tok off {off:7.2f} ms/tok on {on:7.2f} on/off {on / off:5.2f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
