"""A bounded family of regexes and strings for property tests (hypothesis strategies)."""

from __future__ import annotations

from hypothesis import strategies as st

ALPHABET = ["a", "b", "c", "1", "-", "é", "世", "😀", " ", "\n"]

ASCII_ATOMS = ["a", "b", "c", "1", "-", " ", ".", r"\d", r"\w", r"\s", "[a-c]"]
"""Regex atoms that mean the same in Python and ECMA-262 under ``re.ASCII`` (shared with test_ecma_regex)."""

_atoms = st.sampled_from([*ASCII_ATOMS, "é", "世", "😀", "[^b]", "[é-世]", r"\-"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map(lambda p: p[0] + p[1]),
        st.tuples(children, children).map(lambda p: f"(?:{p[0]}|{p[1]})"),
        children.map(lambda r: f"(?:{r})*"),
        children.map(lambda r: f"(?:{r})+"),
        children.map(lambda r: f"(?:{r})?"),
        st.tuples(children, st.integers(0, 2), st.integers(0, 2)).map(
            lambda p: f"(?:{p[0]}){{{min(p[1], p[2])},{max(p[1], p[2])}}}"
        ),
    )


regexes = st.recursive(_atoms, _combine, max_leaves=8)
texts = st.lists(st.sampled_from(ALPHABET), max_size=8).map("".join)
