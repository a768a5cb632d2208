"""MaskBench step bench: per-step mask fill time of constrain and its peers on the same token paths.

``constrain bench maskbench-steps`` (also ``python bench/bench_maskbench_steps.py``). Each engine
(constrain, xgrammar, llguidance, outlines-core) runs in its own worker process, pinned to one CPU and
single-threaded, over the same schemas and the same token ids:

* **Workload**: a sample of MaskBench spread over every subset: per subset, the records with a valid
  instance, ordered by the SHA-256 of the file name (the order the shared unpacked sample was drawn in,
  so the archive and the sample give the same schemas), taken round-robin over the subsets (sorted by
  name) until ``--limit`` schemas (300 by default). Each schema's first valid instance is written in
  the canonical text constrain reads (``serialize_instance``: compact JSON, keys in schema order) and
  tokenised once (llama3-128k by default); every engine is teacher-forced along those ids.
* **Engines**: constrain ``Grammar.from_json_schema`` (the schema's draft, ``formats="assert"``) +
  ``compile`` after ``clear_caches(keep_constants=True, release=False)`` (every grammar cache
  cleared; a tokenizer's JSON key tables and the any-value automata, which depend on no schema, kept;
  the heap not trimmed, as in a serving process); xgrammar
  ``compile_json_schema(any_whitespace=False, separators=(",", ":"), strict_mode=False)`` with
  ``GrammarCompiler(max_threads=1, cache_enabled=False)``; llguidance ``grammar_from_json_schema``
  with compact separators and ``coerce_one_of``; outlines-core ``build_regex_from_schema(schema, "")``
  + ``Index`` + ``Guide``. Each worker warms its engine up on a small schema first, so JIT and import
  time are left out.
* **Correctness first**: before each fill the bitmask is set to all-ones (bits an engine leaves
  unwritten show up); the path token must be in the mask and be accepted, and at the end an EOS id must
  be allowed and the engine must say it can end. A digest of the ordinary-token part of every mask
  goes back to the parent, which counts the steps where a peer's mask differs from constrain's.
* **Timing**: compile (``build``), time to first mask (build + first fill, ``TTFM``) and every fill
  into a preallocated int32 bitmask; only the fill call is timed. The per-step table excludes step 0
  (the first fill is part of TTFM). A compile past ``--compile-timeout`` (10 s) counts as a timeout;
  a worker stuck in native code past it is killed and restarted at the next schema.

Outputs: the Markdown table on stdout (and ``--md``), the full results as JSON (``--json``: every
fill of every engine on every schema), and constrain's worst steps per schema (``--worst``: schema id,
step, µs, the token, the text before it, and the matcher's state: automaton type, state id, whether
the mask was computed in that fill or found cached).

Usage::

    constrain bench maskbench-steps [--limit 300] [--engines constrain,xgrammar,llguidance,outlines-core]
        [--maskbench PATH] [--tokenizer PATH] [--cpus 0,1,...] [--json OUT.json] [--md OUT.md]
        [--worst OUT.json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from constrain.exceptions import InvalidInputError

from . import harness, suites

__all__ = [
    "ALL_ENGINES",
    "DEFAULT_COMPILE_TIMEOUT_S",
    "DEFAULT_LIMIT",
    "DEFAULT_MASKBENCH_SAMPLE",
    "EngineRun",
    "StepCase",
    "add_arguments",
    "format_markdown",
    "load_cases",
    "main",
    "mask_disagreements",
    "run_bench",
    "run_from_args",
    "schema_adapters",
    "summarize",
    "worst_steps",
]

ALL_ENGINES = ("constrain", "xgrammar", "llguidance", "outlines-core")
DEFAULT_LIMIT = 300
DEFAULT_COMPILE_TIMEOUT_S = 10.0
#: Past this many seconds of teacher forcing one schema, the walk stops (``walk_timeout``).
DEFAULT_WALK_LIMIT_S = 120.0
#: Extra seconds a worker gets past a limit before the parent kills it (its own check fires first).
_GRACE_S = 5.0
#: The MaskBench sample unpacked in the shared folder (the archive beside it holds every record).
DEFAULT_MASKBENCH_SAMPLE = harness.shared_dir() / "data" / "jsonschemabench" / "maskbench" / "data"
#: Worst steps kept per schema in ``--worst``.
WORST_PER_SCHEMA = 5

_WARM_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "n": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
    },
    "required": ["name"],
    "additionalProperties": False,
}
_WARM_INSTANCE = {"name": "warm", "n": 3, "tags": ["a", "b"]}

# llguidance: compact output like the others; coerce_one_of reads a oneOf it cannot prove disjoint as
# anyOf (exact where the branches are disjoint) instead of rejecting the schema.
LLG_OVERRIDES = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
    "coerce_one_of": True,
}


# ==========================================================================================================
# Workload
# ==========================================================================================================


@dataclass(frozen=True)
class StepCase:
    """One schema and the token path of its first valid instance."""

    id: str  # "subset/record id"
    subset: str
    schema_text: str  # the schema as JSON text, what every engine compiles
    draft: str
    text: str  # the canonical text of the instance
    tokens: tuple[int, ...]


def _say(text: str, *, err: bool = False) -> None:
    """One line of the report on stdout (progress on stderr)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _canonical(instance: Any, schema: Any, draft: str) -> str:
    """The text constrain reads for ``instance`` (compact JSON where the schema cannot be walked)."""
    from constrain.json_schema import SchemaOptions, serialize_instance

    try:
        return serialize_instance(instance, schema, options=SchemaOptions(formats="assert", draft=draft))
    except Exception:  # noqa: BLE001 - e.g. a schema constrain does not support: the engines report it
        return json.dumps(instance, separators=(",", ":"), ensure_ascii=False)


