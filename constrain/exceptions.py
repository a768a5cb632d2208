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
        super().__init__(f"{message}{where} in regex {pattern!r}")


class UnsupportedRegexFeature(UnsupportedFeatureError):
    """The regex uses a construct that no finite automaton can express (lookaround, backreference, ...)."""

    def __init__(self, construct: str, pattern: str, hint: str = "") -> None:
        self.construct = construct
        self.pattern = pattern
        msg = f"regex {pattern!r} uses {construct}, which a finite automaton cannot enforce"
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

    def __init__(self, message: str, pointer: str = "") -> None:
        self.pointer = pointer
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
