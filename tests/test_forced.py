"""Forced tokens are the tokenizer's own encoding (constrain.forced), checked against tokenizers itself."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import pytest

import constrain
from constrain import Grammar, GrammarMatcher, TokenizerInfo
from constrain.forced import canonical_forced_tokens, greedy_forced_tokens

from .shared_data import hf_tokenizer, tokenizer_info, tokenizer_path

NAMES = ["llama3-128k", "mistral-32k", "gemma3-262k", "smollm2-49k"]

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@functools.cache
def fragment_tokenizer(name: str) -> Any:
    """The tokenizers library's tokenizer, set (through its Python API) to add no leading "▁"."""
    from tokenizers import Tokenizer, normalizers

    tok = hf_tokenizer(name)
    norm = tok.normalizer
    if not isinstance(norm, normalizers.Sequence) or not any(
        isinstance(n, normalizers.Prepend) for n in norm
    ):
        return tok
    copy = Tokenizer.from_str(tok.to_str())
    copy.normalizer = normalizers.Sequence([n for n in norm if not isinstance(n, normalizers.Prepend)])
    return copy


def oracle(name: str, text: str) -> list[int]:
    """The tokenizers library's own ids for ``text`` in the middle of an output (no BOS, no prefix ▁)."""
    ids = list(fragment_tokenizer(name).encode(text, add_special_tokens=False).ids)
    assert tokenizer_info(name).decode_bytes(ids) == text.encode()
    return ids


def check_forced(name: str, m: Any) -> list[int]:
    """The three properties of forced tokens, against the tokenizers library; returns them."""
    info = tokenizer_info(name)
    forced = m.forced_bytes()
    tokens = m.forced_tokens()
    spelled = info.decode_bytes(tokens)
    assert forced.startswith(spelled)  # (a) a prefix of the forced bytes
    twin = m.fork()
    assert all(twin.accept_token(t) for t in tokens)  # (b) accepted in turn
    assert tokens == oracle(name, spelled.decode())  # (c) the tokenizer's own encoding of it
    return tokens


def walk_output(name: str, grammar: Grammar, output: str) -> int:
    """Follow ``output`` through the grammar; at each point the forced tokens start its encoding.

    Returns how many tokens came from forced continuations.
    """
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(grammar, info))
    target = output.encode()
    pos = forced_total = 0
    while pos < len(target):
        tokens = check_forced(name, m)
        rest = target[pos:].decode()
        # The forced tokens are what the tokenizer gives for the rest of the output (whatever follows).
        assert oracle(name, rest)[: len(tokens)] == tokens
        if tokens:
            for t in tokens:
                assert m.accept_token(t)
            pos += len(info.decode_bytes(tokens))
            forced_total += len(tokens)
        else:  # the model's turn: take the tokenizer's next token of the output
            t = oracle(name, rest)[0]
            assert m.accept_token(t)
            pos += len(info.token_bytes[t])
    assert m.can_end()
    return forced_total


@pytest.mark.parametrize("name", NAMES)
def test_literal_prefix_is_the_tokenizers_encoding(name: str) -> None:
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"Hello, world! The answer is [0-9]+"), info))
    assert m.forced_bytes() == b"Hello, world! The answer is "
    tokens = check_forced(name, m)
    assert len(info.decode_bytes(tokens)) >= len(b"Hello, world! The answer")


@pytest.mark.parametrize("name", NAMES)
def test_fully_forced_output_keeps_every_token(name: str) -> None:
    # Nothing may follow but EOS: the last token cannot merge with anything and is kept.
    text = "The quick brown fox jumps over the lazy dog!"
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(text.replace(".", r"\.")), tokenizer_info(name)))
    assert check_forced(name, m) == oracle(name, text)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("whitespace", ["compact", "flexible"])
def test_json_schema_walk(name: str, whitespace: str) -> None:
    grammar = Grammar.from_json_schema(json.dumps(PERSON_SCHEMA), whitespace=whitespace)
    value = {"name": "Ada Lovelace", "age": 36}
    output = json.dumps(value, separators=(",", ":")) if whitespace == "compact" else json.dumps(value)
    assert walk_output(name, grammar, output) >= (3 if whitespace == "compact" else 2)


@pytest.mark.parametrize("name", NAMES)
def test_regex_walk_with_long_forced_runs(name: str) -> None:
    grammar = Grammar.from_regex(
        r'\{"name": "[A-Za-z ]{1,20}", "job": "(engineer|mathematician)", "age": [0-9]{1,3}\}'
    )
    output = '{"name": "Ada Lovelace", "job": "mathematician", "age": 36}'
    assert walk_output(name, grammar, output) >= 6


