"""The speculative-decoding bench: every drafter composition against no speculation, in one run.

On JSONSchemaBench schemas (loaded, sampled and prompted as in :mod:`constrain_tools.jsonschemabench`),
greedy constrained generation with SmolLM2 runs once per drafter name
(:func:`constrain.speculation.make_drafter`), arms interleaved schema by schema, plus one unconstrained
non-speculative arm. Per arm: output tokens per forward pass, draft acceptance rate, time per output
token (decode time after the first token over the tokens after it), compliance (``jsonschema``), and
whether the tokens equal the non-speculative arm's (greedy speculation must not change them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import jsonschemabench as jsb

__all__ = ["main", "run_speculative_bench"]


def run_speculative_bench(
    subsets: list[str],
    limit: int,
    drafters: list[str],
    max_new_tokens: int,
    seed: int = 0,
    progress: bool = True,
    on_record: Any = None,
    hf_engines: list[str] | None = None,
    unconstrained: bool = True,
    done: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the arms; returns ``{"records": [...], "summary": {arm: {...}}}``.

    ``hf_engines``: arms that run transformers' own ``generate`` with an engine's logits processor
    (:mod:`constrain_tools.hf_arms`: ``constrain-hf``, ``xgrammar-hf``, ``llguidance-hf``), also on the
    schemas constrain did not compile (their coverage counts there). ``done``: records of an earlier
    run cut short (``--resume``): kept, and their schemas not run again.
    """
    from constrain.generation import BudgetExhaustedError, encode_prompt, run
    from constrain.matcher import GrammarMatcher
    from constrain.models import default_model, tokenizer_info_for
    from constrain.speculation import make_drafter

    from . import hf_arms

    model, tok = default_model()
    info = tokenizer_info_for(tok)
    schemas = jsb.interleave(jsb.load_schemas(jsb.DEFAULT_DATA_PATH, subsets, limit=limit, seed=seed))
    arms = list(dict.fromkeys(["none", *drafters]))
    hf_names = list(hf_engines or [])
    missing = hf_arms.available_engines(hf_names)
    hf_names = [n for n in hf_names if n not in missing]
    engines = hf_arms.HFEngines(tok, int(model.config.vocab_size)) if hf_names else None
    records: list[dict[str, Any]] = list(done or [])
    seen = {(r["subset"], r["name"]) for r in records}
    tail = [*arms, "unconstrained"] if unconstrained else arms
    for k, item in enumerate(schemas):
        if (item.subset, item.name) in seen:
            continue
        comp = jsb.compile_schema(item.schema, info)
        prompt = encode_prompt(tok, jsb.build_messages(item.schema), None)
        rec: dict[str, Any] = {"subset": item.subset, "name": item.name, "compile": comp.status, "arms": {}}
        reference: list[int] | None = None
        for arm in tail if comp.status == "compiled" else []:
            matcher = GrammarMatcher(comp.compiled) if arm != "unconstrained" else None
            drafter = make_drafter(arm, model) if arm != "unconstrained" else None
            try:
                result = run(model, info, prompt, matcher, max_new_tokens=max_new_tokens, drafter=drafter)
                stats, text, status = result.stats, result.text, "done"
            except BudgetExhaustedError as exc:
                stats, text, status = exc.stats, exc.partial_text, "budget"
            valid = False
            if status == "done":
                found, value = jsb.extract_json(text) if matcher is None else (True, json.loads(text))
                valid = found and jsb.check_instance(value, item.schema)[0]
            ids = list(result.token_ids) if status == "done" else None
            if arm == "none":
                reference = ids
            rec["arms"][arm] = {
                "status": status,
                "valid": valid,
                "output_tokens": stats.output_tokens,
                "forward_passes": stats.forward_passes,
                "draft_tokens": stats.draft_tokens,
                "accepted_draft_tokens": stats.accepted_draft_tokens,
                "drafted_by": dict(stats.drafted_by),
                "accepted_by": dict(stats.accepted_by),
                "decode_time_s": stats.total_time_s - stats.time_to_first_token_s,
                "same_as_none": ids == reference if arm != "unconstrained" else None,
            }
        for name in hf_names:
            assert engines is not None
            hf = hf_arms.run_hf_arm(
                engines, name, item.schema, prompt, model=model, max_new_tokens=max_new_tokens
            )
            rec.setdefault("hf_arms", {})[name] = {
                "status": hf.status,
                "valid": hf.valid,
                "compile_s": hf.compile_s,
                "output_tokens": hf.output_tokens,
                "forward_passes": hf.forward_passes,
                "decode_time_s": hf.decode_time_s,
                "duplicate_keys": hf.duplicate_keys,
                "message": hf.message,
            }
        records.append(rec)
        if on_record is not None:  # partial results survive a run cut short
            on_record(_result(records, [*arms, "unconstrained"], hf_names, missing))
        if progress:
            line = " ".join(
                f"{a}={v['output_tokens'] / max(1, v['forward_passes']):.2f}" for a, v in rec["arms"].items()
            )
            hf_line = " ".join(f"{n}={v['status']}" for n, v in rec.get("hf_arms", {}).items())
            sys.stderr.write(
                f"[{k + 1}/{len(schemas)}] {item.subset}/{item.name} ({comp.status}): "
                f"tok/pass {line} {hf_line}\n"
            )
    return _result(records, [*arms, "unconstrained"], hf_names, missing)


