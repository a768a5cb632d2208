"""AWRS (constrain.sampling.awrs): exact tokens and an unbiased normaliser, against exact masks on the
enumerable toy problems; and ``generate(..., method="awrs")`` with the real model."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from constrain import ConstrainError, Grammar, GrammarMatcher, InvalidInputError, compile
from constrain.sampling.awrs import AWRSDraw, awrs_argmax, awrs_sample
from constrain.sampling.enumerable import TableLM, toy_tokenizer_info

PROBLEMS = [
    ("regex", "(a|b|c){1,4}"),
    ("regex", r"\((a|b)(\+(a|b)){0,2}\)"),
    ("regex", r"-?(1|2|01|12){1,3}"),
    ("lark", 'start: x x?\nx: "a" | "b" | "(" "a" ")"'),
]

# The 1e-4 upper quantile of the standard normal: the chi-square and 5-sigma tests below fail a correct
# sampler with probability about 1e-4 per state, and the seeds are fixed, so they are deterministic.
Z_CRIT = 3.719


def _matcher(kind: str, source: str) -> GrammarMatcher:
    grammar = Grammar.from_regex(source) if kind == "regex" else Grammar.from_lark(source)
    return GrammarMatcher(compile(grammar, toy_tokenizer_info()))


def _states(kind: str, source: str) -> list[tuple[GrammarMatcher, tuple[int, ...]]]:
    """The start state and the states after each allowed first token, where more than one token is
    allowed (a choice to test), at most four."""
    root = _matcher(kind, source)
    out: list[tuple[GrammarMatcher, tuple[int, ...]]] = []
    if root.allowed_token_ids().shape[0] > 1:
        out.append((root, ()))
    for tid in root.allowed_token_ids().tolist():
        child = root.fork()
        if child.accept_token(tid) and child.allowed_token_ids().shape[0] > 1:
            out.append((child, (tid,)))
    return out[:4]


def _chi2_critical(df: int) -> float:
    """The 1e-4 upper quantile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty; within a
    few percent for df >= 1, which is all a fixed-seed test needs)."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + Z_CRIT * math.sqrt(c)) ** 3