def load_cases(
    path: str | Path | None,
    tokenizer: str | Path | None,
    limit: int = DEFAULT_LIMIT,
    *,
    only: Sequence[str] = (),
) -> list[StepCase]:
    """``limit`` MaskBench schemas with a valid instance, round-robin over the subsets (each subset in
    SHA-256-of-file-name order), with the llama3 (or ``tokenizer``) token path of the first valid
    instance. ``only`` keeps the ids (``subset/id``) that contain one of its strings, before ``limit``.

    Raises:
        InvalidInputError: the data or the tokenizer is missing, or ``limit`` is below 1.
    """
    import tokenizers

    if limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {limit}")
    root = harness.require_path(path, "the MaskBench records", "--maskbench")
    tok_path = harness.require_path(tokenizer, "tokenizer", "--tokenizer")
    suite = suites.load_maskbench(root)
    by_subset: dict[str, list[tuple[str, suites.SchemaCase]]] = {}
    for c in suite.cases:
        if not any(i.valid for i in c.instances):
            continue
        if only and not any(s in f"{c.file}/{c.group}" for s in only):
            continue
        # the record's file name, as the shared sample's README orders it
        fname = f"{c.file}---{c.group}.json" if not c.group.startswith(c.file) else f"{c.group}.json"
        by_subset.setdefault(c.file, []).append((_sha(fname), c))
    queues = [[c for _, c in sorted(v, key=lambda kv: kv[0])] for _, v in sorted(by_subset.items())]
    picked: list[suites.SchemaCase] = []
    while len(picked) < limit and any(queues):
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    tok = tokenizers.Tokenizer.from_file(str(tok_path))
    out = []
    for c in picked:
        draft = c.draft or "2020-12"
        instance = next(i.data for i in c.instances if i.valid)
        text = _canonical(instance, c.schema, draft)
        ids = tuple(tok.encode(text, add_special_tokens=False).ids)
        out.append(StepCase(f"{c.file}/{c.group}", c.file, json.dumps(c.schema), draft, text, ids))
    return out


# ==========================================================================================================
# Engine adapters (schemas): the regex adapters of bench_common, built from a JSON Schema
# ==========================================================================================================


def schema_adapters() -> dict[str, Callable[[Any], Any]]:
    """Engine name -> adapter class; the peers import lazily (a missing one fails in its worker)."""
    from . import bench_common as bc

    class ConstrainSchema(bc.ConstrainEngine):
        draft = "2020-12"

        def grammar_of(self, text: str) -> Any:
            # CONSTRAIN_BENCH_MAX_ANY_DEPTH=3: unconstrained values capped at depth 3 (A/B runs; none, the
            # default: exact at any depth)
            depth = os.environ.get("CONSTRAIN_BENCH_MAX_ANY_DEPTH", "")
            extra = {"max_any_depth": None if depth == "none" else int(depth)} if depth else {}
            return self.lib.Grammar.from_json_schema(
                json.loads(text), draft=self.draft, formats="assert", **extra
            )

        def state_info(self) -> tuple[str, int, int]:
            """(automaton type, matcher state, masks cached so far): untimed, for ``--worst``."""
            comp = self.matcher.compiled
            return type(comp.automaton).__name__, int(self.matcher.state), int(comp.num_cached_states)

    class XGrammarSchema(bc.XGrammarEngine):
        def __init__(self, vocab: Any) -> None:
            super().__init__(vocab)
            self.compiler = self.lib.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
            self.note = (
                "GrammarCompiler(max_threads=1, cache_enabled=False); compile_json_schema("
                'any_whitespace=False, separators=(",", ":"), strict_mode=False)'
            )

        def compile(self, text: str) -> Any:
            return self.compiler.compile_json_schema(
                text, any_whitespace=False, separators=(",", ":"), strict_mode=False
            )

    class LLGuidanceSchema(bc.LLGuidanceEngine):
        def __init__(self, vocab: Any) -> None:
            super().__init__(vocab)
            self.note = f"grammar_from_json_schema(overrides={LLG_OVERRIDES})"

        def grammar_of(self, text: str) -> Any:
            return self.lib.LLMatcher.grammar_from_json_schema(text, overrides=LLG_OVERRIDES)

    class OutlinesCoreSchema(bc.OutlinesCoreEngine):
        def __init__(self, vocab: Any) -> None:
            super().__init__(vocab)
            self.note += '; build_regex_from_schema(schema, whitespace_pattern="")'

        def build(self, regex: str) -> None:
            from outlines_core.json_schema import build_regex_from_schema

            try:
                pattern = build_regex_from_schema(regex, "")
            except (ValueError, RuntimeError, TypeError) as exc:
                raise bc.EngineError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
            super().build(pattern)

    return {
        "constrain": ConstrainSchema,
        "xgrammar": XGrammarSchema,
        "llguidance": LLGuidanceSchema,
        "outlines-core": OutlinesCoreSchema,
    }


