"""Regex-constrained decoding: constrain against xgrammar, llguidance and outlines-core.

For a set of realistic regexes, each engine is teacher-forced along the tokenisation of a few valid
example strings (the same ``tokenizers.Tokenizer`` path for every engine) and measured on:

* correctness: every path token is allowed by the engine's mask and accepted, EOS is allowed at the end;
  constrain's allowed set is compared with each peer's at every step (special / EOS ids excluded);
* time to first mask (TTFM): regex string -> first bitmask filled, with every compile cache cold;
* per-step fill: only the fill call into a preallocated int32 bitmask, along each path, with a fresh
  compile for every path so first-visit costs count as they would for a user.

Usage::

    python bench/bench_regex.py [--tokenizer PATH] [--engines constrain,xgrammar,llguidance,outlines-core]
                                [--repeat N] [--cases SUBSTR,...] [--json OUT]

The peers are the optional ``bench`` extra; a peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from constrain_tools.bench_common import (
    DEFAULT_TOKENIZER,
    ConstrainEngine,
    Engine,
    EngineError,
    LLGuidanceEngine,
    MaskDiff,
    OutlinesCoreEngine,
    Vocab,
    XGrammarEngine,
    compare_rows,
    fmt,
    fmt_ratio,
    load_vocab,
    pct,
    print_table,
    run_path,
)
from constrain_tools.harness import cpu_count

ALL_ENGINES = ("constrain", "xgrammar", "llguidance", "outlines-core")
WARMUP_REGEX = "[a-z]{1,8}-[0-9]{2}"
WARMUP_TEXT = "warm-42"

# --------------------------------------------------------------------------------------------------------
# The workload: regexes with explicit ASCII classes, so that every engine means the same language.

_DATE = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_NUM_ID = "(0|[1-9][0-9]*)"
_SEMVER_IDS = "[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*"
_LATIN = "A-Za-zÀ-ÖØ-öø-ÿ"
_CJK = "一-鿿ぁ-ゖァ-ヺー"
_URL_CHARS = "a-zA-Z0-9._~%!$&'()*+,;=:@"  # "-" goes last in each class


@dataclass(frozen=True)
class Case:
    """One regex and the valid strings that are teacher-forced through every engine."""

    name: str
    pattern: str
    examples: tuple[str, ...]


CASES: tuple[Case, ...] = (
    Case("iso_date", _DATE, ("2024-02-29", "1999-12-31")),
    Case(
        "iso_datetime_tz",
        f"{_DATE}T{_TIME}(\\.[0-9]{{1,6}})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
        ("2024-05-17T13:45:07Z", "2023-11-02T08:00:00.125+05:30"),
    ),
    Case(
        "email",
        "[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\\.[a-zA-Z0-9-]+)*\\.[a-zA-Z]{2,24}",
        ("ada.lovelace@example.com", "j.doe+news@mail.cs.uni-bonn.de"),
    ),
    Case(
        "uuid",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ("123e4567-e89b-12d3-a456-426614174000", "f47ac10b-58cc-4372-a567-0e02b2c3d479"),
    ),
    Case("ipv4", f"({_OCTET}\\.){{3}}{_OCTET}", ("192.168.0.1", "8.8.4.4", "255.255.255.0")),
    Case(
        "phone",
        "\\+?[0-9]{1,3}[ -]?\\(?[0-9]{3}\\)?[ -]?[0-9]{3}[ -]?[0-9]{4}",
        ("+1 (555) 123-4567", "44 020 555 0199"),
    ),
    Case(
        "json_number",
        "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?",
        ("-12.5e+3", "0", "3.14159265358979"),
    ),
    Case(
        "quoted_string",
        '"([^"\\\\]|\\\\.)*"',
        ('"say \\"hi\\" to C:\\\\temp"', '"tab\\there, newline\\n, unicode \\u00e9 ok"'),
    ),
    Case(
        "url",
        f"https?://[a-zA-Z0-9.-]+(:[0-9]{{1,5}})?(/[{_URL_CHARS}-]*)*(\\?[{_URL_CHARS}/?-]*)?",
        ("https://example.com/path/to/page?q=1&lang=en", "http://localhost:8080/"),
    ),
    Case(
        "semver",
        f"{_NUM_ID}\\.{_NUM_ID}\\.{_NUM_ID}(-{_SEMVER_IDS})?(\\+{_SEMVER_IDS})?",
        ("1.2.3", "10.0.0-rc.1+build.5"),
    ),
    Case("hex_color", "#([0-9a-fA-F]{6}|[0-9a-fA-F]{3})", ("#1a2B3c", "#fff")),
    Case(
        "latin_words",
        f"[{_LATIN}]+( [{_LATIN}]+)*",
        ("Crème brûlée à la française", "Ærøskøbing und Straße"),
    ),
    Case("cjk_words", f"[{_CJK}]+(、[{_CJK}]+)*", ("東京都の天気、晴れ", "カタカナとひらがな")),
    Case(
        "flat_json_object",
        '\\{"name": "[^"]{1,40}", "age": [0-9]{1,3}\\}',
        ('{"name": "Ada Lovelace", "age": 36}', '{"name": "José Martí", "age": 142}'),
    ),
    Case(
        "free_text_500",
        "[^\\n]{1,500}",
        (
            "Structured generation constrains a language model so that every sampled token keeps the "
            "output inside a formal language. The engine compiles the constraint once, then at each "
            "decoding step it produces a bitmask over the vocabulary; tokens outside the mask get a "
            "logit of minus infinity. Fast engines precompute or cache these masks, because a step that "
            "takes longer than the forward pass stalls the whole batch, and users notice latency.",
        ),
    ),
)


ADAPTERS: dict[str, type[Engine]] = {
    "constrain": ConstrainEngine,
    "xgrammar": XGrammarEngine,
    "llguidance": LLGuidanceEngine,
    "outlines-core": OutlinesCoreEngine,
}


def _constrain_background() -> bool:
    import constrain.masks.dfa_masks

    return bool(constrain.masks.dfa_masks.BACKGROUND_PRECOMPUTE)


# --------------------------------------------------------------------------------------------------------
# Timing


def warm_up(engine: Engine) -> None:
    bitmask = engine.new_bitmask()
    for _ in range(2):
        engine.build(WARMUP_REGEX)
        engine.fill(bitmask)
        for tid in engine.vocab.encode(WARMUP_TEXT):
            engine.accept(tid)
            engine.fill(bitmask)


# --------------------------------------------------------------------------------------------------------
# Driver


@dataclass
class EngineResult:
    name: str
    note: str = ""
    setup_s: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # case -> rejection message
    failed: dict[str, str] = field(default_factory=dict)  # case -> correctness failure
    diffs: dict[str, MaskDiff] = field(default_factory=dict)
    ttfm_ns: dict[str, list[int]] = field(default_factory=dict)  # case -> samples
    fill_ns: dict[str, list[list[int]]] = field(default_factory=dict)  # case -> one list per path run
    slow: dict[str, float] = field(default_factory=dict)  # case -> build seconds (timed once only)

    def timed_cases(self) -> list[str]:
        return list(self.ttfm_ns)


def make_engines(names: list[str], vocab: Vocab) -> tuple[list[Engine], dict[str, EngineResult]]:
    engines: list[Engine] = []
    results: dict[str, EngineResult] = {}
    for name in names:
        t = time.perf_counter()
        try:
            engine = ADAPTERS[name](vocab)
        except ImportError as exc:
            print(f"  {name}: not installed ({exc}); skipped (pip install -e '.[bench]')")
            continue
        setup = time.perf_counter() - t
        warm_up(engine)
        engines.append(engine)
        results[name] = EngineResult(name, engine.note, setup)
        print(f"  {name}: tokenizer converted in {setup:.2f} s" + (f"; {engine.note}" if engine.note else ""))
    return engines, results


def run_cases(
    cases: list[Case],
    engines: list[Engine],
    results: dict[str, EngineResult],
    repeat: int,
    max_build_s: float,
    step_gap_s: float = 0.0,
) -> None:
    """``repeat`` cold runs of every example path per engine; the first one is also the checked run."""
    bitmasks = {e.name: e.new_bitmask() for e in engines}
    gc.collect()
    gc.freeze()  # the vocabularies are long-lived: keep them out of the per-run collections (0.2 s each)
    try:
        _run_repeats(cases, engines, results, repeat, max_build_s, bitmasks, step_gap_s)
    finally:
        gc.unfreeze()


def _run_repeats(
    cases: list[Case],
    engines: list[Engine],
    results: dict[str, EngineResult],
    repeat: int,
    max_build_s: float,
    bitmasks: dict[str, Any],
    step_gap_s: float = 0.0,
) -> None:
    vocab = engines[0].vocab
    for r in range(repeat):
        t = time.perf_counter()
        for case in cases:
            ref_rows: dict[int, list[np.ndarray]] = {}  # constrain runs first: it is the reference
            for engine in engines:
                res = results[engine.name]
                if case.name in res.skipped or case.name in res.failed or (r and case.name in res.slow):
                    continue
                for k, example in enumerate(case.examples):
                    tokens = vocab.encode(example)
                    try:
                        run = run_path(
                            engine, case, tokens, bitmasks[engine.name], check=r == 0, step_gap_s=step_gap_s
                        )
                    except EngineError as exc:
                        res.skipped[case.name] = str(exc)
                        print(f"  {case.name:18s} {engine.name:14s} rejected: {exc}")
                        break
                    if run.error:
                        res.failed[case.name] = f"example {k} ({example[:30]!r}): {run.error}"
                        res.ttfm_ns.pop(case.name, None)
                        res.fill_ns.pop(case.name, None)
                        print(f"  {case.name:18s} {engine.name:14s} FAILED {res.failed[case.name]}")
                        break
                    res.ttfm_ns.setdefault(case.name, []).append(run.ttfm_ns)
                    res.fill_ns.setdefault(case.name, []).append(run.fill_ns)
                    if r == 0 and run.build_ns > max_build_s * 1e9:
                        res.slow[case.name] = run.build_ns / 1e9
                    if r == 0 and engine.name == "constrain":
                        ref_rows[k] = run.rows
                    elif r == 0 and k in ref_rows:
                        diff = res.diffs.setdefault(case.name, MaskDiff())
                        compare_rows(ref_rows[k], run.rows, vocab, diff, f"ex{k}")
        label = "checked + timed" if r == 0 else "timed"
        print(f"  run {r + 1}/{repeat} ({label}): {time.perf_counter() - t:.1f} s")


# --------------------------------------------------------------------------------------------------------
# Reporting


def summary(res: EngineResult, cases: list[str]) -> dict[str, float]:
    ttfm = [statistics.median(res.ttfm_ns[c]) / 1e6 for c in cases]
    steps = [t / 1e3 for c in cases for run in res.fill_ns[c] for t in run]
    return {
        "ttfm_p50_ms": pct(ttfm, 50),
        "ttfm_p90_ms": pct(ttfm, 90),
        "fill_p50_us": pct(steps, 50),
        "fill_p99_us": pct(steps, 99),
        "fill_max_us": max(steps) if steps else float("nan"),
    }


def report(cases: list[Case], results: dict[str, EngineResult]) -> dict[str, Any]:
    ref = results.get("constrain")
    keys = ["ttfm_p50_ms", "ttfm_p90_ms", "fill_p50_us", "fill_p99_us", "fill_max_us"]
    rows = []
    summaries: dict[str, Any] = {}
    for name, res in results.items():
        timed = res.timed_cases()
        if not timed:
            continue
        s = summary(res, timed)
        row = [name, *(fmt(s[k]) for k in keys)]
        ratios: dict[str, float] = {}
        if ref is not None and name != "constrain":
            common = [c for c in timed if c in ref.ttfm_ns]  # ratios only over regexes both engines ran
            mine, theirs = summary(res, common), summary(ref, common)
            ratios = {k: mine[k] / theirs[k] for k in keys}
            row.append(" / ".join(fmt_ratio(ratios[k]) for k in keys))
        else:
            row.append("1 (reference)" if name == "constrain" else "-")
        rows.append(row)
        summaries[name] = {**s, "ratio_vs_constrain": ratios, "regexes_timed": len(timed)}
    print(
        "\nOverall (TTFM percentiles over per-regex medians; fill percentiles over every step of every run)"
    )
    print(
        "ratio = peer / constrain for TTFM p50 / TTFM p90 / fill p50 / fill p99 / fill max"
        " (>1: constrain faster)"
    )
    print_table(
        [
            "engine",
            "TTFM p50 (ms)",
            "TTFM p90 (ms)",
            "fill p50 (µs)",
            "fill p99 (µs)",
            "fill max (µs)",
            "ratio",
        ],
        rows,
    )

    names = [n for n, r in results.items() if r.timed_cases() or r.skipped or r.failed]
    per_regex_rows = []
    for case in cases:
        cells = [case.name]
        for n in names:
            res = results[n]
            if case.name in res.ttfm_ns:
                fill50 = pct([t / 1e3 for run in res.fill_ns[case.name] for t in run], 50)
                cells.append(f"{fmt(statistics.median(res.ttfm_ns[case.name]) / 1e6, 2)} / {fmt(fill50)}")
            else:
                cells.append("rejected" if case.name in res.skipped else "FAILED")
        per_regex_rows.append(cells)
    print("\nPer regex: TTFM median (ms) / fill p50 (µs)")
    print_table(["regex", *names], per_regex_rows)
    return summaries


def print_findings(results: dict[str, EngineResult], vocab: Vocab) -> None:
    print("\nCorrectness")
    for name, res in results.items():
        for case, msg in res.skipped.items():
            print(f"  {name}: rejected {case}: {msg}")
        for case, msg in res.failed.items():
            print(f"  {name}: FAILED {case}: {msg}")
        for case, secs in res.slow.items():
            print(f"  {name}: {case} timed once only (build took {secs:.1f} s > --max-build-s)")
        for case, d in res.diffs.items():
            parts = []
            if d.differing_steps:
                parts.append(
                    f"ordinary tokens differ at {d.differing_steps}/{d.steps} steps "
                    f"({len(d.only_constrain)} ids only constrain, {len(d.only_peer)} ids only {name})"
                )
            if d.eos_steps:
                parts.append(f"EOS bits differ at {d.eos_steps} steps")
            if d.special_steps:
                parts.append(f"special ids differ at {d.special_steps} steps")
            if parts:
                print(f"  {name} vs constrain, {case}: " + "; ".join(parts))
                for line in d.first[:2]:
                    print(f"      {line}")
    if "constrain" in results and len(results) > 1:
        totals = {
            n: sum(d.differing_steps for d in r.diffs.values())
            for n, r in results.items()
            if n != "constrain"
        }
        print(
            "  steps with differing ordinary-token sets vs constrain: "
            + ", ".join(f"{n} {v}" for n, v in totals.items())
        )


def validate_cases(cases: list[Case], vocab: Vocab) -> None:
    """Our own workload must be right: examples match (Python re) and the token path spells them."""
    for case in cases:
        for example in case.examples:
            if not re.fullmatch(case.pattern, example):
                raise SystemExit(f"bench bug: {example!r} does not match {case.name}")
            spelled = b"".join(vocab.token_bytes[t] or b"" for t in vocab.encode(example))
            if spelled != example.encode():
                raise SystemExit(f"bench bug: the token path of {example!r} spells {spelled!r}")


def compare_with_constrain_bytes(vocab: Vocab) -> str:
    """Cross-check our independent byte decoding (fed to outlines-core) against constrain's."""
    try:
        import constrain
    except ImportError:
        return "constrain not importable"
    info = constrain.TokenizerInfo.from_file(vocab.path, eos_ids=vocab.eos_ids)
    mine = [b or b"" for b in vocab.token_bytes]
    bad = [i for i, (a, b) in enumerate(zip(mine, info.token_bytes)) if a != b]
    if len(mine) != len(info.token_bytes):
        return f"vocab sizes differ: {len(mine)} here, {len(info.token_bytes)} in constrain"
    return "identical" if not bad else f"{len(bad)} ids differ, e.g. {bad[:5]}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    p.add_argument("--engines", default=",".join(ALL_ENGINES))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--max-build-s",
        type=float,
        default=1.0,
        help="an engine whose first build of a regex takes longer (s) is timed on that regex only once",
    )
    p.add_argument("--cases", default="", help="comma-separated substrings of case names (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write every raw number here")
    p.add_argument(
        "--step-gap-ms",
        type=float,
        default=0.0,
        help="untimed sleep after each accepted token, standing in for a forward pass (default 0)",
    )
    p.add_argument(
        "--constrain-background",
        choices=("on", "off"),
        default="",
        help="force constrain's background mask fill on or off (default: the library default)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ADAPTERS))
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {', '.join(ADAPTERS)}")
    names.sort(key=ALL_ENGINES.index)  # constrain first: it is the reference for the mask comparison
    if args.constrain_background:
        import constrain.masks.dfa_masks

        constrain.masks.dfa_masks.BACKGROUND_PRECOMPUTE = args.constrain_background == "on"
    wanted = [s for s in args.cases.split(",") if s]
    cases = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]

    started = time.perf_counter()
    vocab = load_vocab(args.tokenizer)
    print(
        f"tokenizer {args.tokenizer.name}: {vocab.size} ids, {len(vocab.special_ids)} special, "
        f"EOS {vocab.eos_ids}"
    )
    validate_cases(cases, vocab)
    byte_check = compare_with_constrain_bytes(vocab)
    print(f"token bytes (bench's own decoding vs constrain.TokenizerInfo): {byte_check}")
    print("engines:")
    engines, results = make_engines(names, vocab)
    if not engines:
        raise SystemExit("no engine available")
    print(f"runs ({args.repeat} cold runs per example path; the first also checks and compares masks):")
    run_cases(cases, engines, results, args.repeat, args.max_build_s, args.step_gap_ms / 1e3)
    summaries = report(cases, results)
    print_findings(results, vocab)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    if args.json:
        out = {
            "meta": {
                "tokenizer": str(args.tokenizer),
                "vocab_size": vocab.size,
                "eos_ids": vocab.eos_ids,
                "repeat": args.repeat,
                "step_gap_ms": args.step_gap_ms,
                "constrain_background": _constrain_background(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "python": sys.version.split()[0],
                "machine": f"{platform.machine()} {platform.processor()} {cpu_count()} CPUs",
                "token_bytes_check": byte_check,
            },
            "cases": [{"name": c.name, "pattern": c.pattern, "examples": list(c.examples)} for c in cases],
            "summary": summaries,
            "engines": {
                n: {
                    "note": r.note,
                    "setup_s": r.setup_s,
                    "skipped": r.skipped,
                    "failed": r.failed,
                    "mask_diffs": {c: d.to_json(vocab) for c, d in r.diffs.items()},
                    "timed_once": r.slow,
                    "ttfm_ns": r.ttfm_ns,
                    "fill_ns": r.fill_ns,
                }
                for n, r in results.items()
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
