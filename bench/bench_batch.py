"""Throughput of batched ``generate_json`` (constrain.batch) against the one-prompt loop.

    python bench/bench_batch.py [--prompts 16] [--max-new-tokens 24] [--threads 1] [--batches 1,4,16]

The default model (SmolLM2-135M, float32, CPU) writes a small JSON object for each of ``--prompts``
prompts, greedily, with ``on_budget="complete"`` so every row counts. It first checks that every batched
output equals the one-prompt loop's (``generate(..., speculate=False)``), then reports output tokens per
second for: the one-prompt loop without and with speculation (``generate_json`` as a user calls it), and
``generate_json_batch`` at each batch size. One run of each (the model is warmed up first).
"""

from __future__ import annotations

import argparse
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 16},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}

PEOPLE = [
    "Ada Lovelace, 36, London",
    "Alan Turing, 41, Manchester",
    "Grace Hopper, 85, Arlington",
    "Edsger Dijkstra, 72, Nuenen",
    "Barbara Liskov, 84, Boston",
    "Donald Knuth, 86, Stanford",
    "Margaret Hamilton, 87, Boston",
    "John McCarthy, 84, Stanford",
    "Frances Allen, 88, New York",
    "Ken Thompson, 81, Berkeley",
    "Radia Perlman, 72, Seattle",
    "Tony Hoare, 90, Cambridge",
    "Karen Jones, 65, Leeds",
    "Niklaus Wirth, 89, Zurich",
    "Leslie Lamport, 83, Palo Alto",
    "Shafi Goldwasser, 65, Berkeley",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batches", default="1,4,16", help="batch sizes, comma-separated")
    args = parser.parse_args()

    import torch

    from constrain.batch import generate_json_batch
    from constrain.generation import generate
    from constrain.models import default_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = default_model()
    prompts = [f"Write {PEOPLE[i % len(PEOPLE)]} as a JSON record." for i in range(args.prompts)]
    common = {"model": model, "tokenizer": tokenizer, "max_new_tokens": args.max_new_tokens}
    generate(prompts[0], schema=SCHEMA, speculate=False, **common)  # warm-up: compile, first masks

    rows: list[tuple[str, int, float]] = []
    reference: list[str] = []
    for speculate in (False, True):
        t0 = time.perf_counter()
        tokens = 0
        for prompt in prompts:
            result = generate(
                prompt, schema=SCHEMA, speculate=speculate, on_budget="complete", return_stats=True, **common
            )
            tokens += result.stats.output_tokens + result.stats.completion_tokens
            if not speculate:
                reference.append(result.text)
        rows.append((f"one-prompt loop, speculate={speculate}", tokens, time.perf_counter() - t0))
    for size in (int(b) for b in args.batches.split(",")):
        t0 = time.perf_counter()
        results = generate_json_batch(SCHEMA, prompts, batch_size=size, on_budget="complete", **common)
        elapsed = time.perf_counter() - t0
        texts = [r.text for r in results]
        if texts != reference:  # check before reporting: the batch must give the loop's outputs
            bad = [i for i, (a, b) in enumerate(zip(texts, reference)) if a != b]
            raise SystemExit(f"batch {size}: rows {bad} differ from the one-prompt loop")
        tokens = sum(r.stats.output_tokens + r.stats.completion_tokens for r in results)
        rows.append((f"generate_json_batch, batch {size}", tokens, elapsed))

    base = rows[0][1] / rows[0][2]
    print(
        f"{args.prompts} prompts, max_new_tokens={args.max_new_tokens}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'run':42} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs loop':>8}")
    for name, tokens, seconds in rows:
        rate = tokens / seconds
        print(f"{name:42} {tokens:7d} {seconds:8.2f} {rate:9.1f} {rate / base:7.2f}x")


if __name__ == "__main__":
    main()