# ==========================================================================================================
# The worker: one engine, every schema, in order
# ==========================================================================================================


@dataclass
class EngineRun:
    """One engine on one schema.

    ``status``: ``ok``; ``compile_error`` / ``compile_timeout`` (past the limit, or killed there);
    ``mask`` (the path token not in the mask, or EOS not allowed at the end); ``accept`` (the engine
    rejected the path token); ``walk_timeout``; ``crash`` (an exception, or the worker died);
    ``pending`` (not run yet, in a partial report). constrain's compile budget refusing a schema
    (``CompileBudgetExceeded``) counts as ``compile_timeout``.
    """

    status: str = "ok"
    detail: str = ""
    compile_ms: float = float("nan")
    ttfm_ms: float = float("nan")
    fill_us: list[float] = field(default_factory=list)  # every fill, step 0 (part of TTFM) first
    # the same in the worker thread's CPU time: what load on the machine (preemption) does not inflate
    fill_cpu_us: list[float] = field(default_factory=list)
    ttfm_cpu_ms: float = float("nan")  # the process's CPU time from the schema to the first mask
    digests: list[str] = field(default_factory=list)  # per fill: ordinary-token mask digest + EOS bit
    popcounts: list[int] = field(default_factory=list)  # per fill: allowed ordinary tokens
    # constrain only: per fill (automaton type, state, masks cached after the fill - before the fill)
    states: list[tuple[str, int, int]] = field(default_factory=list)


def _set_single_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


