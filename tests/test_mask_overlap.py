"""The decoding loop fills the next mask on a worker thread while the forward pass runs (``overlap``).

Oracle: the same loop with the overlap off. Filling ahead changes when the mask is computed, never which
mask: the tokens must be identical, greedy and sampled with a fixed seed, for a regex, a recursive JSON
Schema and a Lark grammar, and the worker must be done with the matcher when ``run`` returns.
"""

from __future__ import annotations

from typing import Any

import pytest

from constrain.generation import TemperatureSampler, encode_prompt, run
from constrain.grammar import Grammar
from constrain.matcher import GrammarMatcher

pytest.importorskip("transformers")

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name"],
        }
    },
    "$ref": "#/$defs/node",
}
ARITHMETIC = """
start: expr
expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
"""


@pytest.mark.parametrize(
    "grammar",
    [
        Grammar.from_regex(r"[a-z]{2,6}(, [a-z]{2,6}){1,3}"),
        Grammar.from_json_schema(TREE),
        Grammar.from_lark(ARITHMETIC),
    ],
    ids=["regex", "recursive-schema", "lark"],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_overlap_gives_the_same_tokens(lm: tuple[Any, Any], grammar: Grammar, temperature: float) -> None:
    from constrain.compiler import compile as compile_grammar
    from constrain.models import tokenizer_info_for

    model, tok = lm
    info = tokenizer_info_for(tok)
    compiled = compile_grammar(grammar, info)
    prompt = encode_prompt(tok, "Write one example.", None)
    outputs = []
    for overlap in (False, True):
        matcher = GrammarMatcher(compiled)
        result = run(
            model,
            info,
            prompt,
            matcher,
            max_new_tokens=24,
            sampler=TemperatureSampler(temperature) if temperature else None,
            seed=7,
            on_budget="complete",
            overlap=overlap,
        )
        outputs.append(result.token_ids)
        # the worker is done with the matcher: it can be used (and rolled back) right away
        matcher.rollback(matcher.num_steps)
    assert outputs[0] == outputs[1]
