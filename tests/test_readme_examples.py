"""The README's generation examples, run with the default model (greedy, small budgets), give sensible
output: checked with ``re.fullmatch`` (ASCII digits for ``\\d``: the regex default), ``jsonschema`` and
Lark's own parser, none of them our engine.

Each example is the README's call with a smaller ``max_new_tokens`` and ``on_budget="complete"``, so
the test stays short; ``test_the_readme_still_shows_these_calls`` fails when the README changes its
examples, so that this file follows. Skips without transformers or the default model (``lm``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import constrain

README = Path(__file__).resolve().parents[1] / "README.md"

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
DATE = r"\d{4}-\d{2}-\d{2}"


def test_the_readme_still_shows_these_calls() -> None:
    text = README.read_text(encoding="utf-8")
    for call in (
        'person = generate_json(schema, "Ada Lovelace was 36. Her record as JSON:")',
        'text = generate("Today\'s date:", regex=r"\\d{4}-\\d{2}-\\d{2}")',
        'expr = generate("Two plus three:", grammar=constrain.Grammar.from_lark(name="arithmetic"))',
        "constrain generate --regex '\\d{4}-\\d{2}-\\d{2}' --prompt \"Today's date:\"",
        '"properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},',
    ):
        assert call in text, f"the README no longer shows {call!r}: update tests/test_readme_examples.py"


def test_generate_json_example(lm: tuple[Any, Any]) -> None:
    model, tokenizer = lm
    person = constrain.generate_json(
        SCHEMA,
        "Ada Lovelace was 36. Her record as JSON:",
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=32,
        on_budget="complete",
    )
    jsonschema.validate(person, SCHEMA)
    assert "Ada" in person["name"]


def test_date_regex_example_gives_ascii_digits(lm: tuple[Any, Any]) -> None:
    model, tokenizer = lm
    text = constrain.generate(
        "Today's date:", regex=DATE, model=model, tokenizer=tokenizer, max_new_tokens=16
    )
    assert re.fullmatch(DATE, text, re.ASCII), text  # not '🯸🯸🯸🯸-🯸🯸-🯸🯸' (Unicode \d)
    _year, month, day = map(int, text.split("-"))
    assert 1 <= month <= 12 and 1 <= day <= 31, text


def test_date_regex_from_the_cli(lm: tuple[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from constrain.cli import main

    assert main(["generate", "--regex", DATE, "--prompt", "Today's date:", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(DATE, out, re.ASCII), out


def test_arithmetic_grammar_example(lm: tuple[Any, Any]) -> None:
    import lark

    from constrain.grammars import load

    model, tokenizer = lm
    expr = constrain.generate(
        "Two plus three:",
        grammar=constrain.Grammar.from_lark(name="arithmetic"),
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=12,
        on_budget="complete",
    )
    lark.Lark(load("arithmetic"), parser="earley").parse(expr)  # Lark's own parser accepts it
    assert expr.strip(), expr