def _chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic and its degrees of freedom, cells with expected count < 5 pooled."""
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = list(counts[~small]) + ([counts[small].sum()] if small.any() else [])
    exp = list(expected[~small]) + ([expected[small].sum()] if small.any() else [])
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True) if e > 0)
    return float(stat), max(1, len(obs) - 1)


def _local(lp: np.ndarray, matcher: GrammarMatcher) -> tuple[np.ndarray, np.ndarray, float]:
    """The allowed ids, the exact locally constrained distribution over them, and Z."""
    allowed = matcher.allowed_token_ids()
    p = np.exp(lp[allowed])
    return allowed, p / p.sum(), float(p.sum())


CASES = [(kind, source, seed) for kind, source in PROBLEMS for seed in (1, 2)]


@pytest.mark.parametrize("max_checks", [None, 1, 0])
@pytest.mark.parametrize(("kind", "source", "seed"), CASES)
def test_token_distribution_is_the_masked_one(
    kind: str, source: str, seed: int, max_checks: int | None
) -> None:
    # N = 10000 draws per state. Power: the same counts must REJECT the distribution of a sampler that
    # is 10% off (0.9 * exact + 0.1 * uniform over the allowed tokens), checked below, so the test
    # tells a correct sampler from a wrong one on every state it passes.
    lm = TableLM(seed=seed)
    rng = np.random.default_rng(seed)
    n = 10000
    for matcher, prefix in _states(kind, source):
        lp = lm.logprobs(prefix)
        allowed, exact, _ = _local(lp, matcher)
        index = {t: i for i, t in enumerate(allowed.tolist())}
        counts = np.zeros(len(allowed))
        before = (matcher.num_steps, matcher.state)
        for _ in range(n):
            draw = awrs_sample(lp, matcher, rng, max_checks=max_checks)
            counts[index[draw.token]] += 1  # a disallowed token raises KeyError
        assert (matcher.num_steps, matcher.state) == before  # the matcher is left unchanged
        stat, df = _chi2(counts, exact)
        assert stat < _chi2_critical(df), (source, prefix, stat, df)
        wrong = 0.9 * exact + 0.1 / len(allowed)
        wrong_stat, wrong_df = _chi2(counts, wrong)
        assert wrong_stat > _chi2_critical(wrong_df), (source, prefix, "no power", wrong_stat)


@pytest.mark.parametrize("max_checks", [None, 1])
@pytest.mark.parametrize(("kind", "source", "seed"), CASES)
def test_weight_is_unbiased(kind: str, source: str, seed: int, max_checks: int | None) -> None:
    # The mean of N weights is within 5 standard errors of the exact Z (a correct estimator fails
    # with probability < 1e-6 per state), and the standard error is below 1.5% of Z (1.1% at worst
    # here), so a 10% bias sits 6.7 standard errors or more away and fails the 5-sigma check with
    # probability above 95%.
    lm = TableLM(seed=seed)
    rng = np.random.default_rng(100 + seed)
    n = 20000
    for matcher, prefix in _states(kind, source):
        lp = lm.logprobs(prefix)
        _, _, z = _local(lp, matcher)
        weights = np.array([awrs_sample(lp, matcher, rng, max_checks=max_checks).weight for _ in range(n)])
        se = float(weights.std(ddof=1)) / math.sqrt(n)
        assert abs(weights.mean() - z) <= 5 * se + 1e-12, (source, prefix, weights.mean(), z, se)
        assert se <= 0.015 * z, (source, prefix, "too noisy to see a 10% bias", se, z)


def test_fallback_weight_is_exact() -> None:
    matcher = _matcher("regex", "(a|b|c){1,4}")
    lp = TableLM(seed=3).logprobs(())
    _, _, z = _local(lp, matcher)
    draw = awrs_sample(lp, matcher, np.random.default_rng(0), max_checks=0)
    assert draw.used_mask and draw.checks == 0
    assert draw.weight == pytest.approx(z, rel=1e-12)


class _CountingMasks:
    """Counts full-mask computations on GrammarMatcher (patched in with monkeypatch)."""

    def __init__(self) -> None:
        self.calls = 0
        self.original = GrammarMatcher.next_token_mask

    def __call__(self, matcher: GrammarMatcher) -> Any:
        self.calls += 1
        return self.original(matcher)


@pytest.mark.parametrize(("kind", "source"), PROBLEMS)
def test_few_checks_and_no_mask_when_the_first_candidate_passes(
    kind: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = TableLM(seed=1)
    rng = np.random.default_rng(7)
    for matcher, prefix in _states(kind, source):
        lp = lm.logprobs(prefix)
        allowed, _, z = _local(lp, matcher)
        counter = _CountingMasks()
        monkeypatch.setattr(GrammarMatcher, "next_token_mask", counter)
        checks = []
        for _ in range(500):
            replay = copy.deepcopy(rng)  # the first candidate: an inverse-CDF draw from p
            cdf = np.cumsum(np.exp(lp))
            first = int(np.searchsorted(cdf, replay.random() * cdf[-1], side="right"))
            calls = counter.calls
            draw = awrs_sample(lp, matcher, rng)
            checks.append(draw.checks)
            if first in set(allowed.tolist()):
                assert draw.token == first and not draw.used_mask and counter.calls == calls
                assert draw.checks <= 2
        monkeypatch.undo()
        # Expected checks: 1 / Z until acceptance (geometric bound) plus one for the weight.
        if z >= 0.5:
            assert np.mean(checks) <= 1 / z + 1.5 < lp.shape[0], (source, prefix, np.mean(checks), z)


@pytest.mark.parametrize(("kind", "source"), PROBLEMS)
def test_without_the_weight_the_same_token_and_one_check_less(kind: str, source: str) -> None:
    """``estimate_weight=False`` (what the decoding loop uses) draws the same token from the same
    randomness and skips only the weight's extra check."""
    lm = TableLM(seed=2)
    rng = np.random.default_rng(11)
    for matcher, prefix in _states(kind, source):
        lp = lm.logprobs(prefix)
        for _ in range(200):
            twin = copy.deepcopy(rng)
            full = awrs_sample(lp, matcher, rng)
            bare = awrs_sample(lp, matcher, twin, estimate_weight=False)
            assert bare.token == full.token and bare.used_mask == full.used_mask
            if full.used_mask:
                assert bare.checks == full.checks and bare.weight == full.weight
            else:
                assert full.checks - 1 <= bare.checks <= full.checks and math.isnan(bare.weight)


