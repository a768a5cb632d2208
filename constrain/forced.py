"""Forced tokens: the tokens a model is fed for a continuation the grammar forces (jump-forward).

Where the grammar allows one byte string only (``{"name": "``), the generation loop feeds the tokens
that spell it through the model in one pass. Which tokens matters: the model was trained on its
tokenizer's own segmentation, so a forced ``{"name": "`` should reach it as Llama-3's
``{"`` ``name`` ``":`` and not as whatever a greedy longest match over the vocabulary gives.

:func:`canonical_forced_tokens` encodes the forced text with the tokenizer itself (no BOS, no prefix
space; :meth:`TokenizerInfo.encode_fragment`) and returns the part of that encoding that stays the same
whatever follows. The tail can change: BPE may merge the last tokens with the bytes after them
(``Ġ"`` then ``John`` is canonical, but so could be ``Ġ"J`` ``ohn``; ``Ġ`` then ``42`` but not
``ĠĠ`` then ``"``). A merge across the end needs a vocabulary token that starts inside the forced
bytes and runs past their end, every intermediate BPE merge being a token itself; so the tokens up to
the first position where such a token starts (given the bytes the grammar allows next) are kept, the
rest is left for the model to choose. Where nothing may follow (only EOS) the whole encoding is kept.
The kept tokens are then checked: they spell a prefix of the forced bytes and are the tokenizer's own
encoding of that prefix; the matchers also check that each one is accepted in turn.

Where the tokenizer cannot be asked (:meth:`TokenizerInfo.from_vocab`, slow transformers tokenizers),
the forced bytes are not UTF-8 text, or its encoding does not spell them (a normaliser that changes the
text, a special token inside it), :func:`greedy_forced_tokens` is used instead: longest match first
over the vocabulary, the whole forced string.
"""

from __future__ import annotations

import bisect
import itertools
import weakref
from collections.abc import Callable, Collection
from typing import Any, Protocol

from .caches import register
from .masks.trie import TokenTrie
from .tokenizer_info import TokenizerInfo

__all__ = ["canonical_forced_tokens", "forced_tokens_cached", "greedy_forced_tokens"]


class _Matcher(Protocol):
    def fork(self) -> Any: ...

    def accept_token(self, token_id: int) -> bool: ...


