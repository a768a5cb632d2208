"""A ``maxLength`` too large for automaton layers is counted beside the automaton, exactly.

Past ``limits.max_counted_length`` (10,000 code points by default) a string's upper bound is not built
into the DFA: a count mark tells the token engine to count (:mod:`constrain.automata.counted`,
:mod:`constrain.masks.counted`). The oracles here are not the engine: ``jsonschema`` for whole
instances, and a hand-written reader of canonical JSON string text for every token's mask at steps
inside the string (a token is allowed exactly when the text so far plus the token is still the
beginning of a valid instance). Small limits (``max_counted_length=40``) put every step of a string
near its bound, where the masks are restricted; one test runs a real bound (32,767) end to end.
"""

from __future__ import annotations

import codecs
import json
import pickle
import random
from typing import Any

import jsonschema
import numpy as np
import pytest

import constrain
from constrain import Grammar, GrammarMatcher
from constrain.automata.counted import CountedDFA
from constrain.exceptions import InvalidInputError, UnsupportedSchemaFeature
from constrain.json_schema.recursion import CountedPushdown
from constrain.limits import Limits
from constrain.masks.counted import CountedStringMasks

from .shared_data import hf_tokenizer, tokenizer_info

TOKENIZER = "smollm2-49k"
SMALL = Limits(max_counted_length=40)
SHORT_ESCAPES = {0x22, 0x5C, 0x08, 0x0C, 0x0A, 0x0D, 0x09}
_CANONICAL_U = [b"\\u%04x" % cp for cp in range(0x20) if cp not in SHORT_ESCAPES]
ALPHABET = 'ab cd\u00e9\u4e2d\U0001f600\n\t"\\\u0001/xyz'


def _read(data: bytes) -> tuple[int, int] | None:
    """Canonical JSON string content (``json.dumps(..., ensure_ascii=False)``): ``(code points, index of
    the closing quote or -1)``, a trailing incomplete code point counted; None where it is not the
    beginning of such content."""
    i, count, n = 0, 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x22:
            return count, i
        count += 1
        if b == 0x5C:
            esc = data[i : i + 6]
            if len(esc) >= 2 and esc[1] in b'"\\bfnrt':
                i += 2
            elif any(u.startswith(esc) for u in _CANONICAL_U):
                if len(esc) < 6:
                    return count, -1
                i += 6
            else:
                return None
            continue
        if b < 0x20:
            return None
        width = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if b < 0xF5 else 0
        if not width:
            return None
        try:
            codecs.getincrementaldecoder("utf-8")().decode(data[i : i + width], final=False)
        except UnicodeDecodeError:
            return None
        if i + width > n:
            return count, -1
        try:
            data[i : i + width].decode("utf-8")
        except UnicodeDecodeError:
            return None
        i += width
    return count, -1


class StringOracle:
    """Which tokens may follow ``before`` + ``"`` + content, for a string of ``lo``..``hi`` code
    points followed by ``after`` (the rest of the instance)."""

    def __init__(self, lo: int, hi: int, after: bytes, more: bool = False) -> None:
        self.lo, self.hi, self.after, self.more = lo, hi, after, more

    def unknown(self, rest: bytes) -> bool:
        """Whether this oracle cannot tell the bytes ``rest`` after the closing quote (``more``: the
        object may go on with other members after the string, which it does not read)."""
        return self.more and rest.startswith(b",")

    def allowed(self, content: bytes, vocab: list[tuple[int, bytes]]) -> tuple[set[int], set[int]]:
        """The ids in ``vocab`` (id, bytes) that may follow the string's ``content`` so far, and those
        it cannot tell (see :meth:`unknown`)."""
        # Complete code points before the last one are counted once, not per token.
        cut = _last_char_start(content)
        base = _read(content[:cut])
        assert base is not None and base[1] < 0
        tail = content[cut:]
        out, unknown = set(), set()
        for i, token in vocab:
            got = _read(tail + token)
            if got is None:
                continue
            count, close = base[0] + got[0], got[1]
            if close < 0:
                ok = count <= self.hi
            else:
                rest = (tail + token)[close + 1 :]
                if self.unknown(rest):
                    unknown.add(i)
                    continue
                ok = self.lo <= count <= self.hi and self.after.startswith(rest)
            if ok:
                out.add(i)
        return out, unknown


def _last_char_start(content: bytes) -> int:
    """Where the last code point of ``content`` (complete or not) begins (0 for none)."""
    i, last, n = 0, 0, len(content)
    while i < n:
        last = i
        b = content[i]
        i += (2 if content[i + 1 : i + 2] != b"u" else 6) if b == 0x5C else 1
        while i < n and 0x80 <= content[i] < 0xC0:
            i += 1
    return last


