"""The shipped Lark grammars: each loads, and accepts / rejects what Lark's own parser does.

The oracle is Lark's Earley parser with the engine's lexing rule as its terminal matcher
(:func:`tests.test_cfg.lark_parser`); every table entry also gets the same verdict from Lark's own
``lexer="dynamic"``, except the strings in ``LOOKAHEAD_GAP`` (see :mod:`constrain.cfg.earley`).
"""

from __future__ import annotations

import lark
import pytest

import constrain.grammars
from constrain import Grammar
from constrain.cfg import automaton_for
from constrain.exceptions import InvalidInputError

from .test_cfg import lark_accepts

TABLES: dict[str, tuple[list[str], list[str]]] = {
    "json": (
        [
            "{}",
            "[]",
            "0",
            "-0.5e+10",
            '"a\\u00e9\\n"',
            ' {"a": [1, 2, {"b": null}], "c": true, "d": false} ',
            '["é", "日本", "\\"q\\""]',
            "[[[[[]]]]]",
        ],
        [
            "",
            "{",
            "01",
            "1.",
            ".5",
            "+1",
            '{"a" 1}',
            "[1,]",
            '{"a":1,}',
            '"\\x"',
            '"tab\there"',
            "nul",
            "[1 2]",
        ],
    ),
    "arithmetic": (
        ["1", "x", "1 + 2 * 3", "-(a - b) ^ 2 ^ c", "f(x, 2.5e3) / g()", "a % b - - c"],
        ["", "1 +", "()", "f(,)", "2 ^", "1 2", "* 3"],
    ),
    "sqlite_select": (
        [
            "SELECT * FROM t",
            "select a, b AS c from t where a > 1 and b like 'x%' order by a desc limit 10;",
            "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 1",
            "SELECT a FROM t JOIN u ON t.id = u.id LEFT OUTER JOIN v USING (id)",
            "SELECT x FROM (SELECT 1 AS x) WHERE x IN (SELECT y FROM z) UNION ALL SELECT 2",
            "SELECT CASE WHEN a IS NOT NULL THEN 'y' ELSE 'n' END FROM t WHERE b BETWEEN 1 AND 2",
            "select \"odd name\" from t where s = 'it''s'",
            # a keyword ends where its literal does, whatever follows (as in Lark's dynamic lexer)
            "SELECT * FROMt WHERE a=1AND b=2",
        ],
        [
            "",
            "SELECT",
            "SELECT * FROM t t2 t3",
            "SELECT * FROM",
            "SELECT a FROM t WHERE x =",
            "SELECT 'x",
            "DELETE FROM t",
            # the longest match: IDENTIFIER reads "tWHERE" (only the old dynamic_complete split it)
            "SELECT * FROM tWHERE x = 1",
        ],
    ),
    "python_expr": (
        [
            "x",
            "f(a, b=2, *args, **kw)",
            "[i * 2 for i in range(10) if i % 2]",
            "{'a': 1, 'b': [1, 2]}",
            "lambda x, y: x if x > y else y",
            "a.b[1:2]['k'] ** -2",
            "not a and b or c is not None",
            "(1,)",
            "0x1F + 1.5e3j",
            "1if x else 2",
        ],
        # "x ifyelse z": NAME reads "yelse" (only the old dynamic_complete split it into y + else)
        ["", "f(", "[1, 2", "lambda: ", "a if b", "1 +", "x.1", "'abc", "x ifyelse z"],
    ),
}


#: Accepted by Lark's ``lexer="dynamic"`` (its regex match backtracks), rejected by the engine's
#: one-byte-lookahead rule: after ``1`` the ``e`` may start an exponent, so NUMBER cannot end there.
LOOKAHEAD_GAP: dict[str, list[str]] = {
    "sqlite_select": ["SELECT 1e FROM t", "SELECT 1ee"],
    "python_expr": ["1 if 1else 2"],
}


def test_names_and_load() -> None:
    assert set(TABLES) <= set(constrain.grammars.names())
    with pytest.raises(InvalidInputError):
        constrain.grammars.load("nope")


@pytest.mark.parametrize("name", constrain.grammars.names())
def test_every_shipped_grammar_loads(name: str) -> None:
    grammar = Grammar.from_lark(name=name)
    assert grammar.kind == "lark"
    lark.Lark(grammar.source, parser="earley", lexer="dynamic_complete")
    lark.Lark(grammar.source, parser="earley")  # the default lexer too


@pytest.mark.parametrize("name", sorted(TABLES))
def test_accept_reject_tables(name: str) -> None:
    source = constrain.grammars.load(name)
    auto = automaton_for(source)
    good, bad = TABLES[name]
    for text in good:
        assert lark_accepts(text, source), f"table error: the oracle rejects {text!r}"
        assert lark_accepts(text, source, lexer="dynamic"), f"table error: Lark rejects {text!r}"
        assert auto.accepts(text.encode()), text
    for text in bad:
        assert not lark_accepts(text, source), f"table error: the oracle accepts {text!r}"
        assert not lark_accepts(text, source, lexer="dynamic"), f"table error: Lark accepts {text!r}"
        assert not auto.accepts(text.encode()), text


@pytest.mark.parametrize("name", sorted(LOOKAHEAD_GAP))
def test_lookahead_gap_to_lark_dynamic(name: str) -> None:
    source = constrain.grammars.load(name)
    auto = automaton_for(source)
    for text in LOOKAHEAD_GAP[name]:
        assert lark_accepts(text, source, lexer="dynamic"), f"table error: Lark rejects {text!r}"
        assert not lark_accepts(text, source), f"table error: the oracle accepts {text!r}"
        assert not auto.accepts(text.encode()), text