@contextlib.contextmanager
def _cpu_deadline(seconds: float) -> Iterator[harness.Alarm]:
    """Raise :class:`harness.Timeout` after ``seconds`` of this process's CPU time (``ITIMER_PROF``), so
    a loaded machine does not turn slow wall-clock compiles into timeouts. Native code is interrupted
    only when it returns to Python (the parent kills a worker stuck past the limit)."""
    alarm = harness.Alarm()
    if not hasattr(signal, "ITIMER_PROF"):
        yield alarm
        return

    def on_prof(signum: int, frame: Any) -> None:
        alarm.fired = True
        raise harness.Timeout

    previous = signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield alarm
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, from ``/proc`` (None where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _walk(
    engine: Any,
    case: StepCase,
    bitmask: Any,
    ordinary: np.ndarray,
    eos: Sequence[int],
    compile_timeout_s: float,
    walk_limit_s: float,
    send: Callable[[Any], None],
) -> EngineRun:
    """Build cold, then teacher-force ``case.tokens``, checking every mask; only fills are timed."""
    import gc

    from . import bench_common as bc

    clock, cpu, pcpu = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    run = EngineRun()
    track = hasattr(engine, "state_info")

    def record(t_fill: int, c_fill: int, before: int) -> None:
        row = bitmask[0].numpy()
        run.fill_us.append(t_fill / 1e3)
        run.fill_cpu_us.append(c_fill / 1e3)
        ordinary_row = row & ordinary
        run.digests.append(
            hashlib.blake2b(ordinary_row.tobytes(), digest_size=8).hexdigest()
            + ("E" if any(bc.has_bit(row, e) for e in eos) else "-")
        )
        run.popcounts.append(int(np.unpackbits(ordinary_row.view(np.uint8)).sum()))
        if track:
            kind, state, cached = engine.state_info()
            run.states.append((kind, state, cached - before))

    gc.collect()
    gc.disable()
    try:
        bitmask.fill_(-1)
        p0 = pcpu()
        t0 = clock()
        try:
            with _cpu_deadline(compile_timeout_s) as alarm:
                engine.build(case.schema_text)
                t1 = clock()
                before = engine.state_info()[2] if track else 0
                c_fill0 = cpu()
                t_fill0 = clock()
                engine.fill(bitmask)
                t2 = clock()
                c2 = cpu()
                p2 = pcpu()
        except harness.Timeout:
            run.status, run.detail = "compile_timeout", f"> {compile_timeout_s:g} s of CPU time"
            return run
        except bc.EngineError as exc:
            # constrain's compile budget (CPU time) refusing is its own time limit
            budget = str(exc).startswith("CompileBudgetExceeded")
            run.status, run.detail = "compile_timeout" if budget else "compile_error", str(exc)[:300]
            return run
        except Exception as exc:  # noqa: BLE001 - an engine crashing on a schema is a result
            if alarm.fired:
                run.status, run.detail = "compile_timeout", f"> {compile_timeout_s:g} s of CPU time"
            else:
                run.status, run.detail = "crash", harness.summarize_exception(exc, max_chars=300)
            return run
        if (p2 - p0) / 1e9 > compile_timeout_s:
            run.status, run.detail = "compile_timeout", f"{(p2 - p0) / 1e9:.1f} s of CPU time"
            return run
        run.compile_ms, run.ttfm_ms, run.ttfm_cpu_ms = (t1 - t0) / 1e6, (t2 - t0) / 1e6, (p2 - p0) / 1e6
        record(t2 - t_fill0, c2 - c_fill0, before)
        send(("compiled",))
        walk_start = time.monotonic()
        vocab = engine.vocab
        for step, tid in enumerate(case.tokens):
            if not bc.has_bit(bitmask[0].numpy(), tid):
                run.status, run.detail = "mask", f"step {step}: token {vocab.show(tid)} not in mask"
                return run
            if not engine.accept(tid):
                run.status, run.detail = "accept", f"step {step}: token {vocab.show(tid)} rejected"
                return run
            if time.monotonic() - walk_start > walk_limit_s:
                run.status, run.detail = "walk_timeout", f"> {walk_limit_s:g} s at step {step}"
                return run
            bitmask.fill_(-1)
            before = engine.state_info()[2] if track else 0
            c = cpu()
            t = clock()
            engine.fill(bitmask)
            t_end = clock()
            record(t_end - t, cpu() - c, before)
        row = bitmask[0].numpy()
        if not any(bc.has_bit(row, e) for e in eos):
            run.status, run.detail = "mask", "end: no EOS id in the final mask"
        elif not engine.can_end():
            run.status, run.detail = "mask", "end: the engine says the output cannot end here"
    except Exception as exc:  # noqa: BLE001
        run.status, run.detail = "crash", harness.summarize_exception(exc, max_chars=300)
    finally:
        gc.enable()
    return run


def _worker_main(
    conn: Connection,
    engine_name: str,
    tokenizer: str,
    cases: list[StepCase],
    start: int,
    cpu: int | None,
    compile_timeout_s: float,
    walk_limit_s: float,
) -> None:
    """A worker process: load the tokenizer and the engine, warm up, then run ``cases[start:]`` in
    order, sending ``("start", i)``, ``("compiled",)`` and ``("done", i, EngineRun)`` for each."""
    _set_single_thread()
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    try:
        import torch

        torch.set_num_threads(1)
        from . import bench_common as bc

        vocab = bc.load_vocab(tokenizer)
        engine = schema_adapters()[engine_name](vocab)
        if engine_name == "constrain":  # numba's JIT, without the compile budget (which would count it)
            from constrain.warmup import warm_up

            warm_up(engine.info)
        ordinary = ~bc.ids_to_words(vocab.special_ids | set(range(vocab.size, vocab.words * 32)), vocab.words)
        eos = vocab.eos_ids
        warm_text = _canonical(_WARM_INSTANCE, _WARM_SCHEMA, "2020-12")
        warm = StepCase(
            "warm", "warm", json.dumps(_WARM_SCHEMA), "2020-12", warm_text, tuple(vocab.encode(warm_text))
        )
        bitmask = engine.new_bitmask()
        w = _walk(engine, warm, bitmask, ordinary, eos, 600.0, 600.0, lambda m: None)
        conn.send(("ready", engine.note, w.status, w.detail))
    except Exception as exc:  # noqa: BLE001 - e.g. a peer not installed: the parent reports it
        conn.send(("failed", harness.summarize_exception(exc, max_chars=500)))
        return
    for i in range(start, len(cases)):
        conn.send(("start", i))
        if hasattr(engine, "draft"):
            engine.draft = cases[i].draft
        run = _walk(engine, cases[i], bitmask, ordinary, eos, compile_timeout_s, walk_limit_s, conn.send)
        conn.send(("done", i, run))
    conn.send(("finished",))


# ==========================================================================================================
# The parent: one worker per engine, killed and restarted past a limit
# ==========================================================================================================


@dataclass
class _Slot:
    engine: str
    cpu: int | None
    next_index: int = 0
    proc: Any = None
    conn: Connection | None = None
    current: int | None = None
    phase_deadline: float = float("inf")
    phase: str = "compile"
    phase_cpu0: float | None = None
    note: str = ""
    failed: str = ""
    done: bool = False
    restarts: int = 0


def run_bench(
    cases: Sequence[StepCase],
    engines: Sequence[str],
    tokenizer: str | Path,
    *,
    cpus: Sequence[int] | None = None,
    jobs: int | None = None,
    compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S,
    walk_limit_s: float = DEFAULT_WALK_LIMIT_S,
    on_result: Callable[[str, int, EngineRun], None] | None = None,
    progress: bool = True,
) -> tuple[dict[str, list[EngineRun]], dict[str, str]]:
    """Run every engine over ``cases``, each in its own worker (at most ``jobs`` at once, each pinned
    to one of ``cpus`` in turn). Returns (engine -> one :class:`EngineRun` per case, engine -> note);
    an engine whose worker cannot start (not installed) gets a note and no runs."""
    cpus = list(cpus) if cpus else sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    jobs = jobs or max(1, min(len(engines), len(cpus) or 1))
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[EngineRun | None]] = {e: [None] * len(cases) for e in engines}
    slots = [_Slot(e, cpus[k % len(cpus)] if cpus else None) for k, e in enumerate(engines)]
    case_list = list(cases)
    t_start = time.monotonic()

    def launch(slot: _Slot) -> None:
        parent, child = ctx.Pipe(duplex=False)
        slot.proc = ctx.Process(
            target=_worker_main,
            args=(
                child,
                slot.engine,
                str(tokenizer),
                case_list,
                slot.next_index,
                slot.cpu,
                compile_timeout_s,
                walk_limit_s,
            ),
            daemon=True,
        )
        slot.proc.start()
        child.close()
        slot.conn, slot.current, slot.phase_deadline = parent, None, float("inf")

    def finish(slot: _Slot, i: int, run: EngineRun) -> None:
        results[slot.engine][i] = run
        if on_result is not None:
            on_result(slot.engine, i, run)
        if progress:
            done = sum(r is not None for r in results[slot.engine])
            extra = f" {run.status}: {run.detail[:60]}" if run.status != "ok" else ""
            elapsed = time.monotonic() - t_start
            _say(f"[{elapsed:6.0f}s] {slot.engine} {done}/{len(cases)} {case_list[i].id}{extra}", err=True)

    def kill(slot: _Slot) -> None:
        if slot.proc is not None:
            slot.proc.kill()
            slot.proc.join(5)
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn = None, None

    pending = list(slots)
    active: list[_Slot] = []
    while pending or active:
        while pending and len(active) < jobs:
            slot = pending.pop(0)
            launch(slot)
            active.append(slot)
        conns = [s.conn for s in active if s.conn is not None]
        ready = wait(conns, timeout=0.5)
        now = time.monotonic()
        for slot in list(active):
            if slot.conn in ready:
                try:
                    msg = slot.conn.recv()
                except (EOFError, OSError):
                    msg = ("died",)
                kind = msg[0]
                if kind == "ready":
                    slot.note = msg[1]
                    if msg[2] != "ok":
                        slot.note += f"; warm-up: {msg[2]} {msg[3]}"
                elif kind == "failed":
                    slot.failed = msg[1]
                elif kind == "start":
                    slot.current, slot.phase = msg[1], "compile"
                    # a stuck compile is judged by the worker's CPU time; wall time only as a backstop
                    slot.phase_cpu0 = _proc_cpu_s(slot.proc.pid)
                    slot.phase_deadline = now + max(120.0, 10 * compile_timeout_s)
                elif kind == "compiled":
                    slot.phase = "walk"
                    slot.phase_deadline = now + walk_limit_s + _GRACE_S
                elif kind == "done":
                    slot.current, slot.next_index, slot.phase_deadline = None, msg[1] + 1, float("inf")
                    finish(slot, msg[1], msg[2])
                elif kind == "finished":
                    slot.done = True
                elif kind == "died":
                    if slot.current is not None:
                        finish(slot, slot.current, EngineRun("crash", "worker process died on this schema"))
                        slot.next_index = slot.current + 1
                    elif not slot.failed and not slot.done:
                        slot.failed = "worker process died before its first schema"
                if kind in ("failed", "finished", "died"):
                    kill(slot)
                    active.remove(slot)
                    if kind == "died" and not slot.failed and slot.next_index < len(cases):
                        slot.restarts += 1
                        pending.insert(0, slot)
                    continue
            over_cpu = False
            if slot.current is not None and slot.phase == "compile" and slot.phase_cpu0 is not None:
                used = _proc_cpu_s(slot.proc.pid)
                over_cpu = used is not None and used - slot.phase_cpu0 > compile_timeout_s + _GRACE_S
            if slot.current is not None and (over_cpu or now > slot.phase_deadline):
                i = slot.current
                status = "compile_timeout" if slot.phase == "compile" else "walk_timeout"
                finish(slot, i, EngineRun(status, "worker killed past the limit (stuck in native code)"))
                slot.next_index = i + 1
                kill(slot)
                active.remove(slot)
                if slot.next_index < len(cases):
                    slot.restarts += 1
                    pending.insert(0, slot)
    notes = {}
    out: dict[str, list[EngineRun]] = {}
    for slot in slots:
        if slot.failed:
            notes[slot.engine] = f"not run: {slot.failed}"
            continue
        out[slot.engine] = [
            r if r is not None else EngineRun("crash", "no result") for r in results[slot.engine]
        ]
        notes[slot.engine] = slot.note + (f"; worker restarted {slot.restarts}x" if slot.restarts else "")
    return out, notes


