"""``GrammarMatcher``: the per-sequence state of constrained decoding.

Error model (what raises and what returns a status):

- ``accept_token`` / ``accept_bytes`` return ``False`` for input the grammar rejects and leave the
  state unchanged. They never raise for a rejected token, an unknown id, or a special token.
- EOS is accepted exactly where the language may end; after it the matcher is terminated: it
  accepts nothing more and its bitmask allows EOS only (so padded batches can keep stepping).
- Only API misuse raises :class:`~constrain.exceptions.MatcherUsageError`: rolling back more steps
  than were taken, a bitmask of the wrong dtype, shape or device, a row out of range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .compiler import CompiledGrammar
from .exceptions import MatcherUsageError
from .forced import forced_tokens_cached

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency, but keep numpy-only use working
    torch = None  # type: ignore[assignment]

_TERMINATED = -2  # history marker: EOS was accepted


class GrammarMatcher:
    """Tracks one sequence through a compiled grammar.

    Cheap to create and to :meth:`fork`; all heavy data lives in the shared
    :class:`~constrain.CompiledGrammar`.
    """

    __slots__ = (
        "_accepting",
        "_compiled",
        "_eos",
        "_fast_target",
        "_history",
        "_special",
        "_token_bytes",
        "_trans",
    )

    def __new__(cls, compiled: Any = None) -> Any:
        # A compiled Lark grammar gets its own matcher class with the same API.
        from .cfg.token_masks import CompiledCFG

        if cls is GrammarMatcher and isinstance(compiled, CompiledCFG):
            from .cfg.matcher import CFGMatcher

            return CFGMatcher(compiled)
        return super().__new__(cls)

    def __init__(self, compiled: CompiledGrammar) -> None:
        if not isinstance(compiled, CompiledGrammar):
            raise MatcherUsageError(
                "GrammarMatcher needs a CompiledGrammar (from constrain.compile), "
                f"got {type(compiled).__name__}"
            )
        self._compiled = compiled
        dfa = compiled.dfa
        info = compiled.tokenizer_info
        # A flat int32 memoryview reads transitions at ~30 ns each, with no per-matcher copy.
        self._trans = dfa.transitions.data.cast("B").cast("i")
        self._accepting = dfa.accepting
        self._token_bytes = info.token_bytes
        self._special = info.special_ids
        self._eos = frozenset(info.eos_ids)
        self._history: list[int] = [dfa.start]
        # (bitmask, its data_ptr, numpy view of the row, row) last validated by fill_next_token_bitmask
        self._fast_target: tuple[Any, int, np.ndarray, int] | None = None

    # ---- state ---------------------------------------------------------------------------------
    @property
    def compiled(self) -> CompiledGrammar:
        """The compiled grammar this matcher walks."""
        return self._compiled

    @property
    def state(self) -> int:
        """The current DFA state."""
        h = self._history
        return h[-2] if h[-1] == _TERMINATED else h[-1]

    @property
    def num_steps(self) -> int:
        """How many tokens (EOS included) were accepted and can be rolled back."""
        return len(self._history) - 1

    def is_terminated(self) -> bool:
        """True after EOS was accepted."""
        return self._history[-1] == _TERMINATED

    def can_end(self) -> bool:
        """True where the output so far is a complete member of the language (EOS is allowed here)."""
        return not self.is_terminated() and bool(self._accepting[self._history[-1]])

    # ---- stepping ------------------------------------------------------------------------------
    def _advance(self, state: int, data: bytes) -> int:
        trans = self._trans
        for b in data:
            state = trans[(state << 8) | b]
            if state < 0:
                return -1
        return state

    def accept_token(self, token_id: int) -> bool:
        """Consume one token. Returns False (state unchanged) when the grammar rejects it."""
        h = self._history
        state = h[-1]
        if state == _TERMINATED:
            return False
        if token_id in self._eos:
            if not self._accepting[state]:
                return False
            h.append(_TERMINATED)
            return True
        if token_id < 0 or token_id >= len(self._token_bytes) or token_id in self._special:
            return False
        data = self._token_bytes[token_id]
        if not data:
            return False
        nxt = self._advance(state, data)
        if nxt < 0:
            return False
        h.append(nxt)
        return True

    def accept_bytes(self, data: bytes | str) -> bool:
        """Consume raw bytes (or text, as UTF-8) as one step; False (state unchanged) if rejected."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        h = self._history
        if h[-1] == _TERMINATED:
            return False
        nxt = self._advance(h[-1], data)
        if nxt < 0:
            return False
        h.append(nxt)
        return True

    def rollback(self, num_tokens: int = 1) -> None:
        """Undo the last ``num_tokens`` accepted steps (EOS counts as one)."""
        if num_tokens < 0 or num_tokens > len(self._history) - 1:
            raise MatcherUsageError(
                f"cannot roll back {num_tokens} steps: {len(self._history) - 1} were accepted"
            )
        if num_tokens:
            del self._history[-num_tokens:]

    def reset(self) -> None:
        """Return to the start state."""
        del self._history[1:]

    def fork(self) -> GrammarMatcher:
        """An independent copy that shares the compiled grammar (for beams, drafts, n > 1)."""
        twin = GrammarMatcher.__new__(GrammarMatcher)
        twin._compiled = self._compiled
        twin._trans = self._trans
        twin._accepting = self._accepting
        twin._token_bytes = self._token_bytes
        twin._special = self._special
        twin._eos = self._eos
        twin._history = self._history.copy()
        twin._fast_target = None
        return twin

    # ---- masks ---------------------------------------------------------------------------------
    def next_token_mask(self) -> np.ndarray:
        """The current allowed-token bitmask row (read-only int32 words)."""
        if self.is_terminated():
            return self._compiled.eos_only_mask()
        return self._compiled.state_mask(self._history[-1])

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> bool:
        """Write the allowed tokens for the next step into ``bitmask[row]``.

        ``bitmask`` is an int32 CPU tensor (or numpy array) of shape ``(batch, ceil(vocab_size/32))``
        from :func:`constrain.allocate_token_bitmask`. Returns True (the mask restricts something).
        """
        fast = self._fast_target
        h = self._history
        if (
            fast is not None
            and fast[0] is bitmask
            and row == fast[3]
            and h[-1] != _TERMINATED
            and bitmask.data_ptr() == fast[1]
        ):
            # Hot path: the row validated last time; one numpy copy of a cached mask (about 1 µs,
            # half a ctypes.memmove call's overhead).
            fast[2][...] = self._compiled.state_mask(h[-1])
            return True
        mask = self.next_token_mask()
        words = mask.shape[0]
        original = bitmask
        if torch is not None and isinstance(bitmask, torch.Tensor):
            if bitmask.dtype != torch.int32 or bitmask.device.type != "cpu":
                raise MatcherUsageError(
                    "bitmask must be an int32 CPU tensor; use constrain.allocate_token_bitmask(batch, "
                    "vocab_size) and move it to the GPU after filling (non_blocking=True)"
                )
            if bitmask.dim() == 1:
                bitmask = bitmask.unsqueeze(0)
            if bitmask.dim() != 2 or bitmask.shape[1] != words:
                raise MatcherUsageError(
                    f"bitmask has shape {tuple(bitmask.shape)}, expected (batch, {words}) for a "
                    f"vocabulary of {self._compiled.tokenizer_info.vocab_size}"
                )
            if not 0 <= row < bitmask.shape[0]:
                raise MatcherUsageError(f"row {row} out of range for a bitmask of {bitmask.shape[0]} rows")
            if bitmask.stride(1) == 1:
                target = bitmask.numpy()[row]
                target[...] = mask
                if original is bitmask:  # a 2-D tensor as given: take the hot path next time
                    self._fast_target = (bitmask, bitmask.data_ptr(), target, row)
            else:
                bitmask[row].copy_(torch.from_numpy(mask.copy()))
            return True
        if isinstance(bitmask, np.ndarray):
            if bitmask.dtype != np.int32:
                raise MatcherUsageError("bitmask must be int32; use constrain.allocate_token_bitmask")
            target = bitmask if bitmask.ndim == 1 else bitmask[row]
            if target.shape != (words,):
                raise MatcherUsageError(f"bitmask row has shape {target.shape}, expected ({words},)")
            target[:] = mask
            return True
        raise MatcherUsageError(
            f"bitmask must be a torch.Tensor or numpy array, got {type(bitmask).__name__}"
        )

    def allowed_token_ids(self) -> np.ndarray:
        """The ids allowed next, ascending (a convenience for tests and samplers; O(vocab))."""
        bits = np.unpackbits(self.next_token_mask().view(np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self._compiled.tokenizer_info.vocab_size])

    # ---- forced continuations (jump-forward) -----------------------------------------------------
    def _forced_walk(self) -> tuple[bytes, np.ndarray]:
        """The forced bytes and the bytes allowed after them (none: the output must end there)."""
        trans = self._compiled.dfa.transitions
        accepting = self._accepting
        state = self._history[-1]
        out = bytearray()
        seen = {state}
        live = np.flatnonzero(trans[state] >= 0)
        while not accepting[state] and live.shape[0] == 1:
            b = int(live[0])
            out.append(b)
            state = int(trans[state, b])
            if state in seen:  # pragma: no cover - a forced cycle would be an empty-language loop
                break
            seen.add(state)
            live = np.flatnonzero(trans[state] >= 0)
        return bytes(out), live

    def forced_bytes(self) -> bytes:
        """The bytes every continuation must start with (empty where there is a choice or an end)."""
        if self.is_terminated():
            return b""
        return self._forced_walk()[0]

    def forced_tokens(self) -> list[int]:
        """Tokens for a prefix of :meth:`forced_bytes`, as the tokenizer itself would encode it.

        The tokenizer's own encoding of the forced text, less the last tokens where the bytes the
        grammar allows next could merge with them (see :mod:`constrain.forced`); longest match first
        over the vocabulary where the tokenizer cannot be asked. Each one is accepted here, in turn.
        Cached per DFA state.
        """
        if self.is_terminated():
            return []
        return forced_tokens_cached(self, self._compiled, self._history[-1], self._forced_walk)
