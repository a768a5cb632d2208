"""Lark-grammar-constrained decoding: constrain against xgrammar and llguidance on the shipped grammars.

Each engine gets the same Lark text (``grammars/*.lark``): constrain through ``Grammar.from_lark``,
xgrammar through ``xgrammar.Grammar.from_lark`` + ``GrammarCompiler.compile_grammar`` (cache off),
llguidance through ``llguidance.grammar_from("lark", text)`` + ``LLMatcher``. Every engine is
teacher-forced along the tokenisation of a few valid strings per grammar and measured on:

* correctness: every path token is in the engine's mask and accepted, EOS is allowed at the end;
  each peer's allowed set is compared with constrain's at every step (the counts are reported, not
  failures: the engines' lexers differ, see bench/README.md);
* time to first mask (TTFM): grammar text -> first bitmask filled, every compile cache cold;
* per-step fill: only the fill call into a preallocated int32 bitmask, with a fresh compile for
  every run of a path, so first-visit costs count as they would for a user's first request.

Usage::

    python bench/bench_cfg.py [--tokenizer PATH] [--engines constrain,xgrammar,llguidance]
                              [--repeat N] [--cases SUBSTR,...] [--json OUT]

The adapters, the teacher-forcing loop and the mask comparison are bench_regex.py's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_regex as br

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import grammars  # noqa: E402

ALL_ENGINES = ("constrain", "xgrammar", "llguidance")
WARMUP_GRAMMAR = 'start: "warm" NAME ("," NAME)*\nNAME: /[a-z]+/\n%ignore " "'
WARMUP_TEXT = "warm up, again"


@dataclass(frozen=True)
class Case:
    """One shipped grammar and the valid strings teacher-forced through every engine."""

    name: str
    pattern: str  # the Lark text (``pattern`` so that bench_regex.run_path can build it)
    examples: tuple[str, ...]


def _cases() -> tuple[Case, ...]:
    json_doc = json.dumps(
        {
            "id": 1842,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "tags": ["math", "poetry", "engines"],
            "active": True,
            "score": -12.5e3,
            "address": {"city": "London", "zip": None, "lines": ["12 St James's Sq", "Westminster"]},
            "notes": 'She wrote "the first program" in 1843.\nIt computed Bernoulli numbers.',
        },
        indent=2,
        ensure_ascii=False,
    )
    json_list = json.dumps(
        [
            {"sku": f"A-{i:03d}", "qty": i * 7 % 5, "price": round(i * 3.17, 2), "ok": i % 2 == 0}
            for i in range(6)
        ]
    )
    return (
        Case("json", grammars.load("json"), (json_doc, json_list)),
        Case(
            "sqlite_select",
            grammars.load("sqlite_select"),
            (
                "SELECT c.name, COUNT(o.id) AS orders, SUM(o.total) FROM customers c LEFT JOIN orders o "
                "ON o.customer_id = c.id WHERE c.created_at >= '2024-01-01' AND c.country IN ('DE', 'FR') "
                "GROUP BY c.name HAVING COUNT(o.id) > 2 ORDER BY orders DESC LIMIT 10;",
                "select id, case when score > 90 then 'A' else 'B' end as grade from results "
                "where name like 'J%' and id not in (select id from banned)",
            ),
        ),
        Case(
            "arithmetic",
            grammars.load("arithmetic"),
            ("3.5 * (x + 2) ^ 2 - sqrt(y, 4) / -7 % 3", "f(g(1, 2), h(a * b + c)) - 1e-3 * (z - (w + 1))"),
        ),
        Case(
            "python_expr",
            grammars.load("python_expr"),
            (
                "sorted([(k, v) for k, v in counts.items() if v > 1], key=lambda kv: -kv[1])[:10]",
                "{'name': user.name.title(), 'admin': user.role == 'admin' or user.id in ADMINS, 'n': 0x1F}",
            ),
        ),
    )


class ConstrainCFG(br.ConstrainEngine):
    def build(self, regex: str) -> None:  # the argument is the Lark text
        if self.clear_caches is not None:
            self.clear_caches()
        try:
            grammar = self.lib.Grammar.from_lark(regex)
        except self.lib.ConstrainError as exc:
            raise br.EngineError(f"{type(exc).__name__}: {exc}") from exc
        self.matcher = self.lib.GrammarMatcher(self.lib.compile(grammar, self.info))


class XGrammarCFG(br.XGrammarEngine):
    def build(self, regex: str) -> None:
        try:
            compiled = self.compiler.compile_grammar(self.lib.Grammar.from_lark(regex))
        except RuntimeError as exc:
            raise br.EngineError(str(exc).splitlines()[0]) from exc
        self.matcher = self.lib.GrammarMatcher(compiled)


class LLGuidanceCFG(br.LLGuidanceEngine):
    def build(self, regex: str) -> None:
        matcher = self.lib.LLMatcher(self.tokenizer, self.lib.grammar_from("lark", regex), log_level=0)
        if matcher.is_error():
            raise br.EngineError(matcher.get_error().splitlines()[0])
        self.matcher = matcher


ADAPTERS: dict[str, type[br.Engine]] = {
    "constrain": ConstrainCFG,
    "xgrammar": XGrammarCFG,
    "llguidance": LLGuidanceCFG,
}


@dataclass
class Result:
    engine: str
    note: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    ttfm_ms: dict[str, list[float]] = field(default_factory=dict)  # per case, per run
    fill_us: dict[str, list[float]] = field(default_factory=dict)  # per case, every step of every run
    diffs: dict[str, Any] = field(default_factory=dict)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    vocab = br.load_vocab(Path(args.tokenizer))
    cases = [c for c in _cases() if not args.cases or any(s in c.name for s in args.cases.split(","))]
    engines: list[br.Engine] = []
    results: dict[str, Result] = {}
    for name in args.engines.split(","):
        try:
            eng = ADAPTERS[name](vocab)
        except ImportError as exc:
            print(f"skipping {name}: {exc}")
            continue
        engines.append(eng)
        results[name] = Result(name, eng.note)
        warm = Case("warm", WARMUP_GRAMMAR, (WARMUP_TEXT,))
        br.run_path(eng, warm, vocab.encode(WARMUP_TEXT), eng.new_bitmask(), check=False)  # type: ignore[arg-type]

    for case in cases:
        paths = [vocab.encode(x) for x in case.examples]
        for text, ids in zip(case.examples, paths):
            if b"".join(vocab.token_bytes[t] or b"" for t in ids) != text.encode():
                raise SystemExit(f"{case.name}: the token path does not spell {text!r}")
        rows: dict[str, list[list[np.ndarray]]] = {}
        for eng in engines:
            res = results[eng.name]
            bitmask = eng.new_bitmask()
            res.ttfm_ms[case.name] = []
            res.fill_us[case.name] = []
            for p, ids in enumerate(paths):
                for rep in range(args.repeat):
                    r = br.run_path(eng, case, ids, bitmask, check=(rep == 0))  # type: ignore[arg-type]
                    if r.error:
                        res.errors[case.name] = f"path {p}: {r.error}"
                        break
                    if rep == 0:
                        rows.setdefault(eng.name, []).append(r.rows)
                    res.ttfm_ms[case.name].append(r.ttfm_ns / 1e6)
                    res.fill_us[case.name].extend(ns / 1e3 for ns in r.fill_ns)
        base = rows.get("constrain")
        for name, peer_rows in rows.items():
            if name == "constrain" or base is None:
                continue
            diff = br.MaskDiff()
            for a_path, b_path in zip(base, peer_rows):
                for a, b in zip(a_path, b_path):
                    diff.steps += 1
                    ids_a = set(br.mask_ids(a, vocab.size).tolist()) - vocab.special_ids
                    ids_b = set(br.mask_ids(b, vocab.size).tolist()) - vocab.special_ids
                    if ids_a != ids_b:
                        diff.differing_steps += 1
                        for t in ids_a - ids_b:
                            diff.only_constrain[t] = diff.only_constrain.get(t, 0) + 1
                        for t in ids_b - ids_a:
                            diff.only_peer[t] = diff.only_peer.get(t, 0) + 1
            results[name].diffs[case.name] = diff.to_json(vocab)

    print(
        f"\ntokenizer {vocab.path.name} ({vocab.size} tokens), "
        f"{args.repeat} cold runs per path, {br._cpus()} CPUs"
    )
    headers = [
        "grammar",
        "engine",
        "TTFM ms p50",
        "fill us p50",
        "p99",
        "max",
        "steps",
        "mask diff vs constrain",
    ]
    table = []
    for case in cases:
        for name, res in results.items():
            if case.name in res.errors:
                table.append([case.name, name, "-", "-", "-", "-", "-", "FAILED: " + res.errors[case.name]])
                continue
            f = res.fill_us.get(case.name, [])
            d = res.diffs.get(case.name)
            dd = f"{d['differing_steps']}/{d['steps']} steps" if d else ""
            table.append(
                [
                    case.name,
                    name,
                    br.fmt(pct(res.ttfm_ms[case.name], 50), 2),
                    br.fmt(pct(f, 50)),
                    br.fmt(pct(f, 99)),
                    br.fmt(max(f) if f else float("nan")),
                    str(len(f)),
                    dd,
                ]
            )
    br.print_table(headers, table)
    for name, res in results.items():
        if res.note:
            print(f"note {name}: {res.note}")
    return {
        "meta": {
            "tokenizer": str(vocab.path),
            "vocab_size": vocab.size,
            "repeat": args.repeat,
            "cpus": br._cpus(),
            "python": platform.python_version(),
            "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        },
        "results": {
            name: {
                "note": res.note,
                "errors": res.errors,
                "ttfm_ms": res.ttfm_ms,
                "fill_us": res.fill_us,
                "mask_diffs": res.diffs,
            }
            for name, res in results.items()
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tokenizer", default=str(br.DEFAULT_TOKENIZER))
    p.add_argument("--engines", default=",".join(ALL_ENGINES))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
