"""Ray Data (constrain.batch.ray_generate, ``constrain batch --ray``) on a local 2-CPU cluster with the
default model: the same greedy outputs as the single-process batch (itself checked against the
one-prompt loop in test_batch.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray Data is the optional extra constrain[ray]")

SCHEMA = {"enum": ["yes", "no"]}
PROMPTS: list[Any] = [
    "Is water wet? Answer yes or no.",
    "Is fire cold? Answer yes or no.",
    [{"role": "user", "content": "Is ice hot? Answer yes or no."}],
    "Is 4 an even number? Answer yes or no.",
]


@pytest.mark.slow
def test_ray_job_matches_the_single_process_batch(lm: tuple[Any, Any], tmp_path: Path) -> None:
    from constrain.batch import generate_json_batch
    from constrain.cli import main

    model, tokenizer = lm
    want = [
        r.value
        for r in generate_json_batch(SCHEMA, PROMPTS, model=model, tokenizer=tokenizer, max_new_tokens=8)
    ]
    source = tmp_path / "in.jsonl"
    ids: list[Any] = ["w", 2, "i", 4.5]
    source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in zip(ids, PROMPTS)))
    source.write_text(source.read_text() + "{broken\n")
    out = tmp_path / "out.jsonl"
    args = ["batch", "--input", str(source), "--output", str(out), "--schema", json.dumps(SCHEMA)]
    # a local cluster of 2 CPUs, one actor (model loaded and schema compiled once), batches of 2 rows
    args += ["--ray", "--num-cpus", "2", "--batch-size", "2", "--max-new-tokens", "8", "--no-progress"]
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {json.dumps(r["id"]): r for r in records}
    assert len(records) == len(by_id) == 5  # each id once
    assert [by_id[json.dumps(i)]["output"] for i in ids] == want
    assert by_id["5"]["error"]["type"] == "InvalidInputError"