def _schemas(bound: int, lo: int = 2) -> list[tuple[str, dict[str, Any], str, str]]:
    """(name, schema, text before the string, text after it)."""
    s = {"type": "string", "minLength": lo, "maxLength": bound}
    closed = {"type": "object", "properties": {"s": s}, "required": ["s"], "additionalProperties": False}
    return [
        ("string", s, "", ""),
        ("nullable", {**s, "type": ["string", "null"]}, "", ""),
        ("object", closed, '{"s":', "}"),
        ("open object", {k: v for k, v in closed.items() if k != "additionalProperties"}, '{"s":', "}"),
    ]


def _walk(
    schema: dict[str, Any],
    text: str,
    limits: Limits,
    oracle: StringOracle | None,
    before: str,
    every: int = 3,
) -> bool:
    """Teacher-force ``text`` (tokenised by the real tokenizer); with ``oracle``, compare the mask at
    every ``every``-th step inside the string. Returns whether every token was accepted and the end
    allowed."""
    info = tokenizer_info(TOKENIZER)
    compiled = constrain.compile(Grammar.from_json_schema(schema, limits=limits), info)
    matcher = GrammarMatcher(compiled)
    ids = hf_tokenizer(TOKENIZER).encode(text, add_special_tokens=False).ids
    data = text.encode()
    assert b"".join(info.token_bytes[t] for t in ids) == data
    vocab = [(i, b) for i, b in enumerate(info.token_bytes) if b]
    start = len(before.encode()) + 1  # the string's content begins past its opening quote
    done = b""
    for step, t in enumerate(ids):
        content = done[start:]
        head = _read(content) if oracle is not None and step % every == 0 and len(done) >= start else None
        if head is not None and head[1] >= 0:
            oracle = None  # the string is closed: nothing more to compare
        elif head is not None and oracle is not None:
            want, unknown = oracle.allowed(content, vocab)
            got = {i for i in matcher.allowed_token_ids().tolist() if info.token_bytes[i]} - unknown
            assert got == want, (content[-20:], [info.token_bytes[i] for i in sorted(got ^ want)[:5]])
        if not matcher.accept_token(t):
            return False
        done += info.token_bytes[t]
    return matcher.can_end()


def _instance(name: str, value: str) -> Any:
    return {"s": value} if "object" in name else value


@pytest.mark.parametrize("name", [n for n, *_ in _schemas(50)])
def test_a_counted_max_length_allows_exactly_the_valid_strings(name: str) -> None:
    bound, lo = 50, 2
    _, schema, before, after = next(x for x in _schemas(bound, lo) if x[0] == name)
    compiled = Grammar.from_json_schema(schema, limits=SMALL).to_automaton()
    assert isinstance(compiled, (CountedDFA, CountedPushdown))
    rng = random.Random(7)
    for length in (0, 1, 2, bound - 1, bound, bound, bound + 1, bound + 2):
        value = "".join(rng.choice(ALPHABET) for _ in range(length))
        text = json.dumps(_instance(name, value), ensure_ascii=False, separators=(",", ":"))
        # masks against the oracle on one walk to the bound (every step there is near it)
        oracle = StringOracle(lo, bound, after.encode(), name == "open object") if length == bound else None
        valid = jsonschema.Draft202012Validator(schema).is_valid(_instance(name, value))
        assert _walk(schema, text, SMALL, oracle, before) == valid, (length, value)


def test_the_mask_never_lets_a_token_past_the_bound() -> None:
    """Random walks over the allowed tokens: every output is valid, and strings reach their bound."""
    info = tokenizer_info(TOKENIZER)
    schema = {"type": "string", "maxLength": 45}
    compiled = constrain.compile(Grammar.from_json_schema(schema, limits=SMALL), info)
    assert isinstance(compiled.automaton, CountedStringMasks)
    rng = np.random.default_rng(3)
    longest = 0
    for _ in range(40):
        matcher = GrammarMatcher(compiled)
        out = b""
        for _ in range(200):
            allowed = [t for t in matcher.allowed_token_ids().tolist() if t not in info.eos_ids]
            if not allowed or (matcher.can_end() and rng.random() < 0.05):
                break
            t = int(rng.choice(allowed))
            assert matcher.accept_token(t)
            out += info.token_bytes[t]
        if matcher.can_end():
            value = json.loads(out)
            assert jsonschema.Draft202012Validator(schema).is_valid(value)
            longest = max(longest, len(value))
    assert longest == 45  # walks that run long end exactly at the bound


