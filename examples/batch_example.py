"""Example: many prompts, one schema: batched generation in this process, then the same job as a
resumable JSON-lines run (``constrain batch``), optionally with Ray Data.

    python examples/batch_example.py [--ray]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from constrain.batch import generate_json_batch
from constrain.cli import main as constrain_cli

SCHEMA = {
    "type": "object",
    "properties": {"sum": {"type": "integer", "minimum": 0, "maximum": 999}},
    "required": ["sum"],
    "additionalProperties": False,
}
PROMPTS = [f"What is {i} plus {i}? Answer as JSON." for i in range(6)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ray", action="store_true", help="also run the job with Ray Data (constrain[ray])")
    args = parser.parse_args()

    # 1. In this process: one model batch, the schema compiled once; results in input order.
    for prompt, result in zip(PROMPTS, generate_json_batch(SCHEMA, PROMPTS, max_new_tokens=16)):
        print(f"{prompt!r:45} -> {result.value if result.ok else result.error}")

    # 2. The dataset job: JSON lines in, JSON lines out; rerunning it skips the ids already written.
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "prompts.jsonl", Path(tmp) / "out.jsonl"
        source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
        job = ["batch", "--input", str(source), "--schema", json.dumps(SCHEMA), "--max-new-tokens", "16"]
        constrain_cli([*job, "--output", str(out), "--no-progress"])
        print(out.read_text(), end="")
        if args.ray:
            ray_out = Path(tmp) / "out_ray.jsonl"
            constrain_cli([*job, "--output", str(ray_out), "--ray", "--num-cpus", "2", "--no-progress"])
            same = sorted(out.read_text().splitlines()) == sorted(ray_out.read_text().splitlines())
            print(f"Ray Data gave the same records: {same}")


if __name__ == "__main__":
    main()
