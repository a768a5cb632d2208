"""A smoke test of the sampling bench's Part A (constrain_tools.sampling_bench) on a tiny config: the
numbers are finite, masked decoding's KL is the oracle's, and the table and the PNG are written."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

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


def test_coupled_loops_decode_one_text(lm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Part C's coupling: the masked loop (full mask) and the AWRS loop, fed one seed, draw the same
    tokens; the AWRS loop is ``generate(method="awrs", speculate=False)`` token for token."""
    from constrain import generate
    from constrain.generation import encode_prompt
    from constrain.models import tokenizer_info_for

    model, tok = lm
    schema = sampling_bench.TREE
    compiled = compile(Grammar.from_json_schema(schema), tokenizer_info_for(tok))
    prompt = "A tree as JSON:"
    ids = encode_prompt(tok, prompt, False)
    for seed in range(2):
        runs, same = sampling_bench.coupled_lockstep(
            model, {"masked": compiled, "awrs": compiled}, ids, seed=seed, max_new_tokens=10
        )
        assert same and runs["masked"].token_ids == runs["awrs"].token_ids
        assert len(runs["awrs"].token_s) == len(runs["awrs"].token_ids) > 1
        loop = generate(
            prompt,
            grammar=compiled,
            model=model,
            tokenizer=tok,
            method="awrs",
            speculate=False,
            temperature=1.0,
            seed=seed,
            max_new_tokens=10,
            chat=False,
            on_budget="complete",
            return_stats=True,
        )
        assert loop.token_ids[: len(runs["awrs"].token_ids)] == runs["awrs"].token_ids
    case = sampling_bench.ModelCase("tree", "recursive", prompt, schema=schema)
    result = sampling_bench.run_coupled_case(case, model, tok, max_new_tokens=6, repeats=1)
    assert result.same_text and result.awrs_checks_per_token >= 1
    checks = sampling_bench.print_coupled([result], tokenizer_info_for(tok).vocab_size)
    assert checks["coupled_same_text"]
    assert "Part C" in capsys.readouterr().out


def test_genlm_arm_says_why_it_did_not_run(tmp_path: Path) -> None:
    case = sampling_bench.ModelCase("tree", "recursive", "x", schema=sampling_bench.TREE)
    missing = sampling_bench.run_genlm_arm(tmp_path / "no-python", tmp_path, [case], None)
    assert not missing.ran and "not an executable interpreter" in missing.why
    if importlib.util.find_spec("genlm") is not None:
        pytest.skip("genlm is importable in this venv")
    here = sampling_bench.run_genlm_arm(sys.executable, tmp_path, [case], None)
    assert not here.ran and "`import genlm.control` fails" in here.why