def test_a_real_bound_is_counted_end_to_end() -> None:
    """32,767 (the most common bound the layers refused: 100 MaskBench schemas) with the default
    limits: an object with such a string compiles, accepts a string at the bound and rejects one
    past it, and its mask near the bound matches the oracle."""
    bound = 32_767
    _, schema, before, after = _schemas(bound, 0)[3]
    rng = random.Random(11)
    limits = Limits()
    for length, valid in ((bound, True), (bound + 1, False)):
        value = "".join(rng.choice("abc de\u00e9\n") for _ in range(length))
        text = json.dumps({"s": value}, ensure_ascii=False, separators=(",", ":"))
        assert _walk(schema, text, limits, None, before) == valid
    # the oracle near the bound: a string 30 code points short of it, then tokens to the end
    value = "x" * (bound - 30) + "".join(rng.choice(ALPHABET) for _ in range(30))
    text = json.dumps({"s": value}, ensure_ascii=False, separators=(",", ":"))
    info = tokenizer_info(TOKENIZER)
    compiled = constrain.compile(Grammar.from_json_schema(schema), info)
    matcher = GrammarMatcher(compiled)
    ids = hf_tokenizer(TOKENIZER).encode(text, add_special_tokens=False).ids
    oracle = StringOracle(0, bound, after.encode(), True)
    vocab = [(i, b) for i, b in enumerate(info.token_bytes) if b]
    done = b""
    start = len(before) + 1
    checked = 0
    for t in ids:
        content = done[start:]
        if len(content) > bound - 40 and _read(content) is not None and _read(content)[1] < 0 and checked < 8:  # type: ignore[index]
            want, unknown = oracle.allowed(content, vocab)
            assert {i for i in matcher.allowed_token_ids().tolist() if info.token_bytes[i]} - unknown == want
            checked += 1
        assert matcher.accept_token(t)
        done += info.token_bytes[t]
    assert matcher.can_end() and checked == 8


def test_a_matcher_inside_a_counted_string_pickles_and_forks() -> None:
    info = tokenizer_info(TOKENIZER)
    schema = {"type": "string", "maxLength": 45}
    compiled = constrain.compile(Grammar.from_json_schema(schema, limits=SMALL), info)
    matcher = GrammarMatcher(compiled)
    ids = hf_tokenizer(TOKENIZER).encode('"' + "ab" * 21, add_special_tokens=False).ids
    for t in ids:
        assert matcher.accept_token(t)
    twin = pickle.loads(pickle.dumps(matcher))
    fork = matcher.fork()
    here = matcher.allowed_token_ids()
    three = hf_tokenizer(TOKENIZER).encode("abc", add_special_tokens=False).ids
    for m in (twin, fork, matcher):
        assert np.array_equal(m.allowed_token_ids(), here)
        assert all(m.accept_token(t) for t in three)  # 42 + 3 = 45 code points
        assert m.allowed_token_ids().tolist() == [hf_tokenizer(TOKENIZER).token_to_id('"')]


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        # a union with another string at the same place: one count cannot tell which applies
        ({"anyOf": [{"type": "string", "maxLength": 50}, {"type": "string", "pattern": "^a"}]}, "maxLength"),
        # products compare marks as text: refused, never a wrong language
        ({"allOf": [{"type": "string", "maxLength": 50}, {"type": "string", "maxLength": 60}]}, "allOf"),
        ({"type": "string", "not": {"type": "string", "maxLength": 50}}, "not"),
        ({"type": "string", "maxLength": 50, "enum": ["a", "b"]}, "enum"),
    ],
)
def test_a_counted_bound_that_cannot_be_exact_is_refused_with_its_place(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(UnsupportedSchemaFeature) as err:
        Grammar.from_json_schema(schema, limits=SMALL)
    assert err.value.pointer.startswith("#")
    assert keyword in str(err.value) or err.value.keyword == keyword


def test_to_dfa_says_a_counted_grammar_has_no_single_dfa() -> None:
    grammar = Grammar.from_json_schema({"type": "string", "maxLength": 50}, limits=SMALL)
    with pytest.raises(InvalidInputError, match="no single DFA"):
        grammar.to_dfa()


def test_lenient_still_drops_a_bound_too_large_to_count() -> None:
    with pytest.warns(UserWarning, match="maxLength"):
        grammar = Grammar.from_json_schema({"type": "string", "maxLength": 50}, limits=SMALL, lenient=True)
    assert not isinstance(grammar.to_automaton(), (CountedDFA, CountedPushdown))


def test_a_bound_that_layers_can_hold_falls_back_to_them_where_counting_cannot_be_exact() -> None:
    """With the default limits a maxLength past 256 is counted; where a union at its quote or a
    product meets it, the schema is compiled again with layers (up to 10,000), not refused."""
    info = tokenizer_info(TOKENIZER)
    counted = Grammar.from_json_schema({"type": "string", "maxLength": 1000}).to_automaton()
    assert isinstance(counted, CountedDFA)
    union = {"anyOf": [{"type": "string", "maxLength": 1000}, {"type": "string", "pattern": "^a"}]}
    product = {"allOf": [{"type": "string", "maxLength": 1000}, {"type": "string", "maxLength": 1200}]}
    for schema in (union, product):
        grammar = Grammar.from_json_schema(schema)
        assert not isinstance(grammar.to_automaton(), (CountedDFA, CountedPushdown))
        for length in (1000, 1001):
            value = "b" * length
            matcher = GrammarMatcher(constrain.compile(grammar, info))
            ids = hf_tokenizer(TOKENIZER).encode(json.dumps(value), add_special_tokens=False).ids
            ok = all(matcher.accept_token(t) for t in ids) and matcher.can_end()
            assert ok == jsonschema.Draft202012Validator(schema).is_valid(value)
