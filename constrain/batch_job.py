"""The ``constrain batch`` dataset job: a JSON-lines file of prompts in, one JSON line per prompt out.

The output is the job's only state. Every finished row is appended as one line and flushed at once (a
single ``write`` of a whole line), so a run killed at any point leaves whole records plus at most one
torn last line; a rerun of the same command drops that torn tail, reads the ids already written and
generates only the others. Each id therefore ends up in the output exactly once.

Input lines are ``{"id": ..., "prompt": ...}``: a missing id is the line number (1-based); the prompt is a
string or a list of chat messages. A line that is not such an object gets an error record (its id, or
its line number) instead of stopping the job. Output records are :func:`constrain.batch.result_record`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .exceptions import InvalidInputError

__all__ = ["InputRow", "completed_ids", "read_input", "run_batch_job"]


@dataclass
class InputRow:
    """One input line: its ``id``, and its ``prompt`` or the ``error`` that makes it unusable."""

    id: Any
    prompt: Any = None
    error: str | None = None


def _say(text: str) -> None:
    """A message to the user on stderr (stdout stays free)."""
    sys.stderr.write(text)
    sys.stderr.flush()


def _key(row_id: Any) -> str:
    """Ids compare as JSON text: ``1`` and ``"1"`` are different ids."""
    return json.dumps(row_id, sort_keys=True)


def read_input(path: Path) -> Iterator[InputRow]:
    """The rows of a JSON-lines input file (blank lines skipped)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield InputRow(number, error=f"line {number} is not JSON: {exc}")
                continue
            if not isinstance(record, dict):
                yield InputRow(number, error=f"line {number} is not a JSON object")
                continue
            row_id = record.get("id", number)
            if isinstance(row_id, (dict, list)) or row_id is None:
                yield InputRow(number, error=f"line {number}: an id must be a string or a number")
                continue
            prompt = record.get("prompt")
            if isinstance(prompt, str) or (
                isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt)
            ):
                yield InputRow(row_id, prompt)
            else:
                yield InputRow(
                    row_id, error=f"line {number}: 'prompt' must be a string or a list of chat messages"
                )


def completed_ids(path: Path) -> set[str]:
    """The ids (as :func:`_key` text) already in the output; a torn last line (a killed run) is cut
    off the file first, so the rerun appends after whole records."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with path.open("r+b") as f:
            f.truncate(end)
    done: set[str] = set()
    for line in raw[:end].decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "id" in record:
            done.add(_key(record["id"]))
    return done


class _Writer:
    """Appends records to the output, one flushed line each, and keeps the progress display."""

    def __init__(self, out: IO[str], total: int, progress: bool) -> None:
        self.out = out
        self.total = total
        self.written = 0
        self.errors = 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.progress = progress
        self._last_line = 0.0
        if progress:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True)

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()  # in the OS's hands now: a killed process loses nothing written
        self.written += 1
        self.errors += "error" in record
        if self.bar is not None:
            self.bar.update(1)
        elif self.progress:
            self._plain_progress()

    def _plain_progress(self) -> None:
        """The stand-in for tqdm: one rewritten stderr line with the rate and the ETA."""
        now = time.perf_counter()
        if now - self._last_line < 0.5 and self.written < self.total:
            return
        self._last_line = now
        rate = self.written / max(now - self.t0, 1e-9)
        eta = (self.total - self.written) / rate if rate > 0 else float("inf")
        end = "" if self.written < self.total else "\n"
        _say(f"\r{self.written}/{self.total} rows, {rate:.2f} rows/s, ETA {eta:.0f} s{end}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_batch_job(args: argparse.Namespace) -> int:
    """``constrain batch``: see the module docstring. Returns the exit code (0 when every pending row got
    a record, errors included)."""
    from .batch import BatchGenerator, ray_generate, result_record

    in_path = Path(args.input)
    out_path = Path(args.output)
    if not in_path.is_file():
        raise InvalidInputError(f"--input {in_path} is not a file")
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "chat": False if args.no_chat else None,
        "on_budget": args.on_budget,
        "workers": args.workers,
    }
    if args.schema is not None:
        from .json_schema import load_schema

        options.update(schema=load_schema(args.schema), json_output=True)
    elif args.regex is not None:
        options["regex"] = args.regex
    elif args.grammar is not None:
        path = Path(args.grammar)
        options["grammar"] = str(path.resolve()) if path.is_file() else args.grammar
    done = completed_ids(out_path)
    skipped = 0
    seen: set[str] = set()
    bad: list[dict[str, Any]] = []
    todo: list[InputRow] = []
    for row in read_input(in_path):
        key = _key(row.id)
        if key in done:
            skipped += 1
            continue
        if key in seen:
            _say(f"warning: id {row.id!r} appears more than once in the input; later copies skipped\n")
            continue
        seen.add(key)
        if row.error is not None:
            bad.append({"id": row.id, "error": {"type": "InvalidInputError", "message": row.error}})
        else:
            todo.append(row)
    if skipped:
        _say(f"resuming: skipping {skipped} input rows whose ids are already in {out_path}\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a", encoding="utf-8") as out:
        writer = _Writer(out, len(bad) + len(todo), progress=not args.no_progress)
        try:
            for record in bad:
                writer.write(record)
            if todo and (args.ray or args.ray_address):
                if args.dtype != "float32":
                    raise InvalidInputError("--ray loads the model in float32; drop --dtype")
                if args.model is not None:
                    options["model"] = str(Path(args.model).resolve())
                for record in ray_generate(
                    [{"id": r.id, "prompt": r.prompt} for r in todo],
                    address=args.ray_address,
                    num_cpus=args.num_cpus,
                    concurrency=args.ray_actors,
                    threads=args.threads or 1,
                    batch_size=args.batch_size,
                    **options,
                ):
                    writer.write(record)
            elif todo:
                if args.threads:
                    import torch

                    torch.set_num_threads(args.threads)
                if args.model is not None or args.dtype != "float32":
                    from .models import load_model

                    options["model"], options["tokenizer"] = load_model(args.model, dtype=args.dtype)
                generator = BatchGenerator(batch_size=args.batch_size, **options)
                ids = [r.id for r in todo]
                generator.generate(
                    [r.prompt for r in todo],
                    on_result=lambda res: writer.write(
                        result_record(ids[res.index], res, json_output=generator.json_output)
                    ),
                )
        finally:
            writer.close()
    elapsed = time.perf_counter() - writer.t0
    _say(
        f"{writer.written} rows written to {out_path} ({writer.errors} errors, {skipped} skipped) "
        f"in {elapsed:.1f} s\n"
    )
    return 0
