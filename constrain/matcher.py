"""``GrammarMatcher``: the per-sequence state of constrained decoding.

Error model (what raises and what returns a status):

- ``accept_token`` / ``accept_bytes`` return ``False`` for input the grammar rejects and leave the
  state unchanged. They never raise for a rejected token, an unknown id, or a special token.
- EOS is accepted exactly where the language may end; after it the matcher is terminated: it
  accepts nothing more and its bitmask allows EOS only (so padded batches can keep stepping).
- Only API misuse raises :class:`~constrain.exceptions.MatcherUsageError`: rolling back more steps
  than were taken, a bitmask of the wrong dtype, shape or device, a row out of range.
- A grammar compiled from a JSON Schema also never lets an object repeat a key: a token that closes a
  key its object already has is rejected and left out of the masks (:mod:`constrain.json_keys`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import numpy as np

from .compiler import CompiledGrammar
from .exceptions import ConstrainError, MatcherUsageError
from .forced import forced_tokens_cached
from .json_keys import KEY, OUT, START, KeyTables, Pos, key_tables
from .validation import checked_arguments

_TERMINATED = -2  # history marker: EOS was accepted
MAX_FORCED_BYTES = 4096
"""The longest forced continuation :meth:`GrammarMatcher.forced_bytes` returns in one call."""
MAX_COMPLETION_STATES = 2_000_000
"""The default ``max_states`` of :meth:`GrammarMatcher.completion_bytes`: a guard against a runaway
search, not the reach of the search (A* over the Earley automaton visits about the completion's length
times the bytes live at each step)."""


def _track_history(auto: Any, matcher: GrammarMatcher) -> None:
    """Register ``matcher`` with an automaton that frees the states no history holds (the Earley one:
    :meth:`constrain.cfg.earley.EarleyAutomaton.collect`)."""
    track = getattr(auto, "track", None)
    if track is not None:
        track(matcher)


def _released(auto: Any) -> None:
    """Tell such an automaton that a history shrank (it may free what was rolled back)."""
    released = getattr(auto, "released", None)
    if released is not None:
        released()


def _held(auto: Any) -> AbstractContextManager[Any]:
    """No collection of such an automaton's states while inside (a search holds states of its own)."""
    hold = getattr(auto, "hold", None)
    return hold() if hold is not None else nullcontext()


