"""Lark grammars to a plain context-free grammar over regex terminals.

Lark itself parses and normalises the grammar text (``%import``, templates, ``?rule`` inlining,
``[]``/``*``/``+``/``?`` expansion into BNF helper rules), so everything Lark accepts means here what
it means in Lark. What we keep from the :class:`lark.Lark` object is the BNF (``lark_obj.rules``),
the terminals with their regexes (``TerminalDef.pattern.to_regexp()``) and ``ignore_tokens``.

Two of Lark's ``common`` terminals are written with lazy quantifiers and a lookbehind
(``ESCAPED_STRING``, ``C_COMMENT``): Lark's lexer takes their *shortest* match, while this engine
reads a terminal as its whole regular language. They are replaced by exact lookaround-free
equivalents of what Lark's lexer matches; any other lookaround raises ``UnsupportedFeatureError``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import GrammarError, InvalidInputError, UnsupportedFeatureError

#: Lark ``common`` terminal regexes -> the language Lark's (shortest-match) lexer gives them.
_EXACT_REWRITES: dict[str, str] = {
    # a quote, then characters where each inner quote and the last backslash run are escaped
    r'".*?(?<!\\)(\\\\)*?"': r'"(?:[^"\\\n]|\\[^\n])*"',
    # /* ... */ ending at the first */
    "/\\*(.|\n)*?\\*/": r"/\*(?:[^*]|\*+[^*/])*\*+/",  # the \n is a real newline in common.lark
}


@dataclass(frozen=True)
class Terminal:
    """One lexeme kind: ``regex`` is in Python ``re`` syntax with Lark's flags inlined."""

    name: str
    regex: str
    priority: int
    ignore: bool


@dataclass(frozen=True)
class CFG:
    """A context-free grammar over terminals, as Lark expanded it.

    Symbols are numbered: terminals ``0..len(terminals)-1``, nonterminals after them (``names``
    holds every symbol's name). ``rules[k] = (lhs, rhs)``; the start symbol is ``start``.
    """

    terminals: tuple[Terminal, ...]
    names: tuple[str, ...]
    rules: tuple[tuple[int, tuple[int, ...]], ...]
    start: int

    @property
    def num_terminals(self) -> int:
        """How many terminals (ignored ones included)."""
        return len(self.terminals)


_LOCATION = re.compile(r"line (\d+),? col(?:umn)? (\d+)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']+)'|NonTerminal\('([^']+)'\)|Terminal\('([^']+)'\)")


def _locate(message: str, text: str) -> tuple[int | None, int | None]:
    """Line and column of a Lark error: from the message, or the first use of the name it quotes."""
    m = _LOCATION.search(message)
    if m:
        return int(m.group(1)), int(m.group(2))
    for q in _QUOTED.finditer(message):
        name = next(g for g in q.groups() if g)
        hit = re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text)
        if hit:
            line = text.count("\n", 0, hit.start()) + 1
            col = hit.start() - (text.rfind("\n", 0, hit.start()) + 1) + 1
            return line, col
    return None, None


def read_grammar_text(
    text_or_path: str | os.PathLike[str] | None, name: str | None
) -> tuple[str, str | None]:
    """The grammar text and the folder its relative ``%import``s resolve in."""
    if name is not None:
        if text_or_path is not None:
            raise InvalidInputError(
                "Grammar.from_lark takes either a grammar (text or path) or name=, not both"
            )
        from constrain.grammars import load

        return load(name), None
    if text_or_path is None:
        raise InvalidInputError("Grammar.from_lark needs the grammar text, a path to a .lark file, or name=")
    if isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and text_or_path.endswith(".lark")
    ):
        path = Path(text_or_path)
        if not path.is_file():
            raise InvalidInputError(f"grammar file {str(path)!r} does not exist")
        return path.read_text(encoding="utf-8"), str(path.parent)
    if not isinstance(text_or_path, str):
        raise InvalidInputError(f"Grammar.from_lark expects str or Path, got {type(text_or_path).__name__}")
    return text_or_path, None


def parse_lark(text: str, start: str = "start", import_dir: str | None = None) -> CFG:
    """Normalise a Lark grammar with Lark itself; raise :class:`GrammarError` where Lark rejects it."""
    import lark

    try:
        parser = lark.Lark(
            text,
            parser="earley",
            lexer="dynamic",
            start=start,
            import_paths=[import_dir] if import_dir else [],
        )
    except lark.exceptions.LarkError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        if not isinstance(line, int) or line < 1:
            line, column = _locate(str(exc), text)
        raise GrammarError(f"Lark rejected the grammar: {message}", line, column) from exc
    except (OSError, KeyError) as exc:  # a missing %import file surfaces as one of these
        raise GrammarError(f"Lark could not load the grammar: {exc}") from exc

    ignore = set(parser.ignore_tokens)
    used: set[str] = set()
    for rule in parser.rules:
        used.update(s.name for s in rule.expansion if s.is_term)
    terminals: list[Terminal] = []
    for tdef in parser.terminals:
        if tdef.name not in used and tdef.name not in ignore:
            continue
        pattern = tdef.pattern
        if pattern.type not in ("str", "re"):
            raise UnsupportedFeatureError(f"terminal {tdef.name} has no pattern (%declare is not supported)")
        regex = pattern.to_regexp()
        regex = _EXACT_REWRITES.get(regex, regex)
        terminals.append(Terminal(tdef.name, regex, int(tdef.priority), tdef.name in ignore))
    missing = (used | ignore) - {t.name for t in terminals}
    if missing:
        raise GrammarError(f"terminal(s) {', '.join(sorted(missing))} used but not defined")
    if not any(not t.ignore for t in terminals):
        # Every rule is empty: the only sentence is "" (the engine reads at least one terminal).
        raise GrammarError(
            f"rule {start!r} uses no terminal, so the only output it allows is the empty string; "
            "for an empty output use Grammar.from_regex('')",
            1,
            1,
        )

    names: list[str] = [t.name for t in terminals]
    index = {n: i for i, n in enumerate(names)}

    def sym(name: str) -> int:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    start_sym = sym(start)
    rules: list[tuple[int, tuple[int, ...]]] = []
    for rule in parser.rules:
        rules.append((sym(rule.origin.name), tuple(sym(s.name) for s in rule.expansion)))
    return CFG(tuple(terminals), tuple(names), tuple(rules), start_sym)
