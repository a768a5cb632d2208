"""Sequential Monte Carlo over AWRS proposals (Lipkin et al., 2025; Loula et al., 2025).

Masked decoding samples each token from ``p(t | w) * allowed(t) / Z(w)``; the product of those local
normalisers is exactly what it gets wrong. SMC runs N particles that each propose their next token
with :func:`~constrain.sampling.awrs.awrs_sample` (an exact draw of the masked distribution and an
unbiased estimate of ``Z(w)``) and multiply their weight by that estimate, so that a finished particle
``x`` carries the importance weight ``p(x EOS) / q(x EOS)``. When the effective sample size of the live
particles' weights falls below ``ess_threshold`` times their number, they are resampled (systematic
resampling within the live group, each given the group's mean weight): particles stuck in prefixes with
little grammatical mass are dropped and promising ones are forked, matcher and KV-cache row included.

The weighted particles approximate ``P(output | output in the language)`` (consistent as N grows), and
``mean(weights)`` is an unbiased estimate of ``P(language)``, the model's probability of producing
any output of the language (:attr:`SMCResult.log_marginal` is its log).

:func:`smc_core` is the algorithm over any batched ``lm_logprobs(prefixes)``; :func:`smc` runs it with a
transformers model, one forward pass per step for all live particles over one batched KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ..exceptions import ConstrainError, InvalidInputError
from ..matcher import GrammarMatcher
from .awrs import awrs_sample

__all__ = ["Particle", "SMCResult", "smc", "smc_core"]

BatchedLogprobs = Callable[[Sequence[Sequence[int]]], np.ndarray]
"""``lm_logprobs(prefixes) -> float64[len(prefixes), width]``: each prefix's next-token log-probabilities."""


@dataclass(frozen=True)
class Particle:
    """One finished particle: its output ``text``, ``token_ids`` (EOS not included) and unnormalised
    ``log_weight``."""

    text: str
    token_ids: tuple[int, ...]
    log_weight: float


@dataclass
class SMCResult:
    """The weighted particles of one SMC run.

    Attributes:
        particles: the finished particles with positive weight, at most the number asked for
            (copies made by resampling are separate entries).
        log_marginal: log of the unbiased estimate of ``P(language)`` (mean weight over all N
            particles, the ones that died included); ``-inf`` where every particle died.
        steps: tokens proposed per particle at most (the longest particle's length, EOS included).
        resamples: how many times the particles were resampled.
        lm_calls: calls of ``lm_logprobs`` (with a model: batched forward passes, the prefill included).
        out_of_budget: particles that reached ``max_steps`` where the output could not end (weight 0).
    """

    particles: list[Particle]
    log_marginal: float
    steps: int = 0
    resamples: int = 0
    lm_calls: int = 0
    out_of_budget: int = 0
    _cdf: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def weights(self) -> np.ndarray:
        """The particles' normalised weights (summing to 1), in the order of :attr:`particles`."""
        if not self.particles:
            raise ConstrainError("no particle finished with positive weight: nothing to weigh")
        lw = np.array([p.log_weight for p in self.particles], dtype=np.float64)
        w = np.exp(lw - lw.max())
        return w / w.sum()

    def sample(self, rng: np.random.Generator | int | None = None) -> Particle:
        """One particle drawn with probability proportional to its weight (``rng``: a numpy Generator
        or a seed)."""
        if self._cdf is None:
            self._cdf = np.cumsum(self.weights())
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        i = int(np.searchsorted(self._cdf, gen.random() * self._cdf[-1], side="right"))
        return self.particles[min(i, len(self.particles) - 1)]


class _State:
    """A particle while it runs."""

    __slots__ = ("done", "log_w", "matcher", "tokens")

    def __init__(self, matcher: GrammarMatcher, tokens: list[int], log_w: float) -> None:
        self.matcher = matcher
        self.tokens = tokens
        self.log_w = log_w
        self.done = False

    def fork(self) -> _State:
        return _State(self.matcher.fork(), self.tokens.copy(), self.log_w)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _logsumexp(a: np.ndarray) -> float:
    m = float(a.max()) if a.size else -math.inf
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(np.exp(a - m).sum()))