def _result(
    records: list[dict[str, Any]], arms: list[str], hf_names: list[str], missing: dict[str, str]
) -> dict[str, Any]:
    subsets = list(dict.fromkeys(r["subset"] for r in records))
    return {
        "records": records,
        "summary": summarize(records, arms),
        "hf_summary": summarize_hf(records, hf_names),
        "by_subset": {
            sub: {
                "summary": summarize([r for r in records if r["subset"] == sub], arms),
                "hf_summary": summarize_hf([r for r in records if r["subset"] == sub], hf_names),
            }
            for sub in subsets
        },
        "hf_not_run": missing,
    }


def summarize(records: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, Any]]:
    """Pooled figures per arm over the compiled schemas (ratios of sums)."""
    out: dict[str, dict[str, Any]] = {}
    ran = [r for r in records if r.get("arms")]
    for arm in arms:
        rows = [r["arms"][arm] for r in ran if arm in r["arms"]]
        tokens = sum(x["output_tokens"] for x in rows)
        passes = sum(x["forward_passes"] for x in rows)
        drafted = sum(x["draft_tokens"] for x in rows)
        accepted = sum(x["accepted_draft_tokens"] for x in rows)
        decode = sum(x["decode_time_s"] for x in rows)
        after_first = sum(max(0, x["output_tokens"] - 1) for x in rows)
        out[arm] = {
            "schemas": len(rows),
            "tokens_per_forward_pass": tokens / passes if passes else 0.0,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "time_per_output_token_ms": 1e3 * decode / after_first if after_first else 0.0,
            "compliance": sum(x["valid"] for x in rows) / len(rows) if rows else 0.0,
            # JSONSchemaBench's compliance: valid outputs over every schema tried, compiled or not
            "coverage": len(ran) / len(records) if records else 0.0,
            "valid_of_all": sum(x["valid"] for x in rows) / len(records) if records else 0.0,
            "same_tokens_as_none": sum(bool(x["same_as_none"]) for x in rows),
        }
    base = out.get("none", {}).get("time_per_output_token_ms") or 0.0
    for arm in out:
        out[arm]["tpot_vs_none"] = out[arm]["time_per_output_token_ms"] / base if base else 0.0
    return out