def _utf8_complete_length(data: bytes) -> int:
    """The length of ``data`` without a trailing incomplete UTF-8 character (at most 3 bytes)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:  # ASCII: complete
            return n
        if b >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if back >= need else n - back
    return n  # only continuation bytes: not text anyway, the decode below refuses it


def _merge_point(info: TokenizerInfo, data: bytes, next_bytes: Collection[int]) -> int:
    """The first offset where a token could start inside ``data`` and run on into a continuation.

    A continuation starts with one of ``next_bytes``; ``len(data)`` when no token can cross the end.
    """
    table = info.sorted_token_bytes
    n = len(data)
    nexts = [bytes((int(b),)) for b in sorted(set(next_bytes))]
    for p in range(max(0, n - info.max_token_length + 1), n):
        tail = data[p:]
        i = bisect.bisect_right(table, tail)  # first token after ``tail`` itself
        if i == len(table) or not table[i].startswith(tail):
            continue  # no longer token starts with the tail
        for b in nexts:
            probe = tail + b
            j = bisect.bisect_left(table, probe, i)
            if j < len(table) and table[j].startswith(probe):
                return p
    return n


def _probe_chars(next_bytes: Collection[int]) -> list[str]:
    """One character starting with each of ``next_bytes`` (bytes that start no character give none)."""
    out = []
    for b in sorted({int(x) for x in next_bytes}):
        if b < 0x80:
            out.append(chr(b))
            continue
        width = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
        for second in (0x80, 0x90, 0xA0):  # E0 and F0 need a larger second byte, F4 a smaller one
            try:
                out.append(bytes((b, second, *([0x80] * (width - 2)))).decode("utf-8"))
                break
            except UnicodeDecodeError:
                continue
    return out


def canonical_forced_tokens(
    info: TokenizerInfo, forced: bytes, next_bytes: Collection[int]
) -> list[int] | None:
    """The tokenizer's own tokens for ``forced``, less a tail that could merge with what follows.

    Args:
        info: the tokenizer; its :meth:`~TokenizerInfo.encode_fragment` is used.
        forced: the bytes every continuation starts with.
        next_bytes: the bytes the grammar allows right after ``forced`` (empty: the output must end
            there, so the whole encoding is safe).

    Returns:
        Token ids that spell a prefix of ``forced`` and are the tokenizer's encoding of that prefix
        (possibly empty), or None where the tokenizer cannot say (no backend, ``forced`` is not UTF-8
        text, or the encoding does not spell it): use :func:`greedy_forced_tokens` then.
    """
    if not forced:
        return []
    n = _utf8_complete_length(forced)
    text_bytes = forced[:n]
    if n < len(forced):  # a character is cut at the end: the continuation completes it
        next_bytes = (forced[n],)
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ids = info.encode_fragment(text) if text else []
    if ids is None:
        return None
    special = info.special_ids
    if any(i in special for i in ids) or info.decode_bytes(ids) != text_bytes:
        return None
    if len(next_bytes) == 0:
        return ids
    probes = _probe_chars(next_bytes)
    if len(probes) == len(set(next_bytes)) and all(
        info.fragment_splits_at(text + char, len(text)) for char in probes
    ):
        cut = len(text_bytes)  # the pre-tokenizer cuts at the end whatever follows: no merge across
    else:
        cut = _merge_point(info, text_bytes, next_bytes)
    table = info.token_bytes
    ends = itertools.accumulate(len(table[t]) for t in ids)
    kept = [t for t, end in zip(ids, ends, strict=True) if end <= cut]
    # The pre-tokenizer may also split the end differently (Llama-3's ``\s+(?!\S)`` leaves the last
    # space of a run to the word after it), and a BPE merge after the end may win over one before it:
    # one character after the text, for each byte that may follow, shows both.
    for char in probes:
        if not kept:
            break
        after = info.encode_fragment(text + char) or []
        same = 0
        for a, b in zip(kept, after, strict=False):
            if a != b:
                break
            same += 1
        del kept[same:]
    # The kept tokens must be the tokenizer's own encoding of what they spell.
    while kept:
        try:
            prefix = info.decode_bytes(kept).decode("utf-8")
        except UnicodeDecodeError:  # a byte-level token holding part of a character
            kept.pop()
            continue
        if info.encode_fragment(prefix) == kept:
            break
        kept.pop()
    return kept


def greedy_forced_tokens(trie: TokenTrie, data: bytes) -> list[int]:
    """Tokens that spell ``data``, longest match first; stops before a tail no token covers exactly."""
    out: list[int] = []
    nodes = trie.nodes
    total = trie.num_nodes
    pos = 0
    while pos < len(data):
        best_len, best_tok = 0, -1
        n = depth = 0
        # Descend the trie along data[pos:], remembering the longest token seen.
        while n < total and pos + depth < len(data):
            byte, node_depth, skip, tok = (int(x) for x in nodes[n])
            if node_depth != depth:
                break
            if byte == data[pos + depth]:
                if tok != -1:
                    best_len = depth + 1
                    best_tok = tok if tok >= 0 else int(trie.sorted_ids[trie.dup_start[-2 - tok]])
                n += 1
                depth += 1
            else:
                n = skip
        if best_tok < 0:
            break
        out.append(best_tok)
        pos += best_len
    return out


# compiled grammar -> state -> forced tokens there
_cache: weakref.WeakKeyDictionary[Any, dict[int, tuple[int, ...]]] = weakref.WeakKeyDictionary()
register(_cache.clear)


def forced_tokens_cached(
    matcher: _Matcher,
    compiled: Any,
    state: int,
    walk: Callable[[], tuple[bytes, Collection[int]]],
) -> list[int]:
    """The forced tokens at ``state`` of ``compiled`` (``matcher`` stands there), cached per state.

    ``walk`` gives the forced bytes and the bytes allowed after them. Canonical tokens where the
    tokenizer can give them and the matcher accepts them in turn; greedy ones otherwise.
    """
    per_state = _cache.get(compiled)
    if per_state is None:
        per_state = _cache.setdefault(compiled, {})
        watch = getattr(compiled.automaton, "watch_states", None)
        if watch is not None:  # the Earley automaton reuses the ids it frees: forget theirs
            watch(per_state, compiled)
    hit = per_state.get(state)
    if hit is not None:
        return list(hit)
    forced, next_bytes = walk()
    tokens = canonical_forced_tokens(compiled.tokenizer_info, forced, next_bytes)
    if tokens is not None:
        twin = matcher.fork()
        if not all(twin.accept_token(t) for t in tokens):
            tokens = None
    if tokens is None:
        tokens = greedy_forced_tokens(compiled.trie, forced)
    per_state[state] = tuple(tokens)
    return tokens
