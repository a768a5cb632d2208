"""The transformers logits processors: batches, sampling, beam search, EOS, wide logits.

The model runs (SmolLM2-135M, single-threaded, small budgets) check whole ``model.generate`` calls
against ``re.fullmatch``; the unit tests feed hand-made ``input_ids`` and compare each row's mask with a
fresh matcher fed that row's history (the oracle for beam reordering).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch

import constrain
from constrain.matcher import GrammarMatcher

transformers = pytest.importorskip("transformers")

from transformers import LogitsProcessor  # noqa: E402 - after the importorskip

from constrain.adapters.hf import (  # noqa: E402 - after the importorskip
    GrammarLogitsProcessor,
    JSONSchemaLogitsProcessor,
    RegexLogitsProcessor,
)

PERSON = r'\{"name": "[a-z]{1,8}", "age": [0-9]{1,2}\}'
PEOPLE = ["Alice is 30.", "Bob, 41 years old.", "Carol, aged 7.", "Dave is 65 and likes cats."]


def _batch(tok: Any) -> Any:
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"Reply with a JSON object for this person: {p}"}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in PEOPLE
    ]
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _outputs(tok: Any, out: torch.Tensor, prompt_len: int) -> list[str]:
    return [tok.decode(row, skip_special_tokens=True) for row in out[:, prompt_len:]]


def test_sampling_batch_with_several_sequences_per_prompt(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    enc = _batch(tok)
    proc = RegexLogitsProcessor(PERSON, tok)
    torch.manual_seed(0)
    out = model.generate(
        **enc,
        logits_processor=transformers.LogitsProcessorList([proc]),
        do_sample=True,
        temperature=1.0,
        top_p=0.95,
        num_return_sequences=2,
        max_new_tokens=24,
        pad_token_id=tok.pad_token_id,
    )
    texts = _outputs(tok, out, enc["input_ids"].shape[1])
    assert len(texts) == 8
    for text in texts:
        assert re.fullmatch(PERSON, text), text
    assert proc.prompt_length == enc["input_ids"].shape[1]


def test_beam_search(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    enc = _batch(tok)
    proc = RegexLogitsProcessor(PERSON, tok)
    out = model.generate(
        **enc,
        logits_processor=transformers.LogitsProcessorList([proc]),
        num_beams=4,
        num_return_sequences=2,
        do_sample=False,
        max_new_tokens=24,
        pad_token_id=tok.pad_token_id,
    )
    texts = _outputs(tok, out, enc["input_ids"].shape[1])
    assert len(texts) == 8
    for text in texts:
        assert re.fullmatch(PERSON, text), text


def test_processor_is_reusable_across_generate_calls(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    proc = RegexLogitsProcessor("(yes|no)", tok)
    procs = transformers.LogitsProcessorList([proc])
    for question in ("Is fire hot?", "Is ice hot? Answer in one word."):
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        enc = tok([text], return_tensors="pt", add_special_tokens=False)
        out = model.generate(
            **enc, logits_processor=procs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id
        )
        assert _outputs(tok, out, enc["input_ids"].shape[1])[0] in ("yes", "no")


# ---- without the model: hand-made steps ---------------------------------------------------------


@pytest.fixture(scope="module")
def tok(lm: tuple[Any, Any]) -> Any:
    return lm[1]


def _allowed(scores: torch.Tensor) -> list[np.ndarray]:
    return [np.flatnonzero(np.isfinite(row.numpy())) for row in scores]


def _expected(compiled: constrain.CompiledGrammar, history: list[int]) -> np.ndarray:
    m = GrammarMatcher(compiled)
    for t in history:
        assert m.accept_token(t)
    return m.allowed_token_ids()


def test_beam_reordering_is_followed(tok: Any) -> None:
    proc = RegexLogitsProcessor("(ab|ac|b)[0-9]", tok)
    ids = {s: tok.convert_tokens_to_ids(s) for s in ("a", "b", "c", "1")}
    prompt = [5, 6, 7]
    width = proc.info.vocab_size
    step0 = torch.tensor([prompt, prompt])
    proc(step0, torch.zeros(2, width))
    # Step 1: the rows took "a" and "b"; step 2: beam search reorders and splits the "a" row.
    proc(torch.tensor([[*prompt, ids["a"]], [*prompt, ids["b"]]]), torch.zeros(2, width))
    histories = [[ids["b"], ids["1"]], [ids["a"], ids["b"]], [ids["a"], ids["c"]]]
    scores = torch.zeros(3, width)
    proc(torch.tensor([[*prompt, *h] for h in histories]), scores)
    for got, h in zip(_allowed(scores), histories):
        np.testing.assert_array_equal(got, _expected(proc.compiled, h))


def test_rows_fill_side_by_side_and_equal_histories_share_a_fill(tok: Any) -> None:
    """Six rows, four distinct histories (two pairs equal): distinct rows fill on the mask threads,
    equal ones are copied, and each row's mask is a fresh matcher's for its history (the oracle)."""
    proc = JSONSchemaLogitsProcessor(
        {"type": "object", "properties": {"k": {"type": "string"}, "n": {"type": "integer"}}}, tok
    )
    texts = ['{"k":"abc def ghi', '{"n":1234567890123', '{"k":"x","n":12345', '{"k":"12","n":-7,"zz":[1,2,3]']
    enc = [tok.encode(t, add_special_tokens=False) for t in texts]
    length = min(len(e) for e in enc)
    distinct = [e[:length] for e in enc]
    histories = [distinct[0], distinct[1], distinct[2], distinct[3], distinct[1], distinct[0]]
    prompt = [5, 6, 7]
    width = proc.info.vocab_size
    for step in range(length + 1):
        scores = torch.zeros(len(histories), width)
        proc(torch.tensor([[*prompt, *h[:step]] for h in histories]), scores)
        for got, h in zip(_allowed(scores), histories):
            np.testing.assert_array_equal(got, _expected(proc.compiled, h[:step]))


def test_looking_back_and_new_calls(tok: Any) -> None:
    """Assisted decoding re-asks about earlier positions; a later call may have a longer prompt."""
    proc = RegexLogitsProcessor("[0-9]{3}", tok)
    one, two = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    width = proc.info.vocab_size
    prompt = [5, 6]
    for ids in ([], [one], [one, two], [one]):  # the last one looks back a step
        scores = torch.zeros(1, width)
        proc(torch.tensor([[*prompt, *ids]]), scores)
        np.testing.assert_array_equal(_allowed(scores)[0], _expected(proc.compiled, ids))
    scores = torch.zeros(1, width)
    proc(torch.tensor([[7, 7, 7, 7, 7]]), scores)  # never seen: a new call with a longer prompt
    assert proc.prompt_length == 5
    np.testing.assert_array_equal(_allowed(scores)[0], _expected(proc.compiled, []))


def test_after_eos_only_eos_and_pad(tok: Any) -> None:
    proc = RegexLogitsProcessor("a", tok)
    a = tok.convert_tokens_to_ids("a")
    eos = proc.info.eos_ids[0]
    prompt = [5, 6]
    width = proc.info.vocab_size
    proc(torch.tensor([prompt]), torch.zeros(1, width))
    scores = torch.zeros(1, width)
    proc(torch.tensor([[*prompt, a]]), scores)
    assert set(_allowed(scores)[0]) == set(proc.info.eos_ids)
    for step in range(2):  # a finished row keeps getting EOS/pad from generate
        scores = torch.zeros(1, width)
        proc(torch.tensor([[*prompt, a, *([eos] * (step + 1))]]), scores)
        allowed = set(_allowed(scores)[0].tolist())
        assert allowed <= set(proc.info.eos_ids) | {tok.pad_token_id} and allowed


def test_a_row_filled_with_a_masked_token_gets_eos_only(tok: Any) -> None:
    """Beam search fills beams with -inf continuations when too few are allowed; those rows must not
    crash the processor, and must not turn all-masked (NaN after log_softmax)."""
    proc = RegexLogitsProcessor("ab", tok)
    a, z = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("z")
    width = proc.info.vocab_size
    proc(torch.tensor([[1, 2], [1, 2]]), torch.zeros(2, width))
    scores = torch.zeros(2, width)
    proc(torch.tensor([[1, 2, a], [1, 2, z]]), scores)
    allowed = _allowed(scores)
    np.testing.assert_array_equal(allowed[0], _expected(proc.compiled, [a]))
    assert len(allowed[1]) > 0 and set(allowed[1].tolist()) <= set(proc.info.eos_ids) | {tok.pad_token_id}


def test_logits_wider_than_the_vocabulary_are_masked(tok: Any) -> None:
    proc = RegexLogitsProcessor("[0-9]+", tok)
    vocab = proc.info.vocab_size
    scores = torch.zeros(2, vocab + 77)
    proc(torch.tensor([[3, 4], [3, 4]]), scores)
    assert torch.isinf(scores[:, vocab:]).all()
    for got in _allowed(scores):
        np.testing.assert_array_equal(got, _expected(proc.compiled, []))


def test_compiled_grammar_is_shared(tok: Any) -> None:
    a = RegexLogitsProcessor("[a-z]+", tok)
    b = GrammarLogitsProcessor(constrain.Grammar.from_regex("[a-z]+"), tok)
    c = GrammarLogitsProcessor(a.compiled, tok)
    assert a.compiled is b.compiled is c.compiled
    with pytest.raises(constrain.InvalidInputError):
        GrammarLogitsProcessor("[a-z]+", tok)


def test_json_schema_processor(tok: Any) -> None:
    if not hasattr(constrain.Grammar, "from_json_schema"):
        pytest.skip("Grammar.from_json_schema is not in this build yet")
    proc = JSONSchemaLogitsProcessor({"type": "boolean"}, tok)
    scores = torch.zeros(1, proc.info.vocab_size)
    proc(torch.tensor([[1, 2]]), scores)
    allowed = {tok.decode([int(t)]) for t in _allowed(scores)[0]}
    assert allowed and all("true".startswith(s) or "false".startswith(s) for s in allowed)


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("mode", ["sampling", "beam_search"])
def test_json_schema_processor_on_a_batch_of_four(lm: tuple[Any, Any], mode: str) -> None:
    import json

    import jsonschema

    model, tok = lm
    enc = _batch(tok)
    proc = JSONSchemaLogitsProcessor(PERSON_SCHEMA, tok)
    torch.manual_seed(0)
    search: dict[str, Any] = (
        {"do_sample": True, "temperature": 1.0, "top_p": 0.95}
        if mode == "sampling"
        else {"do_sample": False, "num_beams": 4}
    )
    out = model.generate(
        **enc,
        logits_processor=transformers.LogitsProcessorList([proc]),
        num_return_sequences=2,
        max_new_tokens=32,  # the longest valid output is well under 32 tokens
        pad_token_id=tok.pad_token_id,
        **search,
    )
    texts = _outputs(tok, out, enc["input_ids"].shape[1])
    assert len(texts) == 8
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON_SCHEMA)


# ---- reuse across generate calls, assisted decoding, compile budget (issue 20) ----------------------


class _RecordAllowed(LogitsProcessor):
    """Records the ids each step leaves allowed (after the constraint) for row 0."""

    def __init__(self) -> None:
        self.steps: list[np.ndarray] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(np.flatnonzero(torch.isfinite(scores[0]).numpy()))
        return scores


def _chat(tok: Any, question: str) -> torch.Tensor:
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return tok([text], return_tensors="pt", add_special_tokens=False)["input_ids"]


def test_reuse_without_reset_restarts_at_a_new_generate_call(lm: tuple[Any, Any]) -> None:
    """Issue 20: called for P, then P + "y", then a new generate with prompt P + "y" (no reset()):
    the new call starts at the grammar's start, not after the "y" of the earlier sequence."""
    model, tok = lm
    proc = RegexLogitsProcessor("(yes|no)", tok)
    prompt = _chat(tok, "Is fire hot?")
    width = proc.info.vocab_size
    proc(prompt, torch.zeros(1, width))
    with_y = torch.cat([prompt, torch.tensor([[tok.convert_tokens_to_ids("y")]])], dim=1)
    proc(with_y, torch.zeros(1, width))
    record = _RecordAllowed()
    model.generate(
        input_ids=with_y,
        attention_mask=torch.ones_like(with_y),
        logits_processor=transformers.LogitsProcessorList([proc, record]),
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    start = _expected(proc.compiled, [])
    np.testing.assert_array_equal(record.steps[0], start)
    assert {"y", "n"} <= set(tok.convert_ids_to_tokens(start.tolist()))


def test_a_generate_call_whose_prompt_extends_the_last_output_starts_over(lm: tuple[Any, Any]) -> None:
    """Two generate calls back to back, the second prompt being the first prompt plus the first
    output's first token: by the ids alone that is the first call's next step."""
    model, tok = lm
    proc = RegexLogitsProcessor("(yes|no)", tok)
    prompt = _chat(tok, "Is ice cold?")
    first = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        logits_processor=transformers.LogitsProcessorList([proc]),
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    record = _RecordAllowed()
    model.generate(
        input_ids=first,
        attention_mask=torch.ones_like(first),
        logits_processor=transformers.LogitsProcessorList([proc, record]),
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    np.testing.assert_array_equal(record.steps[0], _expected(proc.compiled, []))


def test_assisted_decoding_shares_the_processor_with_the_assistant(lm: tuple[Any, Any]) -> None:
    """The assistant's nested generate gets the same processor: it belongs to the outer call."""
    model, tok = lm
    pattern = "(yes|no) indeed, [a-z]{2,8}"
    proc = RegexLogitsProcessor(pattern, tok)
    prompt = _chat(tok, "Is fire hot?")
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        assistant_model=model,
        logits_processor=transformers.LogitsProcessorList([proc]),
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    assert re.fullmatch(pattern, _outputs(tok, out, prompt.shape[1])[0])


def test_processors_take_a_compile_budget(tok: Any) -> None:
    heavy = {
        "type": "object",
        "title": "hf budget",
        "properties": {
            f"q{i}": {"type": "array", "items": {"type": "integer"}, "maxItems": 3} for i in range(10)
        },
        "not": {"required": ["q0", "q1"]},
    }
    with pytest.raises(constrain.CompileBudgetExceeded) as err:
        JSONSchemaLogitsProcessor(heavy, tok, budget=constrain.CompileBudget(seconds=1e-9))
    assert err.value.pointer.startswith("#")
    with pytest.raises(constrain.CompileBudgetExceeded):
        RegexLogitsProcessor("[a-z]{3}[0-9]{2}hf-budget", tok, budget=1e-9)
    with pytest.raises(constrain.InvalidInputError, match="budget"):
        JSONSchemaLogitsProcessor({"type": "integer"}, tok, budget="fast")
    proc = JSONSchemaLogitsProcessor({"type": "integer"}, tok, budget=60)
    assert proc.compiled is not None
