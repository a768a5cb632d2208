"""Constrained generation with a transformers causal LM: ``generate`` and ``generate_json``.

The loop is a speculative-decoding core. It owns the model's KV cache (a transformers ``DynamicCache``)
and, each round:

1. asks a :class:`~constrain.drafters.Drafter` for a draft (by default
   :func:`~constrain.drafters.default_drafter`: the tokens the grammar forces, then prompt lookup);
2. runs the model ONCE over the pending token and the draft;
3. walks the draft with the matcher: at each position the grammar's mask is applied to that position's
   logits (:func:`constrain.kernels.apply_token_bitmask_inplace`) and the :class:`Sampler` accepts the
   drafted token or replaces it; the first replacement ends the round, and if the whole draft passed, one
   more token is sampled from the last position;
4. crops the KV cache (and the matcher never took the rejected tokens) back to what was kept.

With no draft this is plain masked decoding, one forward pass per token. With a draft, a forced literal
like ``", "age": `` costs one pass instead of six, and (with ``verify=True``) the tokens are exactly
those the one-token-at-a-time loop would pick under greedy decoding, or distributed exactly like them
when sampling (the speculative-sampling acceptance rule with a one-hot draft distribution).

The output never leaves the language: every token is checked by the matcher. If the token budget runs
out before the output may end, ``on_budget="raise"`` raises :class:`BudgetExhaustedError` (carrying the
partial text) and ``on_budget="complete"`` appends the shortest valid completion (a breadth-first search
over the grammar's DFA, no model calls), so the result is valid but may be over budget.

``method="awrs"`` samples each model-chosen token by adaptive weighted rejection sampling
(:mod:`constrain.sampling.awrs`) instead of a mask: candidates from the unconstrained (temperature /
top-p adjusted) distribution, without replacement, checked with the matcher until one passes; the same
distribution as masked sampling (for greedy decoding: the same tokens), with a full mask only where
rejections pile up. ``method="smc"`` runs sequential Monte Carlo over AWRS proposals
(:mod:`constrain.sampling.smc`) and returns one output drawn from the weighted particles.

Statistics (output tokens, forward passes, drafted/forced tokens, time to first token, time per output
token, AWRS checks) come back with ``generate(..., return_stats=True)``, which returns a
:class:`GenerationResult`.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload, runtime_checkable

import numpy as np
import torch

from .compiler import CompiledGrammar, compile, ensure_compiled
from .drafters import Draft, Drafter, default_drafter, observe
from .exceptions import ConstrainError, InputTooLargeError, InvalidInputError
from .grammar import Grammar
from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace
from .matcher import GrammarMatcher
from .models import default_model, load_model, tokenizer_info_for
from .sampling.awrs import awrs_argmax, awrs_sample
from .sampling.methods import AWRS, Masked, resolve_method
from .tokenizer_info import TokenizerInfo
from .validation import check_options

__all__ = [
    "BudgetExhaustedError",
    "DeadEndError",
    "GenerationResult",
    "GenerationStats",
    "GreedySampler",
    "ModelRunner",
    "OutputValidationError",
    "Sampler",
    "TemperatureSampler",
    "generate",
    "generate_json",
    "make_sampler",
    "shortest_completion",
]

OnBudget = Literal["raise", "complete"]
Method = Literal["masked", "awrs", "smc"]
METHODS: tuple[str, ...] = ("masked", "awrs", "smc")
Prompt = str | Sequence[Mapping[str, Any]]


# ------------------------------------------------------------------------------------------------
# Errors


class BudgetExhaustedError(ConstrainError, RuntimeError):
    """``max_new_tokens`` ran out before the output could end. Raise the budget or use
    ``on_budget="complete"``.

    Attributes:
        partial_text: the output so far (a valid prefix of the language).
        token_ids: its token ids.
        stats: the :class:`GenerationStats` of the run.
    """

    def __init__(self, partial_text: str, token_ids: list[int], stats: GenerationStats, budget: int) -> None:
        self.partial_text = partial_text
        self.token_ids = token_ids
        self.stats = stats
        self.budget = budget
        shown = partial_text if len(partial_text) <= 200 else partial_text[:200] + "..."
        super().__init__(
            f"max_new_tokens={budget} ran out before the output could end (partial output: {shown!r}); "
            "raise max_new_tokens, or pass on_budget='complete' to finish along the shortest valid completion"
        )


class DeadEndError(ConstrainError, RuntimeError):
    """The grammar allows no token of this tokenizer here and the output may not end: the language
    needs bytes that no token spells (a tokenizer without byte fallback), so no valid output exists
    from this prefix. Raised instead of sampling from an all-masked distribution.

    Attributes:
        partial_text: the output so far (a valid prefix of the language; empty at the first step).
        token_ids: its token ids.
    """

    def __init__(self, partial_text: str, token_ids: list[int]) -> None:
        self.partial_text = partial_text
        self.token_ids = token_ids
        where = f"after {partial_text[:200]!r}" if token_ids else "at the first step"
        super().__init__(
            f"no token of this tokenizer can continue the output {where} and it may not end there: "
            "the grammar needs bytes the vocabulary cannot spell"
        )


class OutputValidationError(ConstrainError, ValueError):
    """The generated text does not validate against the schema (a schema keyword the grammar did not
    enforce, e.g. one dropped by ``lenient=True``). ``text`` is the output, ``error`` the validator's."""

    def __init__(self, message: str, text: str, error: Exception | None = None) -> None:
        self.text = text
        self.error = error
        super().__init__(message)


