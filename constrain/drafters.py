"""Drafters: cheap guesses of the next few tokens, checked by the model in one forward pass.

The generation loop (:mod:`constrain.generation`) is a speculative-decoding core. Each round it asks a
:class:`Drafter` for up to ``k`` tokens, runs the model ONCE over the pending token plus the draft, and
keeps the longest prefix of the draft that the sampler accepts under the grammar's mask (then one more
token, sampled where the draft stopped). The KV cache and the matcher are rolled back past the rejected
part. With the acceptance rule of :meth:`constrain.generation.Sampler.accept` the output has exactly the
distribution of one-token-at-a-time masked sampling (for greedy decoding: the same tokens), whatever the
drafter proposes.

The drafters here:

:class:`GrammarForcedDrafter`
    what the grammar forces: where the automaton allows one byte string only (``{"name": "``), the
    tokens that spell it (:meth:`GrammarMatcher.forced_tokens`). With ``verify=False`` they are taken
    unverified (classic jump-forward).
:class:`PromptLookupDrafter`
    n-gram retrieval (prompt lookup; the retrieval drafters of ADED and RASD): the last ``n`` tokens of
    the context are looked up in the prompt, the output so far and an optional corpus, and what followed
    them there is proposed. Every candidate continuation is walked with a fork of the matcher and cut at
    the first token the grammar rejects; the candidate with the longest valid walk wins. Structured
    output is where this pays: keys, enum values and repeated structure are copied from the schema in
    the prompt, the few-shot examples or the output itself.
:class:`ComposedDrafter`
    a chain: forced tokens first, then the next drafter continues from the state after them, then forced
    tokens again, ... in the same round (:func:`default_drafter` is the chain the loop uses by default).
:class:`constrain.speculation_models.DraftModelDrafter`
    a smaller causal LM with the same tokenizer (or a subset of the target's own layers: layer skip),
    with its own KV cache, drafting greedily under the grammar's mask.

Draft length is adaptive (SpecDec++ style): every drafted token carries a feature key (``"forced"``,
``"ngram:3"``: a 3-token match, ``"model:0.9"``: the draft model's top probability, bucketed) and an
:class:`AcceptanceEstimator` keeps the observed acceptance rate of each key; drafting stops where the
estimated probability that the whole draft so far is accepted falls below ``min_accept_prob``. The loop
reports each round's outcome back through :meth:`observe`.

A draft never contains a token the grammar rejects: every drafter here walks a fork of the matcher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch

    from .matcher import GrammarMatcher

__all__ = [
    "AcceptanceEstimator",
    "ComposedDrafter",
    "Draft",
    "Drafter",
    "GrammarForcedDrafter",
    "PromptLookupDrafter",
    "default_drafter",
    "observe",
]

#: Where a drafted token came from (the ``sources`` of a :class:`Draft`): names used in the statistics.
FORCED = "forced"
NGRAM = "ngram"
MODEL = "model"


@dataclass(frozen=True)
class Draft:
    """Tokens proposed for the next positions.

    Attributes:
        tokens: the proposed ids, in order (may be empty: no guess this round).
        probs: the drafter's distribution at each position, for a stochastic drafter: a tensor
            ``(len(tokens), width)``, or a tuple with one row (or ``None``: a deterministic token) per
            position; ``None`` for a deterministic draft (each token had probability 1). A row must be
            the distribution the token was drawn from, with the grammar's mask applied (zero outside
            the allowed tokens).
        verify: ``False`` for tokens the grammar forces and that are taken without asking the model
            (jump-forward); the loop still runs them through the model, in the same single pass.
        forced: the tokens spell bytes the grammar forces (counted as ``forced_tokens`` in the stats).
        sources: per token, the drafter that proposed it (``"forced"``, ``"ngram"``, ``"model"``);
            empty: all from one drafter (``"forced"`` where ``forced``, else unnamed).
        keys: per token, the feature key of the acceptance estimate (see :class:`AcceptanceEstimator`).
    """

    tokens: tuple[int, ...] = ()
    probs: torch.Tensor | tuple[torch.Tensor | None, ...] | None = None
    verify: bool = True
    forced: bool = False
    sources: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def source(self, i: int) -> str:
        """The drafter of token ``i`` (``"forced"`` for a forced draft without ``sources``)."""
        if self.sources:
            return self.sources[i]
        return FORCED if self.forced else "draft"

    def prob_row(self, i: int) -> torch.Tensor | None:
        """The draft distribution of position ``i`` (``None``: a deterministic token)."""
        if self.probs is None:
            return None
        return self.probs[i]


@runtime_checkable
class Drafter(Protocol):
    """Proposes up to ``max_tokens`` tokens to follow ``context`` (prompt + output ids so far).

    ``matcher`` is the grammar state after ``context`` (``None`` when generation is unconstrained). A
    drafter must not change it; :meth:`GrammarMatcher.fork` gives a copy to walk. A drafter may also have
    ``observe(draft, accepted)``, which the loop calls after verifying each draft with the number of its
    tokens that were kept (see :func:`observe`).
    """

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft: ...


def observe(drafter: Any, draft: Draft, accepted: int) -> None:
    """Tell ``drafter`` how many tokens of ``draft`` were kept, where it listens (has ``observe``)."""
    method = getattr(drafter, "observe", None)
    if method is not None and draft.tokens:
        method(draft, accepted)


# ------------------------------------------------------------------------------------------------
# Adaptive draft length


class AcceptanceEstimator:
    """Per-feature acceptance rates of drafted tokens, for adaptive draft length (SpecDec++ style).

    For a key (``"ngram:3"``), the estimate is the probability that a token with that key is accepted
    given that the tokens before it in its draft were: decayed counts of kept / verified with a
    ``prior`` worth ``prior_weight`` observations (tokens past the first rejection were never verified
    and are not counted). ``decay`` (< 1) lets the estimate follow a generation whose predictability
    changes (the first tokens of a JSON value vs. a repeated structure).
    """

    def __init__(
        self,
        prior: float = 0.5,
        prior_weight: float = 2.0,
        decay: float = 0.98,
        priors: dict[str, float] | None = None,
    ) -> None:
        if not 0 < prior < 1:
            raise InvalidInputError(f"prior must be in (0, 1), got {prior}")
        self.prior = prior
        self.prior_weight = prior_weight
        self.decay = decay
        self.priors = dict(priors or {})
        self._counts: dict[str, list[float]] = {}  # key -> [accepted, verified]

    def estimate(self, key: str) -> float:
        """The estimated acceptance probability of a token with feature ``key``."""
        prior = self._prior(key)
        counts = self._counts.get(key)
        if counts is None:
            return prior
        return (counts[0] + prior * self.prior_weight) / (counts[1] + self.prior_weight)

    def _prior(self, key: str) -> float:
        if key in self.priors:
            return self.priors[key]
        head = key.split(":", 1)[0]
        return self.priors.get(head, self.prior)

    def update(self, keys: Sequence[str], accepted: int) -> None:
        """Record one verified draft: the first ``accepted`` tokens kept, the next one (if any) rejected."""
        for i, key in enumerate(keys[: accepted + 1]):
            counts = self._counts.setdefault(key, [0.0, 0.0])
            counts[0] = counts[0] * self.decay + (1.0 if i < accepted else 0.0)
            counts[1] = counts[1] * self.decay + 1.0

    def snapshot(self) -> dict[str, tuple[float, float]]:
        """``key -> (estimate, verified count)`` (for benchmarks and debugging)."""
        return {k: (self.estimate(k), v[1]) for k, v in sorted(self._counts.items())}


# ------------------------------------------------------------------------------------------------
# Forced tokens


@dataclass(frozen=True)
class GrammarForcedDrafter:
    """Drafts the tokens spelling the grammar's forced continuation (jump-forward).

    Where the automaton allows one byte string only (``{"name": "``), the tokens that spell it
    (:meth:`GrammarMatcher.forced_tokens`: the tokenizer's own encoding, less trailing tokens that could
    merge with what follows). With ``verify=True`` (the default) the model checks them like any draft,
    so where it prefers another segmentation its choice wins and nothing is lost. With ``verify=False``
    they are taken as they are (classic jump-forward): never a rejection, but the model then continues
    from a segmentation it may not have chosen.

    Args:
        verify: ``True``: the model verifies the tokens like any draft (lossless; the default).
            ``False``: they are taken unverified (classic jump-forward, never rejected).
        max_tokens: cap on one draft's length (a long forced literal is drafted over several rounds).
    """

    verify: bool = True
    max_tokens: int = 32

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        """The forced tokens at ``matcher``'s state (empty where the grammar leaves a choice)."""
        if matcher is None or matcher.must_end() or max_tokens <= 0:
            return Draft()
        tokens = tuple(matcher.forced_tokens()[: min(max_tokens, self.max_tokens)])
        return Draft(
            tokens,
            verify=self.verify,
            forced=True,
            sources=(FORCED,) * len(tokens),
            keys=(FORCED,) * len(tokens),
        )


# ------------------------------------------------------------------------------------------------
# Prompt lookup (n-gram retrieval)


class _NgramIndex:
    """For one token sequence: n-gram (n = 1..N) -> the positions just after each occurrence, newest
    last. Grows incrementally as the sequence does (the context only grows between rounds)."""

    __slots__ = ("max_n", "table", "tokens")

    def __init__(self, max_n: int) -> None:
        self.max_n = max_n
        self.tokens: list[int] = []
        self.table: dict[tuple[int, ...], list[int]] = {}

    def extend(self, new: Iterable[int]) -> None:
        tokens, table = self.tokens, self.table
        for t in new:
            tokens.append(int(t))
            end = len(tokens)
            # the n-grams ending at the previous token now have a follower at `end - 1`
            for n in range(1, self.max_n + 1):
                start = end - 1 - n
                if start < 0:
                    break
                table.setdefault(tuple(tokens[start : end - 1]), []).append(end - 1)

    def sync(self, context: Sequence[int]) -> None:
        """Make the index cover ``context`` (rebuilt when it is not an extension of what was indexed)."""
        n = len(self.tokens)
        if len(context) >= n and list(context[:n]) == self.tokens:
            self.extend(context[n:])
            return
        self.tokens = []
        self.table = {}
        self.extend(context)


class PromptLookupDrafter:
    """Drafts by n-gram retrieval: what followed the context's last ``n`` tokens where they occurred
    before (in the prompt, the output so far or ``corpus``), pruned by the grammar.

    For ``n`` from ``max_ngram`` down to ``min_ngram``, the occurrences of the last ``n`` context tokens
    are candidates (newest first, at most ``max_candidates`` in all); each candidate continuation is
    walked with a fork of the matcher and cut at the first token the grammar rejects (a draft never
    contains one), and at the adaptive length limit. The longest walk wins (ties: the longer match,
    then the newest). Each token's feature key is ``"ngram:<n>"``, so the acceptance estimate learns how
    far a 1-token match can be trusted compared with a 4-token one.

    Args:
        max_ngram, min_ngram: the match lengths tried.
        max_tokens: cap on one draft's length.
        corpus: extra token sequences to retrieve from (e.g. earlier outputs for the same schema).
        max_candidates: how many occurrences are walked per round.
        min_accept_prob: stop the draft where the estimated probability that every token so far is
            accepted falls below this (0: no adaptive stop).
        estimator: the :class:`AcceptanceEstimator` (a fresh one by default).
    """

    adaptive = True

    def __init__(
        self,
        max_ngram: int = 4,
        min_ngram: int = 1,
        max_tokens: int = 16,
        corpus: Iterable[Sequence[int]] = (),
        max_candidates: int = 12,
        min_accept_prob: float = 0.2,
        estimator: AcceptanceEstimator | None = None,
    ) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise InvalidInputError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.max_tokens = max_tokens
        self.max_candidates = max_candidates
        self.min_accept_prob = min_accept_prob
        self.estimator = estimator if estimator is not None else AcceptanceEstimator(prior=0.5)
        self._context = _NgramIndex(max_ngram)
        self._corpus: list[_NgramIndex] = []
        for seq in corpus:
            index = _NgramIndex(max_ngram)
            index.extend(seq)
            self._corpus.append(index)

    def __repr__(self) -> str:
        return (
            f"PromptLookupDrafter(max_ngram={self.max_ngram}, min_ngram={self.min_ngram}, "
            f"max_tokens={self.max_tokens}, corpus={len(self._corpus)} sequences, "
            f"min_accept_prob={self.min_accept_prob})"
        )

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer: Any, **kwargs: Any) -> PromptLookupDrafter:
        """A drafter whose corpus is ``texts``, encoded with ``tokenizer`` (no special tokens)."""
        corpus = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return cls(corpus=corpus, **kwargs)

    def _candidates(self, context: Sequence[int]) -> list[tuple[int, list[int], int]]:
        """``(n, source tokens, start of the continuation)``, best first."""
        out: list[tuple[int, list[int], int]] = []
        length = len(context)
        for n in range(min(self.max_ngram, length), self.min_ngram - 1, -1):
            key = tuple(context[length - n :])
            for index in (self._context, *self._corpus):
                positions = index.table.get(key)
                if not positions:
                    continue
                for pos in reversed(positions):
                    if index is self._context and pos >= length:
                        continue
                    out.append((n, index.tokens, pos))
                    if len(out) >= self.max_candidates:
                        return out
        return out

    def propose(
        self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int, prior: float = 1.0
    ) -> Draft:
        """The best grammar-valid continuation of a match of the context's suffix (may be empty).

        ``prior`` is the estimated probability that the draft before this one is accepted (where a
        :class:`ComposedDrafter` continues another drafter's draft); the adaptive stop counts from it.
        """
        limit = min(max_tokens, self.max_tokens)
        if limit <= 0 or (matcher is not None and matcher.must_end()):
            return Draft()
        self._context.sync(context)
        walker = matcher.fork() if matcher is not None else None
        best: list[int] = []
        best_n = 0
        seen: set[tuple[int, ...]] = set()
        for n, tokens, start in self._candidates(context):
            key = f"{NGRAM}:{n}"
            rate = self.estimator.estimate(key)
            # the adaptive cap: tokens while prior * rate**i stays above the threshold
            cap = limit
            if self.min_accept_prob > 0 and rate < 1:
                ratio = (
                    math.log(self.min_accept_prob / prior) / math.log(rate)
                    if prior > self.min_accept_prob
                    else 0
                )
                cap = min(limit, max(0, math.floor(ratio)))
            if cap <= len(best):
                continue
            cont = tokens[start : start + cap]
            if not cont or tuple(cont) in seen:
                continue
            seen.add(tuple(cont))
            walked = 0
            if walker is not None:
                for t in cont:
                    if not walker.accept_token(t):
                        break
                    walked += 1
                    if walker.must_end():
                        break
                walker.rollback(walked)
            else:
                walked = len(cont)
            if walked > len(best):
                best, best_n = cont[:walked], n
                if walked >= limit:
                    break
        if not best:
            return Draft()
        key = f"{NGRAM}:{best_n}"
        return Draft(tuple(best), sources=(NGRAM,) * len(best), keys=(key,) * len(best))

    def observe(self, draft: Draft, accepted: int) -> None:
        """Update the acceptance estimates with a verified draft (its n-gram tokens only)."""
        _observe_own(self.estimator, draft, accepted, NGRAM)


def _observe_own(estimator: AcceptanceEstimator, draft: Draft, accepted: int, source: str) -> None:
    """Update ``estimator`` with the tokens of ``draft`` that ``source`` proposed, given that the first
    ``accepted`` tokens of the whole draft were kept: a token counts as verified when every token before
    it was kept."""
    keys: list[str] = []
    kept = 0
    for i in range(min(len(draft.tokens), accepted + 1)):
        if draft.source(i) == source and i < len(draft.keys):
            keys.append(draft.keys[i])
            if i < accepted:
                kept += 1
    if keys:
        estimator.update(keys, kept)


# ------------------------------------------------------------------------------------------------
# Composition


@dataclass
class ComposedDrafter:
    """A chain of drafters, drafting in the same round: the first that proposes anything extends the
    draft, then the chain starts over from the state after it (so forced tokens come first, then an
    n-gram or model guess, then the forced tokens that follow it, ...), until nothing is proposed, the
    budget is spent or the estimated probability that the whole draft is accepted falls below
    ``min_accept_prob``.

    Args:
        drafters: in order of preference (put :class:`GrammarForcedDrafter` first).
        max_tokens: cap on one round's draft.
        min_accept_prob: the adaptive stop of the whole chain (0: none).
        estimator: acceptance estimates of the keys the drafters use (``"forced"`` has a high prior).
    """

    drafters: tuple[Drafter, ...]
    max_tokens: int = 24
    min_accept_prob: float = 0.2
    estimator: AcceptanceEstimator = field(
        default_factory=lambda: AcceptanceEstimator(prior=0.5, priors={FORCED: 0.95})
    )

    def __post_init__(self) -> None:
        if not self.drafters:
            raise InvalidInputError("ComposedDrafter needs at least one drafter")
        self.drafters = tuple(self.drafters)

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        """The chained draft (see the class docstring)."""
        limit = min(max_tokens, self.max_tokens)
        if limit <= 0 or (matcher is not None and matcher.must_end()):
            return Draft()
        walker = matcher.fork() if matcher is not None else None
        ctx = list(context)
        tokens: list[int] = []
        sources: list[str] = []
        keys: list[str] = []
        rows: list[Any] = []
        stochastic = False
        cumulative = 1.0
        while len(tokens) < limit and cumulative >= self.min_accept_prob:
            extended = False
            for drafter in self.drafters:
                room = limit - len(tokens)
                if getattr(drafter, "adaptive", False):
                    part = drafter.propose(ctx, walker, room, prior=cumulative)  # type: ignore[call-arg]
                else:
                    part = drafter.propose(ctx, walker, room)
                if not part.tokens or not part.verify:
                    continue
                for i, t in enumerate(part.tokens[:room]):
                    key = part.keys[i] if i < len(part.keys) else part.source(i)
                    p = self.estimator.estimate(key)
                    if tokens and cumulative * p < self.min_accept_prob:
                        break
                    if walker is not None and not walker.accept_token(t):
                        break  # a drafter proposed a token the grammar rejects: cut here
                    tokens.append(t)
                    ctx.append(t)
                    sources.append(part.source(i))
                    keys.append(key)
                    row = part.prob_row(i)
                    stochastic = stochastic or row is not None
                    rows.append(row)
                    cumulative *= p
                    extended = True
                    if walker is not None and walker.must_end():
                        break
                break  # start over from the first drafter at the new state
            if not extended or (walker is not None and walker.must_end()):
                break
        if not tokens:
            return Draft()
        probs = tuple(rows) if stochastic else None
        return Draft(tuple(tokens), probs=probs, sources=tuple(sources), keys=tuple(keys))

    def observe(self, draft: Draft, accepted: int) -> None:
        """Update the chain's estimates, then each drafter's (with its own tokens)."""
        self.estimator.update(draft.keys[: len(draft.tokens)], min(accepted, len(draft.tokens)))
        for drafter in self.drafters:
            observe(drafter, draft, accepted)


def default_drafter() -> ComposedDrafter:
    """The drafter :func:`constrain.generate` uses with ``speculate=True``: forced tokens, then prompt
    lookup (the best lossless composition measured on JSONSchemaBench; see bench/README.md)."""
    return ComposedDrafter((GrammarForcedDrafter(), PromptLookupDrafter()))


def __getattr__(name: str) -> Any:
    # The model drafters need torch and transformers: imported on first use only.
    if name in ("DraftModelDrafter", "LayerSkipDrafter"):
        from . import speculation_models

        return getattr(speculation_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
