"""ASAp (Park et al., 2024, "Grammar-Aligned Decoding"): repeated sampling that converges to the
model's distribution conditioned on the whole output being in the language.

Masked decoding renormalises the allowed tokens at each step, which over-weights prefixes from which
little grammatical mass follows. ASAp keeps a trie over the prefixes it has sampled; each node holds an
estimate of the prefix's expected future grammaticality, EFG(w) = P(the model completes w into a string
of the language). Every estimate starts at 1 (an upper bound). A step samples from
``q(t) ∝ p(t | w) * EFG(w t)`` over the allowed tokens (EOS counts with EFG 1 where the output may end);
after each sample the nodes of its path are re-estimated bottom-up from the model's own probabilities,
``EFG(w) = sum over allowed t of p(t | w) * EFG(w t)`` (1 for a child never visited, 0 for a token the
grammar removes). Estimates stay upper bounds and become exact once every continuation of a node has been
visited; where the trie covers the language, ``q`` is exactly ``P(. | language)``.

:class:`ASApCore` is the model-agnostic algorithm (any ``lm_logprobs(prefix)`` and a
:class:`~constrain.GrammarMatcher`). :class:`ASAp` and :func:`asap` run it with a transformers model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..exceptions import ConstrainError, InvalidInputError
from ..matcher import GrammarMatcher

__all__ = ["ASAp", "ASApCore", "asap"]

LogprobsFn = Callable[[Sequence[int]], np.ndarray]
"""``lm_logprobs(prefix) -> float64[width]``: the next token's log-probabilities after ``prefix``."""


class _Node:
    """One sampled prefix. ``p``: the probability of the edge into it; ``rest``: the allowed mass after
    it that no child covers yet (EOS included), NaN until first expanded; ``children`` is None on leaves
    (saves a dict per leaf)."""

    __slots__ = ("children", "efg", "p", "rest")

    def __init__(self, p: float) -> None:
        self.children: dict[int, _Node] | None = None
        self.efg = 1.0
        self.p = p
        self.rest = math.nan

    def refresh(self) -> None:
        """EFG from the node's own numbers: the uncovered allowed mass plus each child's share."""
        total = self.rest
        if self.children:
            for child in self.children.values():
                total += child.p * child.efg
        self.efg = total


