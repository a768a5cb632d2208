"""The size limits of compiling, as one options object.

Every limit that refuses a construct for its size (automaton states, counted repeats, enumerated arrays,
branch combinations) is a field of :class:`Limits`. The one in force is :func:`current_limits`: the
``limits`` of the JSON Schema being compiled (``Grammar.from_json_schema(..., limits=Limits(...))``),
or the one opened with :func:`limits_scope` around any compile (regex and Lark too), else
:data:`DEFAULT_LIMITS`. The module constants that used to be the limits (``MAX_DFA_STATES`` in
``constrain.automata.dfa``, ``MAX_COUNTED_ITEMS`` in ``constrain.json_schema.arrays``, ...) are now only
the defaults' names: changing one changes nothing.

Cached automata are shared across limits: a regex or subschema that compiled under a larger limit is
reused under a smaller one (the limits bound work, the languages are exact either way).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, fields

from .exceptions import InvalidInputError

__all__ = ["DEFAULT_LIMITS", "Limits", "current_limits", "limits_scope"]


@dataclass(frozen=True)
class Limits:
    """Size limits of one compile; past one the construct is refused with an
    :class:`~constrain.exceptions.UnsupportedFeatureError` that names it (never compiled loosely).

    Attributes:
        max_nfa_states: states of one regex's Thompson NFA (a repetition expands to copies).
        max_dfa_states: states of a DFA from the subset construction or a product automaton.
        max_counted_length: a string's ``minLength``/``maxLength`` counted by automaton layers; a
            larger ``maxLength`` is counted beside the automaton by the token engine
            (:mod:`constrain.masks.counted`: not where a product or a union at the string's quote
            meets it), a larger ``minLength`` is refused.
        max_counted_items: array items counted exactly (``minItems``/``maxItems``, ``contains``
            counts): one copy of the item automaton per count, so the DFA state limit also applies
            (1,024 takes ``maxItems: 1000``, the most common large bound in JSONSchemaBench).
        max_counted_members: object members counted exactly (``minProperties``/``maxProperties``).
        max_patterns: ``patternProperties`` patterns at one place.
        max_key_classes: classes of the keys no property names at one place (the sets of
            ``patternProperties`` patterns a key matches), built only where they exist.
        max_arrays: arrays enumerated for ``uniqueItems``; also the most item texts, and sets of
            distinct item values, it tracks where the arrays are infinite.
        max_multiple_of_states: states of a ``multipleOf`` automaton.
        max_scenarios: combinations of branches that ``unevaluated*`` keywords track.
        max_branches: branches of one ``anyOf``/``oneOf`` that ``unevaluated*`` keywords look into.
        max_holes: recursive places in one schema.
        max_segment_states: lexer states of a recursive schema's context-free grammar.

    Raises:
        InvalidInputError: a field is not a positive int.
    """

    max_nfa_states: int = 400_000
    max_dfa_states: int = 200_000
    max_counted_length: int = 10_000
    max_counted_items: int = 1024
    max_counted_members: int = 256
    max_patterns: int = 32
    max_key_classes: int = 64
    max_arrays: int = 5000
    max_multiple_of_states: int = 100_000
    max_scenarios: int = 64
    max_branches: int = 6
    max_holes: int = 256
    max_segment_states: int = 400_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"Limits.{f.name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()
_CURRENT: contextvars.ContextVar[Limits] = contextvars.ContextVar("constrain_limits", default=DEFAULT_LIMITS)


def current_limits() -> Limits:
    """The limits in force in this thread (:data:`DEFAULT_LIMITS` outside any :func:`limits_scope`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def limits_scope(limits: Limits | None) -> Iterator[Limits]:
    """Compile under ``limits`` inside the block (``None``: keep the ones in force).

    Raises:
        InvalidInputError: ``limits`` is not a :class:`Limits`.
    """
    if limits is None:
        yield _CURRENT.get()
        return
    if not isinstance(limits, Limits):
        raise InvalidInputError(f"limits must be a constrain.limits.Limits, got {type(limits).__name__}")
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)
