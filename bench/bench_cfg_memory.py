"""Memory of the context-free engine under deep nesting, and the fill time it must not cost.

Each measurement runs in a fresh subprocess (RSS is per process): the built-in ``json`` Lark grammar,
``[`` accepted ``depth`` times with a mask filled before each token (the generation loop's pattern),
then rolled back to 0, then ``constrain.clear_caches()``. RSS and peak RSS (VmRSS, VmHWM) come from
``/proc/self/status``. The fill time is the mean thread CPU time per fill over a teacher-forced JSON
document: a first pass (cold masks, on a fresh automaton) and a second pass (cached masks), the
median of five.

    .venv/bin/python bench/bench_cfg_memory.py                      # the default table below
    .venv/bin/python bench/bench_cfg_memory.py --depth 20000 --tokenizer llama3-128k

Measured on the shared 2-core runner (load ~10), HEAD before the change -> after (issue 20, item 6).
RSS growth over the process after compile, MB (deep: after the last ``[``; peak: VmHWM of the deep
run; rolled: after ``rollback`` to 0; cleared: after dropping the compiled grammar and
``clear_caches()``):

    tokenizer    depth     deep           peak           rolled         cleared
    smollm2-49k  20,000    +1264 -> +101  +1775 -> +130  +1264 -> -10   -> -18
    smollm2-49k  40,000    +2705 ->       +3793 ->       +2705 ->       +256 ->
    smollm2-49k  100,000   (fails) -> +257 (fails) -> +485 -> +19        -> -17
    llama3-128k  20,000    +1438 -> +61   +1893 -> +127  +1438 -> -20   -6 -> -35

(before, near 64,000 nested ``[`` a 4 GiB ``trans`` could not be allocated). Fill time (thread CPU µs
per fill, median of 5, alternating before/after runs): smollm2 cold 11.6 -> 11.1, warm 1.38 -> 1.48;
llama3 cold 19.7 -> 18.3, warm 1.79 -> 1.98: within the runner's noise (repeat runs span +-15%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")

DOCUMENT = {
    "id": 12345,
    "name": "Ada Lovelace",
    "tags": ["math", "poetry", "engines"],
    "nested": {"a": [1, 2, [3, 4, {"b": None}]], "ok": True, "pi": 3.14159},
    "notes": "The Analytical Engine weaves algebraic patterns just as the Jacquard loom weaves flowers.",
    "items": [{"k": i, "v": f"value {i}", "flag": i % 2 == 0} for i in range(12)],
}


REPEATS = 5  # fill times: the median of this many runs


def _status(field: str) -> float:
    """A field of /proc/self/status in MB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(tokenizer: str, depth: int) -> dict[str, float]:
    """One measurement, in this process (the parent runs it in a fresh one)."""
    import constrain
    import constrain.grammars
    from constrain import Grammar, GrammarMatcher, TokenizerInfo

    info = TokenizerInfo.from_file(str(SHARED / "tokenizers" / f"{tokenizer}.tokenizer.json"))
    compiled = constrain.compile(Grammar.from_lark(name="json"), info)
    bitmask = constrain.allocate_token_bitmask(1, info.vocab_size)
    out: dict[str, float] = {}

    # fill time on a teacher-forced document (before the deep run, so it sees small tables)
    doc = json.dumps(DOCUMENT).encode()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHARED / "tokenizers" / f"{tokenizer}.tokenizer.json"))
    tokens = tok.encode(doc.decode(), add_special_tokens=False).ids
    from constrain.cfg import build_automaton, parse_lark
    from constrain.cfg.token_masks import compile_cfg

    def fill_time(target: Any) -> float:
        """Mean thread CPU time of one fill (µs) along the document (CPU time: the runner is shared)."""
        m = GrammarMatcher(target)
        spent = 0
        for t in tokens:
            t0 = time.thread_time_ns()
            m.fill_next_token_bitmask(bitmask)
            spent += time.thread_time_ns() - t0
            if not m.accept_token(t):
                raise RuntimeError(f"the document's token {t} was rejected")
        return spent / 1e3 / len(tokens)

    cold, warm = [], []
    for _ in range(REPEATS):  # a fresh automaton each time: every mask computed again
        fresh = compile_cfg(
            compiled.grammar, info, build_automaton(parse_lark(constrain.grammars.load("json")))
        )
        cold.append(fill_time(fresh))
        warm.append(fill_time(fresh))
    out["fill_us_cold"] = sorted(cold)[REPEATS // 2]
    out["fill_us_warm"] = sorted(warm)[REPEATS // 2]
    out["doc_tokens"] = len(tokens)

    m = GrammarMatcher(compiled)
    bracket = info.token_ids_by_bytes[b"["]
    try:  # reset VmHWM (Linux >= 4.0), so the peak is the deep run's, not the fill timing's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    out["rss_start_mb"] = _status("VmRSS")
    out["hwm_start_mb"] = _status("VmHWM")
    t0 = time.perf_counter()
    for _ in range(depth):
        m.fill_next_token_bitmask(bitmask)
        if not m.accept_token(bracket):
            raise RuntimeError("[ was rejected")
    out["seconds_deep"] = time.perf_counter() - t0
    out["rss_deep_mb"] = _status("VmRSS")
    out["hwm_deep_mb"] = _status("VmHWM")
    t0 = time.perf_counter()
    completion = m.shortest_completion() if depth <= 2000 else []
    out["completion_s"] = time.perf_counter() - t0
    if depth <= 2000 and len(completion) == 0:
        raise RuntimeError("no completion found")
    m.rollback(m.num_steps)
    out["rss_rolled_back_mb"] = _status("VmRSS")
    del m, compiled  # what clear_caches can free is what nothing else holds
    from constrain.compiler import clear_caches

    clear_caches()
    out["rss_cleared_mb"] = _status("VmRSS")
    out["hwm_end_mb"] = _status("VmHWM")
    return out


def measure(tokenizer: str, depth: int) -> dict[str, float]:
    """Run one measurement in a fresh interpreter and return its figures."""
    cmd = [sys.executable, __file__, "--child", "--tokenizer", tokenizer, "--depth", str(depth)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", action="append", help="e.g. smollm2-49k (repeatable)")
    parser.add_argument("--depth", type=int, action="append", help="nesting depth (repeatable, paired)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.tokenizer[0], args.depth[0])))
        return
    runs = list(zip(args.tokenizer or ["smollm2-49k", "llama3-128k"], args.depth or [100_000, 20_000]))
    print(
        f"{'tokenizer':<12} {'depth':>7} {'RSS deep':>9} {'peak':>7} {'rolled':>7} {'cleared':>8} "
        f"{'deep s':>7} {'fill cold µs':>12} {'fill warm µs':>12}"
    )
    for tokenizer, depth in runs:
        r = measure(tokenizer, depth)
        base = r["rss_start_mb"]
        print(
            f"{tokenizer:<12} {depth:>7} {r['rss_deep_mb'] - base:>+8.0f}M {r['hwm_deep_mb'] - base:>+6.0f}M "
            f"{r['rss_rolled_back_mb'] - base:>+6.0f}M {r['rss_cleared_mb'] - base:>+7.0f}M "
            f"{r['seconds_deep']:>7.1f} {r['fill_us_cold']:>12.1f} {r['fill_us_warm']:>12.1f}"
        )
        print(f"  raw: {json.dumps({k: round(v, 2) for k, v in r.items()})}")


if __name__ == "__main__":
    main()