def summarize_hf(records: list[dict[str, Any]], engines: list[str]) -> dict[str, dict[str, Any]]:
    """Per transformers-processor arm: coverage (compiled / schemas), compliance (valid / schemas, as
    JSONSchemaBench counts it, and valid / compiled), median compile time, and time per output token
    pooled over its runs; ``constrain`` (our own loop, arm ``none``) on the same schemas beside it."""
    out: dict[str, dict[str, Any]] = {}
    total = len(records)
    for name in engines:
        rows = [r["hf_arms"][name] for r in records if name in r.get("hf_arms", {})]
        ran = [x for x in rows if x["status"] != "not_compiled"]
        decode = sum(x["decode_time_s"] for x in ran)
        after_first = sum(max(0, x["output_tokens"] - 1) for x in ran)
        compiles = sorted(x["compile_s"] for x in ran if x["compile_s"] is not None)
        out[name] = {
            "schemas": total,
            "coverage": len(ran) / total if total else 0.0,
            "compliance": sum(x["valid"] for x in rows) / total if total else 0.0,
            "valid_of_compiled": sum(x["valid"] for x in ran) / len(ran) if ran else 0.0,
            "duplicate_keys": sum(bool(x.get("duplicate_keys")) for x in ran),
            "compile_ms_median": 1e3 * compiles[len(compiles) // 2] if compiles else 0.0,
            "time_per_output_token_ms": 1e3 * decode / after_first if after_first else 0.0,
        }
    return out


def format_hf_summary(summary: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :func:`summarize_hf`'s figures."""
    lines = [
        f"{'transformers arm':24} {'n':>3} {'coverage':>8} {'valid':>6} {'valid/c':>7} {'dupkey':>6} "
        f"{'compile ms':>10} {'ms/tok':>7}"
    ]
    for arm, s in summary.items():
        lines.append(
            f"{arm:24} {s['schemas']:>3} {s['coverage']:>8.2f} {s['compliance']:>6.2f} "
            f"{s['valid_of_compiled']:>7.2f} {s['duplicate_keys']:>6} {s['compile_ms_median']:>10.1f} "
            f"{s['time_per_output_token_ms']:>7.1f}"
        )
    return "\n".join(lines)


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :func:`summarize`'s figures."""
    lines = [
        f"{'arm':24} {'n':>3} {'tok/pass':>8} {'accept':>7} {'ms/tok':>7} {'vs none':>7} "
        f"{'valid':>6} {'same':>5} {'cover':>5} {'valid/all':>9}"
    ]
    for arm, s in summary.items():
        lines.append(
            f"{arm:24} {s['schemas']:>3} {s['tokens_per_forward_pass']:>8.2f} {s['acceptance_rate']:>7.2f} "
            f"{s['time_per_output_token_ms']:>7.1f} {s['tpot_vs_none']:>7.2f} {s['compliance']:>6.2f} "
            f"{s['same_tokens_as_none']:>5} {s['coverage']:>5.2f} {s['valid_of_all']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python bench/bench_speculative.py [--subset S ...] [--limit N] [--drafter NAME ...]``."""
    from constrain.speculation import DRAFTER_NAMES

    from . import hf_arms

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subset", action="append", help="JSONSchemaBench subset (repeatable)")
    parser.add_argument("--limit", type=int, default=10, help="schemas per subset (default 10)")
    parser.add_argument("--drafter", action="append", help=f"arms (default: {', '.join(DRAFTER_NAMES)})")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--hf-engine",
        action="append",
        choices=hf_arms.HF_ENGINES,
        help="also run transformers generate with this engine's logits processor (repeatable)",
    )
    parser.add_argument("--no-unconstrained", action="store_true", help="skip the unconstrained arm")
    parser.add_argument("--resume", action="store_true", help="keep the records already in --json")
    parser.add_argument("--json", help="write records and summary here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = time.time()

    def save(partial: dict[str, Any]) -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(partial, indent=1) + "\n", encoding="utf-8")

    done = None
    if args.resume and args.json and Path(args.json).is_file():
        done = json.loads(Path(args.json).read_text(encoding="utf-8"))["records"]
    out = run_speculative_bench(
        args.subset or list(jsb.DEFAULT_SUBSETS),
        args.limit,
        args.drafter or list(DRAFTER_NAMES),
        args.max_new_tokens,
        on_record=save,
        hf_engines=args.hf_engine,
        unconstrained=not args.no_unconstrained,
        done=done,
    )
    out["config"] = {
        "argv": sys.argv,
        "wall_time_s": round(time.time() - started, 1),
        "threads": args.threads,
    }
    for sub, figures in out["by_subset"].items():
        sys.stdout.write(f"== {sub}\n" + format_summary(figures["summary"]) + "\n")
        if figures["hf_summary"]:
            sys.stdout.write(format_hf_summary(figures["hf_summary"]) + "\n")
    sys.stdout.write("== all subsets\n" + format_summary(out["summary"]) + "\n")
    if out["hf_summary"]:
        sys.stdout.write(format_hf_summary(out["hf_summary"]) + "\n")
    for name, why in out["hf_not_run"].items():
        sys.stdout.write(f"{name}: not run: {why}\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0
