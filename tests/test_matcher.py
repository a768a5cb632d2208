"""GrammarMatcher: tiny hand-written vocabularies, properties against re.fullmatch, real tokenizers."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import constrain
from constrain import Grammar, GrammarMatcher, MatcherUsageError, TokenizerInfo

from .regex_family import regexes, texts
from .shared_data import hf_tokenizer, tokenizer_info

# A tiny vocabulary: id -> bytes. 0 is EOS, 1 is another special token.
TINY = [b"", b"", b"a", b"b", b"ab", b"ba", b"1", b"12", b"-", b"\xc3", b"\xa9", "é".encode(), b"aa"]
EOS, SPECIAL = 0, 1


def tiny_info() -> TokenizerInfo:
    return TokenizerInfo.from_vocab(TINY, eos_ids=[EOS], special_ids=[SPECIAL])


def allowed(m: GrammarMatcher) -> set[int]:
    return set(m.allowed_token_ids().tolist())


def test_tiny_vocab_per_step_allowed_sets() -> None:
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"a+b?"), tiny_info()))
    # start: tokens made only of a's, optionally ending in one b
    assert allowed(m) == {2, 4, 12}
    assert not m.can_end()
    assert m.accept_token(12)
    assert allowed(m) == {EOS, 2, 3, 4, 12}
    assert m.can_end()
    assert m.accept_token(3)
    assert allowed(m) == {EOS}
    assert not m.accept_token(2)  # rejected: state unchanged
    assert m.accept_token(EOS)
    assert m.is_terminated()
    assert not m.accept_token(EOS)
    assert allowed(m) == {EOS}


def test_tiny_vocab_partial_utf8_tokens() -> None:
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"é-[0-9]+"), tiny_info()))
    assert allowed(m) == {9, 11}  # the lead byte alone, or the whole character
    assert m.accept_token(9)
    assert allowed(m) == {10}
    assert m.accept_token(10)
    assert allowed(m) == {8}
    assert m.accept_token(8)
    assert allowed(m) == {6, 7}
    assert m.accept_token(7) and m.can_end()


def test_specials_and_unknown_ids_are_rejected() -> None:
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r".*"), tiny_info()))
    assert SPECIAL not in allowed(m)
    assert not m.accept_token(SPECIAL)
    assert not m.accept_token(len(TINY))
    assert not m.accept_token(-1)
    assert m.num_steps == 0


def test_rollback_and_fork() -> None:
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"(ab)+"), tiny_info()))
    assert m.accept_token(4) and m.accept_token(2) and m.accept_token(3)
    twin = m.fork()
    assert m.accept_token(EOS) and m.is_terminated()
    assert not twin.is_terminated()
    m.rollback(1)
    assert not m.is_terminated() and m.can_end()
    m.rollback(2)
    assert m.num_steps == 1
    assert allowed(m) == {EOS, 2, 4}  # after "ab": end, or "a" / "ab" again
    with pytest.raises(MatcherUsageError, match="cannot roll back 2"):
        m.rollback(2)
    assert twin.num_steps == 3 and twin.can_end()
    m.reset()
    assert m.num_steps == 0


def test_forced_continuation() -> None:
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r'\{"ab": (1|12)\}'), tiny_info()))
    assert m.forced_bytes() == b'{"ab": 1'  # both branches start with 1
    m2 = GrammarMatcher(constrain.compile(Grammar.from_regex(r"abab-(1|2)"), tiny_info()))
    assert m2.forced_bytes() == b"abab-"
    tokens = m2.forced_tokens()
    assert tokens == [4, 4, 8]
    for t in tokens:
        assert m2.accept_token(t)
    assert m2.forced_bytes() == b""


def test_bitmask_fill_formats() -> None:
    info = tiny_info()
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"a"), info))
    bitmask = constrain.allocate_token_bitmask(3, info.vocab_size)
    m.fill_next_token_bitmask(bitmask, 2)
    assert bitmask[2, 0].item() == 1 << 2 and bitmask[0, 0].item() == -1
    arr = np.full((1, 1), -1, dtype=np.int32)
    m.fill_next_token_bitmask(arr, 0)
    assert arr[0, 0] == 1 << 2
    strided = torch.full((2, 3), -1, dtype=torch.int32)[:, 1:2]
    m.fill_next_token_bitmask(strided, 1)
    assert strided[1, 0].item() == 1 << 2
    with pytest.raises(MatcherUsageError, match="int32"):
        m.fill_next_token_bitmask(torch.zeros((1, 1), dtype=torch.int64))
    with pytest.raises(MatcherUsageError, match="expected"):
        m.fill_next_token_bitmask(torch.zeros((1, 5), dtype=torch.int32))
    with pytest.raises(MatcherUsageError, match="row 3"):
        m.fill_next_token_bitmask(bitmask, 3)


def test_bitmask_fill_hot_path_follows_row_state_and_storage() -> None:
    info = tiny_info()
    m = GrammarMatcher(constrain.compile(Grammar.from_regex(r"ab"), info))
    bitmask = constrain.allocate_token_bitmask(2, info.vocab_size)
    first = m.next_token_mask().copy()
    m.fill_next_token_bitmask(bitmask, 1)  # validated: the next fill of row 1 takes the hot path
    bitmask.fill_(-1)
    m.fill_next_token_bitmask(bitmask, 1)
    assert bitmask[1].numpy().tolist() == first.tolist() and bitmask[0, 0].item() == -1
    m.fill_next_token_bitmask(bitmask, 0)  # another row: validated again
    assert bitmask[0].numpy().tolist() == first.tolist()
    assert m.accept_bytes(b"a")
    m.fill_next_token_bitmask(bitmask, 0)  # hot path, the new state's mask
    assert bitmask[0].numpy().tolist() == m.next_token_mask().tolist() != first.tolist()
    bitmask.set_(torch.full((2, bitmask.shape[1]), -1, dtype=torch.int32))  # new storage, same tensor
    m.fill_next_token_bitmask(bitmask, 0)
    assert bitmask[0].numpy().tolist() == m.next_token_mask().tolist() and bitmask[1, 0].item() == -1
    with pytest.raises(MatcherUsageError, match="row 2"):
        m.fill_next_token_bitmask(bitmask, 2)


def _walk(m: GrammarMatcher, ids: list[int]) -> bool:
    """Teacher-force ids; True when every id is accepted, allowed by the mask, and the end is reached."""
    for tid in ids:
        if tid not in allowed(m) or not m.accept_token(tid):
            return False
    return m.can_end()


def _greedy_tokenize(info: TokenizerInfo, data: bytes) -> list[int] | None:
    lookup = {b: i for i, b in enumerate(info.token_bytes) if b and i not in info.special_ids}
    out, pos = [], 0
    while pos < len(data):
        for end in range(len(data), pos, -1):
            if data[pos:end] in lookup:
                out.append(lookup[data[pos:end]])
                pos = end
                break
        else:
            return None
    return out


@settings(max_examples=200, deadline=None)
@given(regexes, st.lists(texts, min_size=5, max_size=5), st.randoms(use_true_random=False))
def test_token_walk_ends_accepting_iff_fullmatch(
    pattern: str, samples: list[str], rnd: random.Random
) -> None:
    """Random byte-level tokenisations of random strings: accepted and can end <=> re.fullmatch."""
    info = _property_vocab()
    compiled = constrain.compile(Grammar.from_regex(pattern), info)
    for text in samples:
        data = text.encode()
        ids, pos = [], 0
        while pos < len(data):  # random segmentation into tokens of 1-3 bytes
            step = rnd.randint(1, 3)
            piece = data[pos : pos + step]
            tid = _PROPERTY_INDEX.get(piece)
            if tid is None:
                piece = data[pos : pos + 1]
                tid = _PROPERTY_INDEX[piece]
            ids.append(tid)
            pos += len(piece)
        m = GrammarMatcher(compiled)
        # from_regex reads \d \w \s as ASCII by default, as re.ASCII does
        assert _walk(m, ids) == bool(re.fullmatch(pattern, text, re.ASCII)), (pattern, text)


_PROPERTY_INDEX: dict[bytes, int] = {}


def _property_vocab() -> TokenizerInfo:
    """All single bytes plus the 1-3 byte pieces of the property alphabet (id 0 = EOS)."""
    if not _PROPERTY_INDEX:
        pieces = {bytes([b]) for b in range(256)}
        for a in ["a", "b", "c", "1", "-", "é", "世", "😀", " ", "\n"]:
            enc = a.encode()
            pieces.update(enc[i:j] for i in range(len(enc)) for j in range(i + 1, min(len(enc), i + 3) + 1))
            for b in ["a", "b", "1", " "]:
                pieces.add((a + b).encode()[:3])
        for i, p in enumerate(sorted(pieces), start=1):
            _PROPERTY_INDEX[p] = i
    vocab = [b"", *sorted(_PROPERTY_INDEX, key=_PROPERTY_INDEX.__getitem__)]
    return _cached_vocab(tuple(vocab))


_VOCABS: dict[tuple[bytes, ...], TokenizerInfo] = {}


def _cached_vocab(vocab: tuple[bytes, ...]) -> TokenizerInfo:
    if vocab not in _VOCABS:
        _VOCABS[vocab] = TokenizerInfo.from_vocab(list(vocab), eos_ids=[0])
    return _VOCABS[vocab]


REALISTIC = [
    (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", ["2024-02-29", "1999-12-31"], ["2024-2-29"]),
    (r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}", ["jane.doe+tag@example.co.uk"], ["jane@", "a@b"]),
    (
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ["123e4567-e89b-12d3-a456-426614174000"],
        ["123e4567-e89b-12d3-a456-42661417400"],
    ),
    (r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", ["-12.5e+10", "0", "3.14159"], ["01", "1."]),
    (
        r'"([^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"',
        ['"he said \\"hi\\"\\n"', '"\\u00e9t\\u00E9"'],
        ['"\\x"'],
    ),
    (
        r"(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}",
        ["192.168.0.255"],
        ["256.1.1.1"],
    ),
    (r"[0-9]{2}:[0-9]{2}(:[0-9]{2})?", ["23:59:01", "07:30"], ["7:30"]),
    (r"https?://[a-z0-9.-]+(/[A-Za-z0-9._~%-]*)*", ["https://example.org/a/b_c.html"], ["ftp://x"]),
    (r"(?u)\w+( \w+)*", ["Ünïcödé wörds 世界 mixed"], ["trailing "]),  # Unicode \w: (?u)
    (r"[\u4e00-\u9fff]{2,8}", ["你好世界"], ["你"]),
    (r"(?i)(true|false|null)", ["TRUE", "False", "null"], ["nil"]),
    (r"#[0-9a-fA-F]{6}", ["#C0FFEE"], ["#C0FFE"]),
    (r"[A-Z][a-z]+ \(\+[0-9]{1,3}\) [0-9]{3}-[0-9]{4}", ["Alice (+44) 555-0199"], ["alice (+44) 555-0199"]),
]


@pytest.mark.parametrize("tok_name", ["llama3-128k", "mistral-32k", "gemma3-262k", "qwen3-151k"])
@pytest.mark.parametrize(("pattern", "good", "bad"), REALISTIC)
def test_real_tokenizers_realistic_regexes(
    tok_name: str, pattern: str, good: list[str], bad: list[str]
) -> None:
    info = tokenizer_info(tok_name)
    tok = hf_tokenizer(tok_name)
    compiled = constrain.compile(Grammar.from_regex(pattern), info)
    for text in good + bad:
        expected = bool(re.fullmatch(pattern, text))
        ids = tok.encode(text, add_special_tokens=False).ids
        data = info.decode_bytes(ids)
        if data != text.encode():  # SentencePiece prepends a space: fall back to our own segmentation
            ids = _greedy_tokenize(info, text.encode())
            assert ids is not None
        m = GrammarMatcher(compiled)
        ok = _walk(m, ids)
        assert ok == expected, (pattern, text)
        if ok:
            assert m.accept_token(info.eos_ids[0]) and m.is_terminated()


@pytest.mark.parametrize("tok_name", ["llama3-128k", "mistral-32k"])
def test_real_tokenizer_random_walks_match(tok_name: str) -> None:
    """Sample allowed tokens at random until EOS: every output fullmatches, every mask is exact."""
    info = tokenizer_info(tok_name)
    rnd = random.Random(7)
    for pattern, _, _ in REALISTIC:
        compiled = constrain.compile(Grammar.from_regex(pattern), info)
        for walk in range(3):
            m = GrammarMatcher(compiled)
            ids: list[int] = []
            for _step in range(40):
                choices = m.allowed_token_ids()
                assert choices.size, pattern
                # prefer ending once possible, so that walks finish
                eos_ok = [t for t in info.eos_ids if t in set(choices.tolist())]
                tid = eos_ok[0] if eos_ok and rnd.random() < 0.3 else int(rnd.choice(choices.tolist()))
                assert m.accept_token(tid)
                if m.is_terminated():
                    break
                ids.append(tid)
            if m.is_terminated():
                text = info.decode_bytes(ids).decode("utf-8")
                assert re.fullmatch(pattern, text), (pattern, text)
            if walk or m.is_terminated():
                continue
            # Spot-check the mask against a direct walk of every token's bytes.
            state = m.state
            mask_ids = set(m.allowed_token_ids().tolist()) - set(info.eos_ids)
            direct = {
                t
                for t, b in enumerate(info.token_bytes)
                if b and t not in info.special_ids and compiled.grammar.to_dfa().step(state, b) >= 0
            }
            assert mask_ids == direct