def test_empty_allowed_set_raises() -> None:
    matcher = _matcher("regex", "x")  # no toy token spells x
    lp = TableLM(seed=0).logprobs(())
    with pytest.raises(ConstrainError, match="allows no token"):
        awrs_sample(lp, matcher, np.random.default_rng(0))
    with pytest.raises(ConstrainError, match="allows no token"):
        awrs_argmax(lp, matcher)


def test_zero_mass_allowed_set_raises() -> None:
    matcher = _matcher("regex", "(a|b|c){1,4}")
    lp = np.log(np.full(16, 1 / 9))
    lp[matcher.allowed_token_ids()] = -np.inf
    lp -= np.logaddexp.reduce(lp)
    with pytest.raises(ConstrainError, match="probability 0"):
        awrs_sample(lp, matcher, np.random.default_rng(0))


def test_bad_arguments() -> None:
    matcher = _matcher("regex", "(a|b|c){1,4}")
    lp = TableLM(seed=0).logprobs(())
    with pytest.raises(InvalidInputError, match="max_checks"):
        awrs_sample(lp, matcher, np.random.default_rng(0), max_checks=-1)
    with pytest.raises(InvalidInputError, match="logprobs"):
        awrs_sample(np.zeros((2, 8)), matcher, np.random.default_rng(0))


@pytest.mark.parametrize(("kind", "source"), PROBLEMS)
def test_argmax_is_the_masked_argmax(kind: str, source: str) -> None:
    for seed in range(5):
        lm = TableLM(seed=seed)
        for matcher, prefix in _states(kind, source):
            lp = lm.logprobs(prefix)
            allowed = matcher.allowed_token_ids()
            expected = int(allowed[np.argmax(lp[allowed])])
            for max_checks in (None, 1, 0):
                draw = awrs_argmax(lp, matcher, max_checks=max_checks)
                assert isinstance(draw, AWRSDraw) and draw.token == expected
                if max_checks == 0:
                    assert draw.used_mask and draw.checks == 0
                elif int(np.argmax(lp)) in allowed:
                    assert not draw.used_mask and draw.checks == 1
    # ties go to the lower id, as argmax breaks them
    matcher = _matcher("regex", "(a|b|c){1,4}")
    assert awrs_argmax(np.zeros(16), matcher).token == 1
    assert awrs_argmax(np.zeros(16), matcher, max_checks=0).token == 1


@pytest.mark.parametrize(("kind", "source"), PROBLEMS)
@pytest.mark.parametrize("max_checks", [None, 0, 1, 3])
def test_masked_sample_like_awrs_draws_awrs_token(kind: str, source: str, max_checks: int | None) -> None:
    """The coupled masked step (membership from the full mask) picks AWRS's token and leaves the rng in
    the same state, at every state of the problem and however early AWRS falls back to the mask; so a
    masked loop and an AWRS loop fed one seed decode one text."""
    from constrain.sampling.awrs import masked_sample_like_awrs

    lm = TableLM(seed=3, sharpness=2.0)
    for matcher, prefix in _states(kind, source):
        lp = lm.logprobs(prefix)
        bitmask = matcher.next_token_mask()
        allowed = set(matcher.allowed_token_ids().tolist())
        for seed in range(60):
            r_awrs, r_mask = np.random.default_rng(seed), np.random.default_rng(seed)
            a = awrs_sample(lp, matcher, r_awrs, max_checks=max_checks, estimate_weight=False)
            b = masked_sample_like_awrs(lp, bitmask, r_mask, max_checks=max_checks)
            assert b.token == a.token and b.token in allowed
            assert r_mask.random() == r_awrs.random()


# ------------------------------------------------------------------------------------------------
# Sampler objects: generate(..., sampler=AWRS(...)) and the method= spelling


