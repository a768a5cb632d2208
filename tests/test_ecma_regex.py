"""ECMA-262 pattern translation, checked against expectations written from the ECMA spec, the JSON Schema
Test Suite, and Python's own ``re`` on the subset where the two dialects agree."""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain.automata import regex_to_dfa
from constrain.exceptions import RegexSyntaxError, UnsupportedRegexFeature
from constrain.json_schema.ecma_regex import ecma_to_python, property_ranges, search_regex

from .regex_family import ASCII_ATOMS
from .shared_data import SHARED

SUITE = SHARED / "data" / "json-schema-test-suite" / "tests" / "draft2020-12"


def ecma_test(pattern: str, text: str) -> bool:
    """ECMA ``RegExp(pattern).test(text)`` as our automaton sees it (and Python's re agrees)."""
    dfa_says = regex_to_dfa(search_regex(pattern)).matches(text.encode())
    re_says = re.search(ecma_to_python(pattern), text) is not None
    assert dfa_says == re_says, (pattern, text)
    return dfa_says


# (pattern, strings RegExp.test accepts, strings it rejects): search semantics, as JSON Schema uses.
TABLE = [
    ("a+", ["xxaayy", "a"], ["", "xyz"]),
    ("^abc$", ["abc"], ["abc\n", "\nabc", "xabc", "abcx"]),
    ("^a|b$", ["ax", "xb"], ["xa", "bx"]),
    ("abc$", ["xabc"], ["abc\n"]),
    (r"\d", ["0", "x9"], ["٣", "x"]),  # ASCII digits only
    (r"^\D$", ["٣", "x"], ["0"]),
    (r"^\w+$", ["a_Z9"], ["é", "a-b"]),
    (r"^\W$", ["é", "-"], ["a", "_"]),
    (
        r"^\s$",
        [" ", "\t", "\n", "\v", "\f", "\r", "\xa0", "\ufeff", "\u2028", "\u2003", "\u3000"],
        ["\x85", "a"],
    ),
    (r"^\S$", ["a", "\x85", "\u200b"], [" ", "\ufeff"]),
    ("^.$", ["a", "é", "😀", "\x00", "\x85"], ["\n", "\r", "\u2028", "\u2029", ""]),
    ("^[^]$", ["\n", "a", "😀"], ["", "ab"]),
    ("[]", [], ["", "a", "[]"]),
    ("^a[]?b$", ["ab"], ["a[]b"]),
    (r"^\cC\cj$", ["\x03\n"], ["cCcj"]),
    (r"^\0$", ["\x00"], ["0"]),
    (r"^\x41\u00e9\uD83D\uDE00$", ["Aé😀"], ["A"]),
    (r"^[\uD83D\uDE00-\uD83D\uDE02]$", ["😀", "😁", "😂"], ["😃", "a"]),
    (r"^\/\-\.\$\^\*\\$", ["/-.$^*\\"], []),
    (r"^\t$", ["\t"], ["\\t", "t"]),
    (r"^[\b]$", ["\x08"], ["b"]),
    (r"^[\d-z]+$", ["1-z", "-"], ["a"]),  # Annex B: "-" next to a class escape is a member
    (r"^[^\D]$", ["5"], ["a"]),
    (r"^[\s\S]$", ["\n", "a"], ["ab"]),
    (r"^[a-c-e]$", ["a", "-", "e"], ["d"]),
    ("^a{2,3}$", ["aa", "aaa"], ["a", "aaaa"]),
    ("^a{2,}?$", ["aa", "aaaaa"], ["a"]),
    ("^a{,2}$", ["a{,2}"], ["a", "aa"]),  # not a quantifier in ECMA: literal (Python 3.11 reads {0,2})
    ("^x{$", ["x{"], ["x"]),
    ("^]}$", ["]}"], []),
    ("^(?:ab|cd)+$", ["abcd", "cdab"], ["abc", ""]),
    ("^(?<year>[0-9]{4})-(?<m>[0-9]{2})$", ["2024-01"], ["2024-1"]),
    ("^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\\11$", ["abcdefghij\t"], []),  # \11 > 10 groups: octal 9 = TAB
    (r"^\8$", ["8"], []),
    (r"^\p{Letter}+$", ["Hello", "π", "é"], ["123", "a1"]),
    (r"^\p{L}\P{L}$", ["a1"], ["ab"]),
    (r"^\p{Lu}\p{Ll}$", ["Ab"], ["aB"]),
    (r"^\p{Nd}+$", ["42", "৪২"], ["x"]),
    (r"^\p{digit}+$", ["42", "৪২"], ["-%#"]),
    (r"^\p{gc=Lu}$", ["É"], ["é"]),
    (r"^\p{General_Category=Punctuation}$", ["!", "¿"], ["a"]),
    (r"^\p{Zs}$", [" ", "\u3000"], ["\t"]),
    (r"^\p{ASCII}+$", ["abc~"], ["é"]),
    (r"^[\p{L}\d]+$", ["a1é"], ["-"]),
    (r"^[^\p{L}]$", ["1"], ["a"]),
    ("😀+", ["x😀😀"], ["x"]),
    ("^a|", ["", "xyz"], []),
    ("()", ["", "a"], []),
]