# ==========================================================================================================
# Summaries, mask agreement, worst steps, tables
# ==========================================================================================================

_FAIL_KINDS = ("compile_error", "compile_timeout", "mask", "accept", "walk_timeout", "crash")


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean")} | {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def summarize(
    runs: dict[str, list[EngineRun]], only: Sequence[int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per engine: outcome counts, per-step fill µs (step 0 excluded, schemas walked to the end) and
    TTFM ms (schemas that compiled). ``only`` restricts to those case indices."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        idx = range(len(rs)) if only is None else only
        sel = [rs[i] for i in idx if rs[i].status != "pending"]
        fills = [us for r in sel if r.status == "ok" for us in r.fill_us[1:]]
        fills_cpu = [us for r in sel if r.status == "ok" for us in r.fill_cpu_us[1:]]
        ttfm = [r.ttfm_ms for r in sel if r.ttfm_ms == r.ttfm_ms]
        ttfm_cpu = [r.ttfm_cpu_ms for r in sel if r.ttfm_cpu_ms == r.ttfm_cpu_ms]
        counts = {k: sum(r.status == k for r in sel) for k in ("ok", *_FAIL_KINDS)}
        t = _stats(ttfm)
        tc = _stats(ttfm_cpu)
        out[name] = {
            "schemas": len(sel),
            "counts": counts,
            "fill_us": _stats(fills),
            "ttfm_ms": {"p50": t["p50"], "p90": t["p90"], "max": t["max"], "n": t["n"]},
            "fill_cpu_us": _stats(fills_cpu),
            "ttfm_cpu_ms": {"p50": tc["p50"], "p90": tc["p90"], "max": tc["max"], "n": tc["n"]},
        }
    return out


def mask_disagreements(
    cases: Sequence[StepCase], runs: dict[str, list[EngineRun]], ref: str = "constrain"
) -> dict[str, dict[str, Any]]:
    """Per peer: the steps (over the path prefix both walked) where its ordinary-token mask or its EOS
    bit differs from ``ref``'s, with the first few differences (schema, step, allowed counts)."""
    base = runs.get(ref)
    out: dict[str, dict[str, Any]] = {}
    if base is None:
        return out
    for name, rs in runs.items():
        if name == ref:
            continue
        d: dict[str, Any] = {
            "schemas": 0,
            "steps": 0,
            "differing_steps": 0,
            "eos_steps": 0,
            "schemas_differing": [],
            "first": [],
        }
        for i, (a, b) in enumerate(zip(base, rs)):
            n = min(len(a.digests), len(b.digests))
            if not n:
                continue
            d["schemas"] += 1
            diff_here = 0
            for step in range(n):
                da, db = a.digests[step], b.digests[step]
                d["steps"] += 1
                d["eos_steps"] += da[-1] != db[-1]
                if da[:-1] != db[:-1]:
                    diff_here += 1
                    if len(d["first"]) < 20 and diff_here == 1:
                        d["first"].append(
                            {
                                "schema": cases[i].id,
                                "step": step,
                                "allowed_" + ref: a.popcounts[step],
                                "allowed_peer": b.popcounts[step],
                            }
                        )
            d["differing_steps"] += diff_here
            if diff_here:
                d["schemas_differing"].append(cases[i].id)
        out[name] = d
    return out


def worst_steps(
    cases: Sequence[StepCase],
    rs: Sequence[EngineRun],
    token_bytes: Sequence[bytes | None],
    per_schema: int = WORST_PER_SCHEMA,
) -> dict[str, Any]:
    """constrain's slowest steps (step 0 excluded): per schema its fill percentiles and its
    ``per_schema`` worst steps, and the 300 worst steps overall, each with the token, the text before
    it and the matcher state (automaton type, state id, whether the fill computed a mask)."""
    schemas = []
    overall: list[dict[str, Any]] = []
    for case, r in zip(cases, rs):
        if len(r.fill_us) < 2:
            schemas.append({"schema": case.id, "status": r.status, "detail": r.detail, "ttfm_ms": r.ttfm_ms})
            continue
        offsets = [0]
        for t in case.tokens:
            offsets.append(offsets[-1] + len(token_bytes[t] or b""))
        raw = case.text.encode()
        steps = []
        for step in np.argsort(r.fill_us[1:])[::-1][:per_schema] + 1:
            step = int(step)
            kind, state, computed = r.states[step] if step < len(r.states) else ("", -1, 0)
            tok = case.tokens[step - 1] if step - 1 < len(case.tokens) else None
            item = {
                "schema": case.id,
                "step": step,
                "us": round(r.fill_us[step], 1),
                "cpu_us": round(r.fill_cpu_us[step], 1) if step < len(r.fill_cpu_us) else None,
                "after_token": None if tok is None else repr(token_bytes[tok]),
                "text_before": raw[max(0, offsets[step] - 40) : offsets[step]].decode("utf-8", "replace"),
                "automaton": kind,
                "state": state,
                "masks_computed_in_fill": computed,
                "allowed": r.popcounts[step],
            }
            steps.append(item)
        fills = r.fill_us[1:]
        computed_us = sum(us for us, st in zip(r.fill_us[1:], r.states[1:]) if st[2] > 0)
        schemas.append(
            {
                "schema": case.id,
                "status": r.status,
                "detail": r.detail,
                "automaton": r.states[0][0] if r.states else "",
                "ttfm_ms": round(r.ttfm_ms, 2),
                "steps": len(fills),
                "fill_us": {k: round(v, 1) for k, v in _stats(fills).items()},
                "fill_cpu_us": {k: round(v, 1) for k, v in _stats(r.fill_cpu_us[1:]).items()},
                "total_fill_ms": round(sum(fills) / 1e3, 2),
                "fill_ms_in_steps_that_computed_a_mask": round(computed_us / 1e3, 2),
                "worst": steps,
            }
        )
        overall.extend(steps)
    overall.sort(key=lambda s: -s["us"])
    return {"schemas": schemas, "worst_overall": overall[:300]}


def _f(x: float, digits: int = 1) -> str:
    if x != x:
        return "-"
    return f"{x:,.{digits}f}" if abs(x) < 100 else f"{x:,.0f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + " |"
        )
    return lines


