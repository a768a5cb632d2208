"""Enumerable problems: a tiny language model whose conditional distribution under a grammar can be
computed exactly, the oracle for the samplers' exactness tests and for the sampling bench.

:class:`TableLM` is a fixed random bigram table over a small byte vocabulary (token 0 is EOS): its
next-token log-probabilities depend on the last token only. :func:`exact_conditional` enumerates every
token sequence the grammar allows (the language must be finite) and returns
``P(sequence | sequence in the language)`` under the model, by exact summation. Nothing here samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import InvalidInputError
from ..matcher import GrammarMatcher
from ..tokenizer_info import TokenizerInfo

#: A small vocabulary over a, b, c and digits: one- and two-byte tokens, so strings have several
#: tokenisations (which the exact conditional counts separately, as the model does).
TOY_TOKENS: tuple[bytes, ...] = (
    b"",  # 0: EOS
    b"a",
    b"b",
    b"c",
    b"ab",
    b"ba",
    b"bc",
    b"0",
    b"1",
    b"2",
    b"01",
    b"12",
    b"-",
    b"(",
    b")",
    b"+",
)


def toy_tokenizer_info() -> TokenizerInfo:
    """The :class:`~constrain.TokenizerInfo` of :data:`TOY_TOKENS` (EOS is id 0)."""
    return TokenizerInfo.from_vocab(list(TOY_TOKENS), eos_ids=[0], name="toy")


@dataclass
class TableLM:
    """A bigram language model with a fixed random table: ``logprobs(prefix)`` depends on the last
    token of ``prefix`` only (the start row for an empty prefix).

    ``sharpness`` scales the random logits: larger values make the model more peaked, which makes
    greedy-local (masked) decoding more biased and the samplers' corrections easier to see.
    """

    vocab_size: int = len(TOY_TOKENS)
    seed: int = 0
    sharpness: float = 2.0
    table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise InvalidInputError(f"vocab_size must be >= 2, got {self.vocab_size}")
        rng = np.random.default_rng(self.seed)
        logits = rng.normal(size=(self.vocab_size + 1, self.vocab_size)) * self.sharpness
        self.table = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)  # log-softmax rows

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        """float64[vocab_size]: the next token's log-probabilities after ``prefix``."""
        row = self.vocab_size if len(prefix) == 0 else int(prefix[-1])
        return self.table[row]


def exact_conditional(
    lm: TableLM, matcher: GrammarMatcher, eos_id: int = 0, max_sequences: int = 200_000
) -> dict[tuple[int, ...], float]:
    """``P(tokens | the output is in the language)`` for every token sequence the grammar allows,
    EOS excluded from the keys, by enumerating them all from ``matcher``'s state (not changed).

    Raises:
        InvalidInputError: the language has more than ``max_sequences`` token sequences (or is
            infinite), or no sequence at all.
    """
    joint: dict[tuple[int, ...], float] = {}

    def visit(m: GrammarMatcher, prefix: list[int], logp: float) -> None:
        lp = lm.logprobs(prefix)
        for tid in m.allowed_token_ids().tolist():
            if tid == eos_id:
                joint[tuple(prefix)] = logp + float(lp[tid])
                if len(joint) > max_sequences:
                    raise InvalidInputError(f"more than {max_sequences} sequences: not enumerable")
                continue
            if len(prefix) > 64:
                raise InvalidInputError("sequences longer than 64 tokens: the language looks infinite")
            child = m.fork()
            child.accept_token(tid)
            visit(child, [*prefix, tid], logp + float(lp[tid]))

    visit(matcher.fork(), [], 0.0)
    if not joint:
        raise InvalidInputError("the language is empty: nothing to condition on")
    total = np.logaddexp.reduce(np.array(list(joint.values())))
    return {seq: math.exp(lp - total) for seq, lp in joint.items()}


def kl_divergence(exact: dict[tuple[int, ...], float], counts: dict[tuple[int, ...], float]) -> float:
    """KL(exact || empirical) in nats, where ``counts`` are sample counts or weights (normalised here);
    a sequence with exact mass but no samples gives ``inf``."""
    total = sum(counts.values())
    if total <= 0:
        return math.inf
    kl = 0.0
    for seq, p in exact.items():
        if p <= 0:
            continue
        q = counts.get(seq, 0.0) / total
        if q <= 0:
            return math.inf
        kl += p * math.log(p / q)
    return kl


def masked_decoding_distribution(
    lm: TableLM, matcher: GrammarMatcher, eos_id: int = 0
) -> dict[tuple[int, ...], float]:
    """The exact output distribution of greedy-local masked sampling (renormalise the allowed tokens
    at each step): the biased baseline that ASAp and SMC correct."""
    out: dict[tuple[int, ...], float] = {}

    def visit(m: GrammarMatcher, prefix: list[int], p: float) -> None:
        lp = lm.logprobs(prefix)
        allowed = m.allowed_token_ids()
        z = np.logaddexp.reduce(lp[allowed])
        for tid in allowed.tolist():
            q = p * math.exp(float(lp[tid]) - z)
            if tid == eos_id:
                out[tuple(prefix)] = out.get(tuple(prefix), 0.0) + q
                continue
            child = m.fork()
            child.accept_token(tid)
            visit(child, [*prefix, tid], q)

    visit(matcher.fork(), [], 1.0)
    return out
