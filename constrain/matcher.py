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

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .compiler import CompiledGrammar
from .exceptions import ConstrainError, MatcherUsageError
from .forced import forced_tokens_cached

_TERMINATED = -2  # history marker: EOS was accepted
MAX_FORCED_BYTES = 4096
"""The longest forced continuation :meth:`GrammarMatcher.forced_bytes` returns in one call."""
MAX_COMPLETION_STATES = 2_000_000
"""The default ``max_states`` of :meth:`GrammarMatcher.completion_bytes`: a guard against a runaway
search, not the reach of the search (A* over the Earley automaton visits about the completion's length
times the bytes live at each step)."""


def _torch() -> Any:
    """torch, if it is importable (imported lazily: ``import constrain`` does not load it)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but keep numpy-only use working
        return None
    return torch


class GrammarMatcher:
    """Tracks one sequence through a compiled grammar.

    The same class for every grammar kind: it walks the compiled grammar's
    :class:`~constrain.compiler.TokenAutomaton` (a byte DFA's masks or the Earley configuration
    automaton's), whose state is one int, so the history is a list of ints. Cheap to create and to
    :meth:`fork`; all heavy data lives in the shared :class:`~constrain.CompiledGrammar`.
    """

    __slots__ = (
        "_auto",
        "_compiled",
        "_eos",
        "_fast_target",
        "_history",
        "_is_final",
        "_mask",
        "_special",
        "_step",
        "_token_bytes",
    )

    def __init__(self, compiled: CompiledGrammar) -> None:
        if not isinstance(compiled, CompiledGrammar):
            raise MatcherUsageError(
                "GrammarMatcher needs a CompiledGrammar (from constrain.compile), "
                f"got {type(compiled).__name__}"
            )
        self._compiled = compiled
        auto = compiled.automaton
        info = compiled.tokenizer_info
        self._auto = auto
        # Bound methods, looked up once: the hot paths make one call each.
        self._step = auto.step
        self._is_final = auto.is_final
        self._mask = auto.mask
        self._token_bytes = info.token_bytes
        self._special = info.special_ids
        self._eos = frozenset(info.eos_ids)
        self._history: list[int] = [auto.start]
        # (bitmask, its data_ptr, numpy view of the row, row) last validated by fill_next_token_bitmask
        self._fast_target: tuple[Any, int, np.ndarray, int] | None = None

    # ---- state ---------------------------------------------------------------------------------
    @property
    def compiled(self) -> CompiledGrammar:
        """The compiled grammar this matcher walks."""
        return self._compiled

    @property
    def state(self) -> int:
        """The current automaton state (a DFA state or an Earley configuration id)."""
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
        s = self._history[-1]
        return s != _TERMINATED and self._is_final(s)

    def must_end(self) -> bool:
        """True where the output may end and no byte may follow (no model call is needed to stop)."""
        s = self._history[-1]
        if s == _TERMINATED:
            return True
        return self._is_final(s) and self._auto.live_bytes(s).shape[0] == 0

    # ---- stepping ------------------------------------------------------------------------------
    def accept_token(self, token_id: int) -> bool:
        """Consume one token. Returns False (state unchanged) when the grammar rejects it."""
        h = self._history
        state = h[-1]
        if state == _TERMINATED:
            return False
        if token_id in self._eos:
            if not self._is_final(state):
                return False
            h.append(_TERMINATED)
            return True
        if token_id < 0 or token_id >= len(self._token_bytes) or token_id in self._special:
            return False
        data = self._token_bytes[token_id]
        if not data:
            return False
        nxt = self._step(state, data)
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
        nxt = self._step(h[-1], data)
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
        twin._auto = self._auto
        twin._step = self._step
        twin._is_final = self._is_final
        twin._mask = self._mask
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
        return self._mask(self._history[-1])

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
            fast[2][...] = self._mask(h[-1])
            return True
        mask = self.next_token_mask()
        words = mask.shape[0]
        original = bitmask
        torch = _torch() if not isinstance(bitmask, np.ndarray) else None
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
                if original is bitmask and not self.is_terminated():  # a 2-D tensor as given: hot path next
                    self._fast_target = (bitmask, bitmask.data_ptr(), target, row)
            else:
                bitmask[row].copy_(torch.from_numpy(mask.copy()))
            return True
        if isinstance(bitmask, np.ndarray):
            if bitmask.dtype != np.int32:
                raise MatcherUsageError("bitmask must be int32; use constrain.allocate_token_bitmask")
            if not bitmask.flags.writeable:
                raise MatcherUsageError("bitmask is read-only; pass a writable array (np.array(bitmask))")
            if bitmask.ndim == 2 and not 0 <= row < bitmask.shape[0]:
                raise MatcherUsageError(f"row {row} out of range for a bitmask of {bitmask.shape[0]} rows")
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

    # ---- forced continuations (jump-forward) and completion ------------------------------------------
    def _forced_walk(self) -> tuple[bytes, np.ndarray]:
        """The forced bytes and the bytes allowed after them (none: the output must end there)."""
        auto = self._auto
        state = self._history[-1]
        out = bytearray()
        seen = {state}
        live = auto.live_bytes(state)
        while not auto.is_final(state) and len(out) < MAX_FORCED_BYTES and live.shape[0] == 1:
            b = int(live[0])
            nxt = auto.step(state, bytes((b,)))
            if nxt < 0 or nxt in seen:  # pragma: no cover - every live byte leads somewhere new
                break
            out.append(b)
            state = nxt
            seen.add(state)
            live = auto.live_bytes(state)
        return bytes(out), live

    def forced_bytes(self) -> bytes:
        """The bytes every continuation must start with (empty where there is a choice or an end;
        at most :data:`MAX_FORCED_BYTES`)."""
        if self.is_terminated():
            return b""
        return self._forced_walk()[0]

    def forced_tokens(self) -> list[int]:
        """Tokens for a prefix of :meth:`forced_bytes`, as the tokenizer itself would encode it.

        The tokenizer's own encoding of the forced text, less the last tokens where the bytes the
        grammar allows next could merge with them (see :mod:`constrain.forced`); longest match first
        over the vocabulary where the tokenizer cannot be asked. Each one is accepted here, in turn.
        Cached per automaton state.
        """
        if self.is_terminated():
            return []
        return forced_tokens_cached(self, self._compiled, self._history[-1], self._forced_walk)

    def completion_bytes(self, max_states: int = MAX_COMPLETION_STATES) -> bytes:
        """The shortest bytes from here to a state where the output may end; empty where it may end
        already.

        A byte DFA is searched breadth-first (ties to the smallest byte; its states are finite). The
        Earley automaton's states are not, so it is searched by A* with the grammar's lower bound on the
        bytes left (:meth:`constrain.cfg.earley.EarleyAutomaton.completion_bound`, exact for nested
        brackets): the search follows the shortest path and visits about its length times the bytes
        live at each step, at any nesting depth. ``max_states`` only guards against a grammar whose
        bound is weak.

        Raises:
            ConstrainError: no completion exists, or none was found within ``max_states`` states.
        """
        if self.is_terminated():
            return b""
        auto = self._auto
        start = self._history[-1]
        bound = getattr(auto, "completion_bound", None)
        parent: dict[int, tuple[int, int]] = {start: (-1, -1)}
        goal = -1
        if bound is None:
            queue = deque([start])
            while queue and len(parent) <= max_states:
                s = queue.popleft()
                if auto.is_final(s):
                    goal = s
                    break
                for b in auto.live_bytes(s).tolist():
                    t = auto.step(s, bytes((b,)))
                    if t >= 0 and t not in parent:
                        parent[t] = (s, b)
                        queue.append(t)
        else:
            goal = _a_star(auto, start, bound, parent, max_states)
        if goal < 0:
            raise ConstrainError("no completion of the output was found from the current state")
        path = bytearray()
        s = goal
        while s != start:
            s, b = parent[s]
            path.append(b)
        return bytes(reversed(path))

    def shortest_completion(self) -> list[int]:
        """Tokens that bring this matcher to a state where the output may end, spelling
        :meth:`completion_bytes`. The matcher is not changed.

        The bytes are split into tokens greedily, longest valid token first: valid, not necessarily
        the tokenizer's canonical segmentation.

        Raises:
            ConstrainError: no completion exists (see :meth:`completion_bytes`), or no token sequence
                spells it.
        """
        if self.is_terminated() or self.can_end():
            return []
        data = self.completion_bytes()
        info = self._compiled.tokenizer_info
        table, longest = info.token_ids_by_bytes, info.max_token_length
        walker = self.fork()
        out: list[int] = []
        pos = 0
        while pos < len(data):
            for n in range(min(longest, len(data) - pos), 0, -1):
                tid = table.get(data[pos : pos + n])
                if tid is not None and walker.accept_token(tid):
                    out.append(tid)
                    pos += n
                    break
            else:
                raise ConstrainError(f"no token spells the completion bytes {data[pos:]!r} from here")
        return out


def _a_star(
    auto: Any, start: int, bound: Callable[[int], int], parent: dict[int, tuple[int, int]], max_states: int
) -> int:
    """A* from ``start`` to a final state with the admissible heuristic ``bound``; fills ``parent``
    and returns the goal (-1 for none). Ties go to the deeper state, then to the smaller byte."""
    from .cfg.earley import NO_COMPLETION

    h0 = bound(start)
    if h0 >= NO_COMPLETION:
        return -1
    best = {start: 0}
    order = itertools.count()
    heap = [(h0, 0, next(order), start)]
    closed: set[int] = set()
    while heap and len(best) <= max_states:
        _, neg_g, _, s = heapq.heappop(heap)
        g = -neg_g
        if s in closed or g > best[s]:
            continue
        if auto.is_final(s):
            return s
        closed.add(s)
        for b in auto.live_bytes(s).tolist():
            t = auto.step(s, bytes((b,)))
            if t < 0 or g + 1 >= best.get(t, NO_COMPLETION):
                continue
            h = bound(t)
            if h >= NO_COMPLETION:
                continue
            best[t] = g + 1
            parent[t] = (s, b)
            closed.discard(t)  # an inconsistent bound may find a shorter way to a closed state
            heapq.heappush(heap, (g + 1 + h, -(g + 1), next(order), t))
    return -1
