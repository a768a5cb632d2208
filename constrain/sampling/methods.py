"""Decoding methods as sampler objects of the decoding loop: ``generate(..., sampler=AWRS(max_checks=8))``.

The short spelling ``method="masked"`` / ``"awrs"`` names the same two loops with their defaults; a
sampler object carries the method's settings. :func:`resolve_method` turns what a caller passed into the
loop's arguments, and refuses both spellings at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..exceptions import ArgumentError, InvalidInputError

if TYPE_CHECKING:
    from ..generation import Sampler

__all__ = ["AWRS", "METHODS", "Masked", "resolve_method"]

METHODS: tuple[str, ...] = ("masked", "awrs", "smc")
"""The names ``method=`` takes."""


@dataclass(frozen=True)
class Masked:
    """Masked decoding (``method="masked"``, the default): each step fills the grammar's full token
    mask and samples from the masked distribution that ``generate``'s ``temperature`` and ``top_p``
    describe (greedy at temperature 0)."""

    name: ClassVar[str] = "masked"


@dataclass(frozen=True)
class AWRS:
    """Adaptive weighted rejection sampling (``method="awrs"``): candidates drawn from the unconstrained
    distribution (``generate``'s ``temperature`` / ``top_p``) without replacement, checked with the
    matcher until one passes; an exact sample of the masked distribution (greedy: the same tokens as
    masked decoding) with a few checks instead of a full mask (:mod:`constrain.sampling.awrs`).

    Attributes:
        max_checks: rejections after which a step computes the full mask instead (``None``: the
            default, :data:`constrain.sampling.awrs.DEFAULT_MAX_CHECKS`; 0 masks every step).

    Raises:
        InvalidInputError: ``max_checks`` is not a non-negative integer.
    """

    max_checks: int | None = None
    name: ClassVar[str] = "awrs"

    def __post_init__(self) -> None:
        m = self.max_checks
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise InvalidInputError(f"AWRS(max_checks=...) takes a non-negative int or None, got {m!r}")


def resolve_method(method: str | None, sampler: Any) -> tuple[str, Sampler | None, int | None]:
    """What ``generate(method=..., sampler=...)`` asks for, as ``(method name, token sampler or None,
    max_checks)``: a :class:`Masked` or :class:`AWRS` object gives its method (and no token sampler); a
    token :class:`~constrain.generation.Sampler` (``GreedySampler``, ``TemperatureSampler``, your own)
    runs the masked loop with it; neither: ``method`` (default ``"masked"``).

    Raises:
        ArgumentError: both ``method`` and ``sampler`` were given, ``method`` is not one of
            :data:`METHODS`, or ``sampler`` is none of the above (e.g. the class ``AWRS`` itself, or a
            string).
    """
    if method is not None and sampler is not None:
        raise ArgumentError(
            f"pass either method={method!r} or sampler={sampler!r}, not both: the sampler object is the "
            "method with its settings (sampler=AWRS(max_checks=...) is method='awrs' with them)"
        )
    if sampler is None:
        name = "masked" if method is None else method
        if name not in METHODS:
            names = ", ".join(repr(m) for m in METHODS)
            raise ArgumentError(f"method must be one of {names}, got {method!r}")
        return name, None, None
    if isinstance(sampler, AWRS):
        return "awrs", None, sampler.max_checks
    if isinstance(sampler, Masked):
        return "masked", None, None
    if isinstance(sampler, type):  # a class has sample() and accept() too, unbound
        raise ArgumentError(f"sampler= takes an instance: write {sampler.__name__}(), not {sampler.__name__}")
    from ..generation import Sampler as SamplerProtocol  # here: generation imports this module

    if isinstance(sampler, SamplerProtocol):
        return "masked", sampler, None
    raise ArgumentError(
        "sampler must be constrain.sampling.AWRS(...), constrain.sampling.Masked() or a token Sampler "
        f"(GreedySampler, TemperatureSampler: sample() and accept()), got {sampler!r}"
    )
