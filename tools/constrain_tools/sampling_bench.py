"""The sampling bench (issue 17): masked decoding, SMC over AWRS and ASAp against exact conditionals,
and AWRS against full masking with a real model.

Part A, enumerable problems (no model): a :class:`~constrain.sampling.enumerable.TableLM` over the toy
vocabulary and finite languages (regexes and a Lark grammar) whose exact ``P(output | language)`` is
computed by enumeration. Per case it prints KL(exact || method) in nats: masked decoding's exact KL
(its output distribution is computed exactly), SMC's at N particles per run (the normalised weights of
``budget // N`` runs added up, so every N spends the same number of particles) and ASAp's after 100,
1,000 and 10,000 samples, both the empirical KL of the samples and the exact KL of the distribution the
trie proposes next (:meth:`~constrain.sampling.asap.ASApCore.proposal_logprob`): the empirical KL is
infinite wherever some string of the language has less mass than one sample can resolve. The KL curves
(log-log, one panel per method) go to a PNG.

Part B, a real model (SmolLM2-135M on the CPU by default): ``generate(method="awrs")`` against
``method="masked"`` on a few MaskBench-sample schemas (compiled, not recursive), the recursive schemas
of :mod:`constrain_tools.recursive_schemas` and a shipped Lark grammar, same prompt, seed and
temperature: matcher checks per AWRS step as a share of the vocabulary, mask fallbacks and time per
output token (pooled over ``repeats``, the order of the two methods alternating between repeats, since
masks computed in one run are cached for the next); the two sample different texts.

Part C (with Part B), the same comparison on the SAME text: the masked loop and the AWRS loop, one
forward pass per token, driven by one seed so that both draw the first allowed token of one candidate
order (:func:`~constrain.sampling.awrs.masked_sample_like_awrs`: exact for both, hence the same
token), run side by side on the recursive and Lark cases, cold; time per token with each loop's own
forward passes and with one shared forward pass per token (then the two differ by their steps alone).

Then ``generate_json(method="smc", particles=8)`` on the README's example schema, and genlm-control's
AWRS (the reference implementation) on the same prompts where ``--genlm-python`` names a venv that has
it (it runs there in a subprocess, ``genlm_arm.py``), or why it did not run.

Usage::

    python bench/bench_sampling.py [--part a|b|all] [--png OUT.png] [--json OUT.json] [--limit 5] ...
        [--genlm-python /tmp/venv-genlm/bin/python --genlm-tokens 8]
    constrain bench sampling [same options]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import harness, suites
from .bench_common import fmt, print_table, write_json
from .recursive_schemas import ANY_JSON, COMMENTS, LINKED_LIST, TREE

__all__ = [
    "DEFAULT_CASES",
    "GENLM_CONTROL_REQUIRES",
    "EnumCase",
    "EnumResult",
    "ModelCase",
    "ModelResult",
    "add_arguments",
    "genlm_control_status",
    "main",
    "maskbench_cases",
    "plot_curves",
    "print_part_a",
    "print_part_b",
    "run_enum_case",
    "run_from_args",
    "run_model_case",
]

EOS = 0  # the toy vocabulary's EOS id


def _say(text: str, *, err: bool = False) -> None:
    """One line of the report on stdout (progress on stderr)."""
    (sys.stderr if err else sys.stdout).write(text + "\n")


# ==========================================================================================================
# Part A: enumerable problems
# ==========================================================================================================


@dataclass(frozen=True)
class EnumCase:
    """One enumerable problem: a finite language (``kind`` "regex" or "lark") and a TableLM."""

    name: str
    kind: str
    source: str
    seed: int
    sharpness: float


#: Finite languages of 3-231 token sequences; masked decoding's KL is above 0.1 nats on all but the
#: first, a control (one-token strings, a flat model) where masking is nearly right.
DEFAULT_CASES: tuple[EnumCase, ...] = (
    EnumCase("[abc] s0 (control)", "regex", "[abc]", 0, 0.2),
    EnumCase("(a|b)c? s1", "regex", "(a|b)c?", 1, 1.0),
    EnumCase("[ab]{2} s2", "regex", "[ab]{2}", 2, 1.0),
    EnumCase("(0|1|2){1,2}-? s0", "regex", "(0|1|2){1,2}-?", 0, 1.0),
    EnumCase("(a|b|c){1,4} s1", "regex", "(a|b|c){1,4}", 1, 2.0),
    EnumCase("lark parens s9", "lark", 'start: "(" x ")" | x\nx: "a" | "b"', 9, 1.0),
    EnumCase("lark x x? s0", "lark", 'start: x x?\nx: "a" | "b" | "(" "a" ")"', 0, 2.0),
)


@dataclass
class EnumResult:
    """KL(exact || method) in nats for one :class:`EnumCase` (``inf`` where a sequence with exact mass
    got no sample or weight). ``curves`` holds the plotted points: ``{series: [(x, KL), ...]}``."""

    case: EnumCase
    support: int
    min_mass: float
    masked_kl: float
    smc_kl: dict[int, float]
    asap_empirical_kl: dict[int, float]
    asap_proposal_kl: dict[int, float]
    asap_nodes: int
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: float = 0.0


def _checkpoints(samples: Sequence[int]) -> list[int]:
    """The table's sample counts plus a 1-3-10 ladder below the largest, for the curves."""
    top = max(samples)
    ladder = [k for k in (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000) if k <= top]
    return sorted(set(ladder) | set(samples))


