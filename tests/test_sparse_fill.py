"""Sparse states' first masks written straight into the caller's bitmask row and kept as token ids
(``DFATokenMasks.fill_row``), against the direct oracle of test_mask_sharing: every token stepped
through the DFA with numpy."""

from __future__ import annotations

import numpy as np
import pytest

import constrain.masks.dfa_masks as dfa_masks_mod
from constrain import Grammar, GrammarMatcher, allocate_token_bitmask
from constrain.automata import DFA
from constrain.compiler import CompiledGrammar
from constrain.json_schema import serialize_instance
from constrain.masks import token_trie
from constrain.masks.dfa_masks import DFATokenMasks

from .shared_data import tokenizer_info
from .test_mask_sharing import direct_allowed

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "kind": {"enum": ["alpha", "beta", "gamma"]},
        "count": {"type": "integer", "minimum": 0},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2,6}$"}, "maxItems": 4},
        "note": {"type": "string"},
        "ok": {"type": "boolean"},
    },
    "required": ["id", "kind", "count"],
    "additionalProperties": False,
}
INSTANCE = {
    "id": "12345678-1234-4abc-8def-123456789012",
    "kind": "gamma",
    "count": 42,
    "ratio": -1.5e3,
    "tags": ["ab", "xyz"],
    "note": 'say "hi"',
    "ok": True,
}


def _row_ids(row: np.ndarray, vocab_size: int) -> set[int]:
    bits = np.unpackbits(row.view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits[:vocab_size]).tolist())


def _unpartitioned(info: object, monkeypatch: pytest.MonkeyPatch) -> CompiledGrammar:
    """A compiled grammar whose states are never partitioned into classes (as a large DFA's are not),
    with no mask computed ahead: every first visit of a sparse state takes ``fill_row``'s own path."""
    monkeypatch.setattr(dfa_masks_mod, "SYNC_PARTITION_MAX_STATES", 0)
    monkeypatch.setattr(dfa_masks_mod, "SYNC_PARTITION_MAX_WORK", 0)
    grammar = Grammar.from_json_schema(SCHEMA)
    dfa = grammar.to_automaton()
    assert isinstance(dfa, DFA)
    masks = DFATokenMasks(dfa, token_trie(info), info.eos_ids, background=False)  # type: ignore[attr-defined]
    return CompiledGrammar(grammar, info, masks)  # type: ignore[arg-type]


def _teacher_forced_rows(compiled: CompiledGrammar, ids: list[int]) -> list[tuple[int, set[int]]]:
    """(state, allowed ids of the filled row) at every step of ``ids`` and after the last, filling one
    bitmask (the matcher's hot path from the second fill on)."""
    info = compiled.tokenizer_info
    m = GrammarMatcher(compiled)
    bitmask = allocate_token_bitmask(1, info.vocab_size)
    rows = []
    for t in [*ids, None]:
        bitmask.fill_(-1)  # stale bits must not survive a fill
        m.fill_next_token_bitmask(bitmask)
        rows.append((m.state, _row_ids(bitmask[0].numpy(), info.vocab_size)))
        if t is not None:
            assert m.accept_token(t)
    return rows


@pytest.mark.parametrize("tok", ["llama3-128k", "mistral-32k"])
@pytest.mark.parametrize("max_ids", [256, 1])
def test_sparse_rows_match_the_oracle(tok: str, max_ids: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """First visits (walked into the row), second visits (ids written back, or the full row kept when
    a state has more than ``SPARSE_MAX_IDS`` tokens) and rows asked for later (``state_mask``) all equal
    the oracle, EOS included."""
    monkeypatch.setattr(dfa_masks_mod, "SPARSE_MAX_IDS", max_ids)
    info = tokenizer_info(tok)
    compiled = _unpartitioned(info, monkeypatch)
    auto = compiled.automaton
    assert isinstance(auto, DFATokenMasks)
    text = serialize_instance(INSTANCE, SCHEMA)
    ids = info.encode_fragment(text)
    assert ids is not None and info.decode_bytes(ids) == text.encode()

    first = _teacher_forced_rows(compiled, ids)
    for state, got in first:
        assert got == direct_allowed(compiled, state), state
    if max_ids > 1:
        assert auto._sparse, "no state took the sparse path"
        assert all(len(v) <= max_ids for v in auto._sparse.values())
    assert auto.num_cached_states == len(auto._masks) + len(auto._sparse)

    assert _teacher_forced_rows(compiled, ids) == first  # second visits: from the ids or rows kept
    sparse_states = list(auto._sparse)
    for state in sparse_states:  # a row asked for: built from the ids, then kept as a row
        row = compiled.state_mask(state)
        assert _row_ids(row, info.vocab_size) == direct_allowed(compiled, state)
        assert not row.flags.writeable
        assert state not in auto._sparse and state in auto._masks
    assert _teacher_forced_rows(compiled, ids) == first