@pytest.mark.parametrize(("pattern", "accepted", "rejected"), TABLE)
def test_ecma_table(pattern: str, accepted: list[str], rejected: list[str]) -> None:
    for text in accepted:
        assert ecma_test(pattern, text), f"{pattern!r} should find a match in {text!r}"
    for text in rejected:
        assert not ecma_test(pattern, text), f"{pattern!r} should find no match in {text!r}"


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        ("a(?=b)", "lookahead"),
        ("a(?!b)", "negative lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "negative lookbehind"),
        (r"(a)\1", "backreference"),
        (r"(?<n>a)\k<n>", "backreference"),
        (r"\bword\b", "word boundary"),
        (r"a\B", "word boundary"),
        (r"\p{Script=Greek}", "property"),
        (r"\p{Alphabetic}", "property"),
        (r"\u{1F600}", "\\u{"),
    ],
)
def test_unsupported_constructs_are_named(pattern: str, construct: str) -> None:
    with pytest.raises(UnsupportedRegexFeature) as info:
        ecma_to_python(pattern)
    assert construct in info.value.construct


@pytest.mark.parametrize(
    "pattern",
    [
        "^(abc]",
        "(?P<name>x)",
        "(?#comment)a",
        "(?i)abc",
        r"\a",
        "a**",
        "+a",
        "{2}",
        "x{3,2}",
        "[b-a]",
        "a)",
        "[a",
        "\\",
    ],
)
def test_ecma_syntax_errors(pattern: str) -> None:
    with pytest.raises(RegexSyntaxError):
        ecma_to_python(pattern)


def _suite(path: str) -> list[dict[str, object]]:
    file = SUITE / path
    if not file.exists():
        pytest.skip(f"../shared is absent (no {file})")
    return json.loads(file.read_text())  # type: ignore[no-any-return]


def _pattern_cases() -> list[tuple[str, str, object, bool]]:
    cases = []
    for path in ("pattern.json", "optional/ecmascript-regex.json", "patternProperties.json"):
        file = SUITE / path
        if not file.exists():
            continue
        for group in json.loads(file.read_text()):
            schema = group["schema"]
            for test in group["tests"]:
                cases.append((path, schema, test["data"], test["valid"]))
    return cases


def test_json_schema_test_suite_patterns() -> None:
    """Every suite case our translation can decide: ``pattern`` on strings, and ``patternProperties``
    with ``additionalProperties: false`` and ``true`` subschemas (valid iff every key matches)."""
    checked = 0
    for path, schema, data, valid in _pattern_cases():
        assert isinstance(schema, dict)
        if "pattern" in schema and isinstance(data, str):
            assert ecma_test(schema["pattern"], data) == valid, (path, schema, data)
            checked += 1
        props = schema.get("patternProperties")
        if (
            isinstance(props, dict)
            and schema.get("additionalProperties") is False
            and all(v is True for v in props.values())
            and isinstance(data, dict)
        ):
            ok = all(any(ecma_test(p, key) for p in props) for key in data)
            assert ok == valid, (path, schema, data)
            checked += 1
    if checked == 0:
        pytest.skip("../shared is absent")
    assert checked >= 40


def test_format_regex_suite_syntax() -> None:
    """The suite's ``format: regex`` verdicts: invalid ones raise RegexSyntaxError, valid ones do not."""
    for name in ("regex.json", "ecmascript-regex.json"):
        for group in _suite(f"optional/format/{name}"):
            for test in group["tests"]:  # type: ignore[attr-defined]
                if not isinstance(test["data"], str):
                    continue
                if test["valid"]:
                    # valid ECMA, maybe beyond a finite automaton (lookbehind, backreference)
                    with contextlib.suppress(UnsupportedRegexFeature):
                        ecma_to_python(test["data"])
                else:
                    with pytest.raises(RegexSyntaxError):
                        ecma_to_python(test["data"])


def test_anchors_inside_search_regex() -> None:
    dfa = regex_to_dfa(search_regex("^ab"))
    assert dfa.matches(b"abzzz")
    assert not dfa.matches(b"zab")
    dfa = regex_to_dfa(search_regex("ab$"))
    assert dfa.matches(b"zzab")
    assert not dfa.matches(b"abz")
    assert not dfa.matches(b"ab\n")
    dfa = regex_to_dfa(search_regex("a^b"))
    assert not dfa.matches(b"ab")
    assert not dfa.matches(b"a^b")


