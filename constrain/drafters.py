"""Drafters: cheap guesses of the next few tokens, checked by the model in one forward pass.

The generation loop (:mod:`constrain.generation`) is a speculative-decoding core. Each round it asks a
:class:`Drafter` for up to ``k`` tokens, runs the model ONCE over the pending token plus the draft, and
keeps the longest prefix of the draft that the sampler accepts under the grammar's mask (then one more
token, sampled where the draft stopped). The KV cache and the matcher are rolled back past the rejected
part. With a deterministic draft and the acceptance rule of :meth:`constrain.generation.Sampler.accept`
the output has exactly the distribution of one-token-at-a-time masked sampling (for greedy decoding: the
same tokens).

:class:`GrammarForcedDrafter` drafts what the grammar forces: where the automaton allows one byte string
only (``{"name": "``), the tokens that spell it (:meth:`GrammarMatcher.forced_tokens`: the tokenizer's
own encoding, less trailing tokens that could merge with what follows; greedy longest match where the
tokenizer cannot be asked). With ``verify=True`` (the default) the model checks them like any draft, so
where it prefers another segmentation (or a token running past the forced bytes, like ``"j`` after a
forced ``"``) its choice wins and nothing is lost. With ``verify=False`` they are taken as they are
(classic jump-forward): never a rejection, but the model then continues from a segmentation it may not
have chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from .matcher import GrammarMatcher

__all__ = ["Draft", "Drafter", "GrammarForcedDrafter"]


@dataclass(frozen=True)
class Draft:
    """Tokens proposed for the next positions.

    Attributes:
        tokens: the proposed ids, in order (may be empty: no guess this round).
        probs: the drafter's distribution at each position, ``(len(tokens), width)``, for a stochastic
            drafter; ``None`` for a deterministic one (each token had probability 1).
        verify: ``False`` for tokens the grammar forces and that are taken without asking the model
            (jump-forward); the loop still runs them through the model, in the same single pass.
        forced: the tokens spell bytes the grammar forces (counted as ``forced_tokens`` in the stats).
    """

    tokens: tuple[int, ...] = ()
    probs: torch.Tensor | None = None
    verify: bool = True
    forced: bool = False


@runtime_checkable
class Drafter(Protocol):
    """Proposes up to ``max_tokens`` tokens to follow ``context`` (prompt + output ids so far).

    ``matcher`` is the grammar state after ``context`` (``None`` when generation is unconstrained). A
    drafter must not change it; :meth:`GrammarMatcher.fork` gives a copy to walk.
    """

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft: ...


@dataclass(frozen=True)
class GrammarForcedDrafter:
    """Drafts the tokens spelling the grammar's forced continuation (jump-forward).

    Args:
        verify: ``True``: the model verifies the tokens like any draft (lossless; the default).
            ``False``: they are taken unverified (classic jump-forward, never rejected).
        max_tokens: cap on one draft's length (a long forced literal is drafted over several rounds).
    """

    verify: bool = True
    max_tokens: int = 32

    def propose(self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int) -> Draft:
        """The forced tokens at ``matcher``'s state (empty where the grammar leaves a choice)."""
        if matcher is None or matcher.is_terminated() or max_tokens <= 0:
            return Draft()
        tokens = matcher.forced_tokens()[: min(max_tokens, self.max_tokens)]
        return Draft(tuple(tokens), verify=self.verify, forced=True)