def test_resolve_method() -> None:
    from constrain.exceptions import ArgumentError
    from constrain.generation import GreedySampler
    from constrain.sampling import AWRS, Masked
    from constrain.sampling.methods import resolve_method

    assert resolve_method(None, None) == ("masked", None, None)
    assert resolve_method("smc", None) == ("smc", None, None)
    assert resolve_method(None, AWRS(max_checks=5)) == ("awrs", None, 5)
    assert resolve_method(None, AWRS()) == ("awrs", None, None)
    assert resolve_method(None, Masked()) == ("masked", None, None)
    greedy = GreedySampler()
    assert resolve_method(None, greedy) == ("masked", greedy, None)
    with pytest.raises(ArgumentError, match="not both"):
        resolve_method("awrs", AWRS())
    with pytest.raises(ArgumentError, match="not both"):
        resolve_method("masked", greedy)
    with pytest.raises(ArgumentError, match="'masked', 'awrs', 'smc'"):
        resolve_method("beam", None)
    with pytest.raises(ArgumentError, match=r"AWRS\(\), not AWRS"):
        resolve_method(None, AWRS)
    with pytest.raises(ArgumentError, match="an instance"):
        resolve_method(None, GreedySampler)
    with pytest.raises(ArgumentError, match="sampler must be"):
        resolve_method(None, "awrs")
    for bad in (-1, True, 2.5, "8"):
        with pytest.raises(InvalidInputError, match="max_checks"):
            AWRS(max_checks=bad)  # type: ignore[arg-type]


def test_generate_sampler_awrs_is_method_awrs(lm: Any) -> None:
    from constrain import generate
    from constrain.sampling import AWRS

    model, tok = lm
    kwargs: dict[str, Any] = {
        "regex": r"(yes|no|maybe)[.!] [a-z]{2,6}",
        "model": model,
        "tokenizer": tok,
        "temperature": 1.0,
        "max_new_tokens": 12,
        "chat": False,
        "on_budget": "complete",
        "return_stats": True,
    }
    for seed in range(3):
        by_method = generate("Answer:", method="awrs", seed=seed, **kwargs)
        by_object = generate("Answer:", sampler=AWRS(), seed=seed, **kwargs)
        assert by_object.token_ids == by_method.token_ids
        assert by_object.stats.awrs_steps == by_method.stats.awrs_steps > 0


def test_generate_sampler_awrs_max_checks_reaches_the_loop(lm: Any) -> None:
    """max_checks=0 masks every AWRS step: greedy, the masked loop's text, every step a fallback."""
    from constrain import generate
    from constrain.sampling import AWRS, Masked

    model, tok = lm
    kwargs: dict[str, Any] = {
        "schema": SCHEMA,
        "model": model,
        "tokenizer": tok,
        "max_new_tokens": 30,
        "chat": False,
        "on_budget": "complete",
        "return_stats": True,
    }
    masked = generate("A person as JSON:", sampler=Masked(), **kwargs)
    every = generate("A person as JSON:", sampler=AWRS(max_checks=0), **kwargs)
    assert every.text == masked.text
    assert every.stats.awrs_steps > 0
    assert every.stats.mask_fallbacks == every.stats.awrs_steps
    assert every.stats.constraint_checks == 0
    few = generate("A person as JSON:", sampler=AWRS(max_checks=32), **kwargs)
    assert few.text == masked.text and few.stats.mask_fallbacks < few.stats.awrs_steps


def test_generate_json_sampler_and_conflicts(lm: Any) -> None:
    import jsonschema

    from constrain import generate, generate_json
    from constrain.exceptions import ArgumentError
    from constrain.sampling import AWRS

    model, tok = lm
    value = generate_json(
        SCHEMA,
        "A person as JSON:",
        sampler=AWRS(max_checks=4),
        temperature=1.0,
        seed=1,
        max_new_tokens=40,
        on_budget="complete",
        model=model,
        tokenizer=tok,
        chat=False,
    )
    jsonschema.validate(value, SCHEMA)
    with pytest.raises(ArgumentError, match="not both"):
        generate("x", regex="a", method="awrs", sampler=AWRS(), model=model, tokenizer=tok)
    with pytest.raises(ArgumentError, match="not both"):
        generate_json(SCHEMA, "x", method="masked", sampler=AWRS(), model=model, tokenizer=tok)
    with pytest.raises(ArgumentError, match="sampler must be"):
        generate("x", regex="a", sampler="awrs", model=model, tokenizer=tok)  # type: ignore[call-overload]
    from constrain import generate_batch

    with pytest.raises(ArgumentError, match="masked loop only"):
        generate_batch(["x"], regex="a", sampler=AWRS(), model=model, tokenizer=tok)


