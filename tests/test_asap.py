"""ASAp (constrain/sampling/asap.py) against exact enumeration (constrain/sampling/enumerable.py): the
empirical KL falls with the number of samples where masked decoding's stays above 0.1 nats, the trie's
proposal becomes the exact conditional once the trie covers the language, and every EFG estimate is an
upper bound. Then a short run with the real model."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest

from constrain import ConstrainError, Grammar, GrammarMatcher, InvalidInputError, compile
from constrain.sampling.asap import ASAp, ASApCore, asap
from constrain.sampling.enumerable import (
    TableLM,
    exact_conditional,
    kl_divergence,
    masked_decoding_distribution,
    toy_tokenizer_info,
)

EOS = 0


def _matcher(kind: str, source: str) -> GrammarMatcher:
    grammar = Grammar.from_regex(source) if kind == "regex" else Grammar.from_lark(source)
    return GrammarMatcher(compile(grammar, toy_tokenizer_info()))


def _true_efg(lm: TableLM, matcher: GrammarMatcher) -> dict[tuple[int, ...], float]:
    """The exact expected future grammaticality of every prefix of the (finite) language, by recursion
    over the matcher: the oracle for the estimates."""
    out: dict[tuple[int, ...], float] = {}

    def visit(m: GrammarMatcher, prefix: tuple[int, ...]) -> float:
        p = np.exp(lm.logprobs(prefix))
        total = 0.0
        for tok in m.allowed_token_ids().tolist():
            if tok == EOS:
                total += p[tok]
                continue
            child = m.fork()
            assert child.accept_token(tok)
            total += p[tok] * visit(child, (*prefix, tok))
        out[prefix] = total
        return total

    visit(matcher.fork(), ())
    return out


# Small supports (4-6 sequences, each with exact mass >= 0.02) so the empirical KL is finite from
# N = 100 on and its small-sample bias, about (support - 1) / (2N) = 2.5e-4 at N = 10,000, sits far
# below the 0.01 target; masked decoding's KL on each is 0.46-0.60 nats, 50x the target.
EMPIRICAL_CASES = [
    ("regex", "(a|b)c?", 1),
    ("regex", "[ab]{2}", 2),
    ("lark", 'start: "(" x ")" | x\nx: "a" | "b"', 9),
]


@pytest.mark.parametrize(("kind", "source", "seed"), EMPIRICAL_CASES)
def test_empirical_kl_falls_to_exact(kind: str, source: str, seed: int) -> None:
    lm = TableLM(seed=seed, sharpness=1.0)
    matcher = _matcher(kind, source)
    exact = exact_conditional(lm, matcher)
    masked_kl = kl_divergence(exact, masked_decoding_distribution(lm, matcher))
    assert masked_kl > 0.1
    core = ASApCore([EOS])
    rng = np.random.default_rng(0)
    counts: Counter[tuple[int, ...]] = Counter()
    kls = {}
    for n in range(1, 10_001):
        counts[tuple(core.sample(lm.logprobs, matcher, rng))] += 1
        if n in (100, 1_000, 10_000):
            kls[n] = kl_divergence(exact, counts)
    print(  # noqa: T201 - the KL figures, for the record (pytest -s)
        f"{kind} {source!r}: masked KL {masked_kl:.3f}; ASAp KL by N "
        + ", ".join(f"{n}: {k:.4f}" for n, k in kls.items())
    )
    assert set(counts) == set(exact)  # never outside the language
    assert kls[100] > kls[1_000] > kls[10_000]
    assert kls[10_000] <= 0.01
    assert core.num_nodes <= core.tokens_sampled + 1  # the memory bound


# Larger languages: the proposal's exact distribution (no sampling noise) after N samples. The first
# is the 231-sequence case (masked decoding 1.28 nats), whose rarest sequences have mass 1e-9: an
# empirical KL is infinite there at any practical N, the proposal's is not.
PROPOSAL_CASES = [
    ("regex", "(a|b|c){1,4}", 1),
    ("lark", 'start: x x?\nx: "a" | "b" | "(" "a" ")"', 0),
]


@pytest.mark.parametrize(("kind", "source", "seed"), PROPOSAL_CASES)
def test_proposal_kl_falls(kind: str, source: str, seed: int) -> None:
    lm = TableLM(seed=seed)
    matcher = _matcher(kind, source)
    exact = exact_conditional(lm, matcher)
    masked_kl = kl_divergence(exact, masked_decoding_distribution(lm, matcher))
    assert masked_kl > 0.1
    core = ASApCore([EOS])
    rng = np.random.default_rng(0)

    def proposal_kl() -> float:
        q = {s: math.exp(core.proposal_logprob(lm.logprobs, matcher, s)) for s in exact}
        assert sum(q.values()) == pytest.approx(1.0, abs=1e-12)  # a distribution over the language
        return kl_divergence(exact, q)

    kls = {0: proposal_kl()}
    assert kls[0] == pytest.approx(masked_kl, abs=1e-9)  # an empty trie proposes masked decoding
    for n in range(1, 3_001):
        core.sample(lm.logprobs, matcher, rng)
        if n in (10, 100, 1_000, 3_000):
            kls[n] = proposal_kl()
    print(  # noqa: T201 - the KL figures, for the record (pytest -s)
        f"{kind} {source!r}: masked KL {masked_kl:.3f}; proposal KL by N "
        + ", ".join(f"{n}: {k:.3g}" for n, k in kls.items())
    )
    values = list(kls.values())
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert kls[3_000] <= 0.01


# Languages whose trie sampling completes within a few thousand draws (masked KL 2.24 and 1.43 nats).
COMPLETE_CASES = [("regex", "(ab|ba|c)(a|b)?", 3), ("regex", "(a|b){1,3}", 0)]


@pytest.mark.parametrize(("kind", "source", "seed"), COMPLETE_CASES)
def test_complete_trie_is_exact(kind: str, source: str, seed: int) -> None:
    lm = TableLM(seed=seed)
    matcher = _matcher(kind, source)
    exact = exact_conditional(lm, matcher)
    true_efg = _true_efg(lm, matcher)
    core = ASApCore([EOS])
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        core.sample(lm.logprobs, matcher, rng)
        if core.num_nodes == len(true_efg):
            break
    estimates = dict(core.nodes())
    assert set(estimates) == set(true_efg)  # every prefix of the language was visited
    for prefix, value in estimates.items():
        assert value == pytest.approx(true_efg[prefix], rel=1e-12)
    for seq, p in exact.items():
        assert math.exp(core.proposal_logprob(lm.logprobs, matcher, seq)) == pytest.approx(p, rel=1e-10)


@pytest.mark.parametrize(("kind", "source", "seed"), PROPOSAL_CASES + COMPLETE_CASES)
def test_efg_estimates_are_upper_bounds(kind: str, source: str, seed: int) -> None:
    lm = TableLM(seed=seed)
    matcher = _matcher(kind, source)
    true_efg = _true_efg(lm, matcher)
    core = ASApCore([EOS])
    rng = np.random.default_rng(1)
    for _ in range(300):
        core.sample(lm.logprobs, matcher, rng)
        for prefix, value in core.nodes():
            assert value >= true_efg[prefix] * (1 - 1e-12)
    assert core.efg(()) == pytest.approx(core.root.efg)
    assert core.efg((15, 15, 15)) is None  # no node: its estimate is the initial 1


def test_max_tokens_conditions_on_length() -> None:
    # (a|b){1,3} cut to at most 2 tokens: the exact conditional restricted to those and renormalised.
    lm = TableLM(seed=0)
    matcher = _matcher("regex", "(a|b){1,3}")
    exact = {s: p for s, p in exact_conditional(lm, matcher).items() if len(s) <= 2}
    total = sum(exact.values())
    exact = {s: p / total for s, p in exact.items()}
    core = ASApCore([EOS], max_tokens=2)
    rng = np.random.default_rng(0)
    for _ in range(2_000):
        assert len(core.sample(lm.logprobs, matcher, rng)) <= 2
    for seq, p in exact.items():
        assert math.exp(core.proposal_logprob(lm.logprobs, matcher, seq)) == pytest.approx(p, rel=1e-9)
    assert core.proposal_logprob(lm.logprobs, matcher, (1, 1, 1)) == -math.inf


def test_no_reachable_output_raises() -> None:
    # "aaa" needs 3 tokens at least (no "aa" token): nothing fits in 2, and every path dead-ends.
    core = ASApCore([EOS], max_tokens=2)
    with pytest.raises(ConstrainError, match="max_tokens=2"):
        core.sample(TableLM(seed=0).logprobs, _matcher("regex", "aaa"), np.random.default_rng(0))
    assert core.root.efg == 0.0 and core.dead_ends > 0


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="eos_ids"):
        ASApCore([])
    with pytest.raises(InvalidInputError, match="max_tokens"):
        ASApCore([EOS], max_tokens=-1)


# ------------------------------------------------------------------------------------------------
# The real model (SmolLM2-135M on the CPU): a few tokens only


def test_asap_with_model(lm: tuple[Any, Any]) -> None:
    model, tokenizer = lm
    sampler = ASAp(
        "Two letters:",
        regex="[ab]{2}",
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=4,
        seed=0,
        chat=False,
    )
    first = sampler.sample(3)
    assert len(first) == 3 and all(re.fullmatch("[ab]{2}", s) for s in first)
    nodes, passes = sampler.core.num_nodes, sampler.forward_passes
    assert nodes > 1 and sampler.core.num_samples == 3
    assert nodes <= sampler.core.tokens_sampled + 1
    second = sampler.sample(3)
    assert all(re.fullmatch("[ab]{2}", s) for s in second)
    assert sampler.core.num_samples == 6  # the same trie, continued
    assert sampler.core.root.efg < 1.0  # tightened from the model's probabilities
    # Known prefixes come from the distribution cache: fewer passes than tokens walked (3 per sample).
    assert sampler.forward_passes - passes < 3 * 3
    texts = asap(
        "Two letters:",
        regex="[ab]{2}",
        samples=2,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=4,
        seed=1,
        chat=False,
    )
    assert len(texts) == 2 and all(re.fullmatch("[ab]{2}", s) for s in texts)
    with pytest.raises(InvalidInputError, match="temperature"):
        ASAp("x", regex="a", model=model, tokenizer=tokenizer, temperature=0.0)
    with pytest.raises(InvalidInputError, match="exactly one"):
        ASAp("x", model=model, tokenizer=tokenizer)
