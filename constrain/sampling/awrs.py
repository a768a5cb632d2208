"""Adaptive weighted rejection sampling (Lipkin et al., 2025, "Fast Controlled Generation from Language
Models with Adaptive Weighted Rejection Sampling").

A masked step computes the allowed set ``A`` over the whole vocabulary and samples from
``p(t) * [t in A] / Z`` with ``Z = p(A)``. AWRS gets the same token by checking only a few candidates:
it draws candidates from ``p`` without replacement (the Plackett-Luce order) and asks the matcher about
each in turn; the first one that passes is the answer. The first element of ``A`` in a Plackett-Luce
order is distributed exactly as ``p`` restricted to ``A``, so the token is an exact sample however many
candidates were rejected before it.

The draws cost one pass over the vocabulary per step (``exp`` and a cumulative sum) and then
``O(log V)`` each: a draw is an inverse-CDF lookup, redrawn while it hits an already drawn id (which
leaves the next draw distributed as ``p`` without the drawn ids); where redraws pile up the CDF is
rebuilt without them. No key per vocabulary entry (a Gumbel perturbation of every id costs several
times the whole step).

The normaliser estimate (the "recursive" AWRS estimator). Let ``S`` be the candidates rejected so far,
``R = p(S)``, and ``Z_S = Z / (1 - R)`` the chance that the next candidate passes. For every token ``x``
outside ``S``, with ``q(x) = p(x) / (1 - R)``::

    Z_S = q(x) [x in A] + (1 - q(x)) Z_{S + x}

and since it holds for every ``x`` it holds in expectation over the drawn candidate. Unrolled along the
rejected candidates the factors ``1 - q`` telescope to ``1 - R``. At the accepted candidate ``x`` the
remaining ``Z_{S + x}`` is estimated by one more check: whether the candidate after ``x`` (a draw from
``p`` without ``S`` and ``x``) passes. So the weight is::

    W = p(x) + [next candidate passes] * (1 - R - p(x))

and ``E[W] = Z`` by induction over the rejections (each level replaces ``Z_{S + x}`` by an unbiased
estimate of it, and the choice of ``x`` is any distribution at all). Where the rejections pile up
(``max_checks`` of them, or nearly all the mass rejected) the step falls back to the full mask: the
token is drawn from ``p`` restricted to ``A`` (the rest of the Plackett-Luce order restricted to ``A``,
since no rejected id is in ``A``: still exact) and ``Z_S`` is known exactly, so the weight is
``(1 - R) Z_S = Z`` with no variance. Each step costs the checks until acceptance plus one; no mask is
computed where a candidate passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConstrainError, InvalidInputError
from ..matcher import GrammarMatcher

__all__ = ["DEFAULT_MAX_CHECKS", "AWRSDraw", "awrs_argmax", "awrs_sample", "masked_sample_like_awrs"]

DEFAULT_MAX_CHECKS = 32
"""Rejections after which a step computes the full mask instead (a mask costs about as much as a few
dozen checks on a DFA grammar, and bounds the work where the model and the grammar disagree)."""

_MASS_FLOOR = 1e-9
"""Fall back to the mask once the unrejected mass drops below this: the float sums lose their meaning."""


@dataclass(frozen=True)
class AWRSDraw:
    """One AWRS step.

    Attributes:
        token: an exact sample of the locally constrained distribution ``p(t) * allowed(t) / Z``.
        weight: an unbiased estimate of ``Z``, the allowed probability mass (exact where ``used_mask``);
            NaN from :func:`awrs_argmax`, whose deterministic order estimates nothing, and from
            ``awrs_sample(..., estimate_weight=False)`` where a candidate passed.
        checks: how many candidates were checked with the matcher.
        used_mask: True where the step fell back to the full mask.
    """

    token: int
    weight: float
    checks: int
    used_mask: bool


def _limit(max_checks: int | None) -> int:
    if max_checks is None:
        return DEFAULT_MAX_CHECKS
    if max_checks < 0:
        raise InvalidInputError(f"max_checks must be >= 0, got {max_checks}")
    return int(max_checks)


def _as_row(values: np.ndarray, name: str) -> np.ndarray:
    row = np.asarray(values, dtype=np.float64)
    if row.ndim != 1 or row.shape[0] == 0:
        raise InvalidInputError(f"{name} must be a non-empty 1-D array, got shape {row.shape}")
    if np.isnan(row).any():
        raise InvalidInputError(f"{name} contains NaN")
    return row


def _descending(keys: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` largest finite keys, largest first, ties to the lower id (all ids whose key
    equals the ``k``-th largest are kept, so a tie at the cut cannot drop a lower id)."""
    finite = np.flatnonzero(keys > -math.inf)
    if k <= 0 or finite.shape[0] == 0:
        return finite[:0]
    if finite.shape[0] > k:
        part = finite[np.argpartition(-keys[finite], k - 1)[:k]]
        cut = keys[part].min()
        finite = finite[keys[finite] >= cut]
    return finite[np.lexsort((finite, -keys[finite]))]


