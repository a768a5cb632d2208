"""How a schema becomes a language: the options of :meth:`constrain.Grammar.from_json_schema`, as one
frozen (hashable) dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..exceptions import SchemaError
from ..limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class SchemaOptions:
    """The compile options of a JSON Schema (see :meth:`constrain.Grammar.from_json_schema`).

    Attributes:
        draft: the draft assumed where the schema has no ``$schema``: "2020-12", "2019-09", "7", "6" or
            "4" (checked when the schema is compiled, since ``$schema`` may override it).
        formats: "assert" enforces ``format``; "annotate" ignores it.
        lenient: drop keywords that cannot be enforced exactly (with a warning) instead of raising.
        whitespace: "compact" (none) or "flexible" (up to ``max_whitespace`` spaces or newlines
            between tokens).
        max_whitespace: see ``whitespace``.
        max_any_depth: how deep values that no schema constrains may nest; ``None`` (the default): any
            depth, exactly (holes, as in a recursive schema: see :mod:`.recursion`). An int caps them,
            so that a schema without ``$ref`` cycles compiles to one DFA (:func:`.schema_to_dfa`).
        property_order: "schema" (named keys in the schema's order, then the others) or "any".
        limits: the size limits of the compile (:class:`constrain.limits.Limits`; in force while it runs).

    Raises:
        SchemaError: ``whitespace``, ``property_order`` or ``formats`` is not one of its values.
    """

    draft: str = "2020-12"
    formats: str = "assert"
    lenient: bool = False
    whitespace: str = "compact"
    max_whitespace: int = 2
    max_any_depth: int | None = None
    property_order: str = "schema"
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.whitespace not in ("compact", "flexible"):
            raise SchemaError(f"whitespace must be 'compact' or 'flexible', got {self.whitespace!r}")
        if self.property_order not in ("schema", "any"):
            raise SchemaError(f"property_order must be 'schema' or 'any', got {self.property_order!r}")
        if self.formats not in ("assert", "annotate"):
            raise SchemaError(f"formats must be 'assert' or 'annotate', got {self.formats!r}")

    def pairs(self) -> tuple[tuple[str, Any], ...]:
        """The options as ``(name, value)`` pairs sorted by name (how :class:`~constrain.Grammar` keeps
        them, hashable). ``limits`` is left out while it is the default, so default grammars compare
        and hash as before."""
        return tuple(
            sorted(
                (f.name, getattr(self, f.name))
                for f in fields(self)
                if f.name != "limits" or self.limits != DEFAULT_LIMITS
            )
        )

    @classmethod
    def from_pairs(cls, pairs: Any) -> SchemaOptions:
        """The options back from :meth:`pairs` (or from a mapping); names that are not options (such as
        a grammar's ``registry``) are ignored."""
        given = dict(pairs)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})
