"""Regex -> byte DFA, checked against re.fullmatch."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain.automata import regex_to_dfa, utf8_sequences
from constrain.exceptions import ConstrainError, RegexSyntaxError, UnsupportedRegexFeature

from .regex_family import regexes, texts

TABLE = [
    (r"\d{4}-\d{2}-\d{2}", ["2024-01-31", "٠١٢٣-٤٥-٦٧"], ["2024-1-31", "2024-01-31 ", ""]),
    (r"[0-9a-f]{8}-[0-9a-f]{4}", ["deadbeef-0123"], ["DEADBEEF-0123", "deadbeef0123"]),
    (r'"([^"\\]|\\.)*"', ['""', '"a\\"b"', '"ü€😀"'], ['"', '"a"b"', '"\\"']),
    (r"(?i)straße", ["STRASSE"[:0] + "straße", "STRAßE", "Straße"], ["strasse"]),
    (r"[^a-c]+", ["xyz", "é", "\n"], ["a", "xa", ""]),
    (r".", ["a", "é", "😀"], ["\n", "ab", ""]),
    (r"(?s).", ["\n"], [""]),
    (r"^ab$", ["ab"], ["ab\n", "a"]),
    (r"ab$\n", ["ab\n"], ["ab"]),
    (r"ab\Z", ["ab"], ["ab\n"]),
    (r"a^b", [], ["ab", "a^b"]),
    (r"(?x) a b  # comment", ["ab"], ["a b"]),
    (r"(?a)\w+", ["abc_1"], ["é"]),
    (r"\w+", ["é世_1"], ["-"]),
    (r"x{0}", [""], ["x"]),
    (r"[\u0100-\U0001F600]", ["Ā", "😀", "世"], ["ÿ", "😁"]),
    # unbounded repeats of nullable groups (the property tests' family leaves them out: see regex_family)
    (r"(?:(?:(?:\w)?)+)*", ["", "a", "世b"], ["-", "a-"]),
    (r"(?:(?:a?b?)*)+c", ["c", "abbac"], ["", "ab", "cc"]),
    (r"(?:a*)*(?:b?)+", ["", "aab", "ab"], ["ba", "c"]),
]


@pytest.mark.parametrize(("pattern", "accepted", "rejected"), TABLE)
def test_accept_reject_table(pattern: str, accepted: list[str], rejected: list[str]) -> None:
    dfa = regex_to_dfa(pattern)
    for text in accepted:
        assert re.fullmatch(pattern, text), f"table error: re rejects {text!r}"
        assert dfa.matches(text.encode()), f"{pattern!r} should accept {text!r}"
    for text in rejected:
        assert not re.fullmatch(pattern, text), f"table error: re accepts {text!r}"
        assert not dfa.matches(text.encode()), f"{pattern!r} should reject {text!r}"


@settings(max_examples=300, deadline=None)
@given(regexes, st.lists(texts, min_size=10, max_size=10))
def test_dfa_agrees_with_re_fullmatch(pattern: str, samples: list[str]) -> None:
    dfa = regex_to_dfa(pattern)
    for text in samples:
        assert dfa.matches(text.encode()) == bool(re.fullmatch(pattern, text)), (pattern, text)


def test_dfa_rejects_invalid_utf8_and_surrogates() -> None:
    dfa = regex_to_dfa(r"(?s).*")
    assert dfa.matches("anything é 😀".encode())
    assert not dfa.matches(b"\xff")
    assert not dfa.matches(b"\xc3")  # truncated sequence: not a complete member
    assert not dfa.matches("\ud800".encode("utf-8", "surrogatepass"))
    assert not dfa.matches(b"\xc0\x80")  # overlong encoding of NUL


def test_every_state_is_live() -> None:
    dfa = regex_to_dfa(r"[a-z]+@[a-z]+\.(com|org)")
    # Pruning: from every state some accepting state is reachable.
    for s in range(dfa.num_states):
        seen, stack = {s}, [s]
        while stack:
            cur = stack.pop()
            for t in set(dfa.transitions[cur].tolist()) - {-1}:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        assert any(dfa.accepting[t] for t in seen)


def test_minimal() -> None:
    # (a|b)*abb has a 4-state minimal DFA.
    assert regex_to_dfa(r"(a|b)*abb").num_states == 4
    assert regex_to_dfa(r"a*|a+").num_states == 1


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"(?=a)a", "lookahead"),
        (r"(?!a)b", "negative lookahead"),
        (r"(?<=a)b", "lookbehind"),
        (r"(a)\1", "backreference"),
        (r"(a)?(?(1)b|c)", "backreference"),
        (r"\bfoo", "word boundary"),
        (r"a*+", "possessive"),
        (r"(?>a)", "atomic group"),
        (r"(?m)^a", "MULTILINE"),
    ],
)
def test_unsupported_constructs_are_named(pattern: str, construct: str) -> None:
    with pytest.raises(UnsupportedRegexFeature, match=re.escape(construct)) as info:
        regex_to_dfa(pattern)
    assert isinstance(info.value, ConstrainError)
    assert isinstance(info.value, ValueError)
    assert info.value.pattern == pattern and repr(pattern) in str(info.value)


def test_syntax_errors_carry_position() -> None:
    with pytest.raises(RegexSyntaxError, match="position 3") as info:
        regex_to_dfa("abc)")
    assert info.value.position == 3


def test_empty_language() -> None:
    dfa = regex_to_dfa(r"[^\s\S]")
    assert not dfa.matches(b"")
    assert (dfa.transitions == -1).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x10FFFF), st.integers(0, 0x10FFFF))
def test_utf8_sequences_cover_exactly(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    seqs = utf8_sequences(lo, hi)
    probes = {lo, hi, (lo + hi) // 2, max(lo - 1, 0), min(hi + 1, 0x10FFFF)}
    for cp in probes:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        enc = chr(cp).encode()
        inside = any(
            len(seq) == len(enc) and all(r0 <= byte <= r1 for (r0, r1), byte in zip(seq, enc)) for seq in seqs
        )
        assert inside == (lo <= cp <= hi), (lo, hi, cp)
