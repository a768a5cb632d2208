"""The shipped Lark grammars: each loads, and accepts / rejects what Lark's own parser does."""

from __future__ import annotations

import lark
import pytest

import constrain.grammars
from constrain import Grammar
from constrain.cfg import automaton_for
from constrain.exceptions import InvalidInputError

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
        ],
        [
            "",
            "SELECT",
            "SELECT * FROM t t2 t3",
            "SELECT * FROM",
            "SELECT a FROM t WHERE x =",
            "SELECT 'x",
            "DELETE FROM t",
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
        ],
        ["", "f(", "[1, 2", "lambda: ", "a if b", "1 +", "x.1", "'abc"],
    ),
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
    oracle = lark.Lark(source, parser="earley", lexer="dynamic_complete")
    auto = automaton_for(source)
    good, bad = TABLES[name]

    def lark_ok(text: str) -> bool:
        try:
            oracle.parse(text)
        except lark.exceptions.LarkError:
            return False
        return True

    for text in good:
        assert lark_ok(text), f"table error: Lark rejects {text!r}"
        assert auto.accepts(text.encode()), text
    for text in bad:
        assert not lark_ok(text), f"table error: Lark accepts {text!r}"
        assert not auto.accepts(text.encode()), text