class _Draws:
    """Ids drawn from ``p`` without replacement, one at a time (inverse CDF, redrawn on a repeat)."""

    _REDRAWS = 8
    """Repeats in a row after which the CDF is rebuilt without the drawn ids (their share is large)."""

    def __init__(self, p: np.ndarray, rng: np.random.Generator) -> None:
        self.p = p
        self.rng = rng
        self.cdf = np.cumsum(p)
        self.drawn: set[int] = set()

    def next(self) -> int | None:
        """The next id (``None`` when no id with mass is left)."""
        for attempt in range(self._REDRAWS + 1):
            if attempt == self._REDRAWS:
                self._rebuild()
            total = float(self.cdf[-1])
            if not total > 0:
                return None
            x = int(np.searchsorted(self.cdf, self.rng.random() * total, side="right"))
            x = min(x, self.p.shape[0] - 1)
            if x not in self.drawn and self.p[x] > 0:
                self.drawn.add(x)
                return x
        return None  # unreachable: after the rebuild a drawn id has no width in the CDF

    def _rebuild(self) -> None:
        rest = self.p.copy()
        rest[list(self.drawn)] = 0.0
        self.cdf = np.cumsum(rest)


def _passes(matcher: GrammarMatcher, token: int) -> bool:
    if matcher.accept_token(token):
        matcher.rollback(1)
        return True
    return False


def _allowed(matcher: GrammarMatcher, width: int) -> np.ndarray:
    """The allowed ids below ``width`` (from the full mask)."""
    bits = np.unpackbits(matcher.next_token_mask().view(np.uint8), bitorder="little")
    size = min(width, matcher.compiled.tokenizer_info.vocab_size)
    return np.flatnonzero(bits[:size])


def awrs_sample(
    logprobs: np.ndarray,
    matcher: GrammarMatcher,
    rng: np.random.Generator,
    *,
    max_checks: int | None = None,
    estimate_weight: bool = True,
) -> AWRSDraw:
    """Draw the next token from ``p`` restricted to what ``matcher`` allows, checking candidates drawn
    from ``p`` without replacement (see the module docstring for why the token is exact and the weight
    unbiased).

    Args:
        logprobs: float64 log-probabilities over the tokenizer's ids (``-inf`` for excluded ids); they
            should sum to 1 in probability (the weight estimates the allowed share of that total).
        matcher: the grammar state; left unchanged (the caller accepts ``draw.token``).
        rng: the source of randomness.
        max_checks: rejections after which the step computes the full mask (default
            :data:`DEFAULT_MAX_CHECKS`; 0 masks at once).
        estimate_weight: False skips the extra check the weight needs (the weight is then NaN where a
            candidate passed); the token is the same, drawn from the same randomness. The decoding loop
            needs no weight; SMC does.

    Raises:
        ConstrainError: the grammar allows no token here, or none with positive probability.
        InvalidInputError: ``logprobs`` is not a 1-D array of numbers, or ``max_checks < 0``.
    """
    lp = _as_row(logprobs, "logprobs")
    return _draw(
        lp,
        lambda token: _passes(matcher, token),
        lambda: _allowed(matcher, lp.shape[0]),
        rng,
        _limit(max_checks),
        estimate_weight,
    )


