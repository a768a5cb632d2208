"""``multipleOf`` as a DFA over JSON number text that tracks the value modulo the divisor.

The text syntax is that of :func:`constrain.json_schema.numbers.number_range_regex`: no exponent, never
negative zero, trailing fraction zeros allowed.
"""

from __future__ import annotations

import numpy as np

from ..automata import DFA, dfa_from_arrays
from ..exceptions import InvalidInputError, UnsupportedSchemaFeature
from ..limits import DEFAULT_LIMITS, current_limits
from .numbers import Number, to_decimal

#: Largest automaton :func:`multiple_of_dfa` builds before raising (states x 256 int32 = ~100 MB).
MAX_MULTIPLE_OF_STATES = DEFAULT_LIMITS.max_multiple_of_states


def multiple_of_dfa(m: Number, *, integer: bool = False, pointer: str = "") -> DFA:
    """A DFA over number text (the syntax of :func:`.numbers.number_range_regex`) for the multiples of ``m``.

    Write ``m = p / 10**s``; a text ``x`` is a multiple when ``X = x * 10**s`` is an integer divisible
    by ``p``. So fraction digits past the ``s``-th must be 0, and the automaton reads the digits of ``X``
    tracking its residue. When ``m`` is an integer ending in zeros, ``p = q * 10**t`` and the residue is
    kept modulo ``q`` only, beside a count of trailing zeros up to ``t`` (``X`` must end in ``t`` zeros
    and the rest be a multiple of ``q``): ``multipleOf: 1e6`` needs 7 residues, not a million.

    Args:
        m: the divisor, > 0.
        integer: texts of the ``"integer"`` type only (fraction digits all zero).
        pointer: JSON pointer of the keyword, for the error.

    Raises:
        InvalidInputError: ``m`` is not a finite number > 0.
        UnsupportedSchemaFeature: the automaton would need more than :data:`MAX_MULTIPLE_OF_STATES`.
    """
    d = to_decimal(m, "multipleOf")
    if d <= 0:
        raise InvalidInputError(f"multipleOf must be > 0, got {m!r}")
    _sign, digits, exp = d.normalize().as_tuple()
    if not isinstance(exp, int):  # pragma: no cover - finite, checked above
        raise InvalidInputError(f"multipleOf must be finite, got {m!r}")
    q = int("".join(map(str, digits)))  # normalised: no factor 10 left in q
    t = max(exp, 0)  # trailing zeros of p (only when m is an integer)
    s = max(-exp, 0)  # fraction digits of m
    f_max = max(s, 1)  # FRAC states count 1..f_max fraction digits read (saturating at s)
    n_val = q * (t + 1)  # value states v = y * (t + 1) + z: y = X / 10**z mod q, z = trailing zeros <= t
    # Layout: 5 fixed states, then INT(v), DOT(v), FRAC(v, j) for j = 1..f_max, NEGZ(j) for j = 1..f_max.
    START, MINUS, ZERO, NEG_ZERO, NEG_ZERO_DOT = range(5)
    int_base = 5
    dot_base = int_base + n_val
    frac_base = dot_base + n_val
    negz_base = frac_base + n_val * f_max
    n = negz_base + f_max
    if n > current_limits().max_multiple_of_states:
        raise UnsupportedSchemaFeature(
            "multipleOf",
            pointer,
            f"{m!r} needs an automaton of {n} states (limit {current_limits().max_multiple_of_states}); "
            "use a divisor with fewer significant digits",
        )
    v = np.arange(n_val, dtype=np.int64)
    y, z = v // (t + 1), v % (t + 1)

    def step(dig: int) -> np.ndarray:
        """Value state after appending digit ``dig`` to X, for every value state."""
        if dig == 0:  # one more trailing zero, or (past t) a zero absorbed into y
            return np.where(z < t, v + 1, ((10 * y) % q) * (t + 1) + t)
        scale = np.array([pow(10, int(k) + 1, q) for k in range(t + 1)], dtype=np.int64)[z]
        return ((y * scale + dig) % q) * (t + 1)

    def accepts(pad: int) -> np.ndarray:
        """Whether X, with ``pad`` more zeros appended (fraction digits not written), is a multiple."""
        z2 = np.minimum(z + pad, t)
        extra = np.maximum(z + pad - t, 0)
        y2 = (y * np.array([pow(10, int(k), q) for k in extra], dtype=np.int64)) % q
        return (z2 == t) & (y2 == 0)

    trans = np.full((n, 256), -1, dtype=np.int32)
    accepting = np.zeros(n, dtype=bool)
    digit_max = 0 if integer else 9  # the integer type: fraction digits are all zero
    dot, zero = ord("."), ord("0")

    def frac(vv: np.ndarray | int, j: int) -> np.ndarray | int:
        return frac_base + vv * f_max + (j - 1)

    steps = [step(dig) for dig in range(10)]
    trans[START, ord("-")] = MINUS
    trans[START, zero] = ZERO
    trans[MINUS, zero] = NEG_ZERO
    for dig in range(1, 10):
        trans[START, zero + dig] = trans[MINUS, zero + dig] = int_base + steps[dig][0]
    accepting[ZERO] = True
    trans[ZERO, dot] = dot_base + t  # X = 0: y = 0 with (at least) t trailing zeros
    trans[NEG_ZERO, dot] = NEG_ZERO_DOT
    # INT(v): more integer digits, or the dot; the fraction not written counts as s zeros.
    for dig in range(10):
        trans[int_base + v, zero + dig] = int_base + steps[dig]
    trans[int_base + v, dot] = dot_base + v
    accepting[int_base + v] = accepts(s)
    # DOT(v), FRAC(v, j): the first s fraction digits extend X; later ones must be 0 (state unchanged).
    for dig in range(digit_max + 1):
        if s > 0:
            trans[dot_base + v, zero + dig] = frac(steps[dig], 1)
        elif dig == 0:
            trans[dot_base + v, zero] = frac(v, 1)
        for j in range(1, f_max + 1):
            if j < s:
                trans[frac(v, j), zero + dig] = frac(steps[dig], j + 1)
            elif dig == 0:
                trans[frac(v, j), zero] = frac(v, j)
    for j in range(1, f_max + 1):
        accepting[frac(v, j)] = accepts(s - min(j, s))
    # "-0." and "-0.000" are negative zero: never accepting; the first nonzero digit joins FRAC.
    negz = [NEG_ZERO_DOT, *range(negz_base, negz_base + f_max)]
    for j, state in enumerate(negz):  # j = fraction digits read so far
        trans[state, zero] = negz_base + min(j + 1, f_max) - 1
        if j < s:
            for dig in range(1, digit_max + 1):
                trans[state, zero + dig] = frac(int(steps[dig][0]), j + 1)
    return dfa_from_arrays(trans, accepting, START, f"multipleOf {m!r}")