# Patterns pinned at both ends: where both anchors are top-level and alone, the search language is the
# full match of the middle (no anchors for the subset construction to track); elsewhere the general form.
PINNED = [
    (r"^abc$", True),
    (r"^(a|b)+$", True),
    (r"^[a-z]{2,3}(-[A-Z]{2})?$", True),
    (r"^$", True),
    (r"^a[$^]b$", True),  # anchors inside a class are characters
    (r"^a|b$", False),  # the anchors belong to the two branches
    (r"^a$|^b$", False),
    (r"^(a$|b)$", False),
    (r"^a\\$", True),  # an escaped backslash, then the anchor
    (r"^a\$$", True),  # an escaped dollar, then the anchor
    (r"^a\$", False),  # only an escaped dollar: anchored at one end
]


@pytest.mark.parametrize(("pattern", "pinned"), PINNED)
def test_search_regex_of_pinned_patterns(pattern: str, pinned: bool) -> None:
    fast = search_regex(pattern)
    general = rf"(?s:.*)(?:{ecma_to_python(pattern)})(?s:.*)"
    assert (fast != general) == pinned
    a, b = regex_to_dfa(fast), regex_to_dfa(general)
    assert a.num_states == b.num_states
    assert np.array_equal(a.transitions, b.transitions) and np.array_equal(a.accepting, b.accepting)
    for text in [
        "",
        "a",
        "b",
        "abc",
        "xabc",
        "abcx",
        "ab",
        "aab",
        "ba",
        "a$b",
        "a^b",
        "a\\",
        "a$",
        "ab-CD",
        "abc\n",
        "\nabc",
    ]:
        assert a.matches(text.encode()) == (re.search(ecma_to_python(pattern), text) is not None), text


def test_property_tables() -> None:
    letters = property_ranges("L")
    assert letters is not None and letters == property_ranges("Letter") == property_ranges("gc=L")
    assert property_ranges("Script=Latin") is None
    assert property_ranges("NoSuchThing") is None
    assert property_ranges("Any") == [(0, 0x10FFFF)]


# --- the ASCII subset where Python and ECMA agree --------------------------------------------------
# With re.ASCII, strings without "\n" (Python's $ also matches before a final newline) and without "\r"
# (ECMA's "." excludes it), every construct below means the same in both dialects.

_atoms = st.sampled_from([*ASCII_ATOMS, r"\D", r"\W", r"\S", "[^ab]", r"[\d.]", r"\."])


def _quantify(child: tuple[str, bool], op: str) -> tuple[str, bool]:
    # An unbounded repeat of a nullable group makes Python's re (the oracle) backtrack exponentially
    # (see regex_family): such a group gets a bounded repeat instead.
    pattern, nullable = child
    if nullable and op in ("*", "+", "*?", "{0,}"):
        op = "{0,2}"
    return f"(?:{pattern}){op}", nullable or op in ("*", "?", "*?", "{0,}", "{0,2}")


def _grow(children: st.SearchStrategy[tuple[str, bool]]) -> st.SearchStrategy[tuple[str, bool]]:
    return st.one_of(
        st.tuples(children, children).map(lambda p: (p[0][0] + p[1][0], p[0][1] and p[1][1])),
        st.tuples(children, children).map(lambda p: (f"(?:{p[0][0]}|{p[1][0]})", p[0][1] or p[1][1])),
        st.tuples(children, children).map(lambda p: (f"({p[0][0]}|{p[1][0]})", p[0][1] or p[1][1])),
        st.tuples(children, st.sampled_from(["*", "+", "?", "*?", "{2}", "{1,3}", "{0,}"])).map(
            lambda p: _quantify(p[0], p[1])
        ),
    )


_bodies = st.recursive(_atoms.map(lambda a: (a, False)), _grow, max_leaves=6).map(lambda p: p[0])
ecma_patterns = st.tuples(st.sampled_from(["", "^"]), _bodies, st.sampled_from(["", "$"])).map("".join)
ascii_texts = st.text(alphabet="abc1- .x_\t", max_size=8)


@settings(max_examples=300, deadline=None)
@given(ecma_patterns, st.lists(ascii_texts, min_size=8, max_size=8))
def test_search_regex_agrees_with_python_on_common_subset(pattern: str, texts: list[str]) -> None:
    dfa = regex_to_dfa(search_regex(pattern))
    for text in texts:
        expected = re.search(pattern, text, re.ASCII) is not None
        assert dfa.matches(text.encode()) == expected, (pattern, text)


def test_space_separators_are_the_category_table_zs() -> None:
    """``\\s``'s Zs part, found through ``str.isspace`` candidates, is exactly the Zs ranges of a scan
    of every code point's category (the slow table it replaced for ``\\s``)."""
    from constrain.automata.charsets import normalize
    from constrain.json_schema.ecma_regex import _category_table, _space_separators

    assert normalize(_space_separators()) == normalize(_category_table()["Zs"])
