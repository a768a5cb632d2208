"""Hugging Face ``transformers`` logits processors: constrain ``model.generate(...)``.

.. code-block:: python

    from transformers import LogitsProcessorList
    from constrain.adapters.hf import RegexLogitsProcessor

    proc = RegexLogitsProcessor(r"\\d{4}-\\d{2}-\\d{2}", tokenizer)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]), max_new_tokens=16)

What they handle:

- batches, ``num_return_sequences``, sampling and beam search: each row's matcher is found from the
  tokens it generated (a dict from that token sequence to a matcher), so rows that beam search reorders,
  duplicates or drops between steps are followed; a row whose history splits is forked;
- left padding: the prompt ends where the first call's ``input_ids`` end (every row of a left-padded
  batch has the same length). Right padding is not supported (transformers warns about it for decoder-only
  models anyway);
- EOS: allowed exactly where the output may end; after it only EOS and the pad token are allowed, so
  finished rows can keep stepping. A row that beam search extended with a masked-out token (it does so
  when fewer allowed continuations exist than beams to fill; such a row's score is ``-inf``) also gets
  EOS/pad only;
- logits wider than the vocabulary: the extra columns are masked.

A processor follows one ``generate`` call at a time, and may be reused for the next one: it restarts
from the new call's prompt. Inside ``model.generate`` a new call is told by the call itself (the
outermost ``generate`` on the stack, so an assistant model's nested ``generate`` in assisted decoding
counts as part of the main call), never by the token ids: a new prompt that happens to extend the last
call's output (prompt ``P``, then ``P`` + the ``"y"`` it generated) starts over at the grammar's start.
Called by hand (a decoding loop of your own) it can only go by the ids: a shorter input than the first
call's, or rows whose history it never saw, start over; anything else continues, so call
:meth:`~GrammarLogitsProcessor.reset` between sequences there. Row states are kept for the last 64
steps, so a call that looks back a few steps (assisted decoding verifies several candidate positions)
finds them too. Compiled grammars are cached per (grammar, tokenizer) by :func:`constrain.compile`,
and the tokenizer's :class:`~constrain.TokenizerInfo` per tokenizer object. ``budget=`` (a
:class:`~constrain.CompileBudget` or CPU seconds) bounds the compile as in :func:`constrain.compile`.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import weakref
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from constrain.budget import CompileBudget, budget_scope
from constrain.compiler import CompiledGrammar, ensure_compiled
from constrain.exceptions import InvalidInputError
from constrain.grammar import Grammar
from constrain.kernels import allocate_token_bitmask, apply_token_bitmask_inplace
from constrain.matcher import GrammarMatcher
from constrain.models import tokenizer_info_for
from constrain.validation import check_options

__all__ = ["GrammarLogitsProcessor", "JSONSchemaLogitsProcessor", "RegexLogitsProcessor"]

_KEEP_STEPS = 64  # how many past steps of row states a processor keeps
_GENERATION_DIR = os.path.join("transformers", "generation")


def _generate_call() -> Any:
    """The ``generation_config`` of the outermost transformers ``generate`` on the stack (a fresh copy
    per call, so its identity names the call), or None when the processor is not called from one."""
    outer = None
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "generate" and _GENERATION_DIR in code.co_filename:
            outer = frame
        frame = frame.f_back
    return None if outer is None else outer.f_locals.get("generation_config")


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks every row's scores to the tokens its grammar allows next.

    Args:
        grammar: a :class:`~constrain.Grammar`, or a :class:`~constrain.CompiledGrammar` compiled for
            this tokenizer.
        tokenizer: the model's transformers tokenizer.
        budget: bounds the compile (a :class:`~constrain.CompileBudget` or CPU seconds; ``None``: the
            default budget); past it :class:`~constrain.exceptions.CompileBudgetExceeded`.
    """

    def __init__(
        self,
        grammar: Grammar | CompiledGrammar,
        tokenizer: Any,
        *,
        budget: CompileBudget | float | None = None,
    ) -> None:
        info = tokenizer_info_for(tokenizer)
        with budget_scope(budget):
            self.compiled = ensure_compiled(grammar, info)
        self.info = info
        ends = set(info.eos_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        if isinstance(pad, int) and 0 <= pad < info.vocab_size:
            ends.add(pad)
        # EOS or pad only: for finished and dead rows
        words = np.zeros(self.compiled.num_words, dtype=np.uint32)
        for t in ends:
            words[t >> 5] |= np.uint32(1 << (t & 31))
        self._end_row = torch.from_numpy(words.view(np.int32).copy())
        self.reset()

    def reset(self) -> None:
        """Forget the previous ``generate`` call's rows."""
        self._restart(None)
        # the generate call being followed (a weak reference to its generation_config)
        self._call: weakref.ref[Any] | None = None

    def _restart(self, prompt_len: int | None) -> None:
        """Follow a new sequence whose generated tokens start at ``prompt_len``."""
        self._prompt_len: int | None = prompt_len
        # generated-token bytes -> matcher after them (None: the row left the language)
        self._states: dict[bytes, GrammarMatcher | None] = {}
        self._bitmask: torch.Tensor | None = None

    @property
    def prompt_length(self) -> int | None:
        """Where the generated tokens start in ``input_ids`` (known after the first call)."""
        return self._prompt_len

    def _lookup(self, key: bytes, width: int, dtype: np.dtype[Any]) -> GrammarMatcher | None:
        if key in self._states:
            return self._states[key]
        parent = self._states[key[:-width]]
        if parent is None:
            m = None
        else:
            m = parent.fork()
            token = int(np.frombuffer(key[-width:], dtype=dtype)[0])
            if not m.is_terminated() and not m.accept_token(token):
                m = None
        self._states[key] = m
        return m

    def _prune(self, steps: int, width: int) -> None:
        # Lookups reach back one step (or a few, under assisted decoding): keep the last _KEEP_STEPS.
        if len(self._states) > 4 * _KEEP_STEPS and steps > _KEEP_STEPS:
            floor = (steps - _KEEP_STEPS) * width
            self._states = {k: v for k, v in self._states.items() if len(k) >= floor}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Mask ``scores`` (``(rows, width)``) in place from each row's history in ``input_ids``.

        Raises:
            InvalidInputError: ``input_ids`` is not a 2-D integer tensor, ``scores`` not a 2-D
                floating tensor with as many rows and at least ``vocab_size`` columns.
        """
        _check_call(input_ids, scores, self.info.vocab_size)
        rows, length = input_ids.shape
        call = _generate_call()
        if call is not None and (self._call is None or self._call() is not call):
            # a new model.generate call: start from its prompt, whatever the ids look like
            self._restart(length)
            try:
                self._call = weakref.ref(call)
            except TypeError:  # pragma: no cover - a generation_config without weak references
                self._call = None
        if self._prompt_len is None or length < self._prompt_len:
            self._restart(length)
        generated = np.ascontiguousarray(
            input_ids[:, self._prompt_len :].detach().to("cpu", torch.long).numpy()
        )
        steps, width = generated.shape[1], generated.itemsize
        keys = [generated[r].tobytes() for r in range(rows)]
        if steps:
            known = [k in self._states or k[:-width] in self._states for k in keys]
            if not any(known):  # a new generate call with a longer prompt
                self._restart(length)
                keys = [b""] * rows
            elif not all(known):
                raise InvalidInputError(
                    "a row's history was not seen at the previous step: is this processor shared by two "
                    "generate calls at once? Use one processor per call (or call reset() between calls)"
                )
        if b"" not in self._states:
            self._states[b""] = GrammarMatcher(self.compiled)
        matchers = [self._lookup(k, width, generated.dtype) for k in keys]
        self._prune(steps, width)
        bitmask = self._bitmask
        if bitmask is None or bitmask.shape[0] != rows:
            bitmask = self._bitmask = allocate_token_bitmask(rows, self.info.vocab_size)
        live = []
        for r, m in enumerate(matchers):
            if m is None or m.is_terminated():
                bitmask[r] = self._end_row
            else:
                live.append((r, m))
        self._fill_rows(bitmask, live)
        apply_token_bitmask_inplace(scores, bitmask.to(scores.device, non_blocking=True))
        return scores

    @staticmethod
    def _fill_rows(bitmask: torch.Tensor, live: list[tuple[int, GrammarMatcher]]) -> None:
        """Fill each live row's mask; rows with the same matcher (equal histories) fill once and are
        copied. Several distinct matchers fill side by side on the mask threads: a mask computed on a
        first visit is a numba walk that releases the GIL."""
        first: dict[int, int] = {}
        todo: list[tuple[int, GrammarMatcher]] = []
        copies: list[tuple[int, int]] = []
        for r, m in live:
            seen = first.get(id(m))
            if seen is None:
                first[id(m)] = r
                todo.append((r, m))
            else:
                copies.append((r, seen))
        if len(todo) > 1:
            from constrain.generation import mask_pool

            list(mask_pool().map(lambda rm: rm[1].fill_next_token_bitmask(bitmask, rm[0]), todo))
        elif todo:
            todo[0][1].fill_next_token_bitmask(bitmask, todo[0][0])
        for r, seen in copies:
            bitmask[r] = bitmask[seen]


class RegexLogitsProcessor(GrammarLogitsProcessor):
    """Every generated continuation fullmatches ``pattern`` (Python ``re`` syntax)."""

    def __init__(
        self, pattern: str, tokenizer: Any, flags: int = 0, *, budget: CompileBudget | float | None = None
    ) -> None:
        with budget_scope(budget):
            super().__init__(Grammar.from_regex(pattern, flags), tokenizer)


class JSONSchemaLogitsProcessor(GrammarLogitsProcessor):
    """Every generated continuation is JSON that validates against ``schema``.

    ``schema``: a dict, JSON text, a path or a pydantic model class; ``options`` go to
    ``Grammar.from_json_schema``; ``budget`` bounds the whole compile, schema stages included.
    """

    def __init__(
        self, schema: Any, tokenizer: Any, *, budget: CompileBudget | float | None = None, **options: Any
    ) -> None:
        names = [
            p for p in inspect.signature(Grammar.from_json_schema).parameters if p not in ("cls", "schema")
        ]
        check_options("JSONSchemaLogitsProcessor", options, names)
        with budget_scope(budget):
            super().__init__(Grammar.from_json_schema(schema, **options), tokenizer)


def _check_call(input_ids: Any, scores: Any, vocab_size: int) -> None:
    """The argument checks of a processor call: what transformers passes, named when it is not."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise InvalidInputError(
            "input_ids must be a 2-D integer tensor (rows, length), got "
            + (
                f"shape {tuple(input_ids.shape)}"
                if isinstance(input_ids, torch.Tensor)
                else type(input_ids).__name__
            )
        )
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise InvalidInputError(
            "scores must be a 2-D floating tensor (rows, vocabulary width), got "
            + (
                f"{scores.dtype} of shape {tuple(scores.shape)}"
                if isinstance(scores, torch.Tensor)
                else type(scores).__name__
            )
        )
    if scores.shape[0] != input_ids.shape[0]:
        raise InvalidInputError(
            f"scores has {scores.shape[0]} rows but input_ids has {input_ids.shape[0]}; they must match"
        )
    if scores.shape[1] < vocab_size:
        raise InvalidInputError(
            f"scores has {scores.shape[1]} columns, fewer than the tokenizer's vocab_size={vocab_size}: "
            "is this processor built with the model's own tokenizer?"
        )
