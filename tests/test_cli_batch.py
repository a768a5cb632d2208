"""``constrain batch``: JSON lines in and out, error records for bad lines, and a killed run resumed.

The oracle for the outputs is :func:`constrain.batch.generate_batch` in this process (greedy), itself
checked against the one-prompt loop in test_batch.py; the resume test counts ids in the output file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from constrain.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {"enum": ["yes", "no"]}


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_outputs(lm: tuple[Any, Any], prompts: list[Any]) -> list[Any]:
    from constrain.batch import generate_json_batch

    model, tokenizer = lm
    results = generate_json_batch(SCHEMA, prompts, model=model, tokenizer=tokenizer, max_new_tokens=8)
    return [r.value for r in results]


def test_batch_command_writes_a_record_per_line(
    lm: tuple[Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps({"id": "a", "prompt": "Is water wet? Answer yes or no."}),
        json.dumps({"prompt": "Is fire cold? Answer yes or no."}),  # no id: the line number, 2
        "",  # blank lines are skipped (but counted)
        "{not json",
        json.dumps({"id": 7, "prompt": [{"role": "user", "content": "Is ice hot? Answer yes or no."}]}),
        json.dumps({"id": "b"}),  # no prompt
        json.dumps({"id": "a", "prompt": "a duplicate id"}),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["batch", "--input", str(source), "--schema", json.dumps(SCHEMA), "--output", str(out)]
    assert main([*args, "--max-new-tokens", "8", "--batch-size", "2"]) == 0
    records = {json.dumps(r["id"]): r for r in read_records(out)}
    assert sorted(records) == sorted(json.dumps(i) for i in ["a", 2, 4, 7, "b"])
    want = expected_outputs(lm, [json.loads(lines[i])["prompt"] for i in (0, 1, 4)])
    assert [records[k]["output"] for k in ('"a"', "2", "7")] == want
    assert (
        records["4"]["error"]["type"] == "InvalidInputError"
        and "not JSON" in records["4"]["error"]["message"]
    )
    assert "prompt" in records['"b"']["error"]["message"]
    err = capsys.readouterr().err
    assert "more than once" in err and "5 rows written" in err
    # a rerun has nothing left to do
    assert main([*args, "--no-progress"]) == 0
    assert len(read_records(out)) == 5
    assert "skipping 6 input rows" in capsys.readouterr().err  # the duplicate "a" too


def test_a_killed_run_resumes_with_each_id_exactly_once(lm: tuple[Any, Any], tmp_path: Path) -> None:
    n = 8
    prompts = [f"Is {i} an even number? Answer yes or no." for i in range(n)]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "constrain", "batch", "--input", str(source), "--output", str(out)]
    cmd += ["--schema", json.dumps(SCHEMA), "--max-new-tokens", "8", "--batch-size", "1", "--no-progress"]
    cmd += ["--threads", "1"]  # several test processes share two cores: OpenMP spinning slows them 4x
    # cwd=REPO: `python -m` puts the checkout root on sys.path, as a user running from it would
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    written = out.read_bytes().count(b"\n")
    assert 2 <= written < n, written  # killed part way
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping {written} input rows" in done.stderr
    records = read_records(out)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))  # each id exactly once
    by_id = {r["id"]: r["output"] for r in records}
    assert [by_id[f"q{i}"] for i in range(n)] == expected_outputs(lm, prompts)


def test_batch_needs_an_existing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["batch", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2 and "is not a file" in capsys.readouterr().err
