"""Numeric JSON Schema keywords as languages over JSON number text.

:func:`number_language` reads a subschema's ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum`` and ``multipleOf`` (draft-04's boolean exclusives too) and builds the language.
``minimum`` / ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum`` become one regex
(:func:`number_range_regex`); ``multipleOf`` becomes a DFA that tracks the value modulo the divisor
(:func:`.multiple_of.multiple_of_dfa`). Both speak the same text syntax, the JSON number
grammar without an exponent::

    -?(0|[1-9][0-9]*)(\\.[0-9]+)?        numbers
    -?(0|[1-9][0-9]*)(\\.0+)?            the "integer" type (integer=True): zero fractional part

Decisions shared by both (the compiler relies on them):

* No exponent forms (``1e3``): the caller must add exponents itself if it wants them. The compiler
  adds one kind only (:func:`small_exponent_dfa`): a normalised mantissa times a negative power of ten
  (``1e-06``, ``2.5E-7``, what Python and JavaScript write for small floats). Their values lie strictly
  between -1 and 1 and are never 0, so none is an integer, and which of them a range holds is regular;
  so every number language stays exact over the texts the engine reads, which ``not``, ``oneOf`` and
  ``if`` need (``not: {type: integer}`` must refuse ``1e3``, which is an integer: it reads no ``1e3``).
* Never negative zero (``-0``, ``-0.0``): zero is written ``0`` (or ``0.0…``), so every value has
  exactly one sign.
* Trailing fraction zeros are allowed (``1.50``), leading integer zeros are not (``01``).

Bounds and divisors may be ``int``, ``float`` or :class:`decimal.Decimal`; a float is read through its
shortest repr (``Decimal(repr(0.1)) == Decimal("0.1")``), which is the number the schema author wrote.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .. import automata as A
from ..automata import DFA
from ..exceptions import InvalidInputError, SchemaError, UnsupportedSchemaFeature

if TYPE_CHECKING:
    from .compiler import CompileContext
    from .references import SchemaNode

Number = int | float | Decimal
_P = ParamSpec("_P")
_R = TypeVar("_R")

#: What :func:`number_range_regex` returns for an empty range: a class with no members, so it matches
#: nothing yet still compiles (``regex_to_dfa`` gives the empty DFA). Compare with ``==`` to detect it.
NEVER_MATCHES = r"[^\x00-\U0010ffff]"

#: A normalised mantissa (one nonzero digit, a fraction without trailing zeros), and the exponent forms
#: the engine reads: that mantissa times a negative power of ten (see the module docstring).
SMALL_MANTISSA_RE = r"[1-9](?:\.[0-9]*[1-9])?"
_NEGATIVE_EXPONENT = "[eE]-0*"  # the exponent's digits follow, leading zeros allowed
SMALL_EXPONENT_RE = SMALL_MANTISSA_RE + _NEGATIVE_EXPONENT + "[1-9][0-9]*"
#: Any JSON number the engine reads, and the text of an integral one (``1``, ``1.0``; no exponent).
NUMBER_RE = r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]+)?|" + SMALL_EXPONENT_RE + ")"
INTEGER_RE = r"-?(0|[1-9][0-9]*)(\.0+)?"

_ANY_FRACTION = r"(?:\.[0-9]+)?"
_ZERO_FRACTION = r"(?:\.0+)?"


def _exact(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with Decimal arithmetic exact for any bound a schema writes (negation and scaling by
    powers of ten round to the context's 28 digits otherwise)."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext() as ctx:
            ctx.prec = 100_000
            return fn(*args, **kwargs)

    return run


def to_decimal(value: Number, what: str = "number") -> Decimal:
    """``value`` as an exact, finite Decimal (floats through their shortest repr).

    Raises:
        InvalidInputError: ``value`` is a bool, not a number, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite():
        raise InvalidInputError(f"{what} must be finite, got {value!r}")
    return d


# --------------------------------------------------------------------------------------------
# Digit-string building blocks
# --------------------------------------------------------------------------------------------


def _alt(branches: list[str], atom: bool = False) -> str:
    """Alternation of ``branches``; one branch stays bare (safe to concatenate) unless ``atom`` is asked."""
    if len(branches) == 1 and (not atom or len(branches[0]) <= 1 or _is_atom(branches[0])):
        return branches[0]
    flat = []
    for br in branches:  # splice nested alternations: (?:a|(?:b|c)) -> (?:a|b|c)
        flat.append(br[3:-1] if br.startswith("(?:") and _is_atom(br) else br)
    return "(?:" + "|".join(flat) + ")"


