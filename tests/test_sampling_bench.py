"""A smoke test of the sampling bench's Part A (constrain_tools.sampling_bench) on a tiny config: the
numbers are finite, masked decoding's KL is the oracle's, and the table and the PNG are written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from constrain import Grammar, GrammarMatcher, compile
from constrain.sampling.enumerable import (
    TableLM,
    exact_conditional,
    kl_divergence,
    masked_decoding_distribution,
    toy_tokenizer_info,
)

sampling_bench = pytest.importorskip("constrain_tools.sampling_bench")


def test_part_a_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in sampling_bench.DEFAULT_CASES if c.source == "[ab]{2}")  # 6 sequences
    result = sampling_bench.run_enum_case(case, particles=(1, 4), budget=256, samples=(100, 300), seed=0)
    lm = TableLM(seed=case.seed, sharpness=case.sharpness)
    matcher = GrammarMatcher(compile(Grammar.from_regex(case.source), toy_tokenizer_info()))
    exact = exact_conditional(lm, matcher)
    assert result.support == len(exact)
    assert result.masked_kl == kl_divergence(exact, masked_decoding_distribution(lm, matcher))
    assert result.masked_kl > 0.1  # the case is one where masking is biased
    # every sequence has mass >= 0.02, so 256 particles and 100 samples hit them all: finite KLs
    numbers = [*result.smc_kl.values(), *result.asap_empirical_kl.values(), *result.asap_proposal_kl.values()]
    assert set(result.smc_kl) == {1, 4} and set(result.asap_proposal_kl) == {100, 300}
    assert all(math.isfinite(x) and x >= -1e-12 for x in numbers)
    checks = sampling_bench.print_part_a([result], budget=256)
    assert set(checks) == {"asap_proposal_le_0.01", "smc_falls_with_n"}
    out = capsys.readouterr().out
    assert "Part A" in out and case.name in out
    png = sampling_bench.plot_curves([result], tmp_path / "kl.png", budget=256)
    assert png.stat().st_size > 0
