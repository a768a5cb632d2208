"""Distinct object keys in JSON output: a byte-level structure tracker beside the grammar's automaton.

A schema's automaton cannot remember which keys an object already has (``{"x":1,"x":2}`` is in the
language of ``{"type": "object", "minProperties": 2}``), so :class:`~constrain.GrammarMatcher` runs this
tracker over the bytes of every token it accepts when its grammar came from a JSON Schema. A token that
closes a key (its unescaped closing quote) equal to one the same object already has is rejected, and
cleared from the mask; keys compare decoded, as ``json.loads`` does (``"\\u0061"`` equals ``"a"``).

The tracker's state (:data:`Pos`, a tuple) is immutable: the matcher keeps one per accepted step
beside its automaton states, so rollback and fork cost nothing more. Only the structure is tracked:
the open containers, each object's decoded keys, whether the next string of an object is a key, and
the raw bytes of the key being written; the automaton checks everything else (its language is JSON,
so the tracker may assume the bytes it is fed are).

The mask has work to do only where a token could close a repeated key (the state's ``watch``):

* inside a key, where a token's text up to its first unescaped quote would complete a key the object
  has. :class:`KeyTables` maps each quote-holding token's decoded text before that quote to the token;
  when an object gets a key, each of the key's heads (``"", "n", "na", ...``) whose rest is such a text
  gets those tokens (:attr:`Frame.closers`), so a step costs one lookup of the key written so far, made
  when its token is accepted, and the mask clears the tokens found. Where the key written so far ends
  inside an escape or a UTF-8 character, the few quote-holding tokens the automaton allows are
  simulated instead;
* tokens that open and close a whole key inside themselves (``"id":``): indexed by that key, they join
  an object's ``danger`` set when it gets that key, and are simulated while allowed.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from .caches import register
from .tokenizer_info import TokenizerInfo

__all__ = [
    "KEY",
    "NO_TOKENS",
    "OUT",
    "OUT_KEY",
    "START",
    "VAL",
    "Frame",
    "KeyTables",
    "Pos",
    "TokenSet",
    "decode_key",
    "key_tables",
]

OUT, KEY, VAL, OUT_KEY = 0, 1, 2, 3
"""Tracker modes: outside strings, inside an object key, inside a string value, outside strings where
the next string is a key (after ``{`` or an object's ``,``)."""

_QUOTE, _BSLASH, _LBRACE, _RBRACE, _LBRACK, _RBRACK, _COMMA, _COLON = b'"\\{}[],:'
_STRUCTURAL = b'"\\{}[],'  # outside strings, the bytes that can change a tracker state (":" cannot)
_EMPTY: frozenset[int] = frozenset()
_NO_KEYS: frozenset[str] = frozenset()
_TEXT_SPECIAL = b'"\\'  # the bytes that matter inside a string


def decode_key(raw: bytes) -> str | None:
    """The text of a JSON string's raw content (between its quotes), as ``json.loads`` decodes it;
    None where it is not valid (the automaton never lets such a key close)."""
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        text = json.loads(b'"' + raw + b'"', strict=False)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        return None
    return text if isinstance(text, str) else None


class TokenSet:
    """Token ids, with their bits grouped by mask word so that a mask row clears them in one numpy
    operation (hundreds of ids in a few µs, not one Python step each)."""

    __slots__ = ("ids", "keep", "words")

    def __init__(self, ids: tuple[int, ...]) -> None:
        self.ids = ids
        a = np.asarray(ids, dtype=np.int64)
        words, where = np.unique(a >> 5, return_inverse=True)
        bits = np.zeros(words.shape[0], dtype=np.uint32)
        np.bitwise_or.at(bits, where, np.left_shift(np.uint32(1), (a & 31).astype(np.uint32)))
        self.words = words
        self.keep = ~bits

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: TokenSet) -> TokenSet:
        return other if not self.ids else self if not other.ids else TokenSet(self.ids + other.ids)

    def clear(self, row: np.ndarray) -> None:
        """Clear these tokens' bits in the int32 mask ``row``."""
        words = row.view(np.uint32)
        words[self.words] &= self.keep


NO_TOKENS = TokenSet(())


class Frame:
    """One open container (immutable). An object carries its decoded keys and ``closers``: for each
    text a key being written may have so far (decoded) after which a token can complete one of the
    keys, those tokens. Every frame carries ``danger``: the tokens that could close one of its object's
    keys (or an enclosing object's) inside themselves, simulated at each mask while allowed."""

    __slots__ = ("closers", "danger", "is_obj", "keys", "parent")

    def __init__(
        self,
        is_obj: bool,
        keys: frozenset[str],
        closers: dict[str, TokenSet],
        danger: frozenset[int],
        parent: Frame | None,
    ) -> None:
        self.is_obj = is_obj
        self.keys = keys
        self.closers = closers
        self.danger = danger
        self.parent = parent

    def with_key(self, key: str, tables: KeyTables) -> Frame:
        """This object with ``key`` added (its closers: a lookup per head whose rest may be a token's
        text before a quote)."""
        closers = dict(self.closers)
        close = tables.close
        for i in range(max(0, len(key) - tables.close_longest), len(key) + 1):
            hit = close.get(key[i:])
            if hit:
                head = key[:i]
                closers[head] = closers.get(head, NO_TOKENS) + hit
        inside = tables.internal.get(key)
        danger = self.danger | inside if inside else self.danger
        return Frame(True, self.keys | {key}, closers, danger, self.parent)


Pos = tuple[int, bool, bytes, "Frame | None", bool, "TokenSet | None"]
"""The tracker's state after some bytes (immutable; a plain tuple, cheap to make once per token):
``(mode, esc, raw, frame, watch, closing)``: the mode (:data:`OUT`, :data:`OUT_KEY`, :data:`KEY`,
:data:`VAL`), whether the previous byte was an escaping backslash, the raw bytes of the key being
written, the innermost open container (None at the top level), whether the mask has work to do here
(a token could close a repeated key), and inside a key, the tokens that would complete a key its
object has (None where the key written so far ends inside an escape or a UTF-8 character: the
quote-holding tokens the automaton allows are simulated then)."""

START: Pos = (OUT, False, b"", None, False, NO_TOKENS)
"""The state before any output."""


def _key_prefix(raw: bytes) -> str | None:
    """The decoded text of a key written so far, or None where it ends inside an escape, a UTF-8
    character or after a high surrogate escape (a token's text cannot be decoded apart from it)."""
    if b"\\" not in raw and (not raw or raw[-1] < 0x80):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return decode_key(raw) if _is_clean(raw) else None


def _pos(mode: int, esc: bool, raw: bytes, frame: Frame | None) -> Pos:
    """A tracker state, with what the mask has to do there."""
    if frame is None:
        return (mode, esc, raw, None, False, NO_TOKENS)
    if mode != KEY or not frame.keys:
        return (mode, esc, raw, frame, bool(frame.danger), NO_TOKENS)
    prefix = None if esc else _key_prefix(raw)
    if prefix is None:
        return (mode, esc, raw, frame, True, None)
    closing = frame.closers.get(prefix, NO_TOKENS)
    return (mode, esc, raw, frame, bool(closing.ids or frame.danger), closing)


def _is_clean(raw: bytes) -> bool:
    """True where ``raw`` (a key's content so far) ends on a boundary its continuation decodes apart
    from: no escape, UTF-8 character or surrogate pair is cut at the end."""
    i = raw.rfind(b"\\")
    if i >= 0:
        j = i
        while j > 0 and raw[j - 1] == _BSLASH:
            j -= 1
        if (i - j) % 2 == 0:  # raw[i] starts an escape
            tail = raw[i + 1 :]
            if not tail:
                return False
            if tail[0] == 0x75:  # \uXXXX
                if len(tail) < 5:
                    return False
                if len(tail) == 5:
                    try:
                        code = int(tail[1:5], 16)
                    except ValueError:
                        return False
                    if 0xD800 <= code <= 0xDBFF:  # a high surrogate: \uDCxx may follow and pair with it
                        return False
    n = len(raw)
    for back in range(1, min(4, n) + 1):
        b = raw[n - back]
        if b < 0x80:
            return True
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return back >= need
    return True


class KeyTables:
    """Per-tokenizer tables of the tracker (built once, about 0.1 s for a 128k vocabulary).

    Attributes:
        token_bytes: the tokenizer's token bytes.
        plain: per token id, 1 where the token has none of ``"\\{}[],`` (outside strings, it changes
            nothing).
        textual: per token id, 1 where the token has neither ``"`` nor ``\\`` (inside a string, it only
            adds to the text).
        close: the decoded text before a token's first unescaped quote (read inside a string) -> the
            tokens with that text.
        close_longest: the longest such text, in characters.
        quote_ids: the tokens that hold a quote, ascending.
        close_after_backslash: as ``close``, for tokens read right after a backslash (their first byte
            ends the escape): the decoded text of the backslash and the token before its first unescaped
            quote -> the tokens.
        internal: a string a token opens and closes inside itself (under any reading of its start) ->
            those tokens.
        multi: tokens that might close two keys of one object by themselves (simulated in every object).
    """

    def __init__(self, info: TokenizerInfo) -> None:
        tb = info.token_bytes
        self.token_bytes = tb
        nonempty, held = _holding(tb, (_STRUCTURAL, _TEXT_SPECIAL, b'"'))
        self.plain = (nonempty & ~held[0]).astype(np.uint8).tobytes()
        self.textual = (nonempty & ~held[1]).astype(np.uint8).tobytes()
        close: defaultdict[str, list[int]] = defaultdict(list)
        internal: defaultdict[str, set[int]] = defaultdict(set)
        multi: set[int] = set()
        quote_ids = np.flatnonzero(held[2]).tolist()
        after_backslash: defaultdict[str, list[int]] = defaultdict(list)
        for tid in quote_ids:
            data = tb[tid]
            first = _first_close(data[1:])
            if first >= 0:
                text = decode_key(b"\\" + data[: first + 1])
                if text is not None:
                    after_backslash[text].append(tid)
            first = _first_close(data)
            if first >= 0:
                text = decode_key(data[:first])
                if text is not None:
                    close[text].append(tid)
            if data.count(b'"') >= 2:
                inside, two = analyze_token(data)
                for text in inside:
                    internal[text].add(tid)
                if two:
                    multi.add(tid)
        self.close: dict[str, TokenSet] = {k: TokenSet(tuple(v)) for k, v in close.items()}
        self.close_longest = max(map(len, self.close), default=0)
        self.internal: dict[str, frozenset[int]] = {k: frozenset(v) for k, v in internal.items()}
        self.multi: frozenset[int] = frozenset(multi)
        self.quote_ids = np.asarray(quote_ids, dtype=np.int64)
        self.close_after_backslash = {k: TokenSet(tuple(v)) for k, v in after_backslash.items()}

    # ---- stepping -----------------------------------------------------------------------------------
    def feed(self, pos: Pos, data: bytes) -> Pos | None:
        """The state after ``data``, or None where ``data`` closes a key its object already has."""
        mode, esc, raw, frame = pos[0], pos[1], pos[2], pos[3]
        key_start = 0
        for i, b in enumerate(data):
            if mode in (OUT, OUT_KEY):
                if b == _QUOTE:
                    if mode == OUT_KEY:
                        mode, raw, key_start = KEY, b"", i + 1
                    else:
                        mode = VAL
                elif b == _LBRACE:
                    inherited = frame.danger if frame is not None else _EMPTY
                    frame = Frame(True, _NO_KEYS, {}, inherited | self.multi, frame)
                    mode = OUT_KEY
                elif b == _LBRACK:
                    frame = Frame(False, _NO_KEYS, {}, frame.danger if frame is not None else _EMPTY, frame)
                    mode = OUT
                elif b in (_RBRACE, _RBRACK):
                    if frame is not None:
                        frame = frame.parent
                    mode = OUT
                elif b == _COMMA:
                    mode = OUT_KEY if frame is not None and frame.is_obj else OUT
            elif esc:
                esc = False
            elif b == _BSLASH:
                esc = True
            elif b == _QUOTE:
                if mode == KEY and frame is not None:
                    key = decode_key(raw + data[key_start:i])
                    if key is not None:
                        if key in frame.keys:
                            return None
                        frame = frame.with_key(key, self)
                mode = OUT
        return _pos(mode, esc, raw + data[key_start:] if mode == KEY else b"", frame)

    def feed_token(self, pos: Pos, token_id: int) -> Pos | None:
        """:meth:`feed` for one token, with fast paths for tokens that change no structure."""
        mode, esc = pos[0], pos[1]
        if not esc:
            if mode == KEY:
                if self.textual[token_id]:
                    return _pos(KEY, False, pos[2] + self.token_bytes[token_id], pos[3])
            elif self.textual[token_id] if mode == VAL else self.plain[token_id]:
                return pos
        return self.feed(pos, self.token_bytes[token_id])

    # ---- masks --------------------------------------------------------------------------------------
    def banned(self, pos: Pos, mask: np.ndarray) -> list[int]:
        """The tokens that would close a repeated key from ``pos`` (each one is rejected by
        :meth:`feed`, and every token :meth:`feed` rejects that ``mask`` allows is here). ``mask`` is the
        automaton's mask there: only tokens it allows are simulated. Empty where ``pos`` does not watch."""
        closing, simulated = self._work(pos, mask)
        return [*closing.ids, *simulated]

    def _work(self, pos: Pos, mask: np.ndarray) -> tuple[TokenSet, list[int]]:
        """The tokens that complete a present key from a clean key head, and those found by simulation."""
        frame, watch, closing = pos[3], pos[4], pos[5]
        if not watch or frame is None:
            return NO_TOKENS, []
        simulated: list[int] = []
        if closing is None:
            closing = self._after_backslash(pos, frame) if pos[1] else None
            if closing is None:  # the key ends inside an escape or a character: simulate
                simulated = self._simulate(pos, _allowed(self.quote_ids, mask))
                closing = NO_TOKENS
        if frame.danger:
            ids = np.fromiter(frame.danger, dtype=np.int64, count=len(frame.danger))
            simulated.extend(self._simulate(pos, _allowed(ids, mask)))
        return closing, simulated

    def _after_backslash(self, pos: Pos, frame: Frame) -> TokenSet | None:
        """Where the key written so far is a clean head and a backslash: the tokens that complete a
        present key (one lookup per present key); None where the head is not clean."""
        prefix = _key_prefix(pos[2][:-1])
        if prefix is None:
            return None
        out = NO_TOKENS
        n = len(prefix)
        for key in frame.keys:
            if key.startswith(prefix):
                hit = self.close_after_backslash.get(key[n:])
                if hit is not None:
                    out = out + hit
        return out

    def _simulate(self, pos: Pos, ids: Iterable[int]) -> list[int]:
        tb = self.token_bytes
        return [t for t in ids if self.feed(pos, tb[t]) is None]

    def clear_banned(self, pos: Pos, target: np.ndarray) -> None:
        """Clear in ``target`` (an int32 mask row holding the automaton's mask) the tokens
        :meth:`banned` names."""
        closing, simulated = self._work(pos, target)
        closing.clear(target)
        if simulated:
            _clear(target, simulated)

    def masked(self, pos: Pos, mask: np.ndarray) -> np.ndarray:
        """``mask`` less the tokens :meth:`banned` names (``mask`` itself where there are none)."""
        closing, simulated = self._work(pos, mask)
        if not closing.ids and not simulated:
            return mask
        out = mask.copy()
        closing.clear(out)
        _clear(out, simulated)
        return out


def _clear(row: np.ndarray, ids: list[int]) -> None:
    """Clear the bits of ``ids`` in the int32 mask ``row`` (Python ints: numpy scalars cost ~1 µs each)."""
    words = row.view(np.uint32)
    for t in ids:
        w = t >> 5
        words[w] = int(words[w]) & ~(1 << (t & 31))


def _allowed(ids: np.ndarray, mask: np.ndarray) -> list[int]:
    """The ids whose bit is set in the int32 ``mask``."""
    if ids.shape[0] == 0:
        return []
    words = mask.view(np.uint32)
    inside = ids[(ids >> 5) < words.shape[0]]
    on = (words[inside >> 5] >> (inside & 31).astype(np.uint32)) & 1
    return inside[on != 0].tolist()


# ---- token analysis (once per tokenizer) ---------------------------------------------------------------
def _holding(tb: tuple[bytes, ...], sets: tuple[bytes, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per token, whether it has bytes, and for each of ``sets`` whether it holds any of its bytes
    (vectorised over the vocabulary: tens of ms for 128k tokens, not the seconds of a Python loop)."""
    lengths = np.fromiter(map(len, tb), dtype=np.int64, count=len(tb))
    nonempty = lengths > 0
    lut = np.zeros(256, dtype=np.uint8)
    for bit, which in enumerate(sets):
        lut[np.frombuffer(which, dtype=np.uint8)] |= np.uint8(1 << bit)
    flags = lut[np.frombuffer(b"".join(tb), dtype=np.uint8)]
    starts = (np.cumsum(lengths) - lengths)[nonempty]  # empty tokens hold no bytes: skip them
    per_token = np.zeros(len(tb), dtype=np.uint8)
    if starts.shape[0]:
        per_token[nonempty] = np.bitwise_or.reduceat(flags, starts)
    return nonempty, [(per_token >> bit & 1).astype(bool) for bit in range(len(sets))]


def _first_close(data: bytes) -> int:
    """The offset of the first unescaped quote in ``data`` read inside a string (-1: none)."""
    esc = False
    for i, b in enumerate(data):
        if esc:
            esc = False
        elif b == _BSLASH:
            esc = True
        elif b == _QUOTE:
            return i
    return -1


# The abstract reading of a token: each container is [kind, where, keys closed inside the token].
_OBJ, _ARR, _ROOT = 0, 1, 2
_EK, _AK, _EV, _AV = 0, 1, 2, 3  # expects a key (or "}"), after a key, expects a value, after a value
_WS = frozenset(b" \t\r\n")


def _readings() -> list[tuple[bool, bool, bool, tuple[int, int]]]:
    """Every way a token can start: (inside a string, after a backslash, that string is a key, the
    innermost container's (kind, where))."""
    out: list[tuple[bool, bool, bool, tuple[int, int]]] = []
    for esc in (False, True):
        out.append((True, esc, True, (_OBJ, _EK)))
        out.extend((True, esc, False, (kind, _EV)) for kind in (_OBJ, _ARR, _ROOT))
    where = {_OBJ: (_EK, _AK, _EV, _AV), _ARR: (_EV, _AV), _ROOT: (_EV, _AV)}
    out.extend((False, False, False, (kind, w)) for kind, ws in where.items() for w in ws)
    return out


def analyze_token(data: bytes) -> tuple[set[str], bool]:
    """What ``data`` can do to keys under every valid JSON reading of what precedes it: the decoded
    keys it opens and closes inside itself, and whether it can close two keys of one object."""
    keys: set[str] = set()
    multi = False
    for start in _readings():
        got = _read(data, *start)
        if got is not None:
            keys |= got[0]
            multi = multi or got[1]
    return keys, multi


def _read(
    data: bytes, in_string: bool, esc: bool, is_key: bool, top: tuple[int, int]
) -> tuple[set[str], bool] | None:
    """One reading of ``data`` (see :func:`analyze_token`); None where no branch of it is valid JSON.
    Containers below the start are unknown: leaving one enters each possible parent (a branch each)."""
    found: set[str] = set()
    multi = False
    valid = False
    # branches: (position, in_string, esc, is_key, string start, stack, keys, two keys in one object);
    # stack[0] is None: the unknown containers below
    todo: list[tuple[int, bool, bool, bool, int, list[Any], set[str], bool]] = [
        (0, in_string, esc, is_key, -1, [None, [top[0], top[1], 0]], set(), False)
    ]
    while todo:
        i, in_string, esc, is_key, start, stack, keys, two = todo.pop()
        ok = True
        while i < len(data) and ok:
            b = data[i]
            cur = stack[-1]
            i += 1
            if in_string:
                if esc:
                    esc = False
                elif b == _BSLASH:
                    esc = True
                elif b == _QUOTE:
                    in_string = False
                    if is_key:
                        if start >= 0:
                            text = decode_key(data[start : i - 1])
                            if text is not None:
                                keys.add(text)
                        cur[2] += 1
                        two = two or cur[2] >= 2
                        cur[1] = _AK
                    else:
                        cur[1] = _AV
                continue
            if b in _WS:
                continue
            kind, where = cur[0], cur[1]
            if b == _QUOTE:
                ok = where in (_EK, _EV)
                in_string, is_key, start = True, where == _EK, i
            elif b == _COLON:
                ok = where == _AK
                cur[1] = _EV
            elif b == _COMMA:
                ok = where == _AV and kind != _ROOT
                cur[1] = _EK if kind == _OBJ else _EV
            elif b in (_LBRACE, _LBRACK):
                ok = where == _EV
                cur[1] = _AV
                stack = [*stack, [_OBJ, _EK, 0] if b == _LBRACE else [_ARR, _EV, 0]]
            elif b in (_RBRACE, _RBRACK):
                want = _OBJ if b == _RBRACE else _ARR
                ok = kind == want and where in ((_EK, _AV) if want == _OBJ else (_EV, _AV))
                stack = stack[:-1]
                if ok and stack[-1] is None:  # left a container opened before ``data``: each parent
                    for parent in (_OBJ, _ARR, _ROOT):
                        todo.append((i, False, False, False, -1, [None, [parent, _AV, 0]], set(keys), two))
                    break
            else:  # a number's or a literal's byte
                ok = where in (_EV, _AV)
                cur[1] = _AV
        else:
            if ok:
                valid = True
                found |= keys
                multi = multi or two
    return (found, multi) if valid else None


# Per tokenizer, weakly: the tables go with their tokenizer. Vocabulary data, no grammar's: a constant
# (rebuilding them cost every next schema's first mask 92 ms with llama3-128k).
_TABLES: weakref.WeakKeyDictionary[TokenizerInfo, KeyTables] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()
register(_TABLES.clear, constant=True)


def key_tables(info: TokenizerInfo) -> KeyTables:
    """The :class:`KeyTables` of ``info`` (built once per tokenizer, then shared)."""
    tables = _TABLES.get(info)
    if tables is not None:
        return tables
    with _TABLES_LOCK:
        tables = _TABLES.get(info)
        if tables is None:
            tables = _TABLES[info] = KeyTables(info)
    return tables