# ------------------------------------------------------------------------------------------------
# Samplers


@runtime_checkable
class Sampler(Protocol):
    """Picks the next token from one row of logits that the grammar's mask was already applied to.

    ``accept`` is the verification rule of speculative decoding: given a drafted token (and, for a
    stochastic drafter, its draft distribution), return ``(token, accepted)``: the draft itself with
    ``accepted=True``, or a replacement drawn so that the emitted token has exactly the distribution
    ``sample`` would give.
    """

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> int: ...

    def accept(
        self,
        logits: torch.Tensor,
        token: int,
        draft_probs: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[int, bool]: ...


class GreedySampler:
    """Argmax (ties go to the lowest id). A draft token is accepted iff it is the argmax."""

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        """The argmax of ``logits``."""
        return int(torch.argmax(logits))

    def accept(
        self,
        logits: torch.Tensor,
        token: int,
        draft_probs: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[int, bool]:
        """``(argmax, argmax == token)``."""
        best = int(torch.argmax(logits))
        return best, best == token

    def __repr__(self) -> str:
        return "GreedySampler()"


class TemperatureSampler:
    """Sampling from ``softmax(logits / temperature)``, optionally restricted to the top-p nucleus.

    Verification uses the speculative-sampling rule: accept a draft token ``t`` with probability
    ``min(1, p(t) / q(t))`` (``q(t) = 1`` for a deterministic draft), else draw from
    ``normalize(max(p - q, 0))``; the emitted token is then distributed exactly as ``p``.
    """

    def __init__(self, temperature: float = 1.0, top_p: float | None = None) -> None:
        if not temperature > 0:
            raise InvalidInputError(
                f"temperature must be > 0 for sampling (got {temperature}); use GreedySampler"
            )
        if top_p is not None and not 0 < top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = float(temperature)
        self.top_p = top_p

    def __repr__(self) -> str:
        return f"TemperatureSampler(temperature={self.temperature}, top_p={self.top_p})"

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The sampling distribution (float32; masked tokens get 0)."""
        p = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p is not None and self.top_p < 1:
            sorted_p, order = torch.sort(p, descending=True)
            cumulative = torch.cumsum(sorted_p, dim=-1)
            # keep the smallest prefix whose mass reaches top_p (the token that crosses it included)
            drop = cumulative - sorted_p >= self.top_p
            sorted_p[drop] = 0
            p = torch.zeros_like(p).scatter_(-1, order, sorted_p)
            p = p / p.sum()
        return p

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        """One draw from :meth:`probs`."""
        return int(torch.multinomial(self.probs(logits), 1, generator=generator))

    def accept(
        self,
        logits: torch.Tensor,
        token: int,
        draft_probs: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[int, bool]:
        """Accept ``token`` with probability ``min(1, p/q)``, else draw from the residual."""
        p = self.probs(logits)
        q_t = 1.0 if draft_probs is None else float(draft_probs[token])
        p_t = float(p[token])
        u = float(torch.rand((), generator=generator, device=p.device))
        if q_t > 0 and u < min(1.0, p_t / q_t):
            return token, True
        if draft_probs is None:
            residual = p.clone()
            residual[token] = 0
        else:
            residual = torch.clamp(p - _fit_width(draft_probs, p), min=0)
        total = float(residual.sum())
        if total <= 0:  # p == q: nothing left to correct; any draw from p is right
            residual, total = p, float(p.sum())
        return int(torch.multinomial(residual / total, 1, generator=generator)), False


def _fit_width(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``q`` as ``p``'s dtype, device and width (a draft model's logits may be padded differently: ids
    past the narrower width have probability 0 there)."""
    q = q.to(p.device, p.dtype)
    width = p.shape[-1]
    if q.shape[-1] > width:
        return q[..., :width]
    if q.shape[-1] < width:
        return torch.nn.functional.pad(q, (0, width - q.shape[-1]))
    return q


def make_sampler(temperature: float = 0.0, top_p: float | None = None) -> Sampler:
    """``GreedySampler()`` for ``temperature == 0``, else ``TemperatureSampler(temperature, top_p)``."""
    if temperature < 0:
        raise InvalidInputError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return GreedySampler()
    return TemperatureSampler(temperature, top_p)


# ------------------------------------------------------------------------------------------------
# The model with its KV cache


def cache_argument(model: Any) -> str:
    """The name of the KV-cache argument of ``model.forward``: transformers 5.24 renamed
    ``past_key_values`` to ``cache``. A wrapper that takes ``**kwargs`` follows the installed release."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


class ModelRunner:
    """A causal LM and the KV cache of one sequence: feed tokens, get logits, crop on rollback.

    ``length`` is the number of tokens whose keys and values are cached.
    """

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = DynamicCache(config=model.config)
        self._cache_arg = cache_argument(model)
        self.length = 0
        self.forward_passes = 0

    @property
    def can_crop(self) -> bool:
        """Whether :meth:`crop` restores the cache exactly (not so for sliding-window or recurrent layers)."""
        return bool(getattr(self.cache, "is_croppable", True))

    def forward(self, tokens: Sequence[int], keep: int = 1) -> torch.Tensor:
        """Run ``tokens`` through the model after the cached ones; float32 logits of the last ``keep``
        positions, ``(keep, width)``."""
        if not tokens:
            raise InvalidInputError("ModelRunner.forward needs at least one token")
        keep = max(1, min(keep, len(tokens)))
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, use_cache=True, logits_to_keep=keep, **{self._cache_arg: self.cache}
            )
        self.length += len(tokens)
        self.forward_passes += 1
        # A normal (not inference-mode) float32 copy: the loop masks it in place.
        return out.logits[0, -keep:].to(torch.float32, copy=True)

    def crop(self, length: int) -> None:
        """Forget the cached tokens past ``length`` (a rejected draft)."""
        if not 0 <= length <= self.length:
            raise InvalidInputError(f"cannot crop a cache of {self.length} tokens to {length}")
        if length < self.length:
            # negative = number of tokens to remove (transformers 5; older versions read it the same way)
            self.cache.crop(length - self.length)
            self.length = length


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class GenerationStats:
    """What one generation cost.

    Attributes:
        prompt_tokens: tokens in the (templated) prompt.
        output_tokens: tokens the loop emitted (EOS included; completion tokens not included).
        forward_passes: model calls (the prefill is the first).
        draft_tokens: tokens proposed by the drafter.
        accepted_draft_tokens: proposed tokens that were kept.
        forced_tokens: kept tokens that the grammar forced (jump-forward).
        drafted_by: drafted tokens per drafter (``"forced"``, ``"ngram"``, ``"model"``, ...).
        accepted_by: kept drafted tokens per drafter.
        completion_tokens: tokens appended by ``on_budget="complete"`` without the model.
        awrs_steps: tokens drawn by AWRS (``method="awrs"``).
        constraint_checks: candidates AWRS checked with the matcher in those steps.
        mask_fallbacks: AWRS steps that computed the full mask after too many rejections.
        time_to_first_token_s: from the call to the first output token (prefill included).
        total_time_s: the whole call (prompt templating and grammar compilation excluded).
    """

    prompt_tokens: int = 0
    output_tokens: int = 0
    forward_passes: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    forced_tokens: int = 0
    drafted_by: dict[str, int] = field(default_factory=dict)
    accepted_by: dict[str, int] = field(default_factory=dict)
    completion_tokens: int = 0
    awrs_steps: int = 0
    constraint_checks: int = 0
    mask_fallbacks: int = 0
    time_to_first_token_s: float = 0.0
    total_time_s: float = 0.0

    @property
    def time_per_output_token_s(self) -> float:
        """Decode time per output token after the first: ``(total - ttft) / (output_tokens - 1)``."""
        if self.output_tokens <= 1:
            return 0.0
        return (self.total_time_s - self.time_to_first_token_s) / (self.output_tokens - 1)

    @property
    def acceptance_rate(self) -> float:
        """Kept drafted tokens over drafted tokens (0.0 where nothing was drafted)."""
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def tokens_per_forward_pass(self) -> float:
        """Output tokens per model call (1.0 without speculation)."""
        return self.output_tokens / self.forward_passes if self.forward_passes else 0.0


@dataclass
class GenerationResult:
    """Text, ids and stats of one generation.

    ``finish_reason``: ``"eos"`` (the model ended it), ``"grammar"`` (the language allows nothing
    more), ``"length"`` (the budget ran out where the output may end, or unconstrained), ``"completed"``
    (``on_budget="complete"`` finished it), ``"smc"`` (drawn from SMC's particles, ``method="smc"``).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)


# ------------------------------------------------------------------------------------------------
# Shortest completion


def shortest_completion(matcher: GrammarMatcher) -> list[int]:
    """Tokens that bring ``matcher`` to a state where the output may end (an alias of
    :meth:`GrammarMatcher.shortest_completion`)."""
    return matcher.shortest_completion()


# ------------------------------------------------------------------------------------------------
# Prompt, model and grammar plumbing


def encode_prompt(tokenizer: Any, prompt: Prompt, chat: bool | None) -> list[int]:
    """The prompt's token ids: a string or chat messages, through the chat template where ``chat``
    says so (None: where the tokenizer has one); never empty (BOS where the prompt is)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, str):
        use_chat = has_template if chat is None else chat
        messages: list[Mapping[str, Any]] = [{"role": "user", "content": prompt}]
    else:
        use_chat = True if chat is None else chat
        messages = list(prompt)
        if not use_chat:
            raise InvalidInputError("a list of chat messages needs chat=True (or None)")
    if use_chat:
        if not has_template:
            raise InvalidInputError(
                "chat=True but the tokenizer has no chat template; pass chat=False and a plain prompt"
            )
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise InvalidInputError("the prompt is empty and the tokenizer has no BOS token to start from")
        ids = [int(bos)]
    return ids


def resolve_model(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from what a caller passed: None for the default model, a local path, or a
    loaded model with its tokenizer (both required then)."""
    if model is None:
        if tokenizer is not None:
            raise InvalidInputError("a tokenizer was given without its model; pass model= too")
        return default_model()
    if isinstance(model, (str, os.PathLike)):
        loaded, loaded_tok = load_model(model)
        return loaded, tokenizer if tokenizer is not None else loaded_tok
    if tokenizer is None:
        raise InvalidInputError("pass the model's tokenizer too (tokenizer=...)")
    return model, tokenizer


def compile_constraint(
    info: TokenizerInfo,
    *,
    regex: str | None = None,
    grammar: Grammar | CompiledGrammar | None = None,
    schema: Any = None,
    schema_options: Mapping[str, Any] | None = None,
    required: bool = False,
) -> CompiledGrammar | None:
    """The compiled constraint of whichever of ``regex=``, ``grammar=``, ``schema=`` was given (None where
    none was and ``required`` is False), for ``info``'s tokenizer; shared by :func:`generate`,
    :func:`constrain.smc` and :class:`constrain.ASAp`.

    ``regex=`` reads ``\\d``, ``\\w``, ``\\s`` as ASCII (see :meth:`Grammar.from_regex`); for Unicode
    classes write ``(?u)`` in the pattern or pass ``grammar=Grammar.from_regex(pattern, re.UNICODE)``.

    Raises:
        InvalidInputError: more than one was given, or none where ``required``; or ``schema_options``
            holds a name that is not an option of :meth:`Grammar.from_json_schema`, or any name at
            all without ``schema=`` (a misspelt keyword argument would otherwise be swallowed).
    """
    given = sum(x is not None for x in (regex, grammar, schema))
    if required and given != 1:
        raise InvalidInputError("pass exactly one of regex=, grammar=, schema=")
    if given > 1:
        raise InvalidInputError("pass at most one of regex=, grammar=, schema=")
    options = dict(schema_options or {})
    schema_option_names = [
        p.name
        for p in inspect.signature(Grammar.from_json_schema).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    if options and schema is None:
        check_options("a call without schema= (extra keyword arguments are JSON Schema options)", options, ())
    check_options("the JSON Schema options", options, schema_option_names)
    if regex is not None:
        return compile(Grammar.from_regex(regex), info)
    if grammar is not None:
        return ensure_compiled(grammar, info)
    if schema is not None:
        return compile(Grammar.from_json_schema(schema, **(schema_options or {})), info)
    return None


# ------------------------------------------------------------------------------------------------
# The loop


def run(
    model: Any,
    info: TokenizerInfo,
    prompt_ids: Sequence[int],
    matcher: GrammarMatcher | None,
    *,
    max_new_tokens: int = 256,
    sampler: Sampler | None = None,
    drafter: Drafter | None = None,
    seed: int | None = None,
    on_budget: OnBudget = "raise",
    method: Literal["masked", "awrs"] = "masked",
    max_checks: int | None = None,
    overlap: bool = True,
) -> GenerationResult:
    """The decoding loop on already-encoded prompt ids (what :func:`generate` calls).

    ``matcher`` (``None``: unconstrained) is advanced in place. ``drafter=None`` decodes one token per
    forward pass. ``method="awrs"`` draws the tokens the model chooses by AWRS (``max_checks``: the
    rejections before a step falls back to the mask) with the distribution ``sampler`` describes, which
    must then be a :class:`GreedySampler` or a :class:`TemperatureSampler`. See the module docstring for
    the algorithm and :class:`GenerationResult` for the result. ``overlap``: on steps with no draft,
    fill the next mask on a worker thread while the forward pass runs (same tokens either way).

    Raises:
        BudgetExhaustedError: ``on_budget="raise"`` and the budget ran out before the output could end.
    """
    if method not in ("masked", "awrs"):
        raise InvalidInputError(f"run() takes method 'masked' or 'awrs', got {method!r}")
    if max_new_tokens < 0:
        raise InvalidInputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if on_budget not in ("raise", "complete"):
        raise InvalidInputError(f"on_budget must be 'raise' or 'complete', got {on_budget!r}")
    if not prompt_ids:
        raise InvalidInputError("the prompt has no tokens")
    context_size = _context_size(model)
    if context_size is not None and len(prompt_ids) >= context_size:
        raise InputTooLargeError(
            f"the prompt has {len(prompt_ids)} tokens but the model's context holds {context_size} "
            "(config.max_position_embeddings), with room for no output token: shorten the prompt"
        )
    sampler = sampler if sampler is not None else GreedySampler()
    use_awrs = method == "awrs" and matcher is not None
    if use_awrs and not isinstance(sampler, (GreedySampler, TemperatureSampler)):
        raise InvalidInputError(
            f"method='awrs' samples by itself from a temperature and top_p; it cannot use {sampler!r}"
        )
    t0 = time.perf_counter()
    stats = GenerationStats(prompt_tokens=len(prompt_ids))
    generator: torch.Generator | None = None
    runner = ModelRunner(model)
    if seed is not None:
        generator = torch.Generator(device=runner.device).manual_seed(seed)
    awrs_rng = np.random.default_rng(seed) if use_awrs else None
    if drafter is not None and not runner.can_crop:
        drafter = None  # a rejected draft could not be rolled back out of this model's cache
    bitmask = allocate_token_bitmask(1, info.vocab_size)
    eos = frozenset(info.eos_ids)
    context = [int(t) for t in prompt_ids]
    out: list[int] = []
    pending = list(context)
    finish = ""

    ahead: list[Future[Any]] = []  # the current state's mask, filled while the forward pass ran

    def masked(row: torch.Tensor) -> torch.Tensor:
        if matcher is not None:
            if ahead:
                ahead.pop()  # filled already (waited for after the forward pass)
            else:
                matcher.fill_next_token_bitmask(bitmask, 0)
            if not bool(bitmask[0].any()):  # nothing allowed: a typed error, not a NaN draw
                text = info.decode_bytes(out).decode("utf-8", errors="replace")
                raise DeadEndError(text, list(out))
            apply_token_bitmask_inplace(row, bitmask[0].to(row.device, non_blocking=True))
        elif row.shape[0] > info.vocab_size:  # ids past the vocabulary are padding, never sampled
            row[info.vocab_size :] = float("-inf")
        return row

    def pick(row: torch.Tensor) -> int:
        """One token from the unmasked ``row``: AWRS where ``use_awrs``, else the masked sampler."""
        if not use_awrs:
            return sampler.sample(masked(row), generator)
        assert matcher is not None and awrs_rng is not None
        try:
            if isinstance(sampler, TemperatureSampler):
                lp = _awrs_logprobs(sampler, row, info.vocab_size)
                # the loop needs the token only: no extra check for the weight
                draw = awrs_sample(lp, matcher, awrs_rng, max_checks=max_checks, estimate_weight=False)
            else:
                draw = awrs_argmax(_awrs_logits(row, info.vocab_size), matcher, max_checks=max_checks)
        except ConstrainError:
            # top-p left no allowed token any mass: the masked sampler's nucleus of the allowed tokens
            return sampler.sample(masked(row), generator)
        stats.awrs_steps += 1
        stats.constraint_checks += draw.checks
        stats.mask_fallbacks += draw.used_mask
        return draw.token

    def take(token: int) -> None:
        if matcher is not None and not matcher.accept_token(token):
            raise ConstrainError(f"token {token} passed the mask but the matcher rejected it (engine bug)")
        out.append(token)
        context.append(token)
        if len(out) == 1:
            stats.time_to_first_token_s = time.perf_counter() - t0

    while True:
        if matcher is not None and matcher.must_end():
            finish = "eos" if matcher.is_terminated() else "grammar"
            break
        if out and matcher is None and out[-1] in eos:
            finish = "eos"
            break
        remaining = max_new_tokens - len(out)
        if remaining <= 0:
            finish = "length"
            break
        draft = drafter.propose(context, matcher, remaining - 1) if drafter is not None else Draft()
        tokens = draft.tokens[: max(0, remaining - 1)]
        stats.draft_tokens += len(tokens)
        for i in range(len(tokens)):
            name = draft.source(i)
            stats.drafted_by[name] = stats.drafted_by.get(name, 0) + 1
        base = runner.length
        if overlap and not tokens and matcher is not None and not use_awrs:
            # No draft: the row sampled next is the current state's. Fill its mask on a worker thread
            # while the model runs (the walks release the GIL, and so does torch), off the critical path.
            ahead.append(mask_pool().submit(matcher.fill_next_token_bitmask, bitmask, 0))
        try:
            logits = runner.forward(pending + list(tokens), keep=len(tokens) + 1)
        finally:
            for future in ahead:  # wait here: nothing else may touch the matcher while it fills
                future.result()
        kept = 0
        extra: int | None = None
        for i, d in enumerate(tokens):
            if not draft.verify and matcher is not None and matcher.accept_token(d):
                matcher.rollback(1)  # take() re-accepts it
                take(d)
            elif use_awrs and draft.prob_row(i) is None:
                # A deterministic draft is verified losslessly by drawing the step's token and keeping
                # the draft iff it is the same: P(keep) = p(d), and a replacement is distributed as p
                # given not d, the speculative-sampling rule's joint distribution (greedy: the argmax).
                token = pick(logits[i])
                if token != d:
                    extra = token
                    break
                take(d)
            else:
                # a stochastic draft: the speculative rule needs the whole masked distribution
                row = masked(logits[i])
                token, ok = sampler.accept(row, d, draft.prob_row(i), generator)
                if not ok:
                    extra = token
                    break
                take(d)
            kept += 1
            # a state the grammar lets nothing follow ends the output here, as in the one-token loop
            # (a drafted EOS after it would be one token more than that loop emits)
            if d in eos or (matcher is not None and matcher.must_end()):
                break
        stats.accepted_draft_tokens += kept
        for i in range(kept):
            name = draft.source(i)
            stats.accepted_by[name] = stats.accepted_by.get(name, 0) + 1
            stats.forced_tokens += name == "forced"
        if drafter is not None:
            observe(drafter, draft, kept)
        # Stop sampling where the round ended the output: EOS, or a state the grammar lets nothing follow.
        done = (bool(out) and out[-1] in eos) or (matcher is not None and matcher.must_end())
        if extra is None and not done:
            extra = pick(logits[kept])
        ahead.clear()  # (only a sampler that never looked at the row leaves it unused)
        if extra is not None:
            take(extra)
        # Keep the pending tokens and the kept draft in the cache; the newest token is fed next round.
        runner.crop(base + len(pending) + kept)
        pending = [out[-1]]

    stats.forward_passes = runner.forward_passes
    stats.output_tokens = len(out)
    if finish == "length" and matcher is not None and not matcher.can_end():
        if on_budget == "raise":
            stats.total_time_s = time.perf_counter() - t0
            partial = info.decode_bytes(out).decode("utf-8", errors="replace")
            raise BudgetExhaustedError(partial, out, stats, max_new_tokens)
        completion = matcher.shortest_completion()
        for token in completion:
            matcher.accept_token(token)
        out.extend(completion)
        stats.completion_tokens = len(completion)
        finish = "completed"
    stats.total_time_s = time.perf_counter() - t0
    if not out:
        stats.time_to_first_token_s = stats.total_time_s
    body = [t for t in out if t not in eos]
    raw = info.decode_bytes(body)
    # A constrained output is whole UTF-8 (the languages are); an unconstrained one may stop mid-character.
    text = raw.decode("utf-8", errors="strict" if matcher is not None else "replace")
    return GenerationResult(text=text, token_ids=out, finish_reason=finish, stats=stats)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def mask_pool() -> ThreadPoolExecutor:
    """The worker threads that fill masks while forward passes run, and the rows of a batch side by
    side (shared by every loop and by the HF processors)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="constrain-mask")
        return _pool


def _context_size(model: Any) -> int | None:
    """The model's context length in tokens (``max_position_embeddings`` or a known alias), or None."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _awrs_logits(row: torch.Tensor, vocab_size: int) -> np.ndarray:
    """The logits of the real ids (padding ids past the vocabulary dropped), for greedy AWRS."""
    return row.detach()[:vocab_size].to("cpu", torch.float32).numpy()


def _awrs_logprobs(sampler: TemperatureSampler, row: torch.Tensor, vocab_size: int) -> np.ndarray:
    """The unconstrained sampling distribution of ``sampler`` over the real ids as float64
    log-probabilities (the temperature, then the top-p nucleus as :meth:`TemperatureSampler.probs` cuts
    it). The log-softmax runs in float32 (a float64 one costs more than the rest of an AWRS step); in
    the log domain a token the model finds very unlikely still keeps its (tiny) mass."""
    logits = row.detach()[:vocab_size].to("cpu", torch.float32)
    if sampler.top_p is not None and sampler.top_p < 1:
        logits = logits.masked_fill(sampler.probs(logits) == 0, float("-inf"))
    return torch.log_softmax(logits / sampler.temperature, dim=-1).numpy().astype(np.float64)


@overload
def generate(
    prompt: Prompt,
    *,
    regex: str | None = ...,
    grammar: Grammar | CompiledGrammar | None = ...,
    schema: Any = ...,
    model: Any = ...,
    tokenizer: Any = ...,
    max_new_tokens: int = ...,
    temperature: float = ...,
    top_p: float | None = ...,
    seed: int | None = ...,
    chat: bool | None = ...,
    on_budget: OnBudget = ...,
    sampler: Sampler | AWRS | Masked | None = ...,
    drafter: Drafter | None = ...,
    speculate: bool = ...,
    method: Method | None = ...,
    particles: int = ...,
    return_stats: Literal[False] = ...,
    **schema_options: Any,
) -> str: ...


@overload
def generate(
    prompt: Prompt,
    *,
    regex: str | None = ...,
    grammar: Grammar | CompiledGrammar | None = ...,
    schema: Any = ...,
    model: Any = ...,
    tokenizer: Any = ...,
    max_new_tokens: int = ...,
    temperature: float = ...,
    top_p: float | None = ...,
    seed: int | None = ...,
    chat: bool | None = ...,
    on_budget: OnBudget = ...,
    sampler: Sampler | AWRS | Masked | None = ...,
    drafter: Drafter | None = ...,
    speculate: bool = ...,
    method: Method | None = ...,
    particles: int = ...,
    return_stats: Literal[True],
    **schema_options: Any,
) -> GenerationResult: ...


def generate(
    prompt: Prompt,
    *,
    regex: str | None = None,
    grammar: Grammar | CompiledGrammar | None = None,
    schema: Any = None,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    on_budget: OnBudget = "raise",
    sampler: Sampler | AWRS | Masked | None = None,
    drafter: Drafter | None = None,
    speculate: bool = True,
    method: Method | None = None,
    particles: int = 8,
    return_stats: bool = False,
    **schema_options: Any,
) -> str | GenerationResult:
    """Generate text that stays inside a language (or free text, with no constraint given).

    Args:
        prompt: the user's text, or a list of chat messages (``{"role": ..., "content": ...}``).
        regex / grammar / schema: at most one constraint: a Python ``re`` pattern (fullmatch
            semantics), a :class:`Grammar` or :class:`CompiledGrammar`, or a JSON Schema (dict, JSON
            text, path or pydantic model class; ``schema_options`` go to ``Grammar.from_json_schema``).
        model, tokenizer: a transformers causal LM and its tokenizer, or a local model path as
            ``model``; both ``None``: the default model (:func:`constrain.models.default_model`).
        max_new_tokens: the budget of output tokens (EOS counts).
        temperature: 0 (the default) decodes greedily; > 0 samples, with ``top_p`` nucleus filtering.
        seed: seeds the sampler's generator (reproducible sampling).
        chat: apply the tokenizer's chat template (with ``add_generation_prompt``); ``None``: when the
            tokenizer has one.
        on_budget: what happens when ``max_new_tokens`` runs out before the output may end:
            ``"raise"`` (:class:`BudgetExhaustedError`) or ``"complete"`` (append the shortest valid
            completion; the result may then exceed the budget).
        sampler: the decoding method as an object: :class:`constrain.sampling.AWRS` (``max_checks=``)
            or :class:`constrain.sampling.Masked`, both sampling what ``temperature``/``top_p``
            describe; or a token :class:`Sampler` for the masked loop, used instead of the one
            ``temperature``/``top_p`` describe. Not together with ``method``.
        drafter: a :class:`~constrain.drafters.Drafter`; default
            :func:`~constrain.drafters.default_drafter` (forced tokens, then prompt lookup).
        speculate: ``False`` decodes one token per forward pass (no drafter), the reference loop.
        method: the short spelling of ``sampler`` (not together with it): ``"masked"`` (the default:
            each step samples from the masked distribution);
            ``"awrs"``: the same distribution by adaptive weighted rejection sampling, a few matcher
            checks per token instead of a full mask (needs the ``temperature``/``top_p`` samplers, not
            a custom ``sampler``); ``"smc"``: sequential Monte Carlo over AWRS proposals with
            ``particles`` particles, one output drawn from the weighted set (temperature 0 means 1
            there; ``drafter``, ``sampler``, ``speculate`` and ``on_budget`` do not apply, and the
            stats hold the output tokens and the time only).
        particles: the number of SMC particles (``method="smc"`` only).
        return_stats: return a :class:`GenerationResult` (text, ids, finish reason, stats) instead of
            the text.

    Raises:
        BudgetExhaustedError: see ``on_budget``.
        ArgumentError: both ``method`` and ``sampler``, an unknown ``method``, or a ``sampler`` that is
            none of the above.
        InvalidInputError: conflicting or malformed arguments.
    """
    chosen, token_sampler, max_checks = resolve_method(method, sampler)
    model, tokenizer = resolve_model(model, tokenizer)
    info = tokenizer_info_for(tokenizer)
    compiled = compile_constraint(
        info, regex=regex, grammar=grammar, schema=schema, schema_options=schema_options
    )
    if chosen == "smc":
        return _generate_smc(
            prompt,
            compiled,
            model,
            tokenizer,
            particles,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            chat,
            return_stats,
        )
    matcher = GrammarMatcher(compiled) if compiled is not None else None
    if token_sampler is None:
        token_sampler = make_sampler(temperature, top_p)
    if not speculate:
        drafter = None
    elif drafter is None:
        drafter = default_drafter()  # forced tokens, then prompt lookup: the best measured
    prompt_ids = encode_prompt(tokenizer, prompt, chat)
    result = run(
        model,
        info,
        prompt_ids,
        matcher,
        max_new_tokens=max_new_tokens,
        sampler=token_sampler,
        drafter=drafter,
        seed=seed,
        on_budget=on_budget,
        method="awrs" if chosen == "awrs" else "masked",
        max_checks=max_checks,
    )
    return result if return_stats else result.text


def _generate_smc(
    prompt: Prompt,
    compiled: CompiledGrammar | None,
    model: Any,
    tokenizer: Any,
    particles: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float | None,
    seed: int | None,
    chat: bool | None,
    return_stats: bool,
) -> str | GenerationResult:
    """``generate(method="smc")``: run SMC and draw one particle from the weighted set. SMC targets the
    model's own distribution under the constraint, so temperature 0 (greedy, the default) means 1 here."""
    if compiled is None:
        raise InvalidInputError("method='smc' needs a constraint (regex=, grammar= or schema=)")
    from .sampling.smc import smc  # imported here: smc imports this module

    t0 = time.perf_counter()
    result = smc(
        prompt,
        grammar=compiled,
        particles=particles,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p,
        seed=seed,
        chat=chat,
    )
    particle = result.sample(np.random.default_rng(seed))
    if not return_stats:
        return str(particle.text)
    ids = [int(t) for t in particle.token_ids]
    stats = GenerationStats(
        output_tokens=len(ids),
        forward_passes=result.lm_calls,
        total_time_s=time.perf_counter() - t0,
    )
    return GenerationResult(text=str(particle.text), token_ids=ids, finish_reason="smc", stats=stats)


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: an object that repeats a key is refused (a dict would keep
    the last value only, and validate something else than the text)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"an object repeats the key {key!r}")
        seen.add(key)
    return dict(pairs)


def validate_json(text: str, schema: Any) -> Any:
    """Parse ``text`` and validate it against ``schema`` with ``jsonschema`` (format checking on).

    Raises:
        OutputValidationError: the text is not JSON, an object in it repeats a key, or it does not
            validate.
    """
    import jsonschema

    try:
        value = json.loads(text, object_pairs_hook=_distinct_keys)
    except ValueError as exc:
        raise OutputValidationError(f"the output is not valid JSON: {exc}", text, exc) from None
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(root)"
        raise OutputValidationError(
            f"the output does not validate against the schema at {where}: {error.message}", text, error
        )
    return value


def generate_json(
    schema: Any,
    prompt: Prompt,
    *,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    on_budget: OnBudget = "raise",
    method: Method | None = None,
    particles: int = 8,
    sampler: Sampler | AWRS | Masked | None = None,
    **schema_options: Any,
) -> Any:
    """Generate a JSON value that validates against ``schema``, parsed (or a pydantic instance).

    ``schema`` is a dict (or ``True``/``False``), JSON text, a path to a ``.json`` file, or a pydantic
    model class (then the result is an instance of it). The output is validated with ``jsonschema``
    (format checking on) before it is returned: an invalid value is never returned. Other arguments
    as in :func:`generate` (``method="awrs"`` or ``"smc"`` with ``particles``, or
    ``sampler=constrain.sampling.AWRS(max_checks=...)``, too);
    ``schema_options`` go to ``Grammar.from_json_schema``.

    Raises:
        BudgetExhaustedError: the budget ran out (``on_budget="raise"``); ``.partial_text`` has the text.
        OutputValidationError: the output violates a keyword the grammar could not enforce.
    """
    from .json_schema.loading import is_pydantic_model, load_schema

    pydantic_cls = schema if is_pydantic_model(schema) else None
    schema_obj = load_schema(schema)
    text = generate(
        prompt,
        schema=schema_obj,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        chat=chat,
        on_budget=on_budget,
        method=method,
        particles=particles,
        sampler=sampler,
        **schema_options,
    )
    value = validate_json(text, schema_obj)
    if pydantic_cls is not None:
        try:
            return pydantic_cls.model_validate(value)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise OutputValidationError(
                f"the output does not validate as {pydantic_cls.__name__}: {exc}", text, exc
            ) from None
    return value