def format_markdown(
    summary: dict[str, dict[str, Any]],
    common: dict[str, dict[str, Any]],
    common_n: int,
    disagreements: dict[str, dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    """The report: per-step fill µs and TTFM per engine, then the like-for-like table (the schemas every
    engine walked to the end), outcome counts, and the mask agreement with constrain."""
    lines = [
        f"MaskBench step bench: {meta['schemas']} schemas over {meta['subsets']} subsets, "
        f"tokenizer {Path(meta['tokenizer']).name}, {meta['tokens']} path tokens; one pinned single-threaded "
        f"worker per engine ({meta['cpus']}); compile limit {meta['compile_timeout_s']:g} s",
        "",
        "Per-step fill µs (step 0 excluded; the schemas each engine walked to the end), TTFM ms, "
        "compile failures:",
        "",
    ]
    headers = [
        "engine",
        "walked",
        "steps",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
        "TTFM p50",
        "TTFM p90",
        "compile err",
        "timeouts",
        "path fails",
    ]
    rows = []
    for name, s in summary.items():
        f, t, c = s["fill_us"], s["ttfm_ms"], s["counts"]
        rows.append(
            [
                name,
                f"{c['ok']}/{s['schemas']}",
                str(f["n"]),
                _f(f["p50"]),
                _f(f["p90"]),
                _f(f["p99"]),
                _f(f["max"]),
                _f(f["mean"]),
                _f(t["p50"]),
                _f(t["p90"]),
                str(c["compile_error"] + c["crash"]),
                str(c["compile_timeout"] + c["walk_timeout"]),
                str(c["mask"] + c["accept"]),
            ]
        )
    lines += _table(headers, rows)
    lines += [
        "",
        "The same in CPU time (per fill: the worker thread's; TTFM: the process's), which preemption by",
        "other processes does not inflate:",
        "",
    ]
    rows = []
    for name, s in summary.items():
        f, t = s["fill_cpu_us"], s["ttfm_cpu_ms"]
        rows.append(
            [
                name,
                str(f["n"]),
                _f(f["p50"]),
                _f(f["p90"]),
                _f(f["p99"]),
                _f(f["max"]),
                _f(f["mean"]),
                _f(t["p50"]),
                _f(t["p90"]),
            ]
        )
    lines += _table(["engine", "steps", "p50", "p90", "p99", "max", "mean", "TTFM p50", "TTFM p90"], rows)
    lines += [
        "",
        f"Like for like: the {common_n} schemas every engine walked to the end (wall, then CPU):",
        "",
    ]
    rows = []
    for name, s in common.items():
        f, t = s["fill_us"], s["ttfm_ms"]
        rows.append(
            [
                name,
                str(f["n"]),
                _f(f["p50"]),
                _f(f["p90"]),
                _f(f["p99"]),
                _f(f["max"]),
                _f(f["mean"]),
                _f(t["p50"]),
                _f(t["p90"]),
            ]
        )
    for name, s in common.items():
        f, t = s["fill_cpu_us"], s["ttfm_cpu_ms"]
        rows.append(
            [
                f"{name} (CPU)",
                str(f["n"]),
                _f(f["p50"]),
                _f(f["p90"]),
                _f(f["p99"]),
                _f(f["max"]),
                _f(f["mean"]),
                _f(t["p50"]),
                _f(t["p90"]),
            ]
        )
    lines += _table(["engine", "steps", "p50", "p90", "p99", "max", "mean", "TTFM p50", "TTFM p90"], rows)
    if disagreements:
        lines += [
            "",
            "Mask agreement with constrain (ordinary tokens; over the path prefix both walked):",
            "",
        ]
        rows = [
            [
                name,
                str(d["schemas"]),
                str(d["steps"]),
                str(d["differing_steps"]),
                str(len(d["schemas_differing"])),
                str(d["eos_steps"]),
            ]
            for name, d in disagreements.items()
        ]
        lines += _table(
            ["peer", "schemas", "steps", "steps differing", "schemas differing", "EOS differs"], rows
        )
    return "\n".join(lines) + "\n"


# ==========================================================================================================
# Command line
# ==========================================================================================================


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maskbench",
        default=str(DEFAULT_MASKBENCH_SAMPLE),
        metavar="PATH",
        help="MaskBench records: the unpacked sample folder (default) or maskbench-data.tar.xz",
    )
    p.add_argument(
        "--tokenizer",
        default=str(suites.DEFAULT_TOKENIZER_PATH),
        metavar="PATH",
        help="tokenizer.json (default: llama3-128k in the shared folder)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"schemas, round-robin over the subsets (default {DEFAULT_LIMIT})",
    )
    p.add_argument(
        "--schemas", default="", metavar="SUBSTR,..", help="keep schema ids containing one of these"
    )
    p.add_argument("--engines", default=",".join(ALL_ENGINES), help="comma-separated (default: all four)")
    p.add_argument(
        "--cpus",
        default="",
        metavar="I,J,..",
        help="CPUs to pin the workers to, in turn (default: those this process may use)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="engines run at once (default: one per CPU, at most one per engine)",
    )
    p.add_argument(
        "--compile-timeout",
        type=float,
        default=DEFAULT_COMPILE_TIMEOUT_S,
        metavar="S",
        help=f"compile + first mask limit per schema (default {DEFAULT_COMPILE_TIMEOUT_S:g} s)",
    )
    p.add_argument(
        "--walk-limit",
        type=float,
        default=DEFAULT_WALK_LIMIT_S,
        metavar="S",
        help=f"teacher-forcing limit per schema (default {DEFAULT_WALK_LIMIT_S:g} s)",
    )
    p.add_argument("--json", default="", metavar="OUT.json", help="write every result (all fills) as JSON")
    p.add_argument("--md", default="", metavar="OUT.md", help="write the table as Markdown")
    p.add_argument(
        "--worst",
        default="",
        metavar="OUT.json",
        help="write constrain's worst steps per schema (rewritten as results come in)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-schema progress on stderr")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench from parsed options; prints the table, writes the files asked for."""
    from . import bench_common as bc

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ALL_ENGINES]
    if unknown or not engines:
        raise InvalidInputError(f"unknown engine {', '.join(unknown)}; choose from {', '.join(ALL_ENGINES)}")
    cases = load_cases(
        args.maskbench, args.tokenizer, args.limit, only=[s for s in args.schemas.split(",") if s]
    )
    vocab = bc.load_vocab(args.tokenizer)
    for c in cases:
        if b"".join(vocab.token_bytes[t] or b"" for t in c.tokens) != c.text.encode():
            raise InvalidInputError(f"{c.id}: the token path does not spell the instance text")
    cpus = [int(x) for x in args.cpus.split(",") if x.strip()] if args.cpus else None
    _say(
        f"{len(cases)} schemas over {len({c.subset for c in cases})} subsets, "
        f"{sum(len(c.tokens) for c in cases)} path tokens; engines {', '.join(engines)}",
        err=True,
    )
    cpu_list = cpus or (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [])
    meta = {
        "schemas": len(cases),
        "subsets": len({c.subset for c in cases}),
        "tokens": sum(len(c.tokens) for c in cases),
        "tokenizer": str(args.tokenizer),
        "maskbench": str(args.maskbench),
        "engines": engines,
        "cpus": f"CPUs {','.join(map(str, cpu_list))}, "
        f"{args.jobs or min(len(engines), len(cpu_list) or 1)} at once",
        "compile_timeout_s": args.compile_timeout,
        "walk_limit_s": args.walk_limit,
    }
    # Results as they come in, so a run cut off part way still leaves its files (``partial`` in meta).
    partial: dict[str, list[EngineRun]] = {e: [EngineRun("pending")] * len(cases) for e in engines}
    finished = [0]
    t0 = time.monotonic()

    def on_result(engine: str, i: int, run: EngineRun) -> None:
        partial[engine][i] = run
        finished[0] += 1
        if finished[0] % 20 == 0:
            _report(
                args, cases, partial, {}, meta | {"wall_s": round(time.monotonic() - t0, 1)}, vocab, False
            )

    runs, notes = run_bench(
        cases,
        engines,
        args.tokenizer,
        cpus=cpus,
        jobs=args.jobs or None,
        compile_timeout_s=args.compile_timeout,
        walk_limit_s=args.walk_limit,
        on_result=on_result,
        progress=not args.quiet,
    )
    meta |= {"wall_s": round(time.monotonic() - t0, 1), "notes": notes}
    _report(args, cases, runs, notes, meta, vocab, True)
    return 0


def _report(
    args: argparse.Namespace,
    cases: Sequence[StepCase],
    runs: dict[str, list[EngineRun]],
    notes: dict[str, str],
    meta: dict[str, Any],
    vocab: Any,
    final: bool,
) -> None:
    """The table (printed when ``final``) and the files asked for; runs still ``pending`` are left out."""
    meta = meta | {"partial": not final, "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if not final:
        meta["finished"] = {e: sum(r.status != "pending" for r in rs) for e, rs in runs.items()}
    common = [i for i in range(len(cases)) if runs and all(rs[i].status == "ok" for rs in runs.values())]
    summary = summarize(runs)
    like = summarize(runs, common)
    disagree = mask_disagreements(cases, runs)
    md = format_markdown(summary, like, len(common), disagree, meta)
    if not final:
        md = f"PARTIAL (finished so far: {meta['finished']})\n\n" + md
    for name, note in notes.items():
        md += f"\nnote {name}: {note}"
    md += "\n"
    if final:
        _say(md)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md, encoding="utf-8")
    if args.worst and "constrain" in runs:
        done = [i for i, r in enumerate(runs["constrain"]) if r.status != "pending"]
        worst = worst_steps([cases[i] for i in done], [runs["constrain"][i] for i in done], vocab.token_bytes)
        _write(args.worst, {"meta": meta, **worst})
    if args.json:
        _write(
            args.json,
            {
                "meta": meta,
                "summary": summary,
                "like_for_like": {"schemas": [cases[i].id for i in common], "summary": like},
                "mask_disagreements": disagree,
                "cases": [
                    {"id": c.id, "draft": c.draft, "text": c.text, "tokens": len(c.tokens)} for c in cases
                ],
                "runs": {
                    name: [
                        {k: v for k, v in asdict(r).items() if k not in ("digests", "states")}
                        | {"fill_us": [round(x, 2) for x in r.fill_us]}
                        | {"fill_cpu_us": [round(x, 2) for x in r.fill_cpu_us]}
                        for r in rs
                    ]
                    for name, rs in runs.items()
                },
            },
        )


def _write(path: str | Path, payload: Any) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``maskbench-steps`` on a ``bench`` subparsers action (or any CLI's); sets ``func``."""
    p = subparsers.add_parser(
        "maskbench-steps",
        help="per-step mask fill time of constrain and its peers on MaskBench token paths",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _options(p)
    p.set_defaults(func=run_from_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m constrain_tools.maskbench_steps`` / ``bench/bench_maskbench_steps.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    _options(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args)
    except InvalidInputError as exc:
        _say(f"error: {exc}", err=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
