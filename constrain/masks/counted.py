"""Token masks of a DFA whose long strings are counted beside it (:mod:`constrain.automata.counted`).

:class:`CountedStringMasks` runs the automaton without its count marks (:class:`DFATokenMasks` or the
stack engine does the masks) and keeps, inside a counted string, how many code points it may still
take and where the last byte left the current code point (:data:`SUBSTATES`), in the bits of its
state ints above the inner engine's.

A token holds at most a few dozen code points, so while more remain than the longest token holds the
DFA's mask is the exact one (the DFA reads the string as unbounded). Nearer the bound, the mask is the
DFA's with the tokens that would start too many code points before the closing quote taken out: one
precomputed count per token and starting substate (:func:`token_code_points`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numba
import numpy as np

from ..automata.counted import CountedDFA
from .dfa_masks import DFATokenMasks
from .trie import TokenTrie

if TYPE_CHECKING:
    from ..json_schema.recursion import CountedPushdown
    from .pushdown import PushdownTokenMasks

SUBSTATES = 9
"""Where a byte of JSON string content leaves its code point: 0 between code points, 1 after a
backslash, 2-5 with 4-1 hex digits of ``\\uXXXX`` to come, 6-8 with 1-3 UTF-8 continuation bytes to come."""
_QUOTE = 0x22
_ROWS_KEPT = 256
"""Restricted rows :meth:`CountedStringMasks.mask` keeps per grammar (4 MB with llama3's 128k tokens;
the matcher's fill path ANDs into its own row and keeps none). Near a bound there is one per state and
code point left, up to the longest token's (128 code points in llama3)."""


def _substate_tables() -> tuple[np.ndarray, np.ndarray]:
    """``start[b]``: the substate after byte ``b`` begins a code point; ``after[sub, b]``: the substate
    after byte ``b`` inside one (``sub`` > 0)."""
    start = np.zeros(256, dtype=np.int64)
    start[0x5C] = 1
    start[0xC0:0xE0] = 6
    start[0xE0:0xF0] = 7
    start[0xF0:] = 8
    after = np.zeros((SUBSTATES, 256), dtype=np.int64)
    after[1, ord("u")] = 2
    after[2], after[3], after[4], after[5] = 3, 4, 5, 0
    after[6], after[7], after[8] = 0, 6, 7
    return start, after


START_SUB, AFTER_SUB = _substate_tables()
_START_SUB = START_SUB.tolist()
_AFTER_SUB = AFTER_SUB.tolist()


@numba.njit(cache=True, nogil=True)
def _count_code_points(
    tok_off: np.ndarray,
    tok_bytes: np.ndarray,
    sorted_ids: np.ndarray,
    start: np.ndarray,
    after: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - numba
    """``out[sub, id]``: the code points token ``id`` begins from substate ``sub`` before it closes the
    string (an unescaped quote between code points) or ends."""
    for i in range(sorted_ids.shape[0]):
        t = sorted_ids[i]
        for sub0 in range(out.shape[0]):
            sub = sub0
            count = 0
            for j in range(tok_off[i], tok_off[i + 1]):
                b = tok_bytes[j]
                if sub == 0:
                    if b == 0x22:
                        break
                    count += 1
                    sub = start[b]
                else:
                    sub = after[sub, b]
            out[sub0, t] = count


_CODE_POINTS: weakref.WeakKeyDictionary[TokenTrie, np.ndarray] = weakref.WeakKeyDictionary()


def token_code_points(trie: TokenTrie) -> np.ndarray:
    """``int32[SUBSTATES, num_words * 32]``: per starting substate, the code points each token begins
    inside a JSON string before closing it (0 for ids outside the trie: special tokens). Per trie, cached."""
    got = _CODE_POINTS.get(trie)
    if got is None:
        s = trie.summary
        got = np.zeros((SUBSTATES, trie.num_words * 32), dtype=np.int32)
        _count_code_points(s.tok_off, s.tok_bytes, trie.sorted_ids, START_SUB, AFTER_SUB, got)
        got.setflags(write=False)
        _CODE_POINTS[trie] = got
    return got


class CountedStringMasks:
    """The :class:`~constrain.compiler.TokenAutomaton` of a :class:`CountedDFA` or a
    :class:`~constrain.json_schema.recursion.CountedPushdown` (see the module docstring).

    ``inner`` is the engine of the automaton without marks (:class:`DFATokenMasks` or
    :class:`~constrain.masks.pushdown.PushdownTokenMasks`); a state is ``inner``'s state in the low 32
    bits and, inside a counted string, ``1 + substate + 9 * code points remaining`` above them (plain
    arithmetic: a pickled matcher's states mean the same after loading)."""

    def __init__(
        self,
        counted: CountedDFA | CountedPushdown,
        trie: TokenTrie,
        eos_ids: Iterable[int],
        background: bool | None = None,
    ) -> None:
        self.counted = counted
        self.inner: DFATokenMasks | PushdownTokenMasks
        if isinstance(counted, CountedDFA):
            self.inner = DFATokenMasks(counted.dfa, trie, eos_ids, background)
            # A flat int32 memoryview reads transitions at ~30 ns each (as DFATokenMasks.step does).
            self._trans = counted.dfa.transitions.data.cast("B").cast("i")
            self._read = None
        else:
            from .pushdown import PushdownTokenMasks

            self.inner = PushdownTokenMasks(counted.pushdown, trie, eos_ids)
            self._trans = memoryview(b"").cast("i")  # unused: the stack engine reads each byte
            self._read = counted.pushdown.step_read
        self.start = self.inner.start
        self.trie = trie
        self._entries = dict(zip(counted.entry_keys.tolist(), counted.entry_bounds.tolist(), strict=True))
        counts = token_code_points(trie)
        self._counts = counts
        self._longest = counts.max(axis=1).tolist()
        self._allowed: dict[tuple[int, int], np.ndarray] = {}  # (sub, remaining) -> int32 row
        self._rows: dict[int, np.ndarray] = {}  # restricted masks by state

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words."""
        return self.inner.num_words

    @property
    def num_cached_states(self) -> int:
        """States of the inner engine whose masks are at hand."""
        return self.inner.num_cached_states

    def eos_only_mask(self) -> np.ndarray:
        """The mask that allows only the EOS tokens."""
        return self.inner.eos_only_mask()

    def precompute_ahead(self) -> int:
        """The inner engine's masks nearest the start (its ``precompute_ahead``)."""
        return self.inner.precompute_ahead()

    def split(self, state: int) -> tuple[int, int, int]:
        """``(inner state, code points remaining or -1 outside a counted string, substate)``."""
        code = state >> 32
        if not code:
            return state, -1, 0
        remaining, sub = divmod(code - 1, SUBSTATES)
        return state & 0xFFFFFFFF, remaining, sub

    def step(self, state: int, data: bytes) -> int:
        """The state after ``data`` from ``state``, or -1 where a byte is rejected (by the automaton, or
        one code point past a counted string's bound)."""
        s, remaining, sub = self.split(state)
        trans, read, entries = self._trans, self._read, self._entries
        for b in data:
            if read is None:
                t = trans[(s << 8) | b]
                g = s
            else:
                t, g = read(s, b)
            if t < 0:
                return -1
            if remaining < 0:
                bound = entries.get((g << 8) | b)
                if bound is not None:
                    remaining, sub = bound, 0
            elif sub == 0:
                if b == _QUOTE:
                    remaining = -1  # the closing quote
                elif remaining == 0:
                    return -1
                else:
                    remaining -= 1
                    sub = _START_SUB[b]
            else:
                sub = _AFTER_SUB[sub][b]
            s = t
        return s if remaining < 0 else s | ((1 + sub + SUBSTATES * remaining) << 32)

    def is_final(self, state: int) -> bool:
        """Whether the input may end at ``state``."""
        return self.inner.is_final(state & 0xFFFFFFFF)

    def live_bytes(self, state: int) -> np.ndarray:
        """The bytes that may follow at ``state``, ascending."""
        s, remaining, sub = self.split(state)
        live = self.inner.live_bytes(s)
        if remaining == 0 and sub == 0:
            return live[live == _QUOTE]  # no code point left to begin: only the closing quote
        return live

    def mask(self, state: int) -> np.ndarray:
        """The read-only int32 bitmask row of ``state``."""
        s, remaining, sub = self.split(state)
        base = self.inner.mask(s)
        if remaining < 0 or remaining >= self._longest[sub]:
            return base
        row = self._rows.get(state)
        if row is None:
            row = base & self._allowed_row(sub, remaining)
            row.setflags(write=False)
            if len(self._rows) >= _ROWS_KEPT:
                self._rows.clear()
            row = self._rows.setdefault(state, row)
        return row

    def fill_row(self, state: int, out: np.ndarray) -> None:
        """Write the mask of ``state`` into ``out`` (a writable, contiguous int32 row)."""
        s, remaining, sub = self.split(state)
        self.inner.fill_row(s, out)
        if remaining >= 0 and remaining < self._longest[sub]:
            np.bitwise_and(out, self._allowed_row(sub, remaining), out=out)

    def _allowed_row(self, sub: int, remaining: int) -> np.ndarray:
        """int32 bitmask of the tokens that begin at most ``remaining`` code points from ``sub``."""
        key = (sub, remaining)
        row = self._allowed.get(key)
        if row is None:
            bits = np.packbits(self._counts[sub] <= remaining, bitorder="little")
            row = bits.view(np.int32).copy()
            row.setflags(write=False)
            row = self._allowed.setdefault(key, row)
        return row
