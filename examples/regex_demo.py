"""Demo: a regex constrains every token over a real tokenizer.

Without a model (the default model arrives with ``generate_json``), the "model" here is a seeded
random choice among the tokens the constraint allows at each step: the output always matches.

    python examples/regex_demo.py [--tokenizer PATH] [--regex PATTERN] [--seed N]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

import constrain
from constrain.kernels import apply_token_bitmask_inplace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "tokenizers" / "smollm2-49k.tokenizer.json"
DEFAULT_REGEX = (
    r'\{"date": "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", "city": "[A-Z][a-z]{2,12}"\}'
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a tokenizer.json file")
    parser.add_argument("--regex", default=DEFAULT_REGEX, help="the pattern every output must fullmatch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    if not args.tokenizer.exists():
        print(f"tokenizer not found: {args.tokenizer} (pass --tokenizer PATH)", file=sys.stderr)
        return 2

    info = constrain.TokenizerInfo.from_file(args.tokenizer)
    t0 = time.perf_counter()
    compiled = constrain.compile(constrain.Grammar.from_regex(args.regex), info)
    print(f"regex: {args.regex}")
    print(
        f"tokenizer: {args.tokenizer.name} ({info.vocab_size} ids), "
        f"DFA: {compiled.grammar.to_dfa().num_states} states, "
        f"compiled in {(time.perf_counter() - t0) * 1e3:.1f} ms "
        "(the first compile per tokenizer also builds its vocabulary trie)"
    )
    gen = torch.Generator().manual_seed(args.seed)
    bitmask = constrain.allocate_token_bitmask(1, info.vocab_size)
    for _ in range(args.samples):
        matcher = constrain.GrammarMatcher(compiled)
        pieces: list[int] = []
        while not matcher.is_terminated():
            matcher.fill_next_token_bitmask(bitmask, 0)
            # Stand-in logits: random scores; the kernel masks the disallowed ones to -inf.
            logits = torch.rand((1, info.vocab_size), generator=gen)
            apply_token_bitmask_inplace(logits, bitmask)
            token = int(torch.argmax(logits, dim=-1))
            if not matcher.accept_token(token):
                raise RuntimeError(f"token {token} was allowed by the mask but rejected")
            if token not in info.eos_ids:
                pieces.append(token)
        text = info.decode_bytes(pieces).decode("utf-8")
        if not re.fullmatch(args.regex, text):
            raise RuntimeError(f"output {text!r} does not match the regex")
        print(f"  {len(pieces):2d} tokens  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
