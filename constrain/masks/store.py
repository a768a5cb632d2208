"""What the two engines' token masks share: the vocabulary trie, the cache of per-state masks and the
EOS bits (:class:`~constrain.masks.dfa_masks.DFATokenMasks` and
:class:`~constrain.cfg.token_masks.EarleyTokenMasks` build on it)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .trie import TokenTrie


class MaskStore:
    """The per-state mask cache of one compiled grammar, over one tokenizer's trie.

    ``_masks`` maps a state to its read-only int32 row; racing threads compute the same row and the
    first one stored is kept (``dict.setdefault``). ``_eos_bits`` (uint32 words) and ``_eos_words``
    ((word, bit) per EOS id) are ORed into the masks of states where the input may end.
    """

    def __init__(self, trie: TokenTrie, eos_ids: Iterable[int]) -> None:
        self.trie = trie
        self._masks: dict[int, np.ndarray] = {}
        eos = np.zeros(trie.num_words, dtype=np.uint32)
        words: list[tuple[int, int]] = []
        eos_ids = sorted(set(eos_ids))
        self._eos_ids = np.array(eos_ids, dtype=np.int64)
        for tid in eos_ids:
            eos[tid >> 5] |= np.uint32(1 << (tid & 31))
            words.append((tid >> 5, 1 << (tid & 31)))
        eos.setflags(write=False)
        self._eos_bits = eos
        self._eos_words = tuple(words)

    @property
    def num_words(self) -> int:
        """Width of one bitmask row in int32 words: ``ceil(vocab_size / 32)``."""
        return self.trie.num_words

    @property
    def num_cached_states(self) -> int:
        """How many states have their token mask at hand so far."""
        return len(self._masks)

    def fill_row(self, state: int, out: np.ndarray) -> None:
        """Write the mask of ``state`` into ``out`` (a writable, contiguous int32 row)."""
        out[...] = self.mask(state)

    def mask(self, state: int) -> np.ndarray:  # pragma: no cover - each engine defines it
        """The read-only int32 bitmask row of ``state``."""
        raise NotImplementedError

    def eos_only_mask(self) -> np.ndarray:
        """The mask that allows only the EOS tokens (used once a matcher has terminated)."""
        return self._eos_bits.view(np.int32)