class ASApCore:
    """The ASAp trie and sampler, independent of the model: :meth:`sample` takes the model as a function.

    The trie persists across :meth:`sample` calls, so sampling can continue where it stopped. It is tied
    to one language, one model and one prompt: reuse it only with the same ``lm_logprobs`` and a matcher
    for the same grammar at the same start state.

    Memory: one node per distinct sampled prefix, so at most ``tokens_sampled + 1`` nodes (EOS gets no
    node). A node is about :data:`NODE_BYTES` bytes of Python objects (a slotted object, three floats, its
    entry in the parent's children dict, and a dict of its own where it has children; about 320 measured
    on a random trie): 1,000 samples of 20 tokens hold at most 20,001 nodes, about 7 MB. No probability
    vector is stored.

    Args:
        eos_ids: the tokenizer's end-of-sequence ids (``compiled.tokenizer_info.eos_ids``).
        max_tokens: the longest output in tokens, EOS not counted (None: no limit). The target is then
            the model conditioned on the language *and* this length, which keeps it exact; a path that
            cannot end within the limit is a dead end: its EFG becomes 0 and the sample is redrawn.
    """

    #: Approximate bytes per trie node (CPython 3.12, 64-bit), for the memory bound above.
    NODE_BYTES = 350

    def __init__(self, eos_ids: Iterable[int], *, max_tokens: int | None = None) -> None:
        self._eos_set = frozenset(int(e) for e in eos_ids)
        self._eos = np.array(sorted(self._eos_set), dtype=np.int64)
        if not self._eos_set:
            raise InvalidInputError("eos_ids is empty: ASAp needs the end-of-sequence token ids")
        if max_tokens is not None and max_tokens < 0:
            raise InvalidInputError(f"max_tokens must be >= 0 or None, got {max_tokens}")
        self.max_tokens = max_tokens
        self.root = _Node(1.0)
        self.num_nodes = 1
        self.num_samples = 0
        self.tokens_sampled = 0
        self.dead_ends = 0

    # ---- queries -------------------------------------------------------------------------------
    def efg(self, prefix: Sequence[int]) -> float | None:
        """The current EFG estimate of ``prefix`` (an upper bound of the true one), or None where the
        prefix has no node (its estimate is then 1)."""
        node: _Node | None = self.root
        for tok in prefix:
            if node is None or node.children is None:
                return None
            node = node.children.get(int(tok))
        return None if node is None else node.efg

    def nodes(self) -> Iterator[tuple[tuple[int, ...], float]]:
        """Every node as ``(prefix, EFG estimate)``, depth first from the root ``()``."""
        stack: list[tuple[tuple[int, ...], _Node]] = [((), self.root)]
        while stack:
            prefix, node = stack.pop()
            yield prefix, node.efg
            if node.children:
                stack.extend(((*prefix, tok), child) for tok, child in node.children.items())

    # ---- one step ------------------------------------------------------------------------------
    def _allowed(self, matcher: GrammarMatcher, depth: int) -> np.ndarray:
        ids = matcher.allowed_token_ids()
        if self.max_tokens is not None and depth >= self.max_tokens:
            ids = ids[np.isin(ids, self._eos)]
        return ids

    def _weights(
        self, node: _Node | None, logprobs: np.ndarray, allowed: np.ndarray, *, update: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p, w, uncovered)`` over ``allowed``: the model's probabilities, the proposal's
        unnormalised weights ``p * EFG(child)`` and ``p`` zeroed where ``node`` has a child. ``update``: also
        store each child's edge probability as the model gives it now."""
        p = np.exp(np.asarray(logprobs, dtype=np.float64)[allowed])
        w = p.copy()
        uncovered = p.copy()
        if node is not None and node.children:
            for tok, child in node.children.items():
                i = int(np.searchsorted(allowed, tok))
                if i < allowed.size and allowed[i] == tok:
                    w[i] = p[i] * child.efg
                    uncovered[i] = 0.0
                    if update:
                        child.p = float(p[i])
        return p, w, uncovered

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, lm_logprobs: LogprobsFn, matcher: GrammarMatcher, rng: np.random.Generator) -> list[int]:
        """One output (token ids, EOS not included) drawn from the current proposal; the trie is grown
        along its path and the path's EFG estimates are tightened. ``matcher`` is not changed (it is
        forked), and must be at the language's start state.

        Raises:
            ConstrainError: no output of the language (within ``max_tokens``) has positive probability
                under the model.
        """
        while True:
            if self.root.efg <= 0.0:
                raise ConstrainError(
                    "no output in the language has positive probability under the model"
                    + ("" if self.max_tokens is None else f" within max_tokens={self.max_tokens}")
                )
            tokens = self._attempt(lm_logprobs, matcher.fork(), rng)
            if tokens is not None:
                self.num_samples += 1
                self.tokens_sampled += len(tokens)
                return tokens
            self.dead_ends += 1

    def _attempt(
        self, lm_logprobs: LogprobsFn, m: GrammarMatcher, rng: np.random.Generator
    ) -> list[int] | None:
        """One walk from the root; None where it reached a dead end (a prefix that cannot end within
        ``max_tokens``). Either way the walked path's estimates are updated."""
        node = self.root
        path = [node]
        tokens: list[int] = []
        finished = False
        while True:
            allowed = self._allowed(m, len(tokens))
            if allowed.size == 0:
                node.rest = 0.0  # nothing may follow: no grammatical future
                break
            p, w, uncovered = self._weights(node, lm_logprobs(tokens), allowed, update=True)
            total = float(w.sum())
            if total <= 0.0:
                node.rest = float(uncovered.sum())
                break
            i = int(np.searchsorted(np.cumsum(w), rng.random() * total, side="right"))
            i = min(i, allowed.size - 1)
            while w[i] <= 0.0:  # rounding at the top end can land on a zero weight
                i -= 1
            tok = int(allowed[i])
            if tok in self._eos_set:
                node.rest = float(uncovered.sum())
                finished = True
                break
            if node.children is None:
                node.children = {}
            child = node.children.get(tok)
            if child is None:
                child = node.children[tok] = _Node(float(p[i]))
                self.num_nodes += 1
                uncovered[i] = 0.0  # covered by the new child from now on
            node.rest = float(uncovered.sum())
            if not m.accept_token(tok):
                raise ConstrainError(f"token {tok} was in the mask but the matcher rejected it (engine bug)")
            tokens.append(tok)
            path.append(child)
            node = child
        for n in reversed(path):
            n.refresh()
        return tokens if finished else None

    def proposal_logprob(
        self, lm_logprobs: LogprobsFn, matcher: GrammarMatcher, tokens: Sequence[int]
    ) -> float:
        """``log q(tokens, then EOS)`` under the current trie's proposal (nothing is changed): equals
        ``log P(tokens | language)`` once the trie covers every continuation along the way. ``-inf``
        where the grammar (or ``max_tokens``) rejects ``tokens``."""
        m = matcher.fork()
        node: _Node | None = self.root
        logq = 0.0
        for depth in range(len(tokens) + 1):
            allowed = self._allowed(m, depth)
            if allowed.size == 0:
                return -math.inf
            _, w, _ = self._weights(node, lm_logprobs(tokens[:depth]), allowed)
            total = float(w.sum())
            if depth == len(tokens):
                mass = float(w[np.isin(allowed, self._eos)].sum())
            else:
                tok = int(tokens[depth])
                i = int(np.searchsorted(allowed, tok))
                if i >= allowed.size or allowed[i] != tok or tok in self._eos_set or not m.accept_token(tok):
                    return -math.inf
                mass = float(w[i])
                node = node.children.get(tok) if node is not None and node.children else None
            if total <= 0.0 or mass <= 0.0:
                return -math.inf
            logq += math.log(mass / total)
        return logq


