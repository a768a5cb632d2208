"""Recursive JSON Schemas (``$ref`` cycles): constrain's context-free engine against xgrammar and llguidance.

Each engine compiles the same schema: constrain through ``Grammar.from_json_schema`` (a recursive
schema compiles to a ``constrain.cfg.CompiledCFG``), xgrammar through
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
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_regex as br
from bench_cfg import Result  # one record type for both CFG benches

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.test_json_schema_recursion import ANY_JSON, COMMENTS, LINKED_LIST, TREE  # noqa: E402

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
    pattern: str  # the schema as JSON text (``pattern`` so that bench_regex.run_path can build it)
    examples: tuple[str, ...]  # canonical texts of valid instances
    source: str  # "ours" or "maskbench"


def _canonical(instance: Any, schema: Any, draft: str | None) -> str:
    from constrain.json_schema.compiler import SchemaOptions, serialize_instance

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
        from constrain.suites import load_maskbench

        by_id = {f"{c.file}/{c.group}": c for c in load_maskbench(maskbench, recursive_only=True).cases}
        for pick in MASKBENCH_PICKS:
            c = by_id.get(pick)
            if c is None:
                raise SystemExit(f"MaskBench schema {pick} not found (or not recursive) in {maskbench}")
            valid = [i.data for i in c.instances if i.valid][:MAX_INSTANCES]
            texts = tuple(_canonical(x, c.schema, c.draft) for x in valid)
            cases.append(Case(pick, json.dumps(c.schema), texts, "maskbench"))
    return cases


class ConstrainSchema(br.ConstrainEngine):
    def build(self, regex: str) -> None:  # the argument is the schema's JSON text
        if self.clear_caches is not None:
            self.clear_caches()
        try:
            grammar = self.lib.Grammar.from_json_schema(json.loads(regex))
        except self.lib.ConstrainError as exc:
            raise br.EngineError(f"{type(exc).__name__}: {exc}") from exc
        self.matcher = self.lib.GrammarMatcher(self.lib.compile(grammar, self.info))


class XGrammarSchema(br.XGrammarEngine):
    def __init__(self, vocab: br.Vocab) -> None:
        super().__init__(vocab)
        self.note += '; compile_json_schema(any_whitespace=False, separators=(",", ":"), strict_mode=False)'

    def build(self, regex: str) -> None:
        try:
            compiled = self.compiler.compile_json_schema(
                regex, any_whitespace=False, separators=(",", ":"), strict_mode=False
            )
        except RuntimeError as exc:
            raise br.EngineError(str(exc).splitlines()[0]) from exc
        self.matcher = self.lib.GrammarMatcher(compiled)


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

    def build(self, regex: str) -> None:
        try:
            grammar = self.lib.LLMatcher.grammar_from_json_schema(regex, overrides=LLG_OPTIONS)  # type: ignore[arg-type]
        except ValueError as exc:
            raise br.EngineError(str(exc).splitlines()[0]) from exc
        matcher = self.lib.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise br.EngineError(matcher.get_error().splitlines()[0])
        self.matcher = matcher


ADAPTERS: dict[str, type[br.Engine]] = {
    "constrain": ConstrainSchema,
    "xgrammar": XGrammarSchema,
    "llguidance": LLGuidanceSchema,
}


def _stats(res: Result, case: str) -> dict[str, float]:
    f = res.fill_us.get(case, [])
    return {
        "ttfm_p50_ms": br.pct(res.ttfm_ms.get(case, []), 50),
        "fill_p50_us": br.pct(f, 50),
        "fill_p99_us": br.pct(f, 99),
        "fill_max_us": max(f) if f else float("nan"),
        "steps": float(len(f)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    vocab = br.load_vocab(Path(args.tokenizer))
    cases = [
        c
        for c in load_cases(args.maskbench)
        if not args.cases or any(s in c.name for s in args.cases.split(","))
    ]
    engines: list[br.Engine] = []
    results: dict[str, Result] = {}
    warm_text = _canonical(WARMUP_INSTANCE, WARMUP_SCHEMA, None)
    warm = Case("warm", json.dumps(WARMUP_SCHEMA), (warm_text,), "warm")
    for name in args.engines.split(","):
        try:
            eng = ADAPTERS[name](vocab)
        except ImportError as exc:
            print(f"skipping {name}: {exc}")
            continue
        engines.append(eng)
        results[name] = Result(name, eng.note)
        br.run_path(eng, warm, vocab.encode(warm_text), eng.new_bitmask(), check=False)  # type: ignore[arg-type]

    for case in cases:
        paths = [vocab.encode(x) for x in case.examples]
        for text, ids in zip(case.examples, paths):
            if b"".join(vocab.token_bytes[t] or b"" for t in ids) != text.encode():
                raise SystemExit(f"{case.name}: the token path does not spell {text!r}")
        print(f"{case.name}: {len(paths)} paths, {sum(map(len, paths))} tokens", flush=True)
        rows: dict[str, list[list[Any]]] = {}
        for eng in engines:
            res = results[eng.name]
            bitmask = eng.new_bitmask()
            res.ttfm_ms[case.name] = []
            res.fill_us[case.name] = []
            for p, ids in enumerate(paths):
                for rep in range(args.repeat):
                    try:
                        r = br.run_path(eng, case, ids, bitmask, check=(rep == 0))  # type: ignore[arg-type]
                    except br.EngineError as exc:
                        res.errors[case.name] = f"compile: {exc}"
                        break
                    if r.error:
                        res.errors[case.name] = f"path {p}: {r.error}"
                        break
                    if rep == 0:
                        rows.setdefault(eng.name, []).append(r.rows)
                    res.ttfm_ms[case.name].append(r.ttfm_ns / 1e6)
                    res.fill_us[case.name].extend(ns / 1e3 for ns in r.fill_ns)
                if case.name in res.errors:
                    break
        base = rows.get("constrain")
        for name, peer_rows in rows.items():
            if name == "constrain" or base is None:
                continue
            diff = br.MaskDiff()
            for k, (a_path, b_path) in enumerate(zip(base, peer_rows)):
                br.compare_rows(a_path, b_path, vocab, diff, f"path {k}")
            results[name].diffs[case.name] = diff.to_json(vocab)

    print(
        f"\ntokenizer {vocab.path.name} ({vocab.size} tokens), "
        f"{args.repeat} cold runs per path, {br._cpus()} CPUs"
    )
    headers = [
        "schema",
        "engine",
        "TTFM ms p50",
        "fill us p50",
        "p99",
        "max",
        "steps",
        "mask diff vs constrain",
    ]
    table = []
    ratios: dict[str, dict[str, Any]] = {}
    for case in cases:
        for name, res in results.items():
            if case.name in res.errors:
                table.append(
                    [case.name, name, "-", "-", "-", "-", "-", "FAILED: " + res.errors[case.name][:90]]
                )
                continue
            s = _stats(res, case.name)
            d = res.diffs.get(case.name)
            dd = ""
            if d:
                dd = f"{d['differing_steps']}/{d['steps']} steps"
                if d["eos_steps"]:
                    dd += f", EOS {d['eos_steps']}"
            table.append(
                [
                    case.name,
                    name,
                    br.fmt(s["ttfm_p50_ms"], 2),
                    br.fmt(s["fill_p50_us"]),
                    br.fmt(s["fill_p99_us"]),
                    br.fmt(s["fill_max_us"]),
                    str(int(s["steps"])),
                    dd,
                ]
            )
        ratios[case.name] = _ratios(case.name, results)
    br.print_table(headers, table)

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
    for name, res in results.items():
        if res.note:
            print(f"note {name}: {res.note}")
        for case_name, d in res.diffs.items():
            for line in d["first"]:
                print(f"diff {name} {case_name}: {line}")
    return {
        "meta": {
            "tokenizer": str(vocab.path),
            "vocab_size": vocab.size,
            "repeat": args.repeat,
            "cpus": br._cpus(),
            "python": platform.python_version(),
            "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "xgrammar_options": {"any_whitespace": False, "separators": [",", ":"], "strict_mode": False},
            "llguidance_overrides": LLG_OPTIONS,
        },
        "cases": {c.name: {"source": c.source, "texts": list(c.examples)} for c in cases},
        "ratios_constrain_to_best_peer": ratios,
        "results": {
            name: {
                "note": res.note,
                "errors": res.errors,
                "summary": {c.name: _stats(res, c.name) for c in cases if c.name not in res.errors},
                "ttfm_ms": res.ttfm_ms,
                "fill_us": res.fill_us,
                "mask_diffs": res.diffs,
            }
            for name, res in results.items()
        },
    }


def _ratios(case: str, results: dict[str, Result]) -> dict[str, Any]:
    """constrain's value over the best (lowest) value among the peers that passed the checks."""
    out: dict[str, Any] = {}
    ref = results.get("constrain")
    for key in ("ttfm_p50_ms", "fill_p50_us", "fill_p99_us", "fill_max_us"):
        best, peer = float("nan"), ""
        for name, res in results.items():
            if name == "constrain" or case in res.errors:
                continue
            v = _stats(res, case)[key]
            if v == v and not best <= v:
                best, peer = v, name
        mine = _stats(ref, case)[key] if ref is not None and case not in ref.errors else float("nan")
        out[key] = {"ratio": mine / best if best == best and best > 0 else float("nan"), "peer": peer}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from constrain.suites import DEFAULT_MASKBENCH_PATH

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tokenizer", default=str(br.DEFAULT_TOKENIZER))
    p.add_argument("--maskbench", default=str(DEFAULT_MASKBENCH_PATH))
    p.add_argument("--engines", default=",".join(ALL_ENGINES))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
