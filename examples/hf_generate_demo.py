"""``model.generate`` with ``JSONSchemaLogitsProcessor``: four prompts, sampling and beam search.

Run: ``.venv/bin/python examples/hf_generate_demo.py`` (after ``bash scripts/setup.sh``). Every output
is parsed and validated with ``jsonschema``; the script exits non-zero if one is invalid.
"""

from __future__ import annotations

import json
import sys

import jsonschema
import torch
import transformers

from constrain.adapters.hf import JSONSchemaLogitsProcessor
from constrain.models import default_model

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
PEOPLE = ["Alice is 30.", "Bob, 41 years old.", "Carol, aged 7.", "Dave is 65 and likes cats."]


def main() -> int:
    """Generate for four prompts with sampling, then with beam search; validate every output."""
    model, tok = default_model()
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"Reply with a JSON object for this person: {p}"}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in PEOPLE
    ]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    processor = JSONSchemaLogitsProcessor(SCHEMA, tok)  # compiled once, reused by both calls
    bad = 0
    for name, search in (
        ("sampling", {"do_sample": True, "temperature": 1.0, "top_p": 0.95}),
        ("beam search", {"do_sample": False, "num_beams": 4}),
    ):
        torch.manual_seed(0)
        out = model.generate(
            **enc,
            logits_processor=transformers.LogitsProcessorList([processor]),
            num_return_sequences=2,
            max_new_tokens=32,
            pad_token_id=tok.pad_token_id,
            **search,
        )
        print(f"--- {name}: 4 prompts x 2 sequences")
        for row in out[:, enc["input_ids"].shape[1] :]:
            text = tok.decode(row, skip_special_tokens=True)
            try:
                jsonschema.validate(json.loads(text), SCHEMA)
                verdict = "valid"
            except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
                verdict, bad = f"INVALID: {exc}", bad + 1
            print(f"{text}  [{verdict}]")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