# ------------------------------------------------------------------------------------------------
# With a transformers model


class _ModelLogprobs:
    """``lm_logprobs(prefix)`` for a causal LM after a fixed prompt: one KV cache, cropped back to the
    longest common prefix and fed the rest in one forward pass; the last ``cache_size`` distributions
    are kept (float32, ``logits_width * 4`` bytes each), so a walk down known trie nodes costs no pass."""

    def __init__(self, model: Any, prompt_ids: Sequence[int], temperature: float, cache_size: int) -> None:
        from ..generation import ModelRunner

        self._model = model
        self._runner_cls = ModelRunner
        self._runner = ModelRunner(model)
        self._prompt = [int(t) for t in prompt_ids]
        self._fed: list[int] = []  # the tokens in the runner's cache
        self._temperature = temperature
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.forward_passes = 0

    def __call__(self, prefix: Sequence[int]) -> np.ndarray:
        import torch

        key = tuple(int(t) for t in prefix)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit.astype(np.float64)
        target = self._prompt + list(key)
        common = 0
        for a, b in zip(self._fed, target, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(target) - 1)  # feed at least one token to get its logits
        if common < len(self._fed):
            if self._runner.can_crop:
                self._runner.crop(common)
            else:  # a cache that cannot be cropped exactly: start it again
                self._runner = self._runner_cls(self._model)
                common = 0
            del self._fed[common:]
        logits = self._runner.forward(target[common:], keep=1)[0]
        self._fed = target
        self.forward_passes += 1
        lp = torch.log_softmax(logits.to(torch.float64) / self._temperature, dim=-1).cpu().numpy()
        stored = lp.astype(np.float32)  # what a cache hit returns: the same numbers either way
        if self._cache_size > 0:
            self._cache[key] = stored
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return stored.astype(np.float64)