def _systematic(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: ``len(weights)`` ancestor indices (lower variance than multinomial)."""
    n = weights.size
    cdf = np.cumsum(weights)
    positions = (rng.random() + np.arange(n)) / n * cdf[-1]
    return np.minimum(np.searchsorted(cdf, positions, side="right"), n - 1)


def smc_core(
    lm_logprobs: BatchedLogprobs,
    matcher: GrammarMatcher,
    *,
    particles: int,
    rng: np.random.Generator,
    ess_threshold: float = 0.5,
    max_steps: int | None = None,
) -> SMCResult:
    """SMC with AWRS proposals, independent of the model.

    Each step calls ``lm_logprobs`` once with the prefixes (token ids, the prompt not included) of all
    live particles, in a stable order; a particle ends when it draws EOS. ``matcher`` (at the language's
    start state) is forked per particle and not changed. ``max_steps`` bounds the output in tokens, EOS
    not counted: a particle at that length may only end (its weight is multiplied by the EOS
    probability, 0 where the grammar cannot end there), so the target is the model conditioned on the
    language *and* that length, and the weights stay exact.

    Resampling happens when the effective sample size of the live particles' weights falls below
    ``ess_threshold * (number of live particles)``; finished particles are never resampled.

    Raises:
        InvalidInputError: ``particles < 1``, ``ess_threshold`` outside [0, 1] or ``max_steps < 0``.
    """
    if particles < 1:
        raise InvalidInputError(f"particles must be >= 1, got {particles}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise InvalidInputError(f"ess_threshold must be in [0, 1], got {ess_threshold}")
    if max_steps is not None and max_steps < 0:
        raise InvalidInputError(f"max_steps must be >= 0 or None, got {max_steps}")
    info = matcher.compiled.tokenizer_info
    eos_ids = np.array(info.eos_ids, dtype=np.int64)
    eos_set = frozenset(info.eos_ids)
    states = [_State(matcher.fork(), [], 0.0) for _ in range(particles)]
    steps = resamples = calls = out_of_budget = 0
    while True:
        live = [s for s in states if not s.done]
        if not live:
            break
        depth = len(live[0].tokens)  # every live particle has proposed the same number of tokens
        lps = np.asarray(lm_logprobs([s.tokens for s in live]), dtype=np.float64)
        calls += 1
        steps += 1
        for s, lp in zip(live, lps, strict=True):
            if max_steps is not None and depth >= max_steps:
                # the budget is spent: only EOS may follow, proposed with probability 1
                can_end = s.matcher.can_end()
                out_of_budget += not can_end
                mass = float(np.exp(lp[eos_ids]).sum()) if can_end else 0.0
                s.log_w += _log(mass)
                s.done = True
                continue
            try:
                draw = awrs_sample(lp, s.matcher, rng)
            except InvalidInputError:
                raise  # malformed log-probabilities: the caller's bug, not a dead particle
            except ConstrainError:
                # no allowed token has positive probability (e.g. top-p removed them all)
                s.log_w = -math.inf
                s.done = True
                continue
            s.log_w += _log(draw.weight)
            if draw.token in eos_set:
                s.done = True
            else:
                if not s.matcher.accept_token(draw.token):
                    raise ConstrainError(f"AWRS proposed token {draw.token}, which the matcher rejects (bug)")
                s.tokens.append(draw.token)
        live = [s for s in states if not s.done]
        if not live:
            break
        lw = np.array([s.log_w for s in live])
        total = _logsumexp(lw)
        if total == -math.inf:  # every live particle died: nothing to resample from
            for s in live:
                s.done = True
            break
        w = np.exp(lw - total)
        if 1.0 / float(np.square(w).sum()) < ess_threshold * len(live):
            resamples += 1
            mean = total - math.log(len(live))
            used: set[int] = set()
            fresh = []
            for i in _systematic(w, rng).tolist():
                s = live[i] if i not in used else live[i].fork()  # the first copy keeps the original
                used.add(i)
                s.log_w = mean
                fresh.append(s)
            states = [s for s in states if s.done] + fresh
    all_lw = np.array([s.log_w for s in states])
    log_marginal = _logsumexp(all_lw) - math.log(particles)
    out = [
        Particle(info.decode_bytes(s.tokens).decode("utf-8", errors="replace"), tuple(s.tokens), s.log_w)
        for s in states
        if s.log_w > -math.inf
    ]
    return SMCResult(
        out, log_marginal, steps=steps, resamples=resamples, lm_calls=calls, out_of_budget=out_of_budget
    )


# ------------------------------------------------------------------------------------------------
# With a transformers model


class _BatchedModel:
    """``lm_logprobs(prefixes)`` for a causal LM after a fixed prompt, over one batched KV cache.

    Row ``r`` of the cache holds the prompt and ``self._keys[r]``. SMC grows every live prefix by one
    token per step, so each requested prefix's parent (the prefix less its last token) is a row of the
    previous step: the cache's batch dimension is gathered to those parents (``reorder_cache``, an
    ``index_select`` that forks resampled rows and drops finished ones) and the last tokens are fed as
    one ``(live, 1)`` batch. All rows have the same length, so no padding or attention mask is needed.
    """

    def __init__(
        self, model: Any, prompt_ids: Sequence[int], temperature: float, top_p: float | None, width: int
    ) -> None:
        import torch
        from transformers import DynamicCache

        from ..generation import cache_argument

        self._model = model
        self._device = next(model.parameters()).device
        self._cache = DynamicCache(config=model.config)
        self._cache_arg = cache_argument(model)
        self._temperature = temperature
        self._top_p = top_p
        self._width = width
        self.forward_passes = 0
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self._device)
        self._first = self._logprobs(self._forward(ids))  # after the prompt: every particle's first step
        self._rows: dict[tuple[int, ...], int] = {(): 0}

    def _forward(self, ids: Any) -> Any:
        import torch

        with torch.inference_mode():
            out = self._model(
                input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: self._cache}
            )
        self.forward_passes += 1
        return out.logits[:, -1]

    def _logprobs(self, logits: Any) -> np.ndarray:
        """Temperature, then the top-p nucleus (the smallest set of tokens whose mass reaches
        ``top_p``, the one crossing it included), as float64 log-probabilities; -inf outside."""
        import torch

        lp = torch.log_softmax(logits.to(torch.float64) / self._temperature, dim=-1)
        if self._top_p is not None and self._top_p < 1:
            p = lp.exp()
            sorted_p, order = torch.sort(p, dim=-1, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= self._top_p
            sorted_p[drop] = 0
            p = torch.zeros_like(p).scatter_(-1, order, sorted_p)
            lp = torch.log(p / p.sum(dim=-1, keepdim=True))
        return lp[:, : self._width].cpu().numpy()

    def __call__(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        keys = [tuple(p) for p in prefixes]
        if all(not k for k in keys):
            return np.repeat(self._first, len(keys), axis=0)
        try:
            parents = [self._rows[k[:-1]] for k in keys]
        except KeyError as exc:
            raise ConstrainError(
                "SMC asked for a prefix that does not extend one of the last step's"
            ) from exc
        index = cast("torch.LongTensor", torch.tensor(parents, dtype=torch.long, device=self._device))
        self._cache.reorder_cache(index)  # index_select on every layer: forks and drops rows
        ids = torch.tensor([[k[-1]] for k in keys], dtype=torch.long, device=self._device)
        out = self._logprobs(self._forward(ids))
        self._rows = {k: i for i, k in enumerate(keys)}
        return out


def smc(
    prompt: Any,
    *,
    schema: Any = None,
    grammar: Any = None,
    regex: str | None = None,
    particles: int = 8,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float | None = None,
    ess_threshold: float = 0.5,
    seed: int | None = None,
    chat: bool | None = None,
    **schema_options: Any,
) -> SMCResult:
    """Sequential Monte Carlo over AWRS proposals with a transformers causal LM: ``particles`` weighted
    outputs for ``prompt`` that approximate the model's distribution conditioned on the output being in
    the language (and at most ``max_new_tokens`` tokens long, EOS not counted). Draw one output with
    :meth:`SMCResult.sample`.

    Pass exactly one of ``schema`` (a JSON Schema: dict, JSON text, path or pydantic model;
    ``schema_options`` go to ``Grammar.from_json_schema``), ``grammar`` (a :class:`~constrain.Grammar`
    or :class:`~constrain.CompiledGrammar`) or ``regex``. ``model``/``tokenizer``/``chat``: as in
    :func:`constrain.generate`. ``temperature`` (> 0) and ``top_p`` shape the model's own distribution
    before it is conditioned on the language (unlike :func:`constrain.generate`, whose top-p nucleus is
    taken after masking): a particle whose nucleus holds no allowed token dies, so a small ``top_p``
    can leave no particle at all. ``seed`` fixes the proposals and the resampling. Every step runs the
    model once for all live particles (a batched KV cache, gathered on resampling).

    Raises:
        InvalidInputError: not exactly one constraint, a temperature <= 0, a bad ``top_p``,
            ``particles``, ``ess_threshold`` or budget.
        BudgetExhaustedError: no particle finished with positive weight, and some ran out of
            ``max_new_tokens`` where the output could not end.
        ConstrainError: no particle finished, each having reached a prefix where no allowed token has
            positive probability (``top_p`` removed them all).
    """
    from ..generation import (
        BudgetExhaustedError,
        GenerationStats,
        compile_constraint,
        encode_prompt,
        resolve_model,
    )
    from ..models import tokenizer_info_for

    if not temperature > 0:
        raise InvalidInputError(f"temperature must be > 0 for SMC, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise InvalidInputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if particles < 1:
        raise InvalidInputError(f"particles must be >= 1, got {particles}")
    model, tokenizer = resolve_model(model, tokenizer)
    info = tokenizer_info_for(tokenizer)
    compiled = compile_constraint(
        info, regex=regex, grammar=grammar, schema=schema, schema_options=schema_options, required=True
    )
    assert compiled is not None  # required=True
    prompt_ids = encode_prompt(tokenizer, prompt, chat)
    lm = _BatchedModel(model, prompt_ids, temperature, top_p, info.vocab_size)
    result = smc_core(
        lm,
        GrammarMatcher(compiled),
        particles=particles,
        rng=np.random.default_rng(seed),
        ess_threshold=ess_threshold,
        max_steps=max_new_tokens,
    )
    result.lm_calls = lm.forward_passes
    if not result.particles and not result.out_of_budget:
        raise ConstrainError(
            "every particle reached a prefix where no allowed token has positive probability"
            + ("" if top_p is None else f" within the top_p={top_p} nucleus")
        )
    if not result.particles:
        stats = GenerationStats(prompt_tokens=len(prompt_ids), forward_passes=lm.forward_passes)
        raise BudgetExhaustedError("", [], stats, max_new_tokens)
    return result
