"""Token masks: the vocabulary trie, the walks that find the tokens a DFA state allows, the thread that
computes masks ahead, and the masks of a byte DFA built on them.

``trie`` (:class:`TokenTrie`, one per tokenizer: :func:`token_trie`) -> ``walks`` (numba kernels over
one handle on the trie's arrays) -> ``dfa_masks`` (per-state masks, shared and cached); ``sharing``
says which states may share or reuse a mask; ``worker`` fills masks in the background.
"""

from __future__ import annotations

from .trie import TokenTrie, TrieSummary, clear_token_tries, token_trie
from .walks import state_chains
from .worker import MASK_WORKER, BackgroundWorker

__all__ = [
    "MASK_WORKER",
    "BackgroundWorker",
    "TokenTrie",
    "TrieSummary",
    "clear_token_tries",
    "state_chains",
    "token_trie",
]