class ASAp:
    """ASAp with a transformers causal LM, for one prompt and one constraint; the trie is kept across
    :meth:`sample` calls, so more samples continue from where the last call stopped (and come closer to
    ``P(output | language)``).

    Pass exactly one of ``schema`` (a JSON Schema: dict, JSON text, path or pydantic model;
    ``schema_options`` go to ``Grammar.from_json_schema``), ``grammar`` (a :class:`~constrain.Grammar` or
    :class:`~constrain.CompiledGrammar`) or ``regex``. ``model``/``tokenizer``: as in
    :func:`constrain.generate` (both None: the default model). ``max_new_tokens`` bounds the output
    (EOS not counted) and is part of the condition. ``temperature`` (> 0) scales the logits before the
    model's distribution is taken. ``cache_size``: how many next-token distributions to keep (each
    ``logits_width * 4`` bytes: 192 KiB for SmolLM2's 49,152, so the default 128 is 24 MiB); walking
    known prefixes then needs no forward pass. The trie itself: see :class:`ASApCore`.

    Raises:
        InvalidInputError: not exactly one constraint, a temperature <= 0, or a bad budget.
    """

    def __init__(
        self,
        prompt: Any,
        *,
        schema: Any = None,
        grammar: Any = None,
        regex: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        seed: int | None = None,
        chat: bool | None = None,
        cache_size: int = 128,
        **schema_options: Any,
    ) -> None:
        from ..generation import compile_constraint, encode_prompt, resolve_model
        from ..models import tokenizer_info_for

        if not temperature > 0:
            raise InvalidInputError(f"temperature must be > 0 for ASAp, got {temperature}")
        if max_new_tokens < 0:
            raise InvalidInputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if cache_size < 0:
            raise InvalidInputError(f"cache_size must be >= 0, got {cache_size}")
        model, tokenizer = resolve_model(model, tokenizer)
        self.info = tokenizer_info_for(tokenizer)
        compiled = compile_constraint(
            self.info,
            regex=regex,
            grammar=grammar,
            schema=schema,
            schema_options=schema_options,
            required=True,
        )
        assert compiled is not None  # required=True
        self.compiled = compiled
        self._matcher = GrammarMatcher(self.compiled)
        self.core = ASApCore(self.info.eos_ids, max_tokens=max_new_tokens)
        self._lm = _ModelLogprobs(model, encode_prompt(tokenizer, prompt, chat), temperature, cache_size)
        self._rng = np.random.default_rng(seed)

    @property
    def forward_passes(self) -> int:
        """Model forward passes so far, over every :meth:`sample` call."""
        return self._lm.forward_passes

    def sample(self, n: int = 1) -> list[str]:
        """``n`` more outputs (texts), each drawn from the proposal of the trie as it stands, which each
        sample tightens.

        Raises:
            InvalidInputError: ``n < 0``.
            ConstrainError: no output of the language within ``max_new_tokens`` has positive probability.
        """
        if n < 0:
            raise InvalidInputError(f"n must be >= 0, got {n}")
        out = []
        for _ in range(n):
            tokens = self.core.sample(self._lm, self._matcher, self._rng)
            out.append(self.info.decode_bytes(tokens).decode("utf-8"))
        return out


def asap(
    prompt: Any,
    *,
    schema: Any = None,
    grammar: Any = None,
    regex: str | None = None,
    samples: int = 4,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int | None = None,
    chat: bool | None = None,
    **schema_options: Any,
) -> list[str]:
    """``samples`` outputs of ASAp for ``prompt`` under one constraint (see :class:`ASAp` for the
    arguments); the later samples follow ``P(output | language)`` more closely. Keep an :class:`ASAp`
    object instead to continue sampling with the same trie."""
    sampler = ASAp(
        prompt,
        schema=schema,
        grammar=grammar,
        regex=regex,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        chat=chat,
        **schema_options,
    )
    return sampler.sample(samples)
