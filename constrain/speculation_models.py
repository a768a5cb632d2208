"""Model drafters: a smaller causal LM, or a subset of the target's own layers, drafting under the grammar.

:class:`DraftModelDrafter` drafts with any transformers causal LM that shares the target's tokenizer. It
keeps its own KV cache (a :class:`constrain.generation.ModelRunner`) and, each round, crops it back to the
longest prefix it shares with the context (the part of its last draft the target kept), feeds the rest,
then drafts token by token under the grammar's mask (a fork of the matcher), so every drafted token is
allowed. With ``temperature=0`` it drafts the masked argmax (a deterministic draft: lossless under any
target sampler); with ``temperature > 0`` it samples from its masked, temperature / top-p distribution
and hands that distribution ``q`` to the loop, which applies the speculative-sampling rule with ``q``
and the target's masked ``p``.

:func:`layer_subset_model` builds a draft model from a subset of the target's own decoder layers, sharing
their weights (no copy): the first ``k`` layers (early exit, Kangaroo style; :func:`truncated_model`) or
any subset (self-speculative layer skip, SWIFT / LayerSkip style). :func:`calibrate_layer_skip` chooses
the subset by a short calibration run: on a sequence the target generated, it measures how often each
candidate subset's masked argmax agrees with the target's, and picks the one with the best expected
output tokens per unit of model time (a draft token costs ``len(layers) / num_layers`` of a target pass).

The draft keeps its own KV cache: for an arbitrary subset the kept layers see a different residual
stream than in the full model, so their keys and values differ from the target's and cannot be shared;
for the first ``k`` layers they are the same, but sharing them would mean cropping the target's cache
per layer around every draft, for a saving of ``k / num_layers`` of one prefill.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .drafters import MODEL, AcceptanceEstimator, Draft, _observe_own
from .exceptions import InvalidInputError

if TYPE_CHECKING:
    from .matcher import GrammarMatcher

__all__ = [
    "DraftModelDrafter",
    "LayerSkipCalibration",
    "LayerSkipDrafter",
    "calibrate_layer_skip",
    "layer_subset_model",
    "truncated_model",
]


def _decoder_layers(model: Any) -> tuple[Any, Any]:
    """``(inner model, its layers ModuleList)`` of a Llama-family causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None:
        raise InvalidInputError(
            f"{type(model).__name__} has no model.layers: layer subsets need a Llama-family causal LM"
        )
    return inner, layers