def run_enum_case(
    case: EnumCase,
    *,
    particles: Sequence[int] = (1, 4, 16, 64),
    budget: int = 4096,
    samples: Sequence[int] = (100, 1_000, 10_000),
    seed: int = 0,
) -> EnumResult:
    """Masked decoding, SMC and ASAp on one enumerable case, against the exact conditional.

    SMC: for each N in ``particles``, ``budget // N`` independent runs of N particles, their normalised
    weights added per sequence (every N spends ``budget`` particles). ASAp: one trie sampled up to
    ``max(samples)`` times; at each count the empirical KL of the samples so far and the exact KL of
    the trie's proposal. The masked curve draws from masked decoding's exact output distribution.
    """
    from constrain import Grammar, GrammarMatcher, compile
    from constrain.sampling.asap import ASApCore
    from constrain.sampling.enumerable import (
        TableLM,
        exact_conditional,
        kl_divergence,
        masked_decoding_distribution,
        toy_tokenizer_info,
    )
    from constrain.sampling.smc import smc_core

    t0 = time.perf_counter()
    grammar = Grammar.from_regex(case.source) if case.kind == "regex" else Grammar.from_lark(case.source)
    matcher = GrammarMatcher(compile(grammar, toy_tokenizer_info()))
    lm = TableLM(seed=case.seed, sharpness=case.sharpness)
    exact = exact_conditional(lm, matcher)
    masked = masked_decoding_distribution(lm, matcher)
    masked_kl = kl_divergence(exact, masked)
    checkpoints = _checkpoints(samples)

    def batched(prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        return np.stack([lm.logprobs(p) for p in prefixes])

    smc_kl: dict[int, float] = {}
    for n in particles:
        rng = np.random.default_rng([seed, n])
        agg: dict[tuple[int, ...], float] = {}
        for _ in range(max(1, budget // n)):
            res = smc_core(batched, matcher, particles=n, rng=rng)
            if not res.particles:
                continue
            for particle, w in zip(res.particles, res.weights(), strict=True):
                agg[particle.token_ids] = agg.get(particle.token_ids, 0.0) + float(w)
        smc_kl[n] = kl_divergence(exact, agg)

    # masked decoding sampled: its empirical KL levels off at the exact (biased) value
    rng = np.random.default_rng([seed, 1])
    keys = list(masked)
    probs = np.array([masked[k] for k in keys])
    draws = rng.choice(len(keys), size=max(checkpoints), p=probs / probs.sum())
    masked_curve = [
        (k, kl_divergence(exact, {keys[i]: float(c) for i, c in enumerate(np.bincount(draws[:k]))}))
        for k in checkpoints
    ]

    core = ASApCore([EOS])
    rng = np.random.default_rng([seed, 2])
    counts: Counter[tuple[int, ...]] = Counter()
    emp: dict[int, float] = {}
    prop: dict[int, float] = {}
    for i in range(1, max(checkpoints) + 1):
        counts[tuple(core.sample(lm.logprobs, matcher, rng))] += 1
        if i in checkpoints:
            emp[i] = kl_divergence(exact, dict(counts))
            q = {s: math.exp(core.proposal_logprob(lm.logprobs, matcher, s)) for s in exact}
            prop[i] = kl_divergence(exact, q)

    return EnumResult(
        case=case,
        support=len(exact),
        min_mass=min(exact.values()),
        masked_kl=masked_kl,
        smc_kl=smc_kl,
        asap_empirical_kl={k: emp[k] for k in samples},
        asap_proposal_kl={k: prop[k] for k in samples},
        asap_nodes=core.num_nodes,
        curves={
            "masked (sampled)": masked_curve,
            "SMC": sorted(smc_kl.items()),
            "ASAp empirical": sorted(emp.items()),
            "ASAp proposal": sorted(prop.items()),
        },
        seconds=time.perf_counter() - t0,
    )


def _kl(x: float) -> str:
    if math.isinf(x):
        return "inf"
    if x < 1e-12:  # rounding leaves |KL| ~ 1e-16 where the distributions are equal
        return "0"
    return f"{x:.4f}" if x >= 1e-4 else f"{x:.1e}"


def print_part_a(results: Sequence[EnumResult], *, budget: int, threshold: float = 0.1) -> dict[str, bool]:
    """Print the Part A table and its two checks; returns ``{"asap_le_0.01": ..., "smc_falls": ...}``."""
    ns = sorted({n for r in results for n in r.smc_kl})
    ks = sorted({k for r in results for k in r.asap_empirical_kl})
    headers = ["case", "seqs", "min mass", "masked", *(f"SMC N={n}" for n in ns)]
    headers += [f"ASAp {k:,} emp/prop" for k in ks]
    rows = [
        [
            r.case.name,
            str(r.support),
            f"{r.min_mass:.0e}",
            _kl(r.masked_kl),
            *(_kl(r.smc_kl[n]) for n in ns),
            *(f"{_kl(r.asap_empirical_kl[k])} / {_kl(r.asap_proposal_kl[k])}" for k in ks),
        ]
        for r in results
    ]
    _say(
        f"\nPart A: KL(exact || method) in nats on enumerable problems (TableLM, toy vocabulary). SMC: "
        f"{budget:,} particles per N ({budget:,}/N runs, weights added); ASAp: empirical KL of the samples / "
        "exact KL of the trie's proposal"
    )
    print_table(headers, rows)
    top = max(ks)
    biased = [r for r in results if r.masked_kl > threshold]
    prop_ok = all(r.asap_proposal_kl[top] <= 0.01 for r in biased)
    emp_ok = [r for r in biased if r.asap_empirical_kl[top] <= 0.01]
    emp_inf = [r.case.name for r in biased if math.isinf(r.asap_empirical_kl[top])]
    _say(
        f"check: ASAp's proposal KL <= 0.01 after {top:,} samples on every case with masked KL > {threshold} "
        f"({len(biased)} cases): {'yes' if prop_ok else 'NO'}; empirical KL <= 0.01 on {len(emp_ok)} of them"
        + (f" (infinite on {', '.join(emp_inf)}: strings below 1/{top:,} mass unsampled)" if emp_inf else "")
    )
    falls = {}
    for r in results:
        values = [r.smc_kl[n] for n in ns]
        falls[r.case.name] = all(math.isfinite(v) for v in values) and all(
            a > b for a, b in itertools.pairwise(values)
        )
    finite = [r for r in results if all(math.isfinite(r.smc_kl[n]) for n in ns)]
    smc_ok = all(falls[r.case.name] for r in finite) and bool(finite)
    _say(
        f"check: SMC's KL falls strictly with N on every case where it is finite at every N "
        f"({len(finite)} of {len(results)}): {'yes' if smc_ok else 'NO'}"
        + (
            "; not finite (strings below 1/budget mass never drawn): "
            + ", ".join(r.case.name for r in results if r not in finite)
            if len(finite) < len(results)
            else ""
        )
    )
    return {"asap_proposal_le_0.01": prop_ok, "smc_falls_with_n": smc_ok}


def plot_curves(results: Sequence[EnumResult], path: str | Path, *, budget: int) -> Path:
    """KL versus samples, log-log, one panel per method (masked, SMC, ASAp), one line per case;
    infinite KLs are left out and zeros drawn at 1e-8. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-8
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = (
        ("masked decoding (samples; dashed: exact KL)", ("masked (sampled)",), "samples"),
        (f"SMC over AWRS ({budget:,} particles per N)", ("SMC",), "particles per run N"),
        ("ASAp (solid: empirical; dashed: trie proposal)", ("ASAp empirical", "ASAp proposal"), "samples"),
    )
    for ax, (title, series, xlabel) in zip(axes, panels, strict=True):
        for i, r in enumerate(results):
            color = colors[i % len(colors)]
            label: str | None = r.case.name  # on the first series drawn (an infinite one is not)
            for j, name in enumerate(series):
                pts = [(x, max(y, floor)) for x, y in r.curves[name] if math.isfinite(y)]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(
                        xs,
                        ys,
                        marker="o",
                        ms=3,
                        color=color,
                        linestyle="--" if j else "-",
                        label=label,
                    )
                    label = None
            if series == ("masked (sampled)",):
                ax.axhline(max(r.masked_kl, floor), color=color, linestyle="--", linewidth=0.8)
        ax.axhline(0.01, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KL(exact || method), nats (0 drawn at 1e-8)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ==========================================================================================================
# Part B: a real model
# ==========================================================================================================

#: The README's example schema (the ``generate_json`` example).
README_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
README_PROMPT = "Ada Lovelace was 36. Her record as JSON:"
JSON_PROMPT = "Write one JSON object that is valid against this JSON Schema:\n{schema}"
LARK_PROMPT = "Write one example JSON value."

#: The MaskBench sample unpacked beside the archives in the shared folder.
DEFAULT_MASKBENCH_SAMPLE = harness.shared_dir() / "data" / "jsonschemabench" / "maskbench" / "data"


@dataclass(frozen=True)
class ModelCase:
    """One Part B constraint: ``group`` is "maskbench", "recursive" or "lark"; ``schema`` (JSON Schema)
    or ``lark`` (a shipped grammar's name)."""

    name: str
    group: str
    prompt: str
    schema: Any = None
    lark: str | None = None


@dataclass
class ModelResult:
    """One method on one :class:`ModelCase`: the stats of the first repeat, the time per output token
    pooled over the repeats (seeds ``seed``, ``seed + 1``, ...: the same seeds for both methods), whether
    the first output validated (None for a grammar), and the mean time of this method's sampling step
    (mask or AWRS, with the sampling) on one shared token path (:func:`replay_step_costs`)."""

    case: ModelCase
    method: str
    output_tokens: int
    forced_tokens: int
    awrs_steps: int
    constraint_checks: int
    mask_fallbacks: int
    tpot_ms: float
    tpot_all_ms: list[float]
    valid: bool | None
    text: str
    path_step_ms: float = float("nan")
    path_steps: int = 0


def _json_prompt(schema: Any) -> str:
    """The prompt of a schema case: the schema itself, as a user of structured generation writes it."""
    return JSON_PROMPT.format(schema=json.dumps(schema))


def maskbench_cases(path: str | Path, limit: int, *, compile_timeout_s: float = 20.0) -> list[ModelCase]:
    """``limit`` MaskBench schemas that compile and have no ``$ref`` cycle, one per subset in turn
    (subsets and files in name order), so that the pick is the same on every run."""
    from constrain import Grammar
    from constrain.json_schema import has_ref_cycle

    suite = suites.load_maskbench(harness.require_path(path, "the MaskBench sample", "--maskbench"))
    by_subset: dict[str, list[Any]] = {}
    for c in suite.cases:
        by_subset.setdefault(c.file, []).append(c)
    queues = [by_subset[k] for k in sorted(by_subset)]
    out: list[ModelCase] = []
    while len(out) < limit and any(queues):
        for q in queues:
            while q and len(out) < limit:
                c = q.pop(0)
                try:
                    if has_ref_cycle(c.schema, draft=c.draft):
                        continue
                    with harness.deadline(compile_timeout_s):
                        Grammar.from_json_schema(c.schema, draft=c.draft)
                except (Exception, harness.Timeout):  # noqa: BLE001 - a schema we cannot use: skip it
                    continue
                out.append(
                    ModelCase(f"{c.file}/{c.group}", "maskbench", _json_prompt(c.schema), schema=c.schema)
                )
                break
    return out


def default_model_cases(maskbench: str | Path | None, limit: int) -> list[ModelCase]:
    """The MaskBench picks (none where ``maskbench`` is None), the four recursive schemas and the
    shipped Lark JSON grammar."""
    cases = maskbench_cases(maskbench, limit) if maskbench is not None and limit > 0 else []
    for name, schema in (("tree", TREE), ("linked_list", LINKED_LIST), ("any_json", ANY_JSON)):
        cases.append(ModelCase(name, "recursive", _json_prompt(schema), schema=schema))
    cases.append(ModelCase("comments", "recursive", _json_prompt(COMMENTS), schema=COMMENTS))
    cases.append(ModelCase("lark:json", "lark", LARK_PROMPT, lark="json"))
    return cases


def run_model_case(
    case: ModelCase,
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int = 48,
    repeats: int = 3,
    seed: int = 0,
    temperature: float = 1.0,
) -> dict[str, ModelResult]:
    """``method="masked"`` and ``"awrs"`` on one case, ``repeats`` times each (the order alternating),
    ``on_budget="complete"`` so that every run ends in the language. Returns ``{method: result}``."""
    from constrain import Grammar, compile
    from constrain.generation import OutputValidationError, generate, validate_json
    from constrain.models import tokenizer_info_for

    info = tokenizer_info_for(tokenizer)
    if case.lark is not None:
        grammar = Grammar.from_lark(name=case.lark)
    else:
        grammar = Grammar.from_json_schema(case.schema)
    compiled = compile(grammar, info)
    methods: tuple[Literal["masked", "awrs"], ...] = ("masked", "awrs")
    runs: dict[str, list[Any]] = {m: [] for m in methods}
    for r in range(repeats):
        for m in methods if r % 2 == 0 else methods[::-1]:
            runs[m].append(
                generate(
                    case.prompt,
                    grammar=compiled,
                    model=model,
                    tokenizer=tokenizer,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed + r,
                    on_budget="complete",
                    method=m,
                    return_stats=True,
                )
            )
    path_costs = replay_step_costs(
        compiled,
        model,
        tokenizer,
        case.prompt,
        runs["masked"][0].token_ids,
        temperature=temperature,
        seed=seed,
    )
    out: dict[str, ModelResult] = {}
    for name, results in runs.items():
        first = results[0]
        valid: bool | None = None
        if case.schema is not None:
            try:
                validate_json(first.text, case.schema)
                valid = True
            except OutputValidationError:
                valid = False
        s = first.stats
        tpots = [x.stats.time_per_output_token_s * 1e3 for x in results]
        pooled = sum(x.stats.total_time_s for x in results) / max(1, sum(len(x.token_ids) for x in results))
        out[name] = ModelResult(
            case=case,
            method=name,
            output_tokens=s.output_tokens,
            forced_tokens=s.forced_tokens,
            awrs_steps=s.awrs_steps,
            constraint_checks=s.constraint_checks,
            mask_fallbacks=s.mask_fallbacks,
            tpot_ms=pooled * 1e3,
            tpot_all_ms=tpots,
            valid=valid,
            text=first.text,
            path_step_ms=statistics.fmean(path_costs[name]) * 1e3 if path_costs[name] else float("nan"),
            path_steps=len(path_costs[name]),
        )
    return out


def replay_step_costs(
    compiled: Any,
    model: Any,
    tokenizer: Any,
    prompt: str,
    token_ids: Sequence[int],
    *,
    temperature: float,
    seed: int,
) -> dict[str, list[float]]:
    """The time of each method's sampling step on ONE token path (``token_ids``, an output of the
    masked loop), in seconds per step: ``masked`` fills the bitmask, applies it and samples, as the
    decoding loop's masked step does; ``awrs`` computes the log-probabilities and draws by AWRS, as its
    AWRS step does. The logits come from one forward pass over the whole path, and both matchers then
    take the path's token, so the two methods are timed on the same states and the same distributions
    (the end-to-end runs sample different texts, whose lengths and states differ). A loop's time per
    token is the forward pass's (the same for both here) plus this step."""
    import numpy as np
    import torch

    from constrain import GrammarMatcher
    from constrain.generation import TemperatureSampler, _awrs_logprobs, encode_prompt
    from constrain.kernels import allocate_token_bitmask, apply_token_bitmask_inplace
    from constrain.sampling.awrs import awrs_sample

    info = compiled.tokenizer_info
    ids = encode_prompt(tokenizer, prompt, None)
    with torch.no_grad():
        rows = model(torch.tensor([[*ids, *token_ids]])).logits[0, len(ids) - 1 : -1].float()
    sampler = TemperatureSampler(temperature)
    bitmask = allocate_token_bitmask(1, info.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    by_mask, by_awrs = GrammarMatcher(compiled), GrammarMatcher(compiled)
    costs: dict[str, list[float]] = {"masked": [], "awrs": []}
    for i, token in enumerate(token_ids):
        if by_mask.is_terminated():
            break
        for name in ("masked", "awrs") if i % 2 == 0 else ("awrs", "masked"):
            t0 = time.perf_counter()
            if name == "masked":
                row = rows[i].clone()
                by_mask.fill_next_token_bitmask(bitmask, 0)
                apply_token_bitmask_inplace(row, bitmask[0])
                sampler.sample(row, generator)
            else:
                lp = _awrs_logprobs(sampler, rows[i], info.vocab_size)
                awrs_sample(lp, by_awrs, rng, estimate_weight=False)
            costs[name].append(time.perf_counter() - t0)
        by_mask.accept_token(int(token))
        by_awrs.accept_token(int(token))
    return costs


def print_part_b(results: Sequence[dict[str, ModelResult]], vocab_size: int) -> dict[str, bool]:
    """Print the Part B table and its checks (AWRS checks per step <= 1% of the vocabulary on the
    MaskBench schemas; AWRS time per token <= masked on the recursive and Lark cases)."""
    headers = [
        "case",
        "group",
        "tokens (forced)",
        "AWRS steps",
        "checks/step",
        "% of vocab",
        "fallbacks",
        "TPOT masked ms",
        "TPOT AWRS ms",
        "AWRS/masked",
        "step masked ms",
        "step AWRS ms",
        "step AWRS/masked",
        "valid m/a",
    ]
    rows = []
    for res in results:
        a, mk = res["awrs"], res["masked"]
        per = a.constraint_checks / a.awrs_steps if a.awrs_steps else float("nan")
        valid = "-" if a.valid is None else f"{'y' if mk.valid else 'n'}/{'y' if a.valid else 'n'}"
        rows.append(
            [
                a.case.name,
                a.case.group,
                f"{a.output_tokens} ({a.forced_tokens})",
                str(a.awrs_steps),
                fmt(per, 2),
                f"{100 * per / vocab_size:.4f}" if per == per else "-",
                str(a.mask_fallbacks),
                fmt(mk.tpot_ms, 1),
                fmt(a.tpot_ms, 1),
                f"{a.tpot_ms / mk.tpot_ms:.2f}" if mk.tpot_ms > 0 else "-",
                fmt(mk.path_step_ms, 3),
                fmt(a.path_step_ms, 3),
                f"{a.path_step_ms / mk.path_step_ms:.2f}" if mk.path_step_ms > 0 else "-",
                valid,
            ]
        )
    _say(
        f"\nPart B: AWRS vs full masking with the model (vocabulary {vocab_size:,}); checks/step = matcher "
        "checks per AWRS-sampled token; TPOT = time per output token end to end, pooled over the repeats "
        "(seeds s, s+1, ..., the same for both methods; the two methods sample different texts); step = "
        "mean time of the sampling step alone (mask + sample, or AWRS) on ONE shared token path, where the "
        "forward pass is the same for both, so that the TPOTs on that path differ by exactly the steps' "
        "difference"
    )
    print_table(headers, rows)
    mb = [r["awrs"] for r in results if r["awrs"].case.group == "maskbench"]
    steps = sum(a.awrs_steps for a in mb)
    mean = sum(a.constraint_checks for a in mb) / steps if steps else float("nan")
    checks_ok = bool(mb) and all(
        a.awrs_steps == 0 or a.constraint_checks / a.awrs_steps <= 0.01 * vocab_size for a in mb
    )
    _say(
        f"check: AWRS checks per step <= 1% of the vocabulary ({0.01 * vocab_size:,.0f}) on every MaskBench "
        f"schema ({len(mb)}; pooled mean {fmt(mean, 2)} = {100 * mean / vocab_size:.4f}%): "
        f"{'yes' if checks_ok else 'NO'}"
    )
    heavy = [r for r in results if r["awrs"].case.group in ("recursive", "lark")]
    slower = [r["awrs"].case.name for r in heavy if r["awrs"].path_step_ms > r["masked"].path_step_ms]
    time_ok = bool(heavy) and not slower
    _say(
        f"check: AWRS time per token <= masked on every recursive and Lark case ({len(heavy)}), on the "
        f"shared token path: {'yes' if time_ok else 'NO'}"
        + (f" (slower on {', '.join(slower)})" if slower else "")
    )
    e2e = [r["awrs"].case.name for r in heavy if r["awrs"].tpot_ms > r["masked"].tpot_ms]
    _say(
        "end to end (different texts, so noisier): AWRS TPOT <= masked on "
        f"{len(heavy) - len(e2e)} of {len(heavy)} recursive and Lark cases"
        + (f" (above on {', '.join(e2e)})" if e2e else "")
    )
    return {"awrs_checks_le_1pct": checks_ok, "awrs_tpot_le_masked": time_ok}


# ==========================================================================================================
# Part C: AWRS against masking on the same text (coupled)
# ==========================================================================================================


@dataclass
class CoupledRun:
    """One method's run in :func:`coupled_lockstep`: the output, its time per token after the first
    (forward pass and step, as the loop's ``time_per_output_token_s``), the mean time of the
    constraint-and-sampling step alone, AWRS's checks (mask lookups for the masked loop) and mask
    fallbacks, and each token's time."""

    token_ids: list[int]
    tpot_s: float
    step_s: float
    checks: int
    fallbacks: int
    token_s: list[float] = field(default_factory=list)


class _CoupledLoop:
    """The decoding loop with ``speculate=False`` (one forward pass per token), one token per
    :meth:`step`, drawn by ``method`` from the seed's stream: ``awrs`` is the loop's AWRS step
    (:func:`~constrain.sampling.awrs.awrs_sample`, token only); ``masked`` fills the full mask as the
    masked loop does and takes the first allowed token of the same candidate order
    (:func:`~constrain.sampling.awrs.masked_sample_like_awrs`)."""

    def __init__(
        self,
        model: Any,
        compiled: Any,
        prompt_ids: Sequence[int],
        method: Literal["masked", "awrs"],
        seed: int,
        temperature: float,
    ) -> None:
        from constrain import GrammarMatcher
        from constrain.generation import ModelRunner, TemperatureSampler
        from constrain.kernels import allocate_token_bitmask

        self.method = method
        self.info = compiled.tokenizer_info
        self.matcher = GrammarMatcher(compiled)
        self.sampler = TemperatureSampler(temperature)
        self.rng = np.random.default_rng(seed)
        self.bitmask = allocate_token_bitmask(1, self.info.vocab_size)
        self.runner = ModelRunner(model)
        self.out: list[int] = []
        self.pending = [int(t) for t in prompt_ids]
        self.times: list[float] = []
        self.step_s = 0.0
        self.checks = self.fallbacks = 0

    def done(self, max_new_tokens: int) -> bool:
        return self.matcher.must_end() or len(self.out) >= max_new_tokens

    def forward(self) -> Any:
        """This loop's own forward pass over its pending token: the next logits row."""
        return self.runner.forward(self.pending)[0]

    def step(self, row: Any = None, forward_s: float = 0.0) -> int:
        """One token: this loop's own forward pass (``row`` None), or ``row`` computed elsewhere in
        ``forward_s`` seconds (a shared forward pass); then the draw. Returns the token."""
        from constrain.exceptions import ConstrainError
        from constrain.generation import _awrs_logprobs
        from constrain.sampling.awrs import awrs_sample, masked_sample_like_awrs

        t0 = time.perf_counter()
        if row is None:
            row = self.forward()
            forward_s = time.perf_counter() - t0
        ts = time.perf_counter()
        lp = _awrs_logprobs(self.sampler, row, self.info.vocab_size)
        if self.method == "awrs":
            draw = awrs_sample(lp, self.matcher, self.rng, estimate_weight=False)
        else:
            self.matcher.fill_next_token_bitmask(self.bitmask, 0)
            draw = masked_sample_like_awrs(lp, self.bitmask[0].numpy(), self.rng)
        if not self.matcher.accept_token(draw.token):
            raise ConstrainError(f"token {draw.token} drawn by {self.method} was rejected by the matcher")
        step = time.perf_counter() - ts
        self.step_s += step
        self.times.append(forward_s + step)
        self.checks += draw.checks
        self.fallbacks += draw.used_mask
        self.out.append(draw.token)
        self.pending = [draw.token]
        return draw.token

    def result(self) -> CoupledRun:
        n = len(self.out)
        tpot = sum(self.times[1:]) / (n - 1) if n > 1 else 0.0
        return CoupledRun(
            list(self.out), tpot, self.step_s / max(1, n), self.checks, self.fallbacks, list(self.times)
        )


def coupled_lockstep(
    model: Any,
    compiled: dict[str, Any],
    prompt_ids: Sequence[int],
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    share_forward: bool = False,
) -> tuple[dict[str, CoupledRun], bool]:
    """The masked loop and the AWRS loop (``compiled``: each one's compiled grammar) decoding side by
    side from one seed, one token each in turn (the first to go alternating between steps), so that a
    change in the machine's load falls on both alike. Both draw exact samples of the masked
    distribution from one candidate order, so they decode the same text (the AWRS loop is
    ``generate(method="awrs", speculate=False, seed=seed)`` token for token). ``share_forward``: one
    forward pass per token, timed once and charged to both (the same computation, since the texts are
    the same), so that the two times per token differ by exactly the steps' difference. Returns
    ``({method: run}, same)``, ``same`` False where the two drew different tokens (both stop there)."""
    from constrain.generation import ModelRunner

    loops = {
        m: _CoupledLoop(model, compiled[m], prompt_ids, m, seed, temperature) for m in ("masked", "awrs")
    }
    shared = ModelRunner(model) if share_forward else None
    pending = [int(t) for t in prompt_ids]
    same = True
    i = 0
    while not loops["masked"].done(max_new_tokens) and not loops["awrs"].done(max_new_tokens):
        order = ("masked", "awrs") if i % 2 == 0 else ("awrs", "masked")
        if shared is not None:
            t0 = time.perf_counter()
            row = shared.forward(pending)[0]
            forward_s = time.perf_counter() - t0
            drawn = {m: loops[m].step(row, forward_s) for m in order}
        else:
            drawn = {m: loops[m].step() for m in order}
        i += 1
        if drawn["masked"] != drawn["awrs"]:
            same = False
            break
        pending = [drawn["masked"]]
    same = same and loops["masked"].out == loops["awrs"].out
    return {m: loop.result() for m, loop in loops.items()}, same


def coupled_decode(
    model: Any,
    compiled: Any,
    prompt_ids: Sequence[int],
    method: Literal["masked", "awrs"],
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float = 1.0,
) -> CoupledRun:
    """One method of :func:`coupled_lockstep` alone."""
    loop = _CoupledLoop(model, compiled, prompt_ids, method, seed, temperature)
    while not loop.done(max_new_tokens):
        loop.step()
    return loop.result()


@dataclass
class CoupledResult:
    """Both methods on one :class:`ModelCase`, coupled (the same text), every run cold (caches cleared
    and the grammar compiled again for each method before the run). Per mode (``"own"``: each loop its
    own forward passes; ``"shared"``: one forward pass per token charged to both) and method, the time
    per token after the first pooled over the repeats; per mode the paired difference AWRS - masked per
    token with its standard error; the step time alone; AWRS checks per token; whether every run
    decoded the same text with both methods."""

    case: ModelCase
    tokens: list[int]
    same_text: bool
    tpot_ms: dict[str, dict[str, float]]
    diff_ms: dict[str, tuple[float, float]]
    step_ms: dict[str, float]
    awrs_checks_per_token: float
    awrs_fallbacks: int


def _pooled_ms(runs: Sequence[CoupledRun]) -> float:
    times = [t for r in runs for t in r.token_s[1:]]
    return statistics.fmean(times) * 1e3 if times else float("nan")


def _paired_ms(masked: Sequence[CoupledRun], awrs: Sequence[CoupledRun]) -> tuple[float, float]:
    """Mean and standard error of AWRS's minus the masked loop's time, token by token (after the first)."""
    d = [
        a - m
        for rm, ra in zip(masked, awrs, strict=True)
        for m, a in zip(rm.token_s[1:], ra.token_s[1:], strict=False)
    ]
    if len(d) < 2:
        return float("nan"), float("nan")
    return statistics.fmean(d) * 1e3, statistics.stdev(d) / math.sqrt(len(d)) * 1e3


def run_coupled_case(
    case: ModelCase,
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int = 48,
    repeats: int = 3,
    seed: int = 0,
    temperature: float = 1.0,
) -> CoupledResult:
    """:func:`coupled_lockstep` ``repeats`` times (seeds ``seed``, ``seed + 1``, ...) in each mode, every
    run on two freshly compiled grammars (see :class:`CoupledResult`)."""
    from constrain import Grammar, compile
    from constrain.compiler import clear_caches
    from constrain.generation import encode_prompt
    from constrain.models import tokenizer_info_for

    info = tokenizer_info_for(tokenizer)
    if case.lark is not None:
        grammar = Grammar.from_lark(name=case.lark)
    else:
        grammar = Grammar.from_json_schema(case.schema)
    prompt_ids = encode_prompt(tokenizer, case.prompt, None)
    methods = ("masked", "awrs")
    modes = ("own", "shared")
    runs: dict[str, dict[str, list[CoupledRun]]] = {mode: {m: [] for m in methods} for mode in modes}
    same = True
    for r in range(repeats):
        for mode in modes:
            compiled: dict[str, Any] = {}
            for m in methods:  # each its own cold grammar: no mask or state built by the other
                clear_caches()
                compiled[m] = compile(grammar, info)
            got, ok = coupled_lockstep(
                model,
                compiled,
                prompt_ids,
                seed=seed + r,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                share_forward=mode == "shared",
            )
            same = same and ok
            for m in methods:
                runs[mode][m].append(got[m])
    if not same:
        _say(f"[part c] {case.name}: the two methods drew different tokens ('same text': NO)", err=True)
    every = {m: runs["own"][m] + runs["shared"][m] for m in methods}
    n = sum(len(x.token_ids) for x in every["awrs"])
    return CoupledResult(
        case=case,
        tokens=[len(x.token_ids) for x in runs["own"]["awrs"]],
        same_text=same,
        tpot_ms={mode: {m: _pooled_ms(runs[mode][m]) for m in methods} for mode in modes},
        diff_ms={mode: _paired_ms(runs[mode]["masked"], runs[mode]["awrs"]) for mode in modes},
        step_ms={m: sum(x.step_s * len(x.token_ids) for x in every[m]) / max(1, n) * 1e3 for m in methods},
        awrs_checks_per_token=sum(x.checks for x in every["awrs"]) / n if n else float("nan"),
        awrs_fallbacks=sum(x.fallbacks for x in runs["own"]["awrs"]),
    )


def print_coupled(results: Sequence[CoupledResult], vocab_size: int) -> dict[str, bool]:
    """Print the coupled table and its checks: the same text for both methods everywhere; AWRS's time
    per token <= the masked loop's on every recursive and Lark case, with a shared forward pass (the
    claim) and with each loop's own (the same, plus the forward passes' noise: also told whether the
    difference is within two standard errors)."""

    def ratio(d: dict[str, float]) -> str:
        return f"{d['awrs'] / d['masked']:.3f}" if d["masked"] > 0 else "-"

    headers = [
        "case",
        "group",
        "tokens/run",
        "same text",
        "AWRS checks/token",
        "% of vocab",
        "fallbacks",
        "own fwd: TPOT masked ms",
        "TPOT AWRS ms",
        "AWRS/masked",
        "AWRS-masked ms (se)",
        "shared fwd: TPOT masked ms",
        "TPOT AWRS ms",
        "AWRS/masked",
        "AWRS-masked ms (se)",
        "step masked ms",
        "step AWRS ms",
    ]
    rows = []
    for r in results:
        row = [
            r.case.name,
            r.case.group,
            ",".join(map(str, r.tokens)),
            "yes" if r.same_text else "NO",
            fmt(r.awrs_checks_per_token, 2),
            f"{100 * r.awrs_checks_per_token / vocab_size:.4f}",
            str(r.awrs_fallbacks),
        ]
        for mode in ("own", "shared"):
            d, se = r.diff_ms[mode]
            row += [
                fmt(r.tpot_ms[mode]["masked"], 2),
                fmt(r.tpot_ms[mode]["awrs"], 2),
                ratio(r.tpot_ms[mode]),
                f"{d:+.3f} ({se:.3f})",
            ]
        row += [fmt(r.step_ms["masked"], 3), fmt(r.step_ms["awrs"], 3)]
        rows.append(row)
    _say(
        "\nPart C: AWRS vs the masked loop decoding the SAME text, cold (coupled: one forward pass per "
        "token, no drafts; each step draws the first allowed token of one shared candidate order, so "
        "both are exact samples of the masked distribution and pick the same token; the masked step "
        "fills the full mask, AWRS checks candidates; the two loops run side by side, a token each in "
        "turn, so the machine's load falls on both alike). TPOT = time per token after the first, "
        "forward pass included, pooled over the repeats; 'own fwd': each loop runs its own forward "
        "passes; 'shared fwd': one forward pass per token, timed once and charged to both (the same "
        "computation on the same text), so the TPOTs differ by the steps alone; AWRS-masked = the "
        "paired difference per token (standard error); step = the constraint-and-sampling step alone; "
        "cold = caches cleared and the grammar compiled again for each method before each run"
    )
    print_table(headers, rows)
    same_ok = all(r.same_text for r in results)
    _say(f"check: both methods decoded the same text on every case and repeat: {'yes' if same_ok else 'NO'}")
    heavy = [r for r in results if r.case.group in ("recursive", "lark")]
    out: dict[str, bool] = {"coupled_same_text": same_ok}
    for mode, label in (
        ("shared", "one forward pass per token"),
        ("own", "each loop its own forward passes"),
    ):
        slower = [r.case.name for r in heavy if r.tpot_ms[mode]["awrs"] > r.tpot_ms[mode]["masked"]]
        ok = bool(heavy) and not slower
        line = (
            f"check: AWRS time per token <= the masked loop's on every recursive and Lark case "
            f"({len(heavy)}), same text, {label}: {'yes' if ok else 'NO'}"
        )
        if slower:
            noise = [r.case.name for r in heavy if r.diff_ms[mode][0] > 2 * r.diff_ms[mode][1]]
            line += f" (above on {', '.join(slower)}; by more than 2 standard errors on "
            line += f"{', '.join(noise) if noise else 'none'})"
        _say(line)
        if mode == "shared":
            out["coupled_awrs_tpot_le_masked"] = ok
    return out


# ==========================================================================================================
# genlm-control
# ==========================================================================================================

#: genlm-control 0.4.1's requirements and those of its genlm-* dependencies (their wheels' Requires-Dist,
#: extras left out), read from ``pip download --no-deps``; checked here against the running environment.
GENLM_CONTROL_REQUIRES: tuple[str, ...] = (
    "genlm-grammar>=0.2.0",
    "genlm-backend>=0.3.0",
    "genlm-bytes>=0.2.0",
    "arsenal>=3.1.3",
    "ipython",
    "numpy<2.5",
    "torch",
    "transformers>=5,<6",
    "accelerate",
    "bitsandbytes",
    "sentencepiece",
    "protobuf",
    "numba",
    "json-stream",
    "jsonschema",
    "regex",
    "frozendict",
    "interegular",
    "lark",
    "nltk",
    "graphviz",
    "pandas",
)


def genlm_control_status() -> tuple[bool, str]:
    """Whether genlm-control can be imported here, and one line saying why not (or its version)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    if (
        importlib.util.find_spec("genlm") is not None
        and importlib.util.find_spec("genlm.control") is not None
    ):
        return True, f"genlm-control {metadata.version('genlm-control')} is installed"
    missing, wrong = [], []
    for spec in GENLM_CONTROL_REQUIRES:
        req = Requirement(spec)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req.name} {version} (needs {req.specifier})")
    line = (
        "genlm-control not run: it is not installed in this venv, and installing it would change the venv, "
        f"which this bench never does: it needs {len(missing)} distributions the venv lacks "
        f"({', '.join(missing)}; pip's resolver adds their own dependencies too)"
    )
    if wrong:
        line += f" and conflicts with {', '.join(wrong)}"
    else:
        line += "; torch, transformers and numpy already satisfy its pins (no vllm needed)"
    return False, line


#: The cases genlm-control's arm runs by default (recursive schemas and the Lark JSON grammar).
GENLM_CASES = ("tree", "lark:json")


@dataclass
class GenlmOutcome:
    """What :func:`run_genlm_arm` got: ``ran`` False with ``why`` one line saying exactly why not, else
    ``cases``: per case name, genlm-control's runs (``tokens``, ``seconds``, ``checks``, ``text``, or
    ``error``) as ``genlm_arm.py`` wrote them; ``version`` its version."""

    ran: bool
    why: str
    version: str = ""
    cases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0


def run_genlm_arm(
    python: str | Path,
    model_dir: str | Path,
    cases: Sequence[ModelCase],
    tokenizer: Any,
    *,
    max_tokens: int = 8,
    repeats: int = 1,
    seed: int = 0,
    timeout_s: float = 900.0,
) -> GenlmOutcome:
    """Run ``genlm_arm.py`` (genlm-control's AWRS, in its own venv) with the interpreter ``python`` on
    ``cases`` (their prompts encoded as this bench encodes them; a Lark case gets the shipped grammar's
    text), ``max_tokens`` tokens each, one subprocess in all, killed after ``timeout_s`` seconds. Never
    raises for the peer: a missing interpreter, a failed import, a crash or a timeout comes back as
    ``ran=False`` with the reason."""
    import os
    import subprocess

    from constrain import Grammar
    from constrain.generation import encode_prompt

    exe = Path(python)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        return GenlmOutcome(False, f"genlm-control not run: {exe} is not an executable interpreter")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        probe = subprocess.run(
            [str(exe), "-c", "import genlm.control"], capture_output=True, text=True, timeout=300, env=env
        )
    except subprocess.TimeoutExpired:
        return GenlmOutcome(False, f"genlm-control not run: importing it under {exe} took over 300 s")
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        return GenlmOutcome(False, f"genlm-control not run: `import genlm.control` fails under {exe}: {tail}")
    spec_cases = []
    for c in cases:
        entry: dict[str, Any] = {"name": c.name, "prompt_ids": encode_prompt(tokenizer, c.prompt, None)}
        if c.lark is not None:
            entry["lark"] = str(Grammar.from_lark(name=c.lark).source)
        else:
            entry["schema"] = c.schema
        spec_cases.append(entry)
    spec = {"model": str(model_dir), "max_tokens": max_tokens, "seed": seed, "repeats": repeats}
    spec["cases"] = spec_cases
    arm = Path(__file__).with_name("genlm_arm.py")
    with tempfile.TemporaryDirectory(prefix="genlm_arm_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [str(exe), str(arm), str(spec_path), str(out_path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return GenlmOutcome(
                False,
                f"genlm-control not run to the end: its arm ({len(cases)} cases x {max_tokens} tokens) "
                f"passed the {timeout_s:.0f} s timeout (--genlm-timeout)",
            )
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out_path.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "(no message)"
            return GenlmOutcome(
                False, f"genlm-control's arm failed (exit status {proc.returncode}): {tail[:400]}"
            )
        result = json.loads(out_path.read_text())
    return GenlmOutcome(
        True,
        f"genlm-control {result.get('version', '?')} ran under {exe} ({seconds:.0f} s with the model load)",
        version=str(result.get("version", "")),
        cases=result.get("cases", {}),
        seconds=seconds,
    )


def print_genlm(outcome: GenlmOutcome, ours: dict[str, dict[str, ModelResult]]) -> None:
    """genlm-control's time per token and checks beside this bench's AWRS and masked loop on the same
    cases (``ours``: Part B's results by case name), or the line saying why it did not run."""
    _say(f"\ngenlm-control: {outcome.why}")
    if not outcome.ran:
        return
    headers = [
        "case",
        "genlm tokens",
        "genlm s/token",
        "genlm checks/token",
        "ours AWRS ms/token",
        "ours masked ms/token",
        "ours AWRS checks/token",
        "genlm output",
    ]
    rows = []
    for name, runs in outcome.cases.items():
        mine = ours.get(name)
        a = mine["awrs"] if mine else None
        m = mine["masked"] if mine else None
        ok = [r for r in runs if "error" not in r]
        tokens = sum(r["tokens"] for r in ok)
        if not ok:
            rows.append([name, "-", "-", "-", "-", "-", "-", runs[0].get("error", "?")[:90] if runs else "-"])
            continue
        rows.append(
            [
                name,
                str(tokens),
                fmt(sum(r["seconds"] for r in ok) / max(1, tokens), 2),
                fmt(sum(r.get("checks", 0) for r in ok) / max(1, tokens), 2),
                fmt(a.tpot_ms, 1) if a else "-",
                fmt(m.tpot_ms, 1) if m else "-",
                fmt(a.constraint_checks / a.awrs_steps, 2) if a and a.awrs_steps else "-",
                json.dumps(ok[0]["text"])[:60],
            ]
        )
    _say(
        "genlm-control's AWRS (its SMC driver with one particle, its JsonSchema / BoolCFG potential "
        "coerced to the model's tokens, proper weights: it checks one candidate past the accepted one) "
        "against this bench's loops on the same prompts; s/token = its whole run over its tokens, the "
        "prompt's forward pass included, as ours (Part B, pooled over the repeats)"
    )
    print_table(headers, rows)


# ==========================================================================================================
# The command
# ==========================================================================================================


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sampling`` on a ``bench`` subparsers action (or any CLI's); sets ``func``."""
    p = subparsers.add_parser(
        "sampling",
        help="KL to the exact conditional (masked, SMC, ASAp) and AWRS vs masking with a model",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _options(p)
    p.set_defaults(func=run_from_args)
    return p


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=("a", "b", "all"), default="all", help="which part to run (default all)")
    p.add_argument(
        "--particles", default="1,4,16,64", metavar="N,..", help="SMC particle counts (default 1,4,16,64)"
    )
    p.add_argument(
        "--budget", type=int, default=4096, metavar="P", help="SMC particles in all per N (default 4096)"
    )
    p.add_argument(
        "--samples",
        default="100,1000,10000",
        metavar="K,..",
        help="ASAp sample counts (default 100,1000,10000)",
    )
    p.add_argument(
        "--cases", metavar="SUBSTR,..", help="Part A: only the cases whose name contains one of these"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every sampler (default 0)")
    p.add_argument(
        "--png", metavar="OUT.png", help="the KL curves (default: sampling_kl.png in --out, else /tmp)"
    )
    p.add_argument("--out", metavar="DIR", help="folder for the default PNG")
    p.add_argument("--json", metavar="OUT.json", help="write the numbers as JSON")
    p.add_argument(
        "--model", default="default", metavar="PATH", help="'default' (SmolLM2-135M) or a model folder"
    )
    p.add_argument(
        "--limit", type=int, default=5, metavar="N", help="Part B: MaskBench-sample schemas (default 5)"
    )
    p.add_argument(
        "--maskbench",
        default=str(DEFAULT_MASKBENCH_SAMPLE),
        metavar="PATH",
        help="the MaskBench sample folder (default ../shared/data/jsonschemabench/maskbench/data)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=48, metavar="M", help="Part B: output budget (default 48)"
    )
    p.add_argument("--repeats", type=int, default=3, metavar="R", help="Part B: runs per method (default 3)")
    p.add_argument("--threads", type=int, default=None, metavar="T", help="Part B: torch threads")
    p.add_argument(
        "--coupled-repeats",
        type=int,
        default=3,
        metavar="R",
        help="Part C (AWRS vs masked on the same text): seeds per case, each cold and warm "
        "(default 3; 0 skips)",
    )
    p.add_argument(
        "--genlm-python",
        metavar="PATH",
        help="the python of a venv with genlm-control (pip install torch==2.13.0 genlm-control): run its "
        "AWRS on the same prompts in a subprocess and print it beside ours",
    )
    p.add_argument(
        "--genlm-cases",
        default=",".join(GENLM_CASES),
        metavar="NAME,..",
        help=f"genlm-control's cases (default {','.join(GENLM_CASES)})",
    )
    p.add_argument(
        "--genlm-tokens", type=int, default=8, metavar="M", help="genlm-control: tokens per case (default 8)"
    )
    p.add_argument(
        "--genlm-timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="genlm-control: seconds for its whole arm, model load included (default 900)",
    )


def _ints(text: str, flag: str) -> list[int]:
    from constrain.exceptions import InvalidInputError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InvalidInputError(f"{flag} takes positive integers, got {text!r}")
    return values


def run_from_args(args: argparse.Namespace) -> int:
    """Run the parts ``args`` asks for and print their tables; 0 when every check printed passed, 1
    otherwise."""
    payload: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    if args.part in ("a", "all"):
        particles = _ints(args.particles, "--particles")
        samples = _ints(args.samples, "--samples")
        cases = [
            c for c in DEFAULT_CASES if not args.cases or any(s in c.name for s in args.cases.split(","))
        ]
        results = []
        for c in cases:
            r = run_enum_case(c, particles=particles, budget=args.budget, samples=samples, seed=args.seed)
            _say(f"[part a] {c.name}: {r.support} sequences, {r.seconds:.1f} s", err=True)
            results.append(r)
        checks.update(print_part_a(results, budget=args.budget))
        png = args.png or str(Path(args.out or tempfile.gettempdir()) / "sampling_kl.png")
        _say(f"KL curves: {plot_curves(results, png, budget=args.budget)}")
        payload["part_a"] = [
            {
                "case": r.case.__dict__,
                "support": r.support,
                "min_mass": r.min_mass,
                "masked_kl": r.masked_kl,
                "smc_kl": r.smc_kl,
                "asap_empirical_kl": r.asap_empirical_kl,
                "asap_proposal_kl": r.asap_proposal_kl,
                "asap_nodes": r.asap_nodes,
                "seconds": r.seconds,
            }
            for r in results
        ]
    if args.part in ("b", "all"):
        payload["part_b"] = _run_part_b(args, checks)
    else:
        _, line = genlm_control_status()
        _say(line)
        payload["genlm_control"] = line
    payload["checks"] = checks
    if args.json:
        write_json(args.json, json.loads(json.dumps(payload, default=str)))
    return 0 if all(checks.values()) else 1


def _run_part_b(args: argparse.Namespace, checks: dict[str, bool]) -> dict[str, Any]:
    import torch

    from constrain.generation import generate_json
    from constrain.models import default_model, load_model, tokenizer_info_for

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = default_model() if args.model == "default" else load_model(args.model)
    vocab = tokenizer_info_for(tokenizer).vocab_size
    maskbench = args.maskbench if args.limit > 0 else None
    results = []
    for case in default_model_cases(maskbench, args.limit):
        t0 = time.perf_counter()
        res = run_model_case(
            case, model, tokenizer, max_new_tokens=args.max_new_tokens, repeats=args.repeats, seed=args.seed
        )
        _say(f"[part b] {case.name}: {time.perf_counter() - t0:.1f} s", err=True)
        results.append(res)
    checks.update(print_part_b(results, vocab))
    coupled = []
    if args.coupled_repeats > 0:
        # the recursive and Lark cases: the claim under test (MaskBench's checks are Part B's)
        for case in default_model_cases(None, 0):
            t0 = time.perf_counter()
            coupled.append(
                run_coupled_case(
                    case,
                    model,
                    tokenizer,
                    max_new_tokens=args.max_new_tokens,
                    repeats=args.coupled_repeats,
                    seed=args.seed,
                )
            )
            _say(f"[part c] {case.name}: {time.perf_counter() - t0:.1f} s", err=True)
        checks.update(print_coupled(coupled, vocab))
    t0 = time.perf_counter()
    value = generate_json(
        README_SCHEMA,
        README_PROMPT,
        method="smc",
        particles=8,
        seed=args.seed,
        max_new_tokens=64,
        model=model,
        tokenizer=tokenizer,
    )
    _say(
        f'generate_json(README schema, "{README_PROMPT}", method="smc", particles=8): '
        f"{json.dumps(value)} (valid; {time.perf_counter() - t0:.1f} s)"
    )
    genlm = _genlm_part(args, tokenizer, {res["awrs"].case.name: res for res in results})
    return {
        "vocab_size": vocab,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "cases": [
            {
                m: {k: v for k, v in r.__dict__.items() if k != "case"} | {"case": r.case.name}
                for m, r in res.items()
            }
            for res in results
        ],
        "coupled": [
            {k: v for k, v in r.__dict__.items() if k != "case"} | {"case": r.case.name} for r in coupled
        ],
        "smc_readme": value,
        "genlm_control": genlm.__dict__,
    }


def _genlm_part(
    args: argparse.Namespace, tokenizer: Any, ours: dict[str, dict[str, ModelResult]]
) -> GenlmOutcome:
    """genlm-control's arm where ``--genlm-python`` names an interpreter, else why it did not run."""
    from constrain.models import ensure_default_model

    if not args.genlm_python:
        ok, line = genlm_control_status()
        if not ok:
            line += (
                "; pass --genlm-python PATH (a venv with pip install torch==2.13.0 genlm-control) to run it "
                "in its own venv"
            )
        outcome = GenlmOutcome(False, line)
        print_genlm(outcome, ours)
        return outcome
    wanted = [x for x in args.genlm_cases.split(",") if x.strip()]
    by_name = {c.name: c for c in default_model_cases(None, 0)}
    unknown = [x for x in wanted if x not in by_name]
    if unknown:
        from constrain.exceptions import InvalidInputError

        raise InvalidInputError(f"--genlm-cases: unknown {', '.join(unknown)}; known: {', '.join(by_name)}")
    model_dir = ensure_default_model() if args.model == "default" else Path(args.model)
    outcome = run_genlm_arm(
        args.genlm_python,
        model_dir,
        [by_name[x] for x in wanted],
        tokenizer,
        max_tokens=args.genlm_tokens,
        seed=args.seed,
        timeout_s=args.genlm_timeout,
    )
    print_genlm(outcome, ours)
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/bench_sampling.py [options]``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _options(parser)
    return run_from_args(parser.parse_args(argv))