def test_cfg_matcher_forced_tokens() -> None:
    name = "llama3-128k"
    grammar = Grammar.from_lark('start: "Hello, world! The answer is " NUM "."\nNUM: /[0-9]+/')
    m = GrammarMatcher(constrain.compile(grammar, tokenizer_info(name)))
    assert m.compiled.kind == "context-free"
    tokens = check_forced(name, m)
    assert tokens == oracle(name, "Hello, world! The answer is ")
    for t in tokens:
        assert m.accept_token(t)
    assert m.accept_bytes("42")
    assert check_forced(name, m) == []  # "." may still follow a longer number: nothing forced yet


def test_last_token_withheld_when_it_could_merge() -> None:
    # " wor" is the tokenizer's last token of the forced text, but "ld" / "k" may follow, and
    # " world" / " work" are single tokens: feeding " wor" would leave the model an unnatural split.
    name = "llama3-128k"
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"Hello, wor(ld|k)!"), info))
    assert m.forced_bytes() == b"Hello, wor"
    full = oracle(name, "Hello, wor")
    assert info.token_bytes[full[-1]] == b" wor"
    assert oracle(name, "Hello, world!")[: len(full)] != full  # it does merge
    tokens = check_forced(name, m)
    assert tokens == full[:-1]
    greedy = greedy_forced_tokens(m.compiled.trie, m.forced_bytes())
    assert info.decode_bytes(greedy) == b"Hello, wor"  # greedy spells it all, " wor" included


@pytest.mark.parametrize("name", ["llama3-128k", "smollm2-49k"])
def test_trailing_space_run_is_withheld(name: str) -> None:
    # Llama-3's pre-tokenizer leaves the last space of a run to the word after it ("\s+(?!\S)").
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"x    [a-z]+"), info))
    assert m.forced_bytes() == b"x    "
    tokens = check_forced(name, m)
    assert oracle(name, "x    abc")[: len(tokens)] == tokens


def test_mistral_has_no_spurious_leading_space() -> None:
    name = "mistral-32k"
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r'\{"name": "[a-z]+"\}'), info))
    tokens = check_forced(name, m)
    assert info.token_bytes[tokens[0]] == b'{"'  # not "▁{" (b' {"')
    # Whole-text encoding prepends "▁": the fragment encoder must not.
    whole = hf_tokenizer(name).encode('{"name"', add_special_tokens=False).ids
    assert info.decode_bytes(whole).startswith(b" ")


def test_byte_fallback_characters() -> None:
    name = "mistral-32k"  # characters outside its vocabulary are <0xNN> byte tokens
    info = tokenizer_info(name)
    text = "Grüße 🦜 ok"
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(text + "!"), info))
    tokens = check_forced(name, m)
    assert tokens == oracle(name, text + "!")
    assert any(info.token_bytes[t] == b"\xf0" for t in tokens)


@pytest.mark.parametrize("name", ["llama3-128k", "gemma3-262k"])
def test_partial_character_at_the_end(name: str) -> None:
    # "é" and "ê" share their first byte: the forced bytes end inside a character.
    info = tokenizer_info(name)
    m = GrammarMatcher(constrain.compile(Grammar.from_regex("Un caf(é|ê) noir"), info))
    assert m.forced_bytes() == b"Un caf" + b"\xc3"
    tokens = check_forced(name, m)
    assert oracle(name, "Un café noir")[: len(tokens)] == tokens


def test_vocabulary_without_a_tokenizer_falls_back_to_greedy() -> None:
    info = TokenizerInfo.from_vocab([b"a", b"b", b"ab", b"-", b"abab", b""], eos_ids=[5])
    assert canonical_forced_tokens(info, b"abab-", (ord("1"),)) is None
    m = GrammarMatcher(constrain.compile(Grammar.from_regex("abab-(a|b)"), info))
    assert m.forced_tokens() == [4, 3]


def test_from_tokenizer_keeps_the_backend() -> None:
    import tokenizers

    name = "smollm2-49k"
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path(name)))
    info = TokenizerInfo.from_tokenizer(tok)
    assert info.backend is tok
    assert info.fingerprint == tokenizer_info(name).fingerprint  # the backend is not part of it
    assert info.encode_fragment("Hello, world") == oracle(name, "Hello, world")


@pytest.mark.parametrize("name", ["llama3-128k", "mistral-32k", "gemma3-262k", "smollm2-49k", "qwen3-151k"])
def test_kept_tokens_survive_any_continuation(name: str) -> None:
    """Random texts and continuations: the kept tokens start the encoding of text + continuation."""
    info = tokenizer_info(name)
    rng = random.Random(f"forced-{name}")
    pieces = [
        *'abxyzQ AZ019"{}:,.\n\t-_[]',
        "  ",
        "    ",
        "é",
        "中",
        "😀",
        " the",
        "ing",
        '":',
        '", "',
        "ation",
    ]
    checked = 0
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        more = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        kept = canonical_forced_tokens(info, text.encode(), (more.encode()[0],))
        if kept is None:
            continue
        checked += 1
        assert oracle(name, text + more)[: len(kept)] == kept, (text, more)
        assert oracle(name, info.decode_bytes(kept).decode()) == kept
    assert checked >= 300
