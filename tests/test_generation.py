"""The generation loop with the real default model (SmolLM2-135M), checked against oracles.

Oracles: ``re.fullmatch`` for outputs, the one-token-at-a-time loop for the speculative one (same tokens
under greedy decoding), a full no-cache forward pass for the KV cache after a rollback, and exact
distributions for the speculative acceptance rule. Runs single-threaded and with small budgets so the
whole file takes well under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import constrain
from constrain.drafters import Draft, GrammarForcedDrafter
from constrain.generation import (
    BudgetExhaustedError,
    GreedySampler,
    ModelRunner,
    OutputValidationError,
    TemperatureSampler,
    generate,
    generate_json,
    make_sampler,
    shortest_completion,
    validate_json,
)
from constrain.json_schema import load_schema
from constrain.matcher import GrammarMatcher

pytest.importorskip("transformers")

PERSON = r'\{"name": "[a-z]{1,8}", "age": [0-9]{1,2}\}'
PERSON_PROMPT = "Give me a JSON object for a person named Bob who is 42 years old."


def _info(tokenizer: Any) -> constrain.TokenizerInfo:
    from constrain.models import tokenizer_info_for

    return tokenizer_info_for(tokenizer)


# ---- constrained generation ----------------------------------------------------------------------


def test_regex_output_fullmatches(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    pattern = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    text = generate(
        "When did Apollo 11 land on the moon?", regex=pattern, model=model, tokenizer=tok, max_new_tokens=16
    )
    assert re.fullmatch(pattern, text), text


def test_jump_forward_saves_passes_and_equals_token_by_token_oracle(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    kwargs: dict[str, Any] = {"regex": PERSON, "model": model, "tokenizer": tok, "max_new_tokens": 32}
    fast = generate(PERSON_PROMPT, return_stats=True, **kwargs)
    oracle = generate(PERSON_PROMPT, speculate=False, return_stats=True, **kwargs)
    assert re.fullmatch(PERSON, fast.text), fast.text
    assert fast.token_ids == oracle.token_ids  # greedy: speculation changes nothing but the cost
    assert fast.finish_reason == oracle.finish_reason
    assert oracle.stats.forward_passes == oracle.stats.output_tokens
    assert fast.stats.forced_tokens > 0
    assert fast.stats.forward_passes < fast.stats.output_tokens
    assert fast.stats.tokens_per_forward_pass > 1.5
    assert 0 < fast.stats.time_to_first_token_s <= fast.stats.total_time_s


def test_unverified_jump_forward_stays_in_the_language(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    result = generate(
        PERSON_PROMPT,
        regex=PERSON,
        model=model,
        tokenizer=tok,
        max_new_tokens=32,
        drafter=GrammarForcedDrafter(verify=False),
        return_stats=True,
    )
    assert re.fullmatch(PERSON, result.text), result.text
    assert result.stats.accepted_draft_tokens == result.stats.draft_tokens  # forced: never rejected
    assert result.stats.forward_passes < result.stats.output_tokens


class _WrongDrafter:
    """Drafts a token the model (almost) never wants: every round ends in a rejection and a rollback."""

    def __init__(self, token: int, k: int = 3) -> None:
        self.token = token
        self.k = k

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        return Draft((self.token,) * min(self.k, max_tokens))


def test_rejected_drafts_leave_no_trace(lm: tuple[Any, Any]) -> None:
    """Rejections crop the KV cache and the matcher; a stale entry would change later tokens."""
    model, tok = lm
    zzz = tok("zzz", add_special_tokens=False)["input_ids"][0]  # allowed inside the name, never wanted
    kwargs: dict[str, Any] = {"regex": PERSON, "model": model, "tokenizer": tok, "max_new_tokens": 32}
    spec = generate(PERSON_PROMPT, drafter=_WrongDrafter(zzz), return_stats=True, **kwargs)
    oracle = generate(PERSON_PROMPT, speculate=False, return_stats=True, **kwargs)
    assert spec.token_ids == oracle.token_ids
    assert spec.stats.draft_tokens > spec.stats.accepted_draft_tokens


def test_kv_cache_crop_gives_the_logits_of_no_speculation(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    prefix = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    good, draft, nxt = tok(" Paris", add_special_tokens=False)["input_ids"][0], [11, 12, 13], 30
    runner = ModelRunner(model)
    runner.forward(prefix)
    runner.forward([good, *draft], keep=4)  # a speculative pass whose draft is then rejected
    runner.crop(len(prefix) + 1)
    got = runner.forward([nxt], keep=1)[0]
    with torch.inference_mode():
        ref = model(torch.tensor([[*prefix, good, nxt]])).logits[0, -1].float()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert runner.length == len(prefix) + 2
    assert runner.cache.get_seq_length() == runner.length


def test_sampling_is_valid_and_reproducible(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    kwargs: dict[str, Any] = {"regex": PERSON, "model": model, "tokenizer": tok, "max_new_tokens": 32}
    a = generate(PERSON_PROMPT, temperature=1.0, top_p=0.95, seed=7, **kwargs)
    b = generate(PERSON_PROMPT, temperature=1.0, top_p=0.95, seed=7, **kwargs)
    assert re.fullmatch(PERSON, a), a
    assert a == b


def test_chat_messages_equal_a_plain_prompt(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    kwargs: dict[str, Any] = {"regex": "(yes|no)", "model": model, "tokenizer": tok, "max_new_tokens": 4}
    plain = generate("Is the sky blue?", return_stats=True, **kwargs)
    messages = generate([{"role": "user", "content": "Is the sky blue?"}], return_stats=True, **kwargs)
    assert plain.token_ids == messages.token_ids
    assert plain.text in ("yes", "no")
    assert plain.stats.prompt_tokens > 10  # the chat template was applied


def test_unconstrained_generation_stops_at_the_budget(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    result = generate(
        "Write a long story about a dragon.", model=model, tokenizer=tok, max_new_tokens=5, return_stats=True
    )
    assert result.finish_reason == "length"
    assert result.stats.output_tokens == 5 == result.stats.forward_passes
    assert result.text


# ---- budget ----------------------------------------------------------------------------------------


LONG = r"[a-z]+( [a-z]+){20,30}\."


def test_budget_exhaustion_raises_with_the_partial_text(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    with pytest.raises(BudgetExhaustedError) as caught:
        generate("Describe a cat.", regex=LONG, model=model, tokenizer=tok, max_new_tokens=4)
    err = caught.value
    assert isinstance(err, constrain.ConstrainError)
    assert len(err.token_ids) == 4 and err.stats.output_tokens == 4
    assert err.partial_text and not re.fullmatch(LONG, err.partial_text)
    assert re.fullmatch(r"[a-z]+( [a-z]*)*", err.partial_text), err.partial_text  # a valid prefix
    assert "on_budget='complete'" in str(err)


def test_on_budget_complete_returns_valid_output(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    result = generate(
        "Describe a cat.",
        regex=LONG,
        model=model,
        tokenizer=tok,
        max_new_tokens=4,
        on_budget="complete",
        return_stats=True,
    )
    assert re.fullmatch(LONG, result.text), result.text
    assert result.finish_reason == "completed"
    assert result.stats.output_tokens == 4 and result.stats.completion_tokens > 0


def test_budget_that_ends_where_the_output_may_end_is_fine(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    result = generate(
        "Count: ", regex="[0-9]+", model=model, tokenizer=tok, max_new_tokens=2, return_stats=True
    )
    assert re.fullmatch("[0-9]+", result.text)
    assert result.finish_reason in ("length", "eos")


# ---- logits wider than the vocabulary --------------------------------------------------------------


class _WideLogits(torch.nn.Module):
    """The model with extra logits columns (as Qwen's 151,936 logits over 151,669 tokens), boosted so that
    an unmasked loop would pick them."""

    def __init__(self, model: Any, extra: int) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.extra = extra

    def forward(self, **kwargs: Any) -> Any:
        out = self.inner(**kwargs)
        logits = out.logits
        pad = torch.full((*logits.shape[:-1], self.extra), 1e4, dtype=logits.dtype)
        out.logits = torch.cat([logits, pad], dim=-1)
        return out


def test_logits_wider_than_the_vocabulary(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    wide = _WideLogits(model, extra=40)
    vocab = _info(tok).vocab_size
    text = generate("Is the sky blue?", regex="(yes|no)", model=wide, tokenizer=tok, max_new_tokens=4)
    assert text in ("yes", "no")
    free = generate("Hi", model=wide, tokenizer=tok, max_new_tokens=3, return_stats=True)
    assert all(t < vocab for t in free.token_ids)


# ---- JSON ------------------------------------------------------------------------------------------


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,10}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def _needs_json_schema() -> None:
    if not hasattr(constrain.Grammar, "from_json_schema"):
        pytest.skip("Grammar.from_json_schema is not in this build yet")


def test_generate_json_returns_a_valid_object(lm: tuple[Any, Any]) -> None:
    _needs_json_schema()
    model, tok = lm
    value = generate_json(PERSON_SCHEMA, PERSON_PROMPT, model=model, tokenizer=tok, max_new_tokens=40)
    validate_json(json.dumps(value), PERSON_SCHEMA)
    assert set(value) == {"name", "age"}


def test_generate_json_with_a_pydantic_model(lm: tuple[Any, Any]) -> None:
    _needs_json_schema()
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):  # type: ignore[name-defined]
        model_config = pydantic.ConfigDict(extra="forbid")  # additionalProperties: false
        name: str
        age: int

    model, tok = lm
    person = generate_json(Person, PERSON_PROMPT, model=model, tokenizer=tok, max_new_tokens=30)
    assert isinstance(person, Person)


def test_schema_inputs(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(PERSON_SCHEMA))
    assert load_schema(PERSON_SCHEMA) is PERSON_SCHEMA
    assert load_schema(json.dumps(PERSON_SCHEMA)) == PERSON_SCHEMA
    assert load_schema(str(path)) == PERSON_SCHEMA
    assert load_schema(path) == PERSON_SCHEMA
    assert load_schema("true") is True
    with pytest.raises(constrain.InvalidInputError, match="neither JSON text nor an existing file"):
        load_schema(str(tmp_path / "missing.json"))
    with pytest.raises(constrain.InvalidInputError, match="not valid JSON"):
        load_schema("{nope")


def test_validate_json_checks_formats_and_says_where() -> None:
    schema = {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}
    assert validate_json('{"mail": "a@b.c"}', schema) == {"mail": "a@b.c"}
    with pytest.raises(OutputValidationError, match="at mail"):
        validate_json('{"mail": "not an email"}', schema)
    with pytest.raises(OutputValidationError, match="not valid JSON"):
        validate_json('{"mail": ', schema)


# ---- pieces without the model ----------------------------------------------------------------------


def _tiny() -> constrain.TokenizerInfo:
    return constrain.TokenizerInfo.from_vocab([b"a", b"b", b"c", b"d", b"e", b"dd", b"abc", b""], eos_ids=[7])


def test_shortest_completion_takes_the_shortest_path() -> None:
    compiled = constrain.compile(constrain.Grammar.from_regex("ab(ddd|c)e+"), _tiny())
    m = GrammarMatcher(compiled)
    assert m.accept_token(0) and m.accept_token(1)  # "ab"
    completion = shortest_completion(m)
    assert compiled.tokenizer_info.decode_bytes(completion) == b"ce"
    assert m.num_steps == 2  # unchanged
    for t in completion:
        assert m.accept_token(t)
    assert m.can_end()
    assert shortest_completion(m) == []


def test_shortest_completion_prefers_long_tokens() -> None:
    compiled = constrain.compile(constrain.Grammar.from_regex("abc|abdd"), _tiny())
    m = GrammarMatcher(compiled)
    assert shortest_completion(m) == [6]  # "abc" in one token


def test_greedy_sampler_accepts_only_the_argmax() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, float("-inf")])
    s = GreedySampler()
    assert s.sample(logits, None) == 1
    assert s.accept(logits, 1, None, None) == (1, True)
    assert s.accept(logits, 2, None, None) == (1, False)


def test_speculative_acceptance_is_exact_for_a_one_hot_draft() -> None:
    """Accept-or-resample with a deterministic draft emits tokens distributed exactly as p."""
    logits = torch.tensor([1.0, 0.5, -0.5, float("-inf"), 0.0])
    sampler = TemperatureSampler(1.0)
    p = sampler.probs(logits)
    gen = torch.Generator().manual_seed(0)
    n = 6000
    counts = torch.zeros(5)
    for _ in range(n):
        token, _ = sampler.accept(logits, 1, None, gen)
        counts[token] += 1
    assert counts[3] == 0  # masked stays masked
    torch.testing.assert_close(counts / n, p, atol=0.02, rtol=0)


def test_speculative_acceptance_with_a_draft_distribution() -> None:
    logits = torch.tensor([1.0, 0.0, -1.0])
    sampler = TemperatureSampler(0.7)
    p = sampler.probs(logits)
    q = torch.tensor([0.1, 0.6, 0.3])
    gen = torch.Generator().manual_seed(1)
    n = 6000
    counts = torch.zeros(3)
    for _ in range(n):
        draft = int(torch.multinomial(q, 1, generator=gen))
        token, _ = sampler.accept(logits, draft, q, gen)
        counts[token] += 1
    torch.testing.assert_close(counts / n, p, atol=0.02, rtol=0)


def test_top_p_keeps_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = TemperatureSampler(1.0, top_p=0.75).probs(logits)
    torch.testing.assert_close(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert isinstance(make_sampler(0.0), GreedySampler)
    with pytest.raises(constrain.InvalidInputError):
        make_sampler(-1.0)
    with pytest.raises(constrain.InvalidInputError):
        TemperatureSampler(1.0, top_p=0.0)


def test_argument_errors(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    with pytest.raises(constrain.InvalidInputError, match="at most one"):
        generate("x", regex="a", grammar=constrain.Grammar.from_regex("b"), model=model, tokenizer=tok)
    with pytest.raises(constrain.InvalidInputError, match="tokenizer"):
        generate("x", regex="a", model=model)
    with pytest.raises(constrain.InvalidInputError, match="on_budget"):
        generate("x", regex="a", model=model, tokenizer=tok, on_budget="ignore")  # type: ignore[call-overload]


def test_cache_root_and_missing_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from constrain.models import ModelNotAvailableError, cache_root, load_model

    monkeypatch.setenv("CONSTRAIN_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CONSTRAIN_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "constrain"
    with pytest.raises(ModelNotAvailableError, match="never downloaded"):
        load_model(tmp_path / "no-such-model")


def test_lark_grammar(lm: tuple[Any, Any]) -> None:
    if not hasattr(constrain.Grammar, "from_lark"):
        pytest.skip("Grammar.from_lark is not in this build yet")
    model, tok = lm
    grammar = constrain.Grammar.from_lark('start: ANSWER "."\nANSWER: "yes" | "no"')
    text = generate("Is the sky blue?", grammar=grammar, model=model, tokenizer=tok, max_new_tokens=6)
    assert text in ("yes.", "no.")