def masked_sample_like_awrs(
    logprobs: np.ndarray,
    bitmask: np.ndarray,
    rng: np.random.Generator,
    *,
    max_checks: int | None = None,
) -> AWRSDraw:
    """Masked decoding's step driven by AWRS's randomness: the allowed set comes from ``bitmask`` (the
    packed int32 mask the loop fills, so the full mask is computed first), and the token is the first
    allowed one in the same candidate order :func:`awrs_sample` draws from ``rng``. Both are exact
    samples of ``p`` restricted to the mask; with the same ``logprobs``, ``max_checks`` and ``rng``
    state the two return the same token and leave ``rng`` in the same state (``awrs_sample`` with
    ``estimate_weight=False``), so a masked loop and an AWRS loop fed the same seed decode the same
    text, and their times per token compare without the noise of different texts. ``checks`` counts
    mask lookups; ``weight`` is NaN.

    Raises:
        ConstrainError: the mask allows no token, or none with positive probability.
        InvalidInputError: ``logprobs`` is not a 1-D array of numbers, or ``max_checks < 0``.
    """
    lp = _as_row(logprobs, "logprobs")
    words = np.ascontiguousarray(bitmask, dtype=np.int32).reshape(-1)

    def allowed_ids() -> np.ndarray:  # the fallback's whole set (unpacked only there)
        return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[: lp.shape[0]])

    return _draw(
        lp,
        lambda token: bool((int(words[token >> 5]) >> (token & 31)) & 1),
        allowed_ids,
        rng,
        _limit(max_checks),
        False,
    )


def _draw(
    lp: np.ndarray,
    passes: Callable[[int], bool],
    allowed_ids: Callable[[], np.ndarray],
    rng: np.random.Generator,
    limit: int,
    estimate_weight: bool,
) -> AWRSDraw:
    """:func:`awrs_sample` over any membership test (``passes``) and allowed set (``allowed_ids``, the
    fallback's full mask)."""
    p = np.exp(lp)  # -inf -> 0: never a candidate
    draws = _Draws(p, rng)
    rejected = 0.0
    checks = 0
    for _ in range(limit):
        if 1.0 - rejected < _MASS_FLOOR:
            break
        candidate = draws.next()
        if candidate is None:
            break
        checks += 1
        p_x = float(p[candidate])
        if not passes(candidate):
            rejected += p_x
            continue
        rest = max(0.0, 1.0 - rejected - p_x)  # the mass neither rejected nor accepted
        weight = p_x
        if not estimate_weight:
            weight = math.nan
        elif rest > 0:
            after = draws.next()
            if after is not None:
                checks += 1
                if passes(after):
                    weight += rest
        return AWRSDraw(candidate, weight, checks, False)
    allowed = allowed_ids()
    if allowed.shape[0] == 0:
        raise ConstrainError("the grammar allows no token here (nothing to sample)")
    mass = np.cumsum(p[allowed])
    if not mass[-1] > 0:
        raise ConstrainError(
            f"the {allowed.shape[0]} tokens the grammar allows all have probability 0 under logprobs"
        )
    pick = int(np.searchsorted(mass, rng.random() * mass[-1], side="right"))
    token = int(allowed[min(pick, allowed.shape[0] - 1)])
    z = math.exp(float(np.logaddexp.reduce(lp[allowed])))
    return AWRSDraw(token, z, checks, True)


def awrs_argmax(logits: np.ndarray, matcher: GrammarMatcher, *, max_checks: int | None = None) -> AWRSDraw:
    """Greedy decoding's token under the constraint without a mask: the candidates in descending order
    of ``logits`` (ties to the lower id, as ``argmax`` breaks them), the first that passes; after
    ``max_checks`` rejections, the argmax of the allowed tokens from the full mask. The same token as
    the argmax of the masked logits. ``weight`` is NaN (a deterministic order estimates nothing).

    Raises:
        ConstrainError: the grammar allows no token here, or none with a finite logit.
        InvalidInputError: ``logits`` is not a 1-D array of numbers, or ``max_checks < 0``.
    """
    keys = _as_row(logits, "logits")
    limit = _limit(max_checks)
    checks = 0
    if limit > 0:
        # The argmax first: it passes on most steps, and ordering the rest costs a pass over the vocabulary.
        top = int(np.argmax(keys))  # the first maximum: the lowest id among ties
        if keys[top] > -math.inf:
            checks += 1
            if _passes(matcher, top):
                return AWRSDraw(top, math.nan, checks, False)
            for token in _descending(keys, limit)[1:limit].tolist():
                checks += 1
                if _passes(matcher, token):
                    return AWRSDraw(token, math.nan, checks, False)
    allowed = _allowed(matcher, keys.shape[0])
    if allowed.shape[0] == 0:
        raise ConstrainError("the grammar allows no token here (nothing to choose)")
    best = int(allowed[np.argmax(keys[allowed])])  # first maximum: the lowest id among ties
    if keys[best] == -math.inf:
        raise ConstrainError(f"the {allowed.shape[0]} tokens the grammar allows all have logit -inf")
    return AWRSDraw(best, math.nan, checks, True)