# ------------------------------------------------------------------------------------------------
# The decoding loop with the real model


def test_generate_awrs_regex(lm: Any) -> None:
    import re

    from constrain import generate

    model, tok = lm
    text = generate(
        "Letters:",
        regex=r"[ab]{3}",
        method="awrs",
        temperature=1.0,
        seed=0,
        max_new_tokens=8,
        model=model,
        tokenizer=tok,
    )
    assert re.fullmatch(r"[ab]{3}", text)


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_generate_json_awrs_validates_and_checks_few_tokens(lm: Any) -> None:
    import jsonschema

    from constrain import generate, generate_json

    model, tok = lm
    value = generate_json(
        SCHEMA,
        "A person as JSON:",
        method="awrs",
        temperature=1.0,
        seed=1,
        max_new_tokens=40,
        model=model,
        tokenizer=tok,
        chat=False,
    )
    jsonschema.validate(value, SCHEMA)
    result = generate(
        "A person as JSON:",
        schema=SCHEMA,
        method="awrs",
        temperature=1.0,
        seed=2,
        max_new_tokens=40,
        model=model,
        tokenizer=tok,
        chat=False,
        return_stats=True,
        on_budget="complete",
    )
    stats = result.stats
    sampled = stats.awrs_steps
    assert sampled > 0
    per_token = stats.constraint_checks / sampled
    vocab = len(tok)
    print(  # noqa: T201 - the figure, for the record (pytest -s)
        f"AWRS on a JSON schema: {per_token:.2f} checks per sampled token "
        f"({stats.mask_fallbacks} mask fallbacks in {sampled} steps; vocabulary {vocab})"
    )
    assert per_token < 0.01 * vocab


RECURSIVE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "v": {"type": "integer"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["v"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    "constraint",
    [
        {"regex": r"(yes|no|maybe)[.!]"},
        {"schema": SCHEMA},
        {"schema": RECURSIVE},
        {"grammar": Grammar.from_lark('start: "[" item ("," item)* "]"\nitem: /[0-9]+/ | start')},
    ],
)
def test_greedy_awrs_equals_greedy_masked(lm: Any, constraint: dict[str, Any]) -> None:
    from constrain import generate

    model, tok = lm
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": tok,
        "max_new_tokens": 30,
        "chat": False,
        "on_budget": "complete",
    }
    masked = generate("Answer:", **constraint, **kwargs)
    awrs = generate("Answer:", **constraint, method="awrs", **kwargs)
    assert awrs == masked


def test_unknown_method(lm: Any) -> None:
    from constrain import generate

    model, tok = lm
    with pytest.raises(InvalidInputError, match="'masked', 'awrs', 'smc'"):
        generate("x", regex="a", method="beam", model=model, tokenizer=tok)  # type: ignore[call-overload]


def test_generate_awrs_top_p(lm: Any) -> None:
    import re

    from constrain import generate

    model, tok = lm
    for seed in range(3):
        text = generate(
            "Letters:",
            regex=r"[ab]{2}c",
            method="awrs",
            temperature=0.8,
            top_p=0.9,
            seed=seed,
            max_new_tokens=8,
            model=model,
            tokenizer=tok,
            chat=False,
        )
        assert re.fullmatch(r"[ab]{2}c", text)


def test_generate_json_smc(lm: Any) -> None:
    import jsonschema

    from constrain import generate_json

    model, tok = lm
    value = generate_json(
        SCHEMA,
        "A person as JSON:",
        method="smc",
        particles=4,
        seed=0,
        max_new_tokens=30,
        model=model,
        tokenizer=tok,
        chat=False,
    )
    jsonschema.validate(value, SCHEMA)
