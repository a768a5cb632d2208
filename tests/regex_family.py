"""A bounded family of regexes and strings for property tests (hypothesis strategies)."""

from __future__ import annotations

from hypothesis import strategies as st

ALPHABET = ["a", "b", "c", "1", "-", "é", "世", "😀", " ", "\n"]

ASCII_ATOMS = ["a", "b", "c", "1", "-", " ", ".", r"\d", r"\w", r"\s", "[a-c]"]
"""Regex atoms that mean the same in Python and ECMA-262 under ``re.ASCII`` (shared with test_ecma_regex)."""

_atoms = st.sampled_from([*ASCII_ATOMS, "é", "世", "😀", "[^b]", "[é-世]", r"\-"])


# Patterns carry whether they match the empty string: ``*`` and ``+`` are applied to non-nullable
# children only (a nullable one gets a bounded repeat instead). Python's ``re``, the oracle, backtracks
# exponentially on nested unbounded repeats of nullable groups (``(?:(?:(?:\w)?)+)*`` against a 9-character
# miss never returned in CI), while the DFA has no such problem; the nullable-repeat shapes themselves are
# covered by bounded repeats here and by fixed cases in test_regex.py.
_Pattern = tuple[str, bool]


def _repeat(child: _Pattern, op: str) -> _Pattern:
    pattern, nullable = child
    if op == "?":
        return f"(?:{pattern})?", True
    if nullable:  # ``*``/``+`` of a nullable group: bounded instead
        return f"(?:{pattern}){{0,2}}", True
    return f"(?:{pattern}){op}", op == "*"


def _combine(children: st.SearchStrategy[_Pattern]) -> st.SearchStrategy[_Pattern]:
    return st.one_of(
        st.tuples(children, children).map(lambda p: (p[0][0] + p[1][0], p[0][1] and p[1][1])),
        st.tuples(children, children).map(lambda p: (f"(?:{p[0][0]}|{p[1][0]})", p[0][1] or p[1][1])),
        st.tuples(children, st.sampled_from("*+?")).map(lambda p: _repeat(p[0], p[1])),
        st.tuples(children, st.integers(0, 2), st.integers(0, 2)).map(
            lambda p: (
                f"(?:{p[0][0]}){{{min(p[1], p[2])},{max(p[1], p[2])}}}",
                p[0][1] or min(p[1], p[2]) == 0,
            )
        ),
    )


regexes = st.recursive(_atoms.map(lambda a: (a, False)), _combine, max_leaves=8).map(lambda p: p[0])
texts = st.lists(st.sampled_from(ALPHABET), max_size=8).map("".join)
