"""Drafters with the real default model (SmolLM2-135M): greedy outputs identical with and without
speculation for a regex, a JSON Schema and a Lark grammar; drafts never contain a token the grammar
rejects; layer-subset views compute what the full model computes where they keep every layer."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
import torch

import constrain
from constrain.drafters import (
    AcceptanceEstimator,
    ComposedDrafter,
    Draft,
    GrammarForcedDrafter,
    PromptLookupDrafter,
    default_drafter,
)
from constrain.generation import generate
from constrain.matcher import GrammarMatcher
from constrain.models import tokenizer_info_for
from constrain.speculation import make_drafter

pytest.importorskip("transformers")

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "colour": {"enum": ["red", "green", "blue"]}},
    "required": ["name", "colour"],
    "additionalProperties": False,
}
PROMPT = (
    "Schema: " + json.dumps(SCHEMA) + '\nExample: {"name":"Ada","colour":"green"}\nWrite one JSON instance.'
)


class _Checking:
    """Wraps a drafter and checks every draft against a fresh walk of the grammar."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.drafted = 0

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        assert matcher is not None
        before = matcher.num_steps
        draft = self.inner.propose(context, matcher, max_tokens)
        assert matcher.num_steps == before  # the drafter left the matcher alone
        walker = matcher.fork()
        for t in draft.tokens:
            assert walker.accept_token(t), f"drafted token {t} is rejected by the grammar"
        self.drafted += len(draft.tokens)
        return draft

    def observe(self, draft: Draft, accepted: int) -> None:
        self.inner.observe(draft, accepted)


@pytest.mark.parametrize(
    "constraint",
    [
        {"regex": r'\{"name": "[a-z]{1,8}", "age": [0-9]{1,2}\}'},
        {"schema": SCHEMA},
        {"grammar": "lark"},
    ],
    ids=["regex", "schema", "lark"],
)
def test_greedy_output_is_the_same_with_every_drafter(
    lm: tuple[Any, Any], constraint: dict[str, Any]
) -> None:
    model, tok = lm
    if constraint.get("grammar") == "lark":
        constraint = {
            "grammar": constrain.Grammar.from_lark('start: "colour=" C ";" C\nC: "red" | "green" | "blue"')
        }
    kwargs: dict[str, Any] = {"model": model, "tokenizer": tok, "max_new_tokens": 24, "on_budget": "complete"}
    oracle = generate(PROMPT, speculate=False, return_stats=True, **constraint, **kwargs)
    for name in ("forced+ngram", "ngram", "forced+draft-model"):
        checking = _Checking(make_drafter(name, model, draft_layers=4))
        fast = generate(PROMPT, drafter=checking, return_stats=True, **constraint, **kwargs)
        assert fast.token_ids == oracle.token_ids, name
    default = generate(PROMPT, return_stats=True, **constraint, **kwargs)
    assert default.token_ids == oracle.token_ids
    assert default.stats.forward_passes <= oracle.stats.forward_passes


def test_prompt_lookup_copies_keys_and_enum_values_from_the_prompt(lm: tuple[Any, Any]) -> None:
    model, tok = lm
    result = generate(PROMPT, schema=SCHEMA, model=model, tokenizer=tok, max_new_tokens=24, return_stats=True)
    value = json.loads(result.text)
    assert value["colour"] in ("red", "green", "blue")
    assert result.stats.accepted_by.get("ngram", 0) > 0
    assert result.stats.tokens_per_forward_pass > 1.5


def test_prompt_lookup_prunes_candidates_with_the_grammar(lm: tuple[Any, Any]) -> None:
    _, tok = lm
    info = tokenizer_info_for(tok)
    compiled = constrain.compile(constrain.Grammar.from_regex("a (cat|dog) and cat"), info)
    prompt = tok("a dog and cat; a dog and dog\n", add_special_tokens=False)["input_ids"]
    output = tok("a dog", add_special_tokens=False)["input_ids"]
    matcher = GrammarMatcher(compiled)
    assert all(matcher.accept_token(t) for t in output)
    # the newest match continues " and dog" (cut by the grammar after " and"); the older " and cat" wins
    draft = PromptLookupDrafter(min_accept_prob=0.0).propose([*prompt, *output], matcher, 8)
    walker = matcher.fork()
    assert draft.tokens and all(walker.accept_token(t) for t in draft.tokens)
    assert tok.decode(list(draft.tokens)).startswith(" and cat")


def test_composed_drafter_puts_forced_tokens_first(lm: tuple[Any, Any]) -> None:
    _, tok = lm
    info = tokenizer_info_for(tok)
    compiled = constrain.compile(constrain.Grammar.from_regex('\\{"colour": "(red|green)"\\}'), info)
    prompt = tok('{"colour": "green"}', add_special_tokens=False)["input_ids"]
    draft = ComposedDrafter((GrammarForcedDrafter(), PromptLookupDrafter())).propose(
        prompt, GrammarMatcher(compiled), 16
    )
    assert draft.sources[0] == "forced"
    assert "ngram" in draft.sources
    assert tok.decode(list(draft.tokens)).startswith('{"colour": "')


def test_acceptance_estimator_stops_drafting_what_is_rejected() -> None:
    est = AcceptanceEstimator(prior=0.5)
    for _ in range(20):
        est.update(["ngram:1"] * 4, 0)
        est.update(["ngram:4"] * 4, 4)
    assert est.estimate("ngram:1") < 0.1 < 0.9 < est.estimate("ngram:4")
    assert est.estimate("model:3") == 0.5


def test_layer_subset_view_shares_weights_and_matches_the_full_model(lm: tuple[Any, Any]) -> None:
    from constrain.speculation_models import layer_subset_model, truncated_model

    model, tok = lm
    n = model.config.num_hidden_layers
    ids = torch.tensor([tok("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        full = model(input_ids=ids).logits
        view = layer_subset_model(model, range(n))(input_ids=ids).logits
        short = truncated_model(model, 4)
        assert short.config.num_hidden_layers == 4 and model.config.num_hidden_layers == n
        assert short.model.layers[0].mlp.gate_proj.weight is model.model.layers[0].mlp.gate_proj.weight
        short(input_ids=ids)
    torch.testing.assert_close(view, full)
    with pytest.raises(constrain.InvalidInputError):
        layer_subset_model(model, [0, 0])


def test_default_drafter_and_names() -> None:
    assert isinstance(default_drafter(), ComposedDrafter)
    assert make_drafter("none") is None
    assert isinstance(make_drafter("forced"), GrammarForcedDrafter)
    with pytest.raises(constrain.InvalidInputError):
        make_drafter("forced+oracle")
    with pytest.raises(constrain.InvalidInputError):
        make_drafter("layer-skip")
    assert re.fullmatch(r"PromptLookupDrafter\(.*\)", repr(PromptLookupDrafter()))
