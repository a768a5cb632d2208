"""The error model of constrain: one root class, typed subclasses that say whose mistake it was.

Errors that come from bad input (a regex we cannot enforce, a malformed tokenizer file) are raised at
compile time. The matcher never raises for a token the grammar rejects: ``accept_token`` returns False
and leaves the state unchanged. It raises only for API misuse (a rollback past the start, a bitmask of
the wrong shape).
"""

from __future__ import annotations


class ConstrainError(Exception):
    """Root of every error this library raises on purpose."""


class InvalidInputError(ConstrainError, ValueError):
    """The caller handed us something malformed: fix the input."""


class UnsupportedFeatureError(ConstrainError, ValueError):
    """The input is valid, but uses a construct this engine cannot enforce exactly.

    We never silently drop a constraint: rather than compile a looser language, we raise this.
    """


class RegexSyntaxError(InvalidInputError):
    """The regular expression does not parse."""

    def __init__(self, message: str, pattern: str, position: int | None = None) -> None:
        self.pattern = pattern
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where} in regex {pattern!r:.200}")


class UnsupportedRegexFeature(UnsupportedFeatureError):
    """The regex uses a construct that no finite automaton can express (lookaround, backreference, ...)."""

    def __init__(self, construct: str, pattern: str, hint: str = "") -> None:
        self.construct = construct
        self.pattern = pattern
        msg = f"regex {pattern!r:.200} uses {construct}, which a finite automaton cannot enforce"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class TokenizerError(InvalidInputError):
    """The tokenizer could not be read or its vocabulary could not be mapped to bytes."""


class MatcherUsageError(ConstrainError, RuntimeError):
    """The matcher API was used wrongly (rollback past the start, bad bitmask shape, ...)."""


class KernelUsageError(ConstrainError, ValueError):
    """A bitmask kernel was called wrongly (wrong dtype, device or shape of logits, bitmask or indices).

    The message says how to fix the call (e.g. "use allocate_token_bitmask(...)").
    """


class SchemaError(InvalidInputError):
    """The JSON Schema is malformed (a keyword with a value of the wrong type, a dangling ``$ref``, ...).

    ``pointer`` is the JSON pointer of the offending keyword inside the schema (``""`` for the root).
    """

    def __init__(self, message: str, pointer: str = "", keyword: str = "") -> None:
        self.pointer = pointer
        #: the schema keyword to fix, where known (``"required"`` for ``/required/0``)
        self.keyword = keyword
        super().__init__(f"{message} (at {pointer or '/'} in the schema)")


class UnsupportedSchemaFeature(UnsupportedFeatureError):
    """A JSON Schema keyword this engine cannot enforce exactly.

    ``keyword`` names it and ``pointer`` is its JSON pointer inside the schema. Compile with
    ``lenient=True`` to drop such keywords instead (with a warning that lists every dropped one).
    """

    def __init__(self, keyword: str, pointer: str, detail: str = "") -> None:
        self.keyword = keyword
        self.pointer = pointer
        self.detail = detail
        msg = f"JSON Schema keyword {keyword!r} at {pointer or '/'} cannot be enforced exactly"
        super().__init__(msg + (f": {detail}" if detail else ""))


class GrammarError(InvalidInputError):
    """A Lark grammar is malformed; ``line`` and ``column`` (1-based) locate the problem when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{message}{where}")


class EmptyLanguageError(InvalidInputError):
    """The grammar allows no output at all (``{"enum": []}``, ``{"type": []}``, a contradictory
    ``allOf``, a regex such as ``[^\\x00-\\U0010ffff]``): a matcher would have nothing to allow.

    Raised at compile time, never later. ``pointer`` is the JSON pointer of the subschema (or keyword)
    where a schema's language became empty, as closely as the compiler can tell (``""``: the root);
    ``None`` for regexes and grammars.
    """

    def __init__(self, message: str, pointer: str | None = None) -> None:
        self.pointer = pointer
        where = f" (at {pointer or '/'} in the schema)" if pointer is not None else ""
        super().__init__(f"{message}{where}")


class InputTooLargeError(InvalidInputError):
    """An input is over a size limit the library sets to stay bounded in time and memory (a schema or
    tokenizer file larger than the read limit, a regex nested too deep). The message names the limit."""


class EmptyGrammarError(GrammarError, EmptyLanguageError):
    """A Lark grammar whose start rule derives no string (``start: start "a"``): both a
    :class:`GrammarError` (``line`` and ``column`` of the rule) and an :class:`EmptyLanguageError`."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        GrammarError.__init__(self, message, line, column)  # EmptyLanguageError adds no pointer
        self.pointer = None


class ArgumentError(InvalidInputError, TypeError):
    """A public function was called with an unknown keyword argument, or a missing or extra one; the
    message names it. Also a ``TypeError``, as Python's own error for such a call is."""


class CompileBudgetExceeded(UnsupportedSchemaFeature):
    """A compile ran past its :class:`constrain.CompileBudget` and was refused early. ``pointer`` is
    the JSON pointer being compiled when the time ran out (``keyword`` its last part; empty for a regex
    or Lark grammar). Raise the budget (``budget=CompileBudget(seconds=...)``) or simplify there."""

    def __init__(self, keyword: str, pointer: str, detail: str = "") -> None:
        super().__init__(keyword, pointer, detail)
        where = (
            f"JSON Schema keyword {keyword!r} at {pointer}"
            if keyword
            else f"the schema at {pointer}"
            if pointer
            else "the grammar"
        )
        self.args = (f"compiling {where} {detail}",)  # a budget, not a keyword we cannot enforce
