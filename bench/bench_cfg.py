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

The adapters, the teacher-forcing loop and the mask comparison are ``constrain_tools.bench_common``'s.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from constrain import grammars
from constrain_tools import bench_common as br

ALL_ENGINES = ("constrain", "xgrammar", "llguidance")
WARMUP_GRAMMAR = 'start: "warm" NAME ("," NAME)*\nNAME: /[a-z]+/\n%ignore " "'
WARMUP_TEXT = "warm up, again"


@dataclass(frozen=True)
class Case:
    """One shipped grammar and the valid strings teacher-forced through every engine."""

    name: str
    pattern: str  # the Lark text (``pattern`` so that bench_common.run_path can build it)
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
    def grammar_of(self, text: str) -> Any:  # the Lark text
        return self.lib.Grammar.from_lark(text)


class XGrammarCFG(br.XGrammarEngine):
    def compile(self, text: str) -> Any:
        return self.compiler.compile_grammar(self.lib.Grammar.from_lark(text))


class LLGuidanceCFG(br.LLGuidanceEngine):
    def grammar_of(self, text: str) -> Any:
        return self.lib.grammar_from("lark", text)


ADAPTERS: dict[str, type[br.Engine]] = {
    "constrain": ConstrainCFG,
    "xgrammar": XGrammarCFG,
    "llguidance": LLGuidanceCFG,
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    vocab = br.load_vocab(args.tokenizer)
    cases = [c for c in _cases() if not args.cases or any(s in c.name for s in args.cases.split(","))]
    warm = Case("warm", WARMUP_GRAMMAR, (WARMUP_TEXT,))
    engines, results = br.load_engines(ADAPTERS, args.engines.split(","), vocab, warm)
    br.run_teacher_forced(cases, engines, results, vocab, args.repeat)
    br.print_path_table("grammar", cases, results, vocab, args.repeat)
    br.print_notes(results)
    return {
        "meta": br.run_meta(vocab, args.repeat),
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
    p = br.grammar_bench_parser(__doc__, ALL_ENGINES)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    if args.json:
        br.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
