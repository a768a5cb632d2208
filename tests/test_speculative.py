"""Speculative sampling under a constraint is lossless: the output distribution of the loop with each
drafter equals that of one-token-at-a-time masked sampling.

The model is a bigram table (next-token logits depend on the last token only) behind the transformers
call signature, so the real loop (:func:`constrain.generation.run`, its KV-cache bookkeeping, the
samplers' acceptance rule) runs unchanged in microseconds per pass. The oracle is exact enumeration:
every token sequence of a finite regular language with its probability under masked sampling (the
sampler's per-step distribution over the allowed tokens, multiplied along the sequence). Each drafter's
empirical distribution over a few thousand runs (fixed seeds) is compared with it by a chi-square test
at level 0.001; the same test rejects two lossy acceptance rules (taking every draft, and resampling
from p without removing the rejected token) at the same sample size, which shows it has the power to
see a biased sampler.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import constrain
from constrain.drafters import ComposedDrafter, Draft, GrammarForcedDrafter, PromptLookupDrafter
from constrain.generation import GreedySampler, Sampler, TemperatureSampler, run
from constrain.kernels import allocate_token_bitmask, apply_token_bitmask_inplace
from constrain.matcher import GrammarMatcher
from constrain.sampling.enumerable import toy_tokenizer_info

pytest.importorskip("transformers")

#: ``(a|b|c){1,2}`` in parentheses, then ``-`` and one or two binary digits: forced bytes ``(``, ``-``
#: and (after two letters) ``)-``, several tokenisations (``ab`` or ``a`` ``b``), 105 token sequences.
PATTERN = r"\((a|b|c){1,2}\)-[01]{1,2}"
#: Toy token ids (see constrain.sampling.enumerable.TOY_TOKENS): ( a b ) - 0 1 ... as a prompt whose
#: n-grams the prompt-lookup drafter finds.
PROMPT = [13, 4, 14, 12, 10, 13, 1, 14, 12, 7, 13, 6, 14, 12, 8, 13]
START = 16  # one past the vocabulary: the bigram table's start row


class BigramModel(torch.nn.Module):
    """A transformers-shaped causal LM whose logits at each position are a fixed row per input token
    (the KV cache is irrelevant to it, so every crop is trivially right)."""

    def __init__(self, seed: int, width: int = 16, sharpness: float = 1.5) -> None:
        from transformers import LlamaConfig

        super().__init__()
        rng = np.random.default_rng(seed)
        table = rng.normal(size=(width + 1, width)) * sharpness
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32), requires_grad=False)
        self.config = LlamaConfig(
            num_hidden_layers=1,
            hidden_size=8,
            num_attention_heads=1,
            num_key_value_heads=1,
            intermediate_size=8,
            vocab_size=width,
        )

    def forward(
        self, input_ids: torch.Tensor, cache: Any = None, use_cache: bool = True, logits_to_keep: int = 1
    ) -> Any:
        logits = self.table[input_ids.clamp(max=self.table.shape[0] - 1)]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:])

    def row(self, token: int) -> torch.Tensor:
        return self.table[token].detach().clone()


@pytest.fixture(scope="module")
def compiled() -> constrain.CompiledGrammar:
    return constrain.compile(constrain.Grammar.from_regex(PATTERN), toy_tokenizer_info())


def masked_sampling_distribution(
    model: BigramModel,
    compiled: constrain.CompiledGrammar,
    prompt: Sequence[int],
    sampler: TemperatureSampler,
) -> dict[tuple[int, ...], float]:
    """Exact enumeration: P(output tokens) under one-token-at-a-time masked sampling (EOS excluded)."""
    eos = compiled.tokenizer_info.eos_ids[0]
    bitmask = allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)
    out: dict[tuple[int, ...], float] = {}

    def visit(m: GrammarMatcher, last: int, prefix: tuple[int, ...], p: float) -> None:
        row = model.row(last)
        m.fill_next_token_bitmask(bitmask, 0)
        apply_token_bitmask_inplace(row, bitmask[0])
        probs = sampler.probs(row).double()
        for tid in torch.nonzero(probs > 0).flatten().tolist():
            q = p * float(probs[tid])
            if tid == eos:
                out[prefix] = out.get(prefix, 0.0) + q
                continue
            child = m.fork()
            assert child.accept_token(tid)
            visit(child, tid, (*prefix, tid), q)

    visit(GrammarMatcher(compiled), prompt[-1], (), 1.0)
    return out


def chi_square(
    exact: dict[tuple[int, ...], float], counts: Counter[tuple[int, ...]], n: int
) -> tuple[float, float]:
    """``(statistic, critical value at level 0.001)``; outcomes with an expected count under 5 are pooled."""
    stat, pooled_e, pooled_o, cells = 0.0, 0.0, 0, 0
    for seq, p in exact.items():
        e = p * n
        if e < 5:
            pooled_e += e
            pooled_o += counts.get(seq, 0)
            continue
        stat += (counts.get(seq, 0) - e) ** 2 / e
        cells += 1
    unseen = sum(c for s, c in counts.items() if s not in exact)
    pooled_o += unseen  # an output outside the language lands here (and would blow the statistic up)
    if pooled_e > 0:
        stat += (pooled_o - pooled_e) ** 2 / pooled_e
        cells += 1
    df = cells - 1
    z = 3.0902  # the 0.999 normal quantile; Wilson-Hilferty for the chi-square quantile
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat, critical


def sample_outputs(
    compiled: constrain.CompiledGrammar,
    make_drafter: Callable[[], Any],
    sampler: Sampler,
    n: int,
    seed: int,
    target: BigramModel,
) -> Counter[tuple[int, ...]]:
    info = compiled.tokenizer_info
    counts: Counter[tuple[int, ...]] = Counter()
    for i in range(n):
        drafter = make_drafter()
        result = run(
            target,
            info,
            PROMPT,
            GrammarMatcher(compiled),
            max_new_tokens=16,
            sampler=sampler,
            drafter=drafter,
            seed=seed * 100_003 + i,
        )
        counts[tuple(t for t in result.token_ids if t not in info.eos_ids)] += 1
    return counts


class _FixedDrafter:
    """Always drafts the same grammar-valid guess ``( a b ) -`` cut to what the grammar allows next."""

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        assert matcher is not None
        walker, out = matcher.fork(), []
        for t in (13, 4, 14, 12, 8):
            if len(out) >= max_tokens or not walker.accept_token(t):
                break
            out.append(t)
        return Draft(tuple(out))


def _draft_model(temperature: float) -> Callable[[], Any]:
    from constrain.speculation_models import DraftModelDrafter

    draft_lm = BigramModel(seed=7)  # a different model: its guesses are often wrong
    counter = iter(range(10**9))
    return lambda: DraftModelDrafter(
        draft_lm, max_tokens=4, min_accept_prob=0.0, temperature=temperature, seed=next(counter)
    )


DRAFTERS: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "forced": GrammarForcedDrafter,
    "ngram": lambda: PromptLookupDrafter(min_accept_prob=0.05),
    "forced+ngram": lambda: ComposedDrafter((GrammarForcedDrafter(), PromptLookupDrafter())),
    "fixed-guess": _FixedDrafter,
    "draft-model-greedy": _draft_model(0.0),
    "draft-model-sampled": _draft_model(1.0),
}
#: Samples per drafter: enough for the power test below to reject both lossy rules by a wide margin.
SAMPLES = 1500
CASES = [(name, None) for name in DRAFTERS] + [("forced+ngram", 0.8), ("draft-model-sampled", 0.8)]


@pytest.mark.parametrize(("name", "top_p"), CASES)
def test_speculative_sampling_has_the_masked_distribution(
    compiled: constrain.CompiledGrammar, name: str, top_p: float | None
) -> None:
    target = BigramModel(seed=3)
    sampler = TemperatureSampler(1.0, top_p=top_p)
    exact = masked_sampling_distribution(target, compiled, PROMPT, sampler)
    assert math.isclose(sum(exact.values()), 1.0, abs_tol=1e-5)
    counts = sample_outputs(compiled, DRAFTERS[name], sampler, SAMPLES, seed=len(name), target=target)
    assert set(counts) <= set(exact)  # never outside the language
    stat, critical = chi_square(exact, counts, SAMPLES)
    assert stat < critical, f"{name}: chi2 {stat:.1f} >= {critical:.1f}"


class _AcceptEverything(TemperatureSampler):
    """Lossy: takes every draft token."""

    def accept(self, logits: Any, token: int, draft_probs: Any, generator: Any) -> tuple[int, bool]:
        return token, True


class _ResampleFromP(TemperatureSampler):
    """Lossy: on rejection draws from p itself, not from p without the rejected token."""

    def accept(self, logits: Any, token: int, draft_probs: Any, generator: Any) -> tuple[int, bool]:
        p = self.probs(logits)
        u = float(torch.rand((), generator=generator))
        if u < float(p[token]):
            return token, True
        return int(torch.multinomial(p, 1, generator=generator)), False


@pytest.mark.parametrize("lossy", [_AcceptEverything, _ResampleFromP])
def test_the_chi_square_test_has_power(compiled: constrain.CompiledGrammar, lossy: type) -> None:
    """The same test, sample size and drafter reject a lossy acceptance rule."""
    target = BigramModel(seed=3)
    exact = masked_sampling_distribution(target, compiled, PROMPT, TemperatureSampler(1.0))
    counts = sample_outputs(compiled, DRAFTERS["forced+ngram"], lossy(1.0), SAMPLES, seed=1, target=target)
    stat, critical = chi_square(exact, counts, SAMPLES)
    assert stat > 2 * critical, f"chi2 {stat:.1f}, critical {critical:.1f}"


def test_greedy_speculation_gives_the_same_tokens(compiled: constrain.CompiledGrammar) -> None:
    info = compiled.tokenizer_info
    for seed in range(5):
        target = BigramModel(seed=seed)
        outputs = set()
        for make in DRAFTERS.values():
            result = run(
                target, info, PROMPT, GrammarMatcher(compiled), sampler=GreedySampler(), drafter=make()
            )
            outputs.add(tuple(result.token_ids))
        assert len(outputs) == 1


def test_exact_enumeration_matches_the_toolkit_oracle(compiled: constrain.CompiledGrammar) -> None:
    """Our oracle agrees with constrain.sampling.enumerable's masked-decoding distribution on a model
    whose rows are TableLM's (a cross-check of the oracle, with the start row as the prompt)."""
    from constrain.sampling.enumerable import TableLM, masked_decoding_distribution

    lm = TableLM(seed=5)
    model = BigramModel(seed=0)
    with torch.no_grad():
        model.table.copy_(torch.tensor(lm.table, dtype=torch.float32))
    ours = masked_sampling_distribution(model, compiled, [START], TemperatureSampler(1.0))
    theirs = masked_decoding_distribution(lm, GrammarMatcher(compiled))
    assert set(ours) == set(theirs)
    for seq, p in theirs.items():
        assert math.isclose(ours[seq], p, rel_tol=1e-4, abs_tol=1e-9)
