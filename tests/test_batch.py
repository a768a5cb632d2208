"""Batched generation (constrain.batch) against the one-prompt reference loop, with the real default model.

The oracle for every row is ``generate(..., speculate=False)`` / ``generate_json(..., speculate=False)``
on that prompt alone (greedy, or seeded sampling with the same seed), plus ``jsonschema`` and
``re.fullmatch`` on the outputs.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import jsonschema
import pytest

from constrain.exceptions import ConstrainError, InvalidInputError

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Different lengths (left padding); the second runs out of a 20-token budget (a failing row).
PROMPTS = [
    "Ada Lovelace was 36. Her record as JSON:",
    "Alan Turing died at 41.",
    "Invent a person.",
    "A short record for a cat named Tom, age 3, please.",
]


def one_prompt(prompt: str, **kwargs: Any) -> tuple[str | None, Exception | None]:
    """The reference: the one-prompt loop without speculation (text or error)."""
    from constrain.generation import BudgetExhaustedError, generate

    try:
        return generate(prompt, speculate=False, **kwargs), None
    except BudgetExhaustedError as exc:
        return exc.partial_text, exc


def test_json_batch_equals_one_prompt_loop_row_by_row(lm: tuple[Any, Any]) -> None:
    from constrain.batch import generate_json_batch
    from constrain.generation import BudgetExhaustedError

    model, tokenizer = lm
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: sizes.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        results = generate_json_batch(
            SCHEMA, PROMPTS, model=model, tokenizer=tokenizer, max_new_tokens=20, batch_size=3, workers=2
        )
    finally:
        hook.remove()
    assert [r.index for r in results] == list(range(len(PROMPTS)))
    failures = 0
    for prompt, result in zip(PROMPTS, results):
        text, error = one_prompt(prompt, schema=SCHEMA, model=model, tokenizer=tokenizer, max_new_tokens=20)
        assert result.text == text, prompt
        if error is None:
            assert result.ok and result.error is None
            jsonschema.validate(result.value, SCHEMA)
            assert result.unwrap() == result.value
        else:
            failures += 1
            assert isinstance(result.error, BudgetExhaustedError)
            assert isinstance(result.error, ConstrainError)
            assert result.error.partial_text == text
            with pytest.raises(BudgetExhaustedError):
                result.unwrap()
    assert 0 < failures < len(PROMPTS)  # the failing row did not take the others down
    # Two model batches (3 + 1 rows), and rows that finished left the batch: the batch shrank.
    first = sizes[: sizes.index(1)] if 1 in sizes else sizes
    assert sizes[0] == 3 and min(first) < 3
    assert all(a >= b for a, b in itertools.pairwise(first))


def test_batch_regex_and_unconstrained_equal_one_prompt_loop(lm: tuple[Any, Any]) -> None:
    from constrain.batch import generate_batch

    model, tokenizer = lm
    prompts = PROMPTS[:2]
    pattern = r"[A-Z][a-z]+ (is|was) [0-9]{1,3}"
    results = generate_batch(prompts, regex=pattern, model=model, tokenizer=tokenizer, max_new_tokens=12)
    for prompt, result in zip(prompts, results):
        assert result.text is not None and re.fullmatch(pattern, result.text), result
        assert (result.text, None) == one_prompt(
            prompt, regex=pattern, model=model, tokenizer=tokenizer, max_new_tokens=12
        )
    free = generate_batch(prompts, model=model, tokenizer=tokenizer, max_new_tokens=5)
    for prompt, result in zip(prompts, free):
        assert result.finish_reason in ("length", "eos")
        assert (result.text, None) == one_prompt(prompt, model=model, tokenizer=tokenizer, max_new_tokens=5)


def test_seeded_sampling_gives_each_row_the_one_prompt_draw(lm: tuple[Any, Any]) -> None:
    from constrain.batch import generate_batch

    model, tokenizer = lm
    prompts = [PROMPTS[0], PROMPTS[2]]
    kwargs: dict[str, Any] = {"temperature": 0.9, "seed": 7, "max_new_tokens": 16, "on_budget": "complete"}
    results = generate_batch(prompts, schema=SCHEMA, model=model, tokenizer=tokenizer, **kwargs)
    for prompt, result in zip(prompts, results):
        jsonschema.validate(json.loads(result.text or ""), SCHEMA)
        assert (result.text, None) == one_prompt(
            prompt, schema=SCHEMA, model=model, tokenizer=tokenizer, **kwargs
        )


def test_a_malformed_prompt_is_that_rows_error(lm: tuple[Any, Any]) -> None:
    from constrain.batch import generate_json_batch

    model, tokenizer = lm
    schema = {"enum": ["yes", "no"]}
    prompts: list[Any] = ["Is water wet?", 42, [{"role": "user", "content": "Is fire cold?"}]]
    results = generate_json_batch(schema, prompts, model=model, tokenizer=tokenizer, max_new_tokens=6)
    assert results[0].value in ("yes", "no") and results[2].value in ("yes", "no")
    assert isinstance(results[1].error, InvalidInputError) and "string or a list" in str(results[1].error)


def test_bad_arguments_raise() -> None:
    from constrain.batch import BatchGenerator

    with pytest.raises(InvalidInputError, match="batch_size"):
        BatchGenerator(regex="a", batch_size=0)
    with pytest.raises(InvalidInputError, match="json_output"):
        BatchGenerator(regex="a", json_output=True)