def _opt(r: str) -> str:
    """``r`` made optional."""
    return r + "?" if len(r) == 1 or _is_atom(r) else f"(?:{r})?"


def _is_atom(r: str) -> bool:
    """True for one ``[...]`` class or one ``(?:...)`` group spanning the whole of ``r``."""
    if r.startswith("[") and "]" not in r[:-1]:
        return r.endswith("]")
    if not r.startswith("(?:"):
        return False
    depth = 0
    for i, ch in enumerate(r):
        if ch == "\\":
            continue  # we never emit escaped parentheses
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(r) - 1
    return False


def _digits(lo: int, hi: int) -> str:
    """A digit class for ``lo..hi`` (0 <= lo <= hi <= 9)."""
    if lo == hi:
        return str(lo)
    if lo == 0 and hi == 9:
        return "[0-9]"
    return f"[{lo}-{hi}]" if hi > lo + 1 else f"[{lo}{hi}]"


def _count(atom: str, lo: int, hi: int | None = -1) -> str:
    """``atom`` repeated ``lo`` (hi == -1), ``lo..hi`` or ``lo..`` (hi is None) times."""
    if hi == -1:
        hi = lo
    if hi == lo:
        return "" if lo == 0 else atom if lo == 1 else f"{atom}{{{lo}}}"
    if hi is None:
        return f"{atom}*" if lo == 0 else f"{atom}+" if lo == 1 else f"{atom}{{{lo},}}"
    return f"{atom}?" if (lo, hi) == (0, 1) else f"{atom}{{{lo},{hi}}}"


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of ``len(lo)`` characters whose value lies in ``[lo, hi]`` (lo <= hi, equal lengths).

    The classic range-to-regex split: a shared prefix as a literal, then "first digit = lo's, rest >= lo's
    rest" | "first digit strictly between, rest free" | "first digit = hi's, rest <= hi's rest". Runs of
    zeros in ``lo`` and nines in ``hi`` collapse into the middle class, so ``10^308`` stays small.
    """
    k = len(lo)
    j = 0
    while j < k and lo[j] == hi[j]:
        j += 1
    prefix = lo[:j]
    if j == k:
        return prefix
    lo, hi = lo[j:], hi[j:]
    n = len(lo) - 1
    lo_rest_min = lo[1:] == "0" * n
    hi_rest_max = hi[1:] == "9" * n
    a, b = int(lo[0]), int(hi[0])
    branches = []
    if not lo_rest_min:
        branches.append(lo[0] + _same_length_range(lo[1:], "9" * n))
    mid_lo = a if lo_rest_min else a + 1
    mid_hi = b if hi_rest_max else b - 1
    if mid_lo <= mid_hi:
        branches.append(_digits(mid_lo, mid_hi) + _count("[0-9]", n))
    if not hi_rest_max:
        branches.append(hi[0] + _same_length_range("0" * n, hi[1:]))
    return prefix + _alt(branches)


def _int_range(lo: int, hi: int | None) -> str | None:
    """Canonical decimal texts (``0`` or no leading zero) of the integers in ``[lo, hi]``; None if empty.

    ``hi=None`` is unbounded above; ``lo`` must be >= 0. Whole digit lengths become one
    ``[1-9][0-9]{m,n}``; only the first and last length need :func:`_same_length_range`.
    """
    if hi is not None and lo > hi:
        return None
    branches = []
    if lo == 0 and hi is not None and hi <= 9:
        return _digits(0, hi)
    if lo == 0:
        branches.append("0")
        lo = 1
        if hi is not None and hi < 1:
            return "0"
    slo = str(lo)
    shi = None if hi is None else str(hi)
    if shi is not None and len(shi) == len(slo):
        branches.append(_same_length_range(slo, shi))
        return _alt(branches)
    # Lengths strictly inside the span are whole ("[1-9][0-9]{m,n}"); the first and last are whole when
    # lo is 10^k and hi is 99...9, and otherwise get a digit-wise range.
    full_from = len(slo) + 1
    if slo == "1" + "0" * (len(slo) - 1):
        full_from -= 1
    else:
        branches.append(_same_length_range(slo, "9" * len(slo)))
    full_to = None if shi is None else len(shi) if shi == "9" * len(shi) else len(shi) - 1
    if full_to is None or full_from <= full_to:
        branches.append("[1-9]" + _count("[0-9]", full_from - 1, None if full_to is None else full_to - 1))
    if shi is not None and full_to == len(shi) - 1:
        branches.append(_same_length_range("1" + "0" * (len(shi) - 1), shi))
    return _alt(branches)


# A set of digit strings (possibly empty) as (regex for its non-empty members or None, contains "").
_DigitSet = tuple[str | None, bool]
_EVERYTHING: _DigitSet = ("[0-9]+", True)


def _fraction_digits(lo: str | None, lo_incl: bool, hi: str | None, hi_incl: bool) -> _DigitSet:
    """Fraction digit strings ``d`` (possibly empty) with ``0.lo <= 0.d <= 0.hi``.

    ``lo``/``hi`` are digit strings without trailing zeros (``""`` is 0) or None for "no bound";
    ``*_incl`` say whether equality is allowed. Walks the digits of both bounds at once (a bound reads
    as padded with zeros); a side drops out (None) as soon as the first digit of ``d`` differs from that
    bound's, so the nesting depth is at most the bounds' digit count.
    """
    # The empty string has value 0: in range iff lo is none or "" inclusive, and hi is none, nonzero,
    # or "" inclusive.
    eps = (lo is None or (lo == "" and lo_incl)) and (hi is None or hi != "" or hi_incl)
    if lo == "" and lo_incl:
        lo = None  # ">= 0" holds for every digit string
    if lo is None and hi is None:
        return _EVERYTHING
    if lo == "" and hi is None:  # [0, inf) is everything; (0, inf) needs a nonzero digit
        return ("0*[1-9][0-9]*", eps) if not lo_incl else _EVERYTHING
    if hi == "" and (lo is None or lo == ""):  # [.., 0]: only zeros
        return ("0+" if hi_incl and (lo is None or lo_incl) else None), eps
    one = lo if hi is None else hi if lo is None else None
    if one:  # one bound left: a leading run of equal digits becomes a counted repeat (1e-300 stays small)
        c = one[0]
        r = len(one) - len(one.lstrip(c))
        if r >= 2:
            return _one_bound_run(c, r, one[r:], lo is not None, lo_incl, hi_incl), eps
    a = int(lo[0]) if lo else 0
    b = int(hi[0]) if hi else (0 if hi == "" else 9)
    lo_tail = None if lo is None else lo[1:]
    hi_tail = None if hi is None else hi[1:]
    branches = []
    free_lo = 0 if lo is None else a + 1
    free_hi = 9 if hi is None else b - 1
    lo_branches: list[str] = []
    hi_branches: list[str] = []
    if lo is not None and (hi is None or a <= b):
        # d starts with lo's digit: the rest must satisfy lo's tail (and hi's tail if the digits agree).
        sub = _fraction_digits(lo_tail, lo_incl, hi_tail if a == b else None, hi_incl)
        if sub == _EVERYTHING and a == free_lo - 1:
            free_lo = a  # "[5-9][0-9]*" rather than "[6-9][0-9]*|5[0-9]*"
        else:
            lo_branches = _prefixed(str(a), sub)
    if hi is not None and (lo is None or a < b):
        sub = _fraction_digits(None, lo_incl, hi_tail, hi_incl)
        if sub == _EVERYTHING and b == free_hi + 1:
            free_hi = b
        else:
            hi_branches = _prefixed(str(b), sub)
    if free_lo <= free_hi:
        branches.append(_digits(free_lo, free_hi) + "[0-9]*")
    branches += lo_branches + hi_branches
    return (_alt(branches) if branches else None), eps


def _one_bound_run(c: str, r: int, rest: str, is_lower: bool, lo_incl: bool, hi_incl: bool) -> str:
    """Non-empty digit strings against a single bound ``c * r + rest`` (a lower or an upper one).

    Equivalent to ``r`` levels of :func:`_fraction_digits` but flat: after ``i < r`` copies of ``c`` the
    string either leaves the bound behind (a bigger digit for a lower bound, a smaller digit or the end
    for an upper one) or copies all ``r`` and goes on against ``rest``.
    """
    digit = int(c)
    branches = []
    if is_lower:
        if digit < 9:
            branches.append(_count(c, 0, r - 1) + _digits(digit + 1, 9) + "[0-9]*")
        sub = _fraction_digits(rest, lo_incl, None, hi_incl)
    else:
        branches.append(_count(c, 1, r - 1))  # a shorter string is smaller: the bound is nonzero
        if digit > 0:
            branches.append(_count(c, 0, r - 1) + _digits(0, digit - 1) + "[0-9]*")
        sub = _fraction_digits(None, lo_incl, rest, hi_incl)
    branches.extend(_prefixed(c * r, sub))
    return _alt(branches)


def _prefixed(digit: str, sub: _DigitSet) -> list[str]:
    """Branches for ``digit`` followed by a member of ``sub`` (empty list when that is impossible)."""
    ne, eps = sub
    if ne is None:
        return [digit] if eps else []
    if eps and _is_atom_rep(ne):
        return [digit + ne[:-1] + "*"]
    return [digit + (_opt(ne) if eps else ne)]


def _is_atom_rep(r: str) -> bool:
    """``X+`` where X is a single char or class: ``(?:X+)?`` reads better as ``X*``."""
    return r.endswith("+") and (len(r) == 2 or _is_atom(r[:-1]))


def _optional_fraction(sub: _DigitSet) -> str | None:
    """The text of a fraction part (``""`` or ``.digits``) for a digit set; None when it is empty."""
    ne, eps = sub
    if ne is None:
        return "" if eps else None
    return _opt(rf"\.{ne}") if eps else rf"\.{ne}"


def _split(d: Decimal) -> tuple[int, str]:
    """Integer part and fraction digits (no trailing zeros) of a non-negative Decimal."""
    text = format(d, "f")
    whole, _, frac = text.partition(".")
    return int(whole), frac.rstrip("0")


def _magnitude_regex(
    lo: Decimal, lo_incl: bool, hi: Decimal | None, hi_incl: bool, integer: bool
) -> str | None:
    """Unsigned number texts with value in the interval (``lo >= 0``); None when there are none."""
    if integer:
        first = math.ceil(lo)
        if first == lo and not lo_incl:
            first += 1
        last = None
        if hi is not None:
            last = math.floor(hi)
            if last == hi and not hi_incl:
                last -= 1
        ints = _int_range(first, last)
        return None if ints is None else ints + _ZERO_FRACTION
    a, alpha = _split(lo)
    branches = []
    if hi is None:
        frac = _optional_fraction(_fraction_digits(alpha, lo_incl, None, hi_incl))
        if frac is not None:
            branches.append(f"{a}{frac}")
        rest = _int_range(a + 1, None)
        if rest is not None:
            branches.append(rest + _ANY_FRACTION)
        return _alt(branches) if branches else None
    b, beta = _split(hi)
    if (hi < lo) or (hi == lo and not (lo_incl and hi_incl)):
        return None
    if a == b:
        frac = _optional_fraction(_fraction_digits(alpha, lo_incl, beta, hi_incl))
        return None if frac is None else f"{a}{frac}"
    frac = _optional_fraction(_fraction_digits(alpha, lo_incl, None, hi_incl))
    if frac is not None:
        branches.append(f"{a}{frac}")
    mid = _int_range(a + 1, b - 1)
    if mid is not None:
        branches.append(mid + _ANY_FRACTION)
    frac = _optional_fraction(_fraction_digits(None, lo_incl, beta, hi_incl))
    if frac is not None:
        branches.append(f"{b}{frac}")
    return _alt(branches) if branches else None


@_exact
def number_range_regex(
    minimum: Number | None = None,
    maximum: Number | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    integer: bool = False,
) -> str:
    """A regex (``re.fullmatch`` semantics) for the JSON number texts whose value lies in the range.

    Args:
        minimum: lower bound, or None for none.
        maximum: upper bound, or None for none.
        exclusive_minimum: the value must be strictly greater than ``minimum``.
        exclusive_maximum: the value must be strictly less than ``maximum``.
        integer: only integer values (the JSON Schema ``"integer"`` type), written
            ``-?(0|[1-9][0-9]*)(\\.0+)?``.

    Returns:
        A regex over number text without exponent and never negative zero (see the module docstring);
        it is one atom, safe to embed. An empty range gives :data:`NEVER_MATCHES`. The size grows with
        the number of significant digits of the bounds, not their magnitude (``1e308`` is small).

    Raises:
        InvalidInputError: a bound is not a finite number.
    """
    lo = None if minimum is None else to_decimal(minimum, "minimum")
    hi = None if maximum is None else to_decimal(maximum, "maximum")
    zero = Decimal(0)
    branches = []
    # Values >= 0: the magnitude itself.
    if hi is None or hi > zero or (hi == zero and not exclusive_maximum):
        if lo is None or lo < zero:
            pos = _magnitude_regex(zero, True, hi, not exclusive_maximum, integer)
        else:
            pos = _magnitude_regex(lo, not exclusive_minimum, hi, not exclusive_maximum, integer)
        if pos is not None:
            branches.append(pos)
    # Values < 0: "-" and a magnitude > 0, with the bounds mirrored.
    if lo is None or lo < zero:
        if hi is None or hi >= zero:
            mag_lo, mag_lo_incl = zero, False
        else:
            mag_lo, mag_lo_incl = -hi, not exclusive_maximum
        mag_hi = None if lo is None else -lo
        neg = _magnitude_regex(mag_lo, mag_lo_incl, mag_hi, not exclusive_minimum, integer)
        if neg is not None:
            branches.append("-" + neg)
    return _alt(branches, atom=True) if branches else NEVER_MATCHES


@_exact
def small_exponent_dfa(
    minimum: Number | None,
    maximum: Number | None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> DFA | None:
    """The texts of :data:`SMALL_EXPONENT_RE` (signed) whose value lies in the range, all of them;
    None when there are none.

    ``M e-K`` is ``M * 10^-K`` with ``M`` in ``[1, 10)``: for each ``K`` the range asks ``M`` to lie in
    ``[lo * 10^K, hi * 10^K]``, which holds for every ``M`` on an interval of ``K``, for none outside
    the (at most two) ``K`` where a bound's leading digit falls, and for a mantissa range there.
    """
    lo = None if minimum is None else to_decimal(minimum, "minimum")
    hi = None if maximum is None else to_decimal(maximum, "maximum")
    zero = Decimal(0)
    parts: list[A.Expr] = []
    # Positive values: magnitudes in [max(lo, 0), hi]; they are never 0, so an exclusive 0 holds.
    if hi is None or hi > zero:
        pos_lo, pos_lo_incl = (lo, not exclusive_minimum) if lo is not None and lo > zero else (zero, True)
        got = _small_magnitudes(pos_lo, pos_lo_incl, hi, not exclusive_maximum)
        if got is not None:
            parts.append(got)
    # Negative values: "-" and magnitudes in [-hi, -lo] (hi >= 0: from 0).
    if lo is None or lo < zero:
        neg_lo, neg_lo_incl = (-hi, not exclusive_maximum) if hi is not None and hi < zero else (zero, True)
        neg_hi = None if lo is None else -lo
        got = _small_magnitudes(neg_lo, neg_lo_incl, neg_hi, not exclusive_minimum)
        if got is not None:
            parts.append(A.seq(A.Literal(b"-"), got))
    if not parts:
        return None
    dfa = A.build(A.alt(*parts) if len(parts) > 1 else parts[0], "<small exponent forms>")
    return None if A.is_empty(dfa) else dfa


def _small_magnitudes(lo: Decimal, lo_incl: bool, hi: Decimal | None, hi_incl: bool) -> A.Expr | None:
    """The unsigned ``M e-K`` texts with a value in ``[lo, hi]`` (``lo >= 0``)."""
    # K such that every M in [1, 10) is in range: lo * 10^K < 1 and hi * 10^K >= 10.
    k_min = 1 if hi is None else max(1, -hi.adjusted() + 1)
    k_max = None if lo == 0 else -lo.adjusted() - 1
    branches: list[A.Expr] = []
    if k_max is None or k_min <= k_max:
        ks = _int_range(k_min, k_max)
        if ks is not None:
            branches.append(A.Regex(SMALL_MANTISSA_RE + _NEGATIVE_EXPONENT + f"(?:{ks})"))
    # The K where a bound's leading digit falls: a mantissa range there.
    edges = {-b.adjusted() for b in (lo, hi) if b is not None and b != 0}
    for k in sorted(x for x in edges if x >= 1 and not (x >= k_min and (k_max is None or x <= k_max))):
        scale = Decimal(10) ** k
        m_lo, m_lo_incl = (lo * scale, lo_incl) if lo * scale >= 1 else (Decimal(1), True)
        m_hi, m_hi_incl = (
            (hi * scale, hi_incl) if hi is not None and hi * scale < 10 else (Decimal(10), False)
        )
        mantissas = number_range_regex(
            m_lo, m_hi, exclusive_minimum=not m_lo_incl, exclusive_maximum=not m_hi_incl
        )
        if mantissas == NEVER_MATCHES:
            continue
        normal = A.intersect(A.build(A.Regex(mantissas)), A.build(A.Regex(SMALL_MANTISSA_RE)))
        if not A.is_empty(normal):
            branches.append(A.seq(A.Embed(normal), A.Regex(_NEGATIVE_EXPONENT + str(k))))
    if not branches:
        return None
    return A.alt(*branches) if len(branches) > 1 else branches[0]


@_exact
def small_exponent_multiples_dfa(m: Number, pointer: str = "") -> DFA | None:
    """The texts of :data:`SMALL_EXPONENT_RE` (signed) whose value is a multiple of ``m``; None when
    there are none. ``M e-K`` is a multiple of ``m`` when ``M`` is one of ``m * 10^K``; only the ``K``
    with ``10^(1-K) > m`` can have one (the value is below ``10^(1-K)`` and not 0).

    Raises:
        UnsupportedSchemaFeature: a divisor's automaton would be too large (as for the plain texts).
    """
    from .multiple_of import multiple_of_dfa

    d = to_decimal(m, "multipleOf")
    mantissa = A.build(A.Regex(SMALL_MANTISSA_RE))
    branches: list[A.Expr] = []
    k = 1
    while Decimal(10) ** (1 - k) > d:
        scaled = multiple_of_dfa(d * Decimal(10) ** k, pointer=pointer)
        normal = A.intersect(scaled, mantissa)
        if not A.is_empty(normal):
            branches.append(A.seq(A.Embed(normal), A.Regex(_NEGATIVE_EXPONENT + str(k))))
        k += 1
    if not branches:
        return None
    body = A.alt(*branches) if len(branches) > 1 else branches[0]
    return A.build(A.seq(A.Regex("-?"), body), "<small exponent multiples>")


def number_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any], integer: bool) -> DFA:
    """The numbers (``integer``: the integral ones) that ``node``'s numeric keywords allow."""
    bounds: dict[str, Any] = {}
    for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if name in k:
            v = k[name]
            if isinstance(v, bool) and name.startswith("exclusive") and ctx.doc.version <= 4:
                bounds[name] = v
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SchemaError(f"{name} must be a number", f"{node.ptr}/{name}")
            bounds[name] = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    lo = hi = None
    lo_ex = hi_ex = False
    if "minimum" in bounds:
        lo = bounds["minimum"]
        lo_ex = bounds.get("exclusiveMinimum") is True
    if "maximum" in bounds:
        hi = bounds["maximum"]
        hi_ex = bounds.get("exclusiveMaximum") is True
    for name, is_lo in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
        v = bounds.get(name)
        if isinstance(v, Decimal):
            if is_lo and (lo is None or v >= lo):
                lo, lo_ex = v, True
            elif not is_lo and (hi is None or v <= hi):
                hi, hi_ex = v, True
    if lo is None and hi is None:
        base = A.engine_regex_dfa(INTEGER_RE if integer else NUMBER_RE)
    else:
        pattern = number_range_regex(
            lo, hi, exclusive_minimum=lo_ex, exclusive_maximum=hi_ex, integer=integer
        )
        base = A.build(A.Regex(pattern))
        if not integer:
            small = small_exponent_dfa(lo, hi, exclusive_minimum=lo_ex, exclusive_maximum=hi_ex)
            if small is not None:
                base = A.union(base, small)
    if "multipleOf" in bounds:
        m = bounds["multipleOf"]
        if m <= 0:
            raise SchemaError("multipleOf must be greater than 0", f"{node.ptr}/multipleOf")
        from .multiple_of import multiple_of_dfa

        try:
            mult = multiple_of_dfa(m, integer=integer, pointer=f"{node.ptr}/multipleOf")
        except UnsupportedSchemaFeature as e:
            ctx.unsupported("multipleOf", f"{node.ptr}/multipleOf", e.detail)
        else:
            if not integer:
                small = small_exponent_multiples_dfa(m, pointer=f"{node.ptr}/multipleOf")
                mult = A.union(mult, small) if small is not None else mult
            base = ctx.intersect(base, mult)
    if integer and ctx.doc.version <= 4:
        # Draft 4's integers have no fraction part: 1.0 is a number there, not an integer (from
        # draft 6 on it is both).
        base = ctx.intersect(base, A.build(A.Regex(r"-?(0|[1-9][0-9]*)")))
    return base