def _shallow(module: Any) -> Any:
    """A copy of ``module`` that shares its parameters but has its own child-module table."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    return twin


def layer_subset_model(model: Any, layers: Iterable[int]) -> Any:
    """A view of ``model`` that runs only the decoder ``layers`` (in that order), sharing every weight.

    The embeddings, final norm and LM head are the target's; the view has its own config
    (``num_hidden_layers = len(layers)``) so that a KV cache made for it has one slot per kept layer.

    Raises:
        InvalidInputError: not a Llama-family model, or a layer index out of range / repeated.
    """
    import torch.nn as nn

    keep = [int(i) for i in layers]
    inner, all_layers = _decoder_layers(model)
    n = len(all_layers)
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= i < n for i in keep):
        raise InvalidInputError(f"layers must be distinct indices in [0, {n}), got {keep}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == n:
        config.layer_types = [layer_types[i] for i in keep]
    new_layers = []
    for j, i in enumerate(keep):
        layer = _shallow(all_layers[i])
        attn = _shallow(layer.self_attn)
        attn.layer_idx = j  # the view's cache slot
        layer._modules["self_attn"] = attn
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = j
        new_layers.append(layer)
    view_inner = _shallow(inner)
    view_inner.config = config
    view_inner._modules["layers"] = nn.ModuleList(new_layers)
    view = _shallow(model)
    view.config = config
    view._modules["model"] = view_inner
    return view


def truncated_model(model: Any, num_layers: int) -> Any:
    """The first ``num_layers`` decoder layers of ``model`` (early exit), sharing its weights."""
    return layer_subset_model(model, range(num_layers))


#: A gated-off model drafter still drafts every this many rounds, to notice when it would pay again.
PROBE_EVERY = 8


def _bucket(p: float) -> str:
    # the draft's top probability, in five bins: SpecDec++'s feature for "will this token be accepted"
    return f"{MODEL}:{min(4, int(p * 5))}"


class DraftModelDrafter:
    """Drafts with a (smaller) causal LM sharing the target's tokenizer, under the grammar's mask.

    Args:
        model: the draft model (e.g. :func:`truncated_model` of the target, or a smaller checkpoint).
        max_tokens: cap on one draft's length.
        min_accept_prob: adaptive stop: draft while the estimated probability that every token so far
            is accepted stays at or above this (0: always ``max_tokens``).
        temperature, top_p: ``0``: draft the masked argmax (deterministic). ``> 0``: sample from the
            masked distribution (set them to the target's: the closer ``q`` is to ``p``, the more is
            accepted) and report it, for the speculative-sampling rule.
        seed: seeds the drafter's own generator (sampling only).
        estimator: the :class:`~constrain.drafters.AcceptanceEstimator`; keys are ``"model:<bin>"`` with
            the draft's top probability in five bins.
    """

    adaptive = True

    def __init__(
        self,
        model: Any,
        *,
        max_tokens: int = 8,
        min_accept_prob: float = 0.2,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        estimator: AcceptanceEstimator | None = None,
    ) -> None:
        from .generation import ModelRunner, TemperatureSampler

        if temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {temperature}")
        self.model = model
        self.max_tokens = max_tokens
        self.min_accept_prob = min_accept_prob
        self.sampler = TemperatureSampler(temperature, top_p) if temperature > 0 else None
        self.estimator = estimator if estimator is not None else AcceptanceEstimator(prior=0.6)
        self._runner = ModelRunner(model)
        self._ids: list[int] = []  # the tokens whose keys and values the draft cache holds
        self._generator = torch.Generator(device=self._runner.device)
        if seed is not None:
            self._generator.manual_seed(seed)
        self._bitmask: Any = None
        self.forward_passes = 0
        self._rounds = 0

    def __repr__(self) -> str:
        layers = getattr(self.model.config, "num_hidden_layers", "?")
        return (
            f"DraftModelDrafter({type(self.model).__name__}, {layers} layers, max_tokens={self.max_tokens})"
        )

    def _sync(self, context: Sequence[int]) -> torch.Tensor:
        """Bring the draft cache to ``context`` and return the logits after it (one forward pass)."""
        common = 0
        limit = min(len(self._ids), len(context) - 1)  # at least one token is fed, for its logits
        ids = self._ids
        while common < limit and ids[common] == context[common]:
            common += 1
        self._runner.crop(common)
        del ids[common:]
        feed = [int(t) for t in context[common:]]
        ids.extend(feed)
        self.forward_passes += 1
        return self._runner.forward(feed)[0]

    def _mask(self, row: torch.Tensor, walker: GrammarMatcher | None, vocab_size: int) -> torch.Tensor:
        from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace

        if walker is None:
            row[vocab_size:] = float("-inf")
            return row
        if self._bitmask is None or self._bitmask.shape[1] * 32 < vocab_size:
            self._bitmask = allocate_token_bitmask(1, vocab_size)
        walker.fill_next_token_bitmask(self._bitmask, 0)
        apply_token_bitmask_inplace(row, self._bitmask[0])
        return row

    def propose(
        self, context: Sequence[int], matcher: GrammarMatcher | None, max_tokens: int, prior: float = 1.0
    ) -> Draft:
        """Up to ``max_tokens`` tokens drafted by the model under the grammar (see the class docstring)."""
        limit = min(max_tokens, self.max_tokens)
        if limit <= 0 or not context or (matcher is not None and matcher.must_end()):
            return Draft()
        self._rounds += 1
        # Gate: where this drafter's tokens are rarely accepted, do not even run it (its forward passes
        # cost more than they save); probe every PROBE_EVERY rounds in case that changes.
        overall = self.estimator.estimate(MODEL)
        if prior * overall < self.min_accept_prob and self._rounds % PROBE_EVERY:
            return Draft()
        walker = matcher.fork() if matcher is not None else None
        vocab_size = (
            walker.compiled.tokenizer_info.vocab_size
            if walker is not None
            else int(self.model.config.vocab_size)
        )
        row = self._sync(context)
        tokens: list[int] = []
        keys: list[str] = []
        rows: list[torch.Tensor | None] = []
        cumulative = prior
        while True:
            row = self._mask(row, walker, vocab_size)
            if self.sampler is None:
                probs = torch.softmax(row, dim=-1)
                token = int(torch.argmax(row))
                q: torch.Tensor | None = None
            else:
                probs = self.sampler.probs(row)
                token = int(torch.multinomial(probs, 1, generator=self._generator))
                q = probs
            if not math.isfinite(float(row[token])):
                break  # nothing allowed (cannot happen below a live grammar state)
            key = _bucket(float(probs[token]))
            estimate = self.estimator.estimate(key)
            if self.min_accept_prob > 0 and cumulative * estimate < self.min_accept_prob:
                break
            if walker is not None and not walker.accept_token(token):
                break
            tokens.append(token)
            keys.append(key)
            rows.append(q)
            cumulative *= estimate
            if len(tokens) >= limit or (walker is not None and walker.must_end()):
                break
            self._ids.append(token)
            self.forward_passes += 1
            row = self._runner.forward([token])[0]
        if not tokens:
            return Draft()
        probs_out = tuple(rows) if self.sampler is not None else None
        return Draft(tuple(tokens), probs=probs_out, sources=(MODEL,) * len(tokens), keys=tuple(keys))

    def observe(self, draft: Draft, accepted: int) -> None:
        """Update the acceptance estimates with a verified draft (its model tokens only)."""
        _observe_own(self.estimator, draft, accepted, MODEL)
        own = [i for i in range(min(len(draft.tokens), accepted + 1)) if draft.source(i) == MODEL]
        if own:  # the drafter's overall rate (first token of its part), for the gate
            self.estimator.update([MODEL], 1 if own[0] < accepted else 0)


# ------------------------------------------------------------------------------------------------
# Layer skip


@dataclass(frozen=True)
class LayerSkipCalibration:
    """The outcome of :func:`calibrate_layer_skip`.

    Attributes:
        layers: the chosen subset (the draft runs these, in order).
        agreement: per candidate (a tuple of layers): the fraction of positions where its masked
            argmax equals the target's.
        speedup: per candidate: the modelled output tokens per unit of target time (see
            :func:`expected_speedup`); the chosen subset has the highest.
    """

    layers: tuple[int, ...]
    agreement: dict[tuple[int, ...], float]
    speedup: dict[tuple[int, ...], float]


def expected_speedup(agreement: float, cost: float, max_tokens: int = 8, verify_cost: float = 0.06) -> float:
    """Output tokens per unit of target time for a greedy draft of ``k <= max_tokens`` tokens whose each
    token is accepted with probability ``agreement`` (independently), a draft token costing ``cost`` of a
    target pass and each verified token ``verify_cost`` more of one (measured on SmolLM2-135M on CPU:
    a pass over 8 tokens costs about 1.5x one over 1); the best ``k``."""
    best = 1.0
    a = min(max(agreement, 0.0), 0.999999)
    for k in range(1, max_tokens + 1):
        tokens = (1 - a ** (k + 1)) / (1 - a)  # accepted prefix + the token the target adds
        time = 1 + k * verify_cost + k * cost
        best = max(best, tokens / time)
    return best


def default_layer_candidates(num_layers: int) -> list[tuple[int, ...]]:
    """Subsets tried by :func:`calibrate_layer_skip`: early exits (the first ``k`` layers), the first
    and last layers with a middle block skipped (SWIFT found middle layers the most redundant), and every
    other layer, at a third to two thirds of the depth."""
    n = num_layers
    out: list[tuple[int, ...]] = []
    for frac in (1 / 4, 1 / 3, 1 / 2, 2 / 3):
        k = max(1, round(n * frac))
        out.append(tuple(range(k)))  # early exit
        head = max(1, k // 2)
        out.append(tuple(range(head)) + tuple(range(n - (k - head), n)))  # skip a middle block
    out.append(tuple(range(0, n, 2)))
    out.append(tuple(range(0, n, 3)) if n >= 6 else tuple(range(n)))
    return list(dict.fromkeys(c for c in out if 0 < len(c) < n))


def calibrate_layer_skip(
    model: Any,
    sequences: Sequence[tuple[Sequence[int], Sequence[int], GrammarMatcher | None]],
    candidates: Iterable[Sequence[int]] | None = None,
    *,
    max_tokens: int = 8,
) -> LayerSkipCalibration:
    """Choose the layers of a self-speculative draft by a short calibration run.

    ``sequences`` are ``(prompt ids, output ids, matcher at the start of the output or None)``, outputs
    the target produced (e.g. greedily). For each candidate subset, one no-cache forward pass over each
    sequence gives its argmax at every output position under the grammar's mask; the agreement with the
    target's masked argmax there, and the subset's cost ``len(subset) / num_layers``, give a modelled
    speedup (:func:`expected_speedup`); the best candidate wins.
    """
    from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace

    _, all_layers = _decoder_layers(model)
    n = len(all_layers)
    cands = [tuple(int(i) for i in c) for c in (candidates or default_layer_candidates(n))]
    if not cands:
        raise InvalidInputError("no candidate layer subsets to calibrate")
    prepared: list[tuple[torch.Tensor, int, torch.Tensor | None]] = []
    for prompt, output, matcher in sequences:
        ids = torch.tensor([[*prompt, *output]], dtype=torch.long)
        masks = None
        if matcher is not None and output:
            walker = matcher.fork()
            vocab = walker.compiled.tokenizer_info.vocab_size
            masks = allocate_token_bitmask(len(output), vocab)
            for i, t in enumerate(output):
                walker.fill_next_token_bitmask(masks, i)
                if not walker.accept_token(int(t)):
                    raise InvalidInputError("a calibration output is not in its grammar")
        prepared.append((ids, len(output), masks))

    def argmaxes(m: Any) -> list[torch.Tensor]:
        found = []
        for ids, count, masks in prepared:
            with torch.inference_mode():
                logits = m(input_ids=ids, use_cache=False).logits[0]
            # position j predicts token j + 1: the output tokens are predicted at the last `count` - 1..
            rows = logits[ids.shape[1] - count - 1 : ids.shape[1] - 1].float().clone()
            if masks is not None:
                apply_token_bitmask_inplace(rows, masks)
            found.append(torch.argmax(rows, dim=-1))
        return found

    reference = argmaxes(model)
    agreement: dict[tuple[int, ...], float] = {}
    speedup: dict[tuple[int, ...], float] = {}
    for cand in cands:
        got = argmaxes(layer_subset_model(model, cand))
        same = sum(int((g == r).sum()) for g, r in zip(got, reference))
        total = sum(int(r.numel()) for r in reference)
        agreement[cand] = same / total if total else 0.0
        speedup[cand] = expected_speedup(agreement[cand], len(cand) / n, max_tokens)
    best = max(cands, key=lambda c: speedup[c])
    return LayerSkipCalibration(best, agreement, speedup)


class LayerSkipDrafter(DraftModelDrafter):
    """Self-speculative drafting with a subset of the target's own layers (weights shared, own cache).

    Args:
        model: the target model.
        layers: the layers the draft runs (see :func:`calibrate_layer_skip` to choose them).
        **kwargs: as for :class:`DraftModelDrafter`.
    """

    def __init__(self, model: Any, layers: Iterable[int], **kwargs: Any) -> None:
        self.layers = tuple(int(i) for i in layers)
        super().__init__(layer_subset_model(model, self.layers), **kwargs)

    def __repr__(self) -> str:
        return f"LayerSkipDrafter(layers={list(self.layers)}, max_tokens={self.max_tokens})"
