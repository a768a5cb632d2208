"""``Grammar``: what the user wants the output to look like, before it meets a tokenizer.

A grammar is a small immutable description (a regex today; JSON Schemas and Lark grammars build on
it). :func:`constrain.compile` turns it, together with a :class:`~constrain.TokenizerInfo`, into a
:class:`~constrain.CompiledGrammar`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import InvalidInputError
from .regex import DFA, regex_to_dfa

_ALLOWED_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE | re.VERBOSE | re.MULTILINE


@dataclass(frozen=True)
class Grammar:
    """An output language. Build one with a ``from_*`` constructor.

    Attributes:
        kind: ``"regex"``.
        source: the pattern text.
        flags: ``re`` flags for a regex.
    """

    kind: str
    source: str
    flags: int = 0

    @classmethod
    def from_regex(cls, pattern: str, flags: int | re.RegexFlag = 0) -> Grammar:
        """A regular expression in Python ``re`` syntax; the whole output must match (``re.fullmatch``).

        The pattern is parsed here, so syntax errors and unsupported constructs (lookaround,
        backreferences, word boundaries) raise immediately.

        Raises:
            RegexSyntaxError: the pattern does not parse.
            UnsupportedRegexFeature: the pattern uses a construct no finite automaton can enforce.
        """
        if not isinstance(pattern, str):
            raise InvalidInputError(f"Grammar.from_regex expects a str pattern, got {type(pattern).__name__}")
        grammar = cls("regex", pattern, int(flags))
        grammar.to_dfa()  # validate now, not at first use
        return grammar

    def to_dfa(self) -> DFA:
        """The byte-level DFA of this grammar (cached per pattern and flags)."""
        if self.kind != "regex":  # pragma: no cover - future kinds
            raise InvalidInputError(f"grammar kind {self.kind!r} has no single DFA")
        return regex_to_dfa(self.source, self.flags)