def _torch() -> Any:
    """torch, if it is importable (imported lazily: ``import constrain`` does not load it)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but keep numpy-only use working
        return None
    return torch


def _row_filler(auto: Any) -> Callable[[int, np.ndarray], None]:
    """``fill_row(state, out)`` of the automaton (write a state's mask into a bitmask row), or the same
    from its ``mask`` for an automaton without one."""
    fill = getattr(auto, "fill_row", None)
    if fill is not None:
        return cast("Callable[[int, np.ndarray], None]", fill)
    mask = auto.mask

    def fill_from_mask(state: int, out: np.ndarray) -> None:
        out[...] = mask(state)

    return fill_from_mask


class GrammarMatcher:
    """Tracks one sequence through a compiled grammar.

    The same class for every grammar kind: it walks the compiled grammar's
    :class:`~constrain.compiler.TokenAutomaton` (a byte DFA's masks or the Earley configuration
    automaton's), whose state is one int, so the history is a list of ints. Cheap to create and to
    :meth:`fork`; all heavy data lives in the shared :class:`~constrain.CompiledGrammar`.
    """

    __slots__ = (
        "__weakref__",
        "_auto",
        "_compiled",
        "_eos",
        "_fast_target",
        "_fill_row",
        "_history",
        "_is_final",
        "_json",
        "_keys",
        "_mask",
        "_plain",
        "_special",
        "_step",
        "_token_bytes",
    )

    @checked_arguments
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
        self._fill_row = _row_filler(auto)
        self._token_bytes = info.token_bytes
        self._special = info.special_ids
        self._eos = frozenset(info.eos_ids)
        self._history: list[int] = [auto.start]
        # JSON Schema grammars: the key tracker's state beside each history entry (None: not tracked)
        self._keys: KeyTables | None = key_tables(info) if compiled.grammar.kind == "json_schema" else None
        self._json: list[Pos] | None = [START] if self._keys is not None else None
        self._plain = self._keys.plain if self._keys is not None else b""
        # (bitmask, its data_ptr, numpy view of the row, row) last validated by fill_next_token_bitmask
        self._fast_target: tuple[Any, int, np.ndarray, int] | None = None
        _track_history(auto, self)

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
            if self._json is not None:
                self._json.append(self._json[-1])
            return True
        if token_id < 0 or token_id >= len(self._token_bytes) or token_id in self._special:
            return False
        data = self._token_bytes[token_id]
        if not data:
            return False
        nxt = self._step(state, data)
        if nxt < 0:
            return False
        js = self._json
        if js is not None:
            pos = js[-1]
            if pos[0] == OUT and not pos[1] and self._plain[token_id]:  # the common case, inlined
                js.append(pos)
            else:
                assert self._keys is not None
                after = self._keys.feed_token(pos, token_id)
                if after is None:  # it closes a key its object already has
                    return False
                js.append(after)
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
        js = self._json
        if js is not None:
            assert self._keys is not None
            pos = self._keys.feed(js[-1], data)
            if pos is None:
                return False
            js.append(pos)
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
            if self._json is not None:
                del self._json[-num_tokens:]
            _released(self._auto)

    def reset(self) -> None:
        """Return to the start state."""
        del self._history[1:]
        if self._json is not None:
            del self._json[1:]
        _released(self._auto)

    def fork(self) -> GrammarMatcher:
        """An independent copy that shares the compiled grammar (for beams, drafts, n > 1)."""
        return self._fork(track_keys=True)

    def _fork(self, track_keys: bool) -> GrammarMatcher:
        """:meth:`fork`; ``track_keys=False`` leaves the key tracker out (the automaton alone)."""
        twin = GrammarMatcher.__new__(GrammarMatcher)
        twin._compiled = self._compiled
        twin._auto = self._auto
        twin._step = self._step
        twin._is_final = self._is_final
        twin._mask = self._mask
        twin._fill_row = self._fill_row
        twin._token_bytes = self._token_bytes
        twin._special = self._special
        twin._eos = self._eos
        twin._history = self._history.copy()
        tracked = track_keys and self._json is not None
        twin._keys = self._keys if tracked else None
        twin._json = self._json.copy() if tracked and self._json is not None else None
        twin._plain = self._plain
        twin._fast_target = None
        _track_history(twin._auto, twin)
        return twin

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (and copied) as its compiled grammar and its per-step lists (the history of states and
        whatever else is kept per step): the state and every rollback."""
        lists = {n: list(v) for n in self.__slots__ if isinstance(v := getattr(self, n, None), list)}
        return _restore_matcher, (self._compiled, lists)

    # ---- masks ---------------------------------------------------------------------------------
    def next_token_mask(self) -> np.ndarray:
        """The current allowed-token bitmask row (read-only int32 words)."""
        if self.is_terminated():
            return self._compiled.eos_only_mask()
        mask = self._mask(self._history[-1])
        js = self._json
        if js is not None and js[-1][4]:  # the tracker watches: a token could repeat a key
            assert self._keys is not None
            return self._keys.masked(js[-1], mask)
        return mask

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
            # half a ctypes.memmove call's overhead), or a sparse state's ids written into it.
            self._fill_row(h[-1], fast[2])
            js = self._json
            if js is not None and js[-1][4]:
                assert self._keys is not None
                self._keys.clear_banned(js[-1], fast[2])
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
        with _held(self._auto):  # the walk's states are in no history: keep them
            return self._forced_walk_held()

    def _forced_walk_held(self) -> tuple[bytes, np.ndarray]:
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
        forced = self._forced_walk()[0]
        js = self._json
        if js is not None and forced:
            assert self._keys is not None
            pos: Pos | None = js[-1]
            for i in range(len(forced)):  # stop before a quote that would repeat a key
                pos = self._keys.feed(pos, forced[i : i + 1]) if pos is not None else None
                if pos is None:
                    return forced[:i]
        return forced

    def forced_tokens(self) -> list[int]:
        """Tokens for a prefix of :meth:`forced_bytes`, as the tokenizer itself would encode it.

        The tokenizer's own encoding of the forced text, less the last tokens where the bytes the
        grammar allows next could merge with them (see :mod:`constrain.forced`); longest match first
        over the vocabulary where the tokenizer cannot be asked. Each one is accepted here, in turn.
        Cached per automaton state (under a JSON Schema, cut before a token that would repeat a key).
        """
        if self.is_terminated():
            return []
        js = self._json
        if js is None:
            return forced_tokens_cached(self, self._compiled, self._history[-1], self._forced_walk)
        # The cache is per automaton state, shared by matchers whose objects hold different keys: it is
        # filled by the automaton alone, and the keys cut it here.
        view = _AutomatonView(self)
        tokens = forced_tokens_cached(view, self._compiled, self._history[-1], self._forced_walk)
        assert self._keys is not None
        pos: Pos | None = js[-1]
        for i, t in enumerate(tokens):
            pos = self._keys.feed_token(pos, t) if pos is not None else None
            if pos is None:
                return tokens[:i]
        return tokens

    def completion_bytes(self, max_states: int = MAX_COMPLETION_STATES) -> bytes:
        """The shortest bytes from here to a state where the output may end; empty where it may end
        already.

        A byte DFA is searched breadth-first (ties to the smallest byte; its states are finite). The
        Earley automaton's states are not, so it is searched by A* with the grammar's lower bound on the
        bytes left (:meth:`constrain.cfg.earley.EarleyAutomaton.completion_bound`, exact for nested
        brackets): the search follows the shortest path and visits about its length times the bytes
        live at each step, at any nesting depth. ``max_states`` only guards against a grammar whose
        bound is weak.

        Under a JSON Schema, where that completion would repeat a key, the search is run again over
        pairs of automaton and key-tracker states (:func:`_completion_with_keys`): a completion that
        repeats no key.

        Raises:
            ConstrainError: no completion exists, or none was found within ``max_states`` states.
        """
        if self.is_terminated():
            return b""
        data = self._completion(max_states)
        js = self._json
        if js is not None and data:
            assert self._keys is not None
            if self._keys.feed(js[-1], data) is None:
                with _held(self._auto):
                    data = _completion_with_keys(
                        self._auto, self._history[-1], self._keys, js[-1], max_states
                    )
        return data

    def _completion(self, max_states: int) -> bytes:
        with _held(self._auto):  # the search's states are in no history: keep them
            return self._completion_held(max_states)

    def _completion_held(self, max_states: int) -> bytes:
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


def _restore_matcher(compiled: CompiledGrammar, lists: dict[str, list[Any]]) -> GrammarMatcher:
    """A pickled :class:`GrammarMatcher` back: a fresh one over ``compiled`` with the pickled per-step
    lists (filled in place: the lists may be referenced from elsewhere)."""
    matcher = GrammarMatcher(compiled)
    for name, values in lists.items():
        current = getattr(matcher, name, None)
        if isinstance(current, list):
            current[:] = values
        else:
            setattr(matcher, name, list(values))
    return matcher


class _AutomatonView:
    """A matcher as :func:`~constrain.forced.forced_tokens_cached` sees it: the automaton alone (its
    cache is per automaton state, shared by matchers whose objects hold different keys)."""

    __slots__ = ("_matcher",)

    def __init__(self, matcher: GrammarMatcher) -> None:
        self._matcher = matcher

    def fork(self) -> GrammarMatcher:
        return self._matcher._fork(track_keys=False)

    def accept_token(self, token_id: int) -> bool:
        return self.fork().accept_token(token_id)


def _completion_with_keys(auto: Any, start: int, tables: KeyTables, pos: Pos, max_states: int) -> bytes:
    """The shortest completion from automaton state ``start`` and tracker state ``pos`` that repeats no
    key: A* (breadth-first without a bound) over pairs of automaton and tracker states.

    Inside a key only its ``n + 1`` smallest bytes to each next automaton state are tried (``n``: the
    keys the object has; at most ``n`` of them can lead on to a repeated key), elsewhere the smallest
    one (bytes to one state that leave the tracker's shape alike are alike), so the search stays about
    as small as the automaton's own.

    Raises:
        ConstrainError: none was found within ``max_states`` pairs.
    """
    from .cfg.earley import NO_COMPLETION

    bound = getattr(auto, "completion_bound", None)
    # nodes: (automaton state, tracker state, parent node, byte); the tracker states keep their frames
    # alive, so a frame's id() names it for the search
    nodes: list[tuple[int, Pos, int, int]] = [(start, pos, -1, -1)]
    seen = {(start, pos[0], pos[1], pos[2], id(pos[3]))}
    h0 = bound(start) if bound is not None else 0
    order = itertools.count()
    heap = [(h0, 0, next(order), 0)]
    goal = -1
    while heap and len(nodes) <= max_states:
        _, neg_g, _, idx = heapq.heappop(heap)
        s, here, _, _ = nodes[idx]
        if auto.is_final(s):
            goal = idx
            break
        frame = here[3]
        limit = len(frame.keys) + 1 if here[0] == KEY and frame is not None else 1
        taken: dict[tuple[int, int, bool, bool], int] = {}
        for b in auto.live_bytes(s).tolist():
            t = auto.step(s, bytes((b,)))
            if t < 0:
                continue
            nxt = tables.feed(here, bytes((b,)))
            if nxt is None:
                continue
            group = (t, nxt[0], nxt[1], nxt[3] is frame)
            if taken.get(group, 0) >= limit:
                continue
            sig = (t, nxt[0], nxt[1], nxt[2], id(nxt[3]))
            if sig in seen:
                continue
            h = bound(t) if bound is not None else 0
            if h >= NO_COMPLETION:
                continue
            taken[group] = taken.get(group, 0) + 1
            seen.add(sig)
            nodes.append((t, nxt, idx, b))
            heapq.heappush(heap, (-neg_g + 1 + h, neg_g - 1, next(order), len(nodes) - 1))
    if goal < 0:
        raise ConstrainError("no completion of the output that repeats no object key was found")
    path = bytearray()
    while nodes[goal][2] >= 0:
        path.append(nodes[goal][3])
        goal = nodes[goal][2]
    return bytes(reversed(path))


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
