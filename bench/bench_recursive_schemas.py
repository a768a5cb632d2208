"""Recursive JSON Schemas (``$ref`` cycles): constrain's context-free engine against xgrammar and llguidance.

Each engine compiles the same schema: constrain through ``Grammar.from_json_schema`` (a recursive
schema compiles to a ``constrain.CompiledGrammar`` over the Earley engine), xgrammar through
``GrammarCompiler.compile_json_schema(any_whitespace=False, separators=(",", ":"), strict_mode=False)``
(cache off), llguidance through ``LLMatcher.grammar_from_json_schema`` with the overrides
``whitespace_flexible=False, item_separator=",", key_separator=":"``. Every engine is teacher-forced
along the same token ids: the llama3 tokenisation of the canonical text constrain reads
(``serialize_instance``: compact JSON, keys in schema order) of a few valid instances per schema.

The cases are the four schemas of tests/test_json_schema_recursion.py, each with hand-written
instances nested a few levels deep, and a fixed list of recursive MaskBench schemas
(``MASKBENCH_PICKS``, by file name) with their valid instances. Measured, as in bench_cfg.py:

* correctness first: every path token is in the engine's mask and accepted, EOS is allowed at the
  end; each peer's mask is compared with constrain's at every step (counted and reported, not hidden);
* time to first mask (TTFM): schema -> first bitmask filled, every compile cache cold;
* per-step fill: only the fill call into a preallocated int32 bitmask, with a fresh compile for
  every run of a path.

Usage::

    python bench/bench_recursive_schemas.py [--tokenizer PATH] [--engines constrain,xgrammar,llguidance]
                                            [--repeat N] [--cases SUBSTR,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from constrain_tools import bench_common as br
from constrain_tools import suites
from constrain_tools.recursive_schemas import ANY_JSON, COMMENTS, LINKED_LIST, TREE

ALL_ENGINES = ("constrain", "xgrammar", "llguidance")
WARMUP_SCHEMA = {
    "type": "object",
    "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
}
WARMUP_INSTANCE = {"v": 1, "kids": [{"v": 2, "kids": []}]}

# Recursive MaskBench schemas ("subset/id", the id being the record's file name in
# maskbench-data.tar.xz) that constrain compiles and that have valid instances; chosen by name so
# that every run walks the same ones.
MASKBENCH_PICKS: tuple[str, ...] = (
    "Github_easy/o21858",
    "Github_easy/o42304",
    "Github_easy/o90911",
    "Github_hard/o12958",
    "Github_hard/o15197",
    "Github_hard/o15291",
)
MAX_INSTANCES = 3  # valid instances walked per MaskBench schema, the first ones in file order

_OURS: tuple[tuple[str, Any, tuple[Any, ...]], ...] = (
    (
        "tree",
        TREE,
        (
            {
                "name": "root",
                "children": [
                    {
                        "name": "a",
                        "children": [{"name": "a1", "children": [{"name": "a11"}]}, {"name": "a2"}],
                    },
                    {"name": "b", "children": []},
                    {
                        "name": "c",
                        "children": [{"name": "c1", "children": [{"name": "c11", "children": []}]}],
                    },
                ],
            },
            {
                "name": "x",
                "children": [{"name": "y", "children": [{"name": "z", "children": [{"name": "w"}]}]}],
            },
        ),
    ),
    (
        "linked_list",
        LINKED_LIST,
        (
            {"value": 1, "next": {"value": -20, "next": {"value": 300, "next": {"value": 4, "next": None}}}},
            {"value": 0, "next": None},
            {
                "value": 9,
                "next": {
                    "value": 8,
                    "next": {
                        "value": 7,
                        "next": {"value": 6, "next": {"value": 5, "next": {"value": 4, "next": None}}},
                    },
                },
            },
        ),
    ),
    (
        "any_json",
        ANY_JSON,
        (
            {"a": [1, {"b": [None, "x", [True, {"c": -2.5}]]}], "d": {"e": {"f": {"g": []}}}, "h": "deep"},
            [[1, [2, [3, [4, "five"]]]], {"k": {"l": [False, None, {"m": 1e3}]}}],
            {"users": [{"id": 7, "tags": ["x", "y"], "meta": {"score": 0.5, "ok": True}}], "n": None},
        ),
    ),
    (
        "comments",
        COMMENTS,
        (
            {
                "thread": {
                    "author": "ann",
                    "score": 3,
                    "replies": [
                        {
                            "author": "bob",
                            "replies": [{"author": "ann", "score": 9, "replies": [{"author": "bob"}]}],
                        },
                        {"author": "bob", "score": 0},
                    ],
                }
            },
            {
                "thread": {
                    "author": "bob",
                    "replies": [{"author": "ann", "replies": [{"author": "bob", "replies": []}]}],
                }
            },
        ),
    ),
)


@dataclass(frozen=True)
class Case:
    """One schema and the canonical texts of its valid instances, teacher-forced through every engine."""

    name: str
    pattern: str  # the schema as JSON text (``pattern`` so that bench_common.run_path can build it)
    examples: tuple[str, ...]  # canonical texts of valid instances
    source: str  # "ours" or "maskbench"


def _canonical(instance: Any, schema: Any, draft: str | None) -> str:
    from constrain.json_schema import SchemaOptions, serialize_instance

    options = (
        SchemaOptions(formats="assert") if draft is None else SchemaOptions(formats="assert", draft=draft)
    )
    return serialize_instance(instance, schema, options=options)


def _check_valid(name: str, schema: Any, instance: Any) -> None:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(instance))
    if errors:
        raise SystemExit(f"{name}: an instance is not valid: {errors[0].message}")


def load_cases(maskbench: str) -> list[Case]:
    cases = []
    for name, schema, instances in _OURS:
        for x in instances:
            _check_valid(name, schema, x)
        texts = tuple(_canonical(x, schema, None) for x in instances)
        cases.append(Case(name, json.dumps(schema), texts, "ours"))
    if MASKBENCH_PICKS:
        by_id = {
            f"{c.file}/{c.group}": c for c in suites.load_maskbench(maskbench, recursive_only=True).cases
        }
        for pick in MASKBENCH_PICKS:
            c = by_id.get(pick)
            if c is None:
                raise SystemExit(f"MaskBench schema {pick} not found (or not recursive) in {maskbench}")
            valid = [i.data for i in c.instances if i.valid][:MAX_INSTANCES]
            texts = tuple(_canonical(x, c.schema, c.draft) for x in valid)
            cases.append(Case(pick, json.dumps(c.schema), texts, "maskbench"))
    return cases


class ConstrainSchema(br.ConstrainEngine):
    def grammar_of(self, text: str) -> Any:  # the schema's JSON text
        return self.lib.Grammar.from_json_schema(json.loads(text))


class XGrammarSchema(br.XGrammarEngine):
    def __init__(self, vocab: br.Vocab) -> None:
        super().__init__(vocab)
        self.note += '; compile_json_schema(any_whitespace=False, separators=(",", ":"), strict_mode=False)'

    def compile(self, text: str) -> Any:
        return self.compiler.compile_json_schema(
            text, any_whitespace=False, separators=(",", ":"), strict_mode=False
        )


# coerce_one_of: llguidance rejects a oneOf it cannot prove disjoint (LINKED_LIST's null | node);
# with it on, oneOf is read as anyOf (exact where the branches are disjoint).
LLG_OPTIONS = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
    "coerce_one_of": True,
}


class LLGuidanceSchema(br.LLGuidanceEngine):
    def __init__(self, vocab: br.Vocab) -> None:
        super().__init__(vocab)
        self.note = f"grammar_from_json_schema(overrides={LLG_OPTIONS})"

    def grammar_of(self, text: str) -> Any:
        return self.lib.LLMatcher.grammar_from_json_schema(text, overrides=LLG_OPTIONS)  # type: ignore[arg-type]


ADAPTERS: dict[str, type[br.Engine]] = {
    "constrain": ConstrainSchema,
    "xgrammar": XGrammarSchema,
    "llguidance": LLGuidanceSchema,
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    vocab = br.load_vocab(args.tokenizer)
    cases = [
        c
        for c in load_cases(args.maskbench)
        if not args.cases or any(s in c.name for s in args.cases.split(","))
    ]
    warm_text = _canonical(WARMUP_INSTANCE, WARMUP_SCHEMA, None)
    warm = Case("warm", json.dumps(WARMUP_SCHEMA), (warm_text,), "warm")
    engines, results = br.load_engines(ADAPTERS, args.engines.split(","), vocab, warm)
    br.run_teacher_forced(cases, engines, results, vocab, args.repeat, announce=True)
    br.print_path_table("schema", cases, results, vocab, args.repeat)
    ratios = {case.name: _ratios(case.name, results) for case in cases}

    print("\nconstrain / best peer that passed (lower is better for constrain)")
    rheaders = ["schema", "TTFM", "fill p50", "p99", "max", "best peer (TTFM, p50, p99, max)"]
    rtable = [
        [
            name,
            *(
                br.fmt_ratio(r[k]["ratio"])
                for k in ("ttfm_p50_ms", "fill_p50_us", "fill_p99_us", "fill_max_us")
            ),
            ", ".join(
                r[k]["peer"] or "-" for k in ("ttfm_p50_ms", "fill_p50_us", "fill_p99_us", "fill_max_us")
            ),
        ]
        for name, r in ratios.items()
    ]
    br.print_table(rheaders, rtable)
    br.print_notes(results)
    return {
        "meta": {
            **br.run_meta(vocab, args.repeat),
            "xgrammar_options": {"any_whitespace": False, "separators": [",", ":"], "strict_mode": False},
            "llguidance_overrides": LLG_OPTIONS,
        },
        "cases": {c.name: {"source": c.source, "texts": list(c.examples)} for c in cases},
        "ratios_constrain_to_best_peer": ratios,
        "results": {
            name: {
                "note": res.note,
                "errors": res.errors,
                "summary": {c.name: br.path_stats(res, c.name) for c in cases if c.name not in res.errors},
                "ttfm_ms": res.ttfm_ms,
                "fill_us": res.fill_us,
                "mask_diffs": res.diffs,
            }
            for name, res in results.items()
        },
    }


def _ratios(case: str, results: dict[str, br.PathResult]) -> dict[str, Any]:
    """constrain's value over the best (lowest) value among the peers that passed the checks."""
    out: dict[str, Any] = {}
    ref = results.get("constrain")
    for key in ("ttfm_p50_ms", "fill_p50_us", "fill_p99_us", "fill_max_us"):
        best, peer = float("nan"), ""
        for name, res in results.items():
            if name == "constrain" or case in res.errors:
                continue
            v = br.path_stats(res, case)[key]
            if v == v and not best <= v:
                best, peer = v, name
        mine = br.path_stats(ref, case)[key] if ref is not None and case not in ref.errors else float("nan")
        out[key] = {"ratio": mine / best if best == best and best > 0 else float("nan"), "peer": peer}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = br.grammar_bench_parser(__doc__, ALL_ENGINES)
    p.add_argument("--maskbench", default=str(suites.DEFAULT_MASKBENCH_PATH))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    if args.json:
        br.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
