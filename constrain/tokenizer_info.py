"""What each token id of a tokenizer contributes to the decoded text, as bytes.

A constraint engine works on bytes: a grammar accepts or rejects byte strings, and a token is allowed
when its bytes keep the output inside the language. :class:`TokenizerInfo` answers, for one tokenizer,
the questions the engine needs: the exact bytes each token id adds to the decoded text, which ids are
special (never allowed inside a constrained output), which ids end the output (EOS), how many ids exist,
and how wide the model's logits are (often wider than the vocabulary: Qwen has 151,669 tokens and
151,936 logits; the ids in between are padding with no token at all).

The bytes of a token are derived from the Hugging Face ``tokenizer.json`` decoder, which comes in three
kinds:

``byte_level`` (GPT-2, Llama-3, Qwen, SmolLM2: the decoder is ``ByteLevel``)
    Every byte 0..255 is written as one printable character (GPT-2's ``bytes_to_unicode`` table:
    printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100..U+0143, so a space is
    ``Ġ`` and a newline ``Ċ``). A token's bytes are its characters mapped back one by one. A single
    token may hold part of a multi-byte UTF-8 character; only whole outputs need be valid UTF-8. As in
    the ``tokenizers`` library, a token holding a character outside that alphabet (say, a space) is
    taken as the UTF-8 of its text instead.

``sentencepiece`` (Mistral, Llama-2, Gemma: the decoder has ``Replace("▁", " ")``, ``ByteFallback``
or ``Metaspace``)
    ``▁`` stands for a space and is decoded as ``b" "``; tokens that are exactly ``<0xNN>`` (when the
    decoder has ``ByteFallback``) are the single byte 0xNN; any other text is its UTF-8. Note the
    leading space: these tokenizers usually prepend ``▁`` to the input, and their decoders remove one
    leading space of the *whole decoded text* again (``Strip(start=1)`` after ``Fuse``, or
    ``Metaspace``, which drops the ``▁`` characters of the first token). That is a property of the
    text, not of any token: the bytes here keep the space (``"▁Hello"`` is ``b" Hello"``), so
    ``decode_bytes`` of an encoded text is ``b" " + text`` for Mistral, while ``tokenizer.decode``
    gives ``text``. A token's bytes are exactly what it adds when it does not start the decoded text.

``plain`` (anything else without a per-token decoder rule, e.g. character-level vocabularies)
    A token's bytes are the UTF-8 of its text. (The ``tokenizers`` library joins the tokens of a
    tokenizer that has no decoder with spaces; we concatenate them, as character-level vocabularies
    mean.) Decoders that cannot be expressed as bytes per token (``WordPiece``, ``BPEDecoder``,
    ``CTC``) are refused with :class:`TokenizerError`.

Added tokens: those marked ``special`` (``<s>``, ``<|im_end|>``, ...) and ids with no token at all
(holes) are special: they contribute no bytes and are never allowed inside a constrained output. The
other added tokens are ordinary tokens whose text goes through the decoder like any other token (this
is what ``tokenizers`` does: Gemma's added token ``"▁▁"`` decodes to two spaces). Where an added token
shares its id with a ``model.vocab`` entry, the added token wins. EOS ids are always special.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import validation
from .exceptions import InvalidInputError, TokenizerError
from .validation import checked_arguments, read_regular_file

__all__ = ["EOS_TOKEN_NAMES", "KINDS", "TokenizerInfo"]

KINDS = ("byte_level", "sentencepiece", "plain")

#: Contents of special tokens taken as end-of-sequence when no ``eos_ids`` are given.
EOS_TOKEN_NAMES = (
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|im_end|>",
    "<eos>",
    "<end_of_turn>",
    "<|end|>",
    "<|eom_id|>",
)


# --------------------------------------------------------------------------------------------------------
# Byte-level alphabet (GPT-2's bytes_to_unicode, written out from its definition)


def _byte_to_char_table() -> dict[int, str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    stand_in = 0x100
    for b in range(256):
        if b not in table:
            table[b] = chr(stand_in)
            stand_in += 1
    return table


_BYTE_TO_CHAR = _byte_to_char_table()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}
_NOT_IN_ALPHABET = 256
# code point (clipped to 0x144) -> byte, or _NOT_IN_ALPHABET
_BYTE_LEVEL_LUT = np.full(0x145, _NOT_IN_ALPHABET, dtype=np.uint16)
for _c, _b in _CHAR_TO_BYTE.items():
    _BYTE_LEVEL_LUT[ord(_c)] = _b
del _c, _b

# "<0xNN>" -> the byte (hex digits in either case, as the tokenizers ByteFallback decoder accepts)
_BYTE_FALLBACK_RE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_FALLBACK = {
    f"<0x{hi}{lo}>": bytes([int(hi + lo, 16)])
    for hi, lo in itertools.product("0123456789abcdefABCDEF", repeat=2)
}


def _byte_level_bytes(strs: Sequence[str]) -> list[bytes]:
    """Map byte-level token texts to bytes; a text with a character outside the alphabet is its UTF-8."""
    if not strs:
        return []
    lengths = [len(s) for s in strs]
    offsets = list(itertools.accumulate(lengths, initial=0))
    code_points = np.frombuffer("".join(strs).encode("utf-32-le"), dtype="<u4")
    mapped = _BYTE_LEVEL_LUT[np.minimum(code_points, 0x144)]
    joined = mapped.astype(np.uint8).tobytes()
    out = [joined[a:b] for a, b in itertools.pairwise(offsets)]
    bad_positions = np.flatnonzero(mapped == _NOT_IN_ALPHABET)
    if bad_positions.size:
        bad_tokens = np.unique(np.searchsorted(offsets, bad_positions, side="right") - 1)
        for i in bad_tokens.tolist():
            out[i] = strs[i].encode("utf-8")
    return out


# --------------------------------------------------------------------------------------------------------
# Decoder analysis: which per-token string operations the decoder performs


@dataclass(frozen=True)
class _DecoderPlan:
    kind: str
    # per-token steps, in order: ("replace", old, new) | ("byte_fallback",) | ("strip", char, start, stop)
    steps: tuple[tuple[Any, ...], ...]


_SUPPORTED_DECODERS = ("ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace", "Sequence")


def _flatten_decoder(decoder: Any, where: str) -> list[dict[str, Any]]:
    if decoder is None:
        return []
    if not isinstance(decoder, dict) or not isinstance(decoder.get("type"), str):
        raise TokenizerError(f"{where}: malformed 'decoder' section: {decoder!r:.200}")
    if decoder["type"] == "Sequence":
        parts = decoder.get("decoders")
        if not isinstance(parts, list):
            raise TokenizerError(f"{where}: decoder Sequence without a 'decoders' list")
        return [step for part in parts for step in _flatten_decoder(part, where)]
    return [decoder]


def _plan_decoder(decoder: Any, where: str) -> _DecoderPlan:
    steps: list[tuple[Any, ...]] = []
    byte_level = False
    sentencepiece = False
    fused = False  # after Fuse (or ByteLevel) the decoder sees one token: the whole text
    for step in _flatten_decoder(decoder, where):
        kind = step["type"]
        if kind == "Fuse":
            fused = True
        elif kind == "ByteLevel":
            if steps or byte_level:
                raise TokenizerError(
                    f"{where}: a ByteLevel decoder combined with per-token steps before it is not supported"
                )
            byte_level = fused = True
        elif kind == "Strip":
            content, start, stop = step.get("content", " "), step.get("start") or 0, step.get("stop") or 0
            if not isinstance(content, str) or len(content) != 1:
                raise TokenizerError(f"{where}: Strip decoder with content {content!r} is not one character")
            if not isinstance(start, int) or not isinstance(stop, int):
                raise TokenizerError(f"{where}: Strip decoder with start={start!r}, stop={stop!r}")
            if not fused:
                steps.append(("strip", content, start, stop))
            # after Fuse it only trims the ends of the whole decoded text: not a per-token property
        elif kind in ("Replace", "Metaspace", "ByteFallback"):
            if byte_level or fused:
                raise TokenizerError(f"{where}: a {kind} decoder after Fuse/ByteLevel is not supported")
            if kind == "ByteFallback":
                steps.append(("byte_fallback",))
                sentencepiece = True
            elif kind == "Metaspace":
                replacement = step.get("replacement", "▁")
                if not isinstance(replacement, str) or not replacement:
                    raise TokenizerError(f"{where}: Metaspace decoder with replacement {replacement!r}")
                # Metaspace also drops the replacement characters of the first token: a text-level effect
                steps.append(("replace", replacement, " "))
                sentencepiece = True
            else:
                pattern, content = step.get("pattern"), step.get("content")
                old = pattern.get("String") if isinstance(pattern, dict) else None
                if not isinstance(old, str) or not old or not isinstance(content, str):
                    raise TokenizerError(
                        f"{where}: only Replace decoders with a plain string pattern are supported, "
                        f"got {step!r:.200}"
                    )
                steps.append(("replace", old, content))
                if old == "▁":
                    sentencepiece = True
        else:
            raise TokenizerError(
                f"{where}: decoder {kind!r} cannot be expressed as bytes per token "
                f"(supported decoders: {', '.join(_SUPPORTED_DECODERS)})"
            )
    kind = "byte_level" if byte_level else "sentencepiece" if sentencepiece else "plain"
    return _DecoderPlan(kind, tuple(steps))


def _strip_token(s: str, char: str, start: int, stop: int) -> str:
    i = 0
    while i < start and i < len(s) and s[i] == char:
        i += 1
    j, k = len(s), 0
    while k < stop and j > i and s[j - 1] == char:
        j -= 1
        k += 1
    return s[i:j]


def _apply_plan(plan: _DecoderPlan, strs: list[str]) -> list[bytes]:
    if plan.kind == "byte_level":
        return _byte_level_bytes(strs)
    cur = strs
    done: dict[int, bytes] = {}  # byte-fallback tokens: final, later string steps do not touch them
    for step in plan.steps:
        if step[0] == "replace":
            old, new = step[1], step[2]
            cur = [s.replace(old, new) for s in cur]
        elif step[0] == "strip":
            char, start, stop = step[1], step[2], step[3]
            cur = [_strip_token(s, char, start, stop) for s in cur]
        else:  # byte_fallback
            lengths = np.fromiter(map(len, cur), dtype=np.int64, count=len(cur))
            for i in np.flatnonzero(lengths == 6).tolist():
                b = _BYTE_FALLBACK.get(cur[i])
                if b is not None and i not in done:
                    done[i] = b
    out = [s.encode("utf-8") for s in cur]
    for i, b in done.items():
        out[i] = b
    return out


def _without_prefix_space(part: Any) -> Any:
    """A normaliser / pre-tokenizer (as JSON) that adds no space or ``▁`` in front of the input."""
    if isinstance(part, list):
        return [
            _without_prefix_space(p) for p in part if not (isinstance(p, dict) and p.get("type") == "Prepend")
        ]
    if not isinstance(part, dict):
        return part
    if part.get("type") == "Prepend":
        return None
    out = {key: _without_prefix_space(value) for key, value in part.items()}
    if out.get("type") == "Metaspace":
        if "prepend_scheme" in out:
            out["prepend_scheme"] = "never"
        if "add_prefix_space" in out:
            out["add_prefix_space"] = False
    elif out.get("type") == "ByteLevel" and out.get("add_prefix_space"):
        out["add_prefix_space"] = False
    return out


# --------------------------------------------------------------------------------------------------------
# Reading tokenizer.json quickly: the BPE merges (most of a large file) are not needed, so when they sit at
# the end of the file, as the tokenizers library writes it, they are skipped without being parsed.

_WS = re.compile(r"[ \t\n\r]*")
_TAIL = re.compile(r"\][ \t\n\r]*\}[ \t\n\r]*\}[ \t\n\r]*\Z")
_JSON = json.JSONDecoder()
_NEEDED_MODEL_KEYS = ("vocab",)
_NEEDED_TOP_KEYS = ("added_tokens", "decoder", "model")


class _SlowPath(Exception):
    """The fast reader met a layout it does not handle; parse the whole text instead."""


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _read_key(text: str, i: int) -> tuple[str, int]:
    if text[i] != '"':
        raise _SlowPath
    key, i = _JSON.raw_decode(text, i)
    i = _skip_ws(text, i)
    if text[i] != ":":
        raise _SlowPath
    return key, _skip_ws(text, i + 1)


def _merges_skippable(text: str, i: int, top: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    end = text.rfind("]")
    if end < i or not _TAIL.match(text, end):
        return False
    # The last ']' closes the last member of the model, which is the last member of the file. A member we
    # need that was not read yet would have to be hidden in that stretch: then read it all.
    for keys, seen in ((_NEEDED_MODEL_KEYS, model), (_NEEDED_TOP_KEYS, top)):
        for key in keys:
            if key not in seen and key != "model" and text.find(f'"{key}"', i) != -1:
                return False
    return True


def _parse_model(text: str, i: int, top: Mapping[str, Any]) -> tuple[dict[str, Any], int, bool]:
    model: dict[str, Any] = {}
    i = _skip_ws(text, i + 1)
    if text[i] == "}":
        return model, i + 1, False
    while True:
        key, i = _read_key(text, i)
        if key == "merges" and text[i] == "[" and _merges_skippable(text, i, top, model):
            return model, len(text), True
        model[key], i = _JSON.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
        elif text[i] == "}":
            return model, i + 1, False
        else:
            raise _SlowPath


def _parse_skipping_merges(text: str) -> dict[str, Any]:
    i = _skip_ws(text, 0)
    if text[i] != "{":
        raise _SlowPath
    top: dict[str, Any] = {}
    i = _skip_ws(text, i + 1)
    while True:
        key, i = _read_key(text, i)
        if key == "model" and text[i] == "{":
            top[key], i, finished = _parse_model(text, i, top)
            if finished:
                return top
        else:
            top[key], i = _JSON.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
        elif text[i] == "}" and _skip_ws(text, i + 1) == len(text):
            return top
        else:
            raise _SlowPath


def _parse_tokenizer_json(text: str, where: str) -> dict[str, Any]:
    try:
        try:
            data: Any = _parse_skipping_merges(text)
        except (_SlowPath, ValueError, IndexError):
            data = json.loads(text)
    except ValueError as exc:
        raise TokenizerError(f"{where} is not a tokenizer.json: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(
            f"{where} is not a Hugging Face tokenizer.json: it has no 'model' section "
            "(expected the file written by tokenizers.Tokenizer.save / save_pretrained)"
        )
    return data


# --------------------------------------------------------------------------------------------------------
# Building from the parsed JSON


#: Token ids at or above this are refused (the largest real vocabularies have about 262,000 ids; an id of
#: 2e9 would make a table of two billion entries).
MAX_TOKEN_ID = 2**24


def _check_id(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool):
        raise TokenizerError(f"{where}: {what} {value!r} is not an integer id")
    try:
        i = operator.index(value)
    except TypeError:
        raise TokenizerError(f"{where}: {what} {value!r:.80} is not an integer id") from None
    if i < 0:
        raise TokenizerError(f"{where}: {what} {i} is negative")
    if i >= MAX_TOKEN_ID:
        raise TokenizerError(f"{where}: {what} {i} is too large (ids must be below {MAX_TOKEN_ID})")
    return i


def _vocab_strings(data: Mapping[str, Any], where: str) -> tuple[list[str | None], dict[int, dict[str, Any]]]:
    """Token text by id (None for holes) and the added tokens by id."""
    model = data["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        ids = list(vocab.values())
        if not set(map(type, ids)) <= {int}:
            bad = next(i for i in ids if type(i) is not int)
            raise TokenizerError(f"{where}: model.vocab maps a token to {bad!r}, not an integer id")
        if ids and min(ids) < 0:
            raise TokenizerError(f"{where}: model.vocab has a negative id {min(ids)}")
        top = max(ids, default=-1)
        if top >= MAX_TOKEN_ID:
            raise TokenizerError(
                f"{where}: model.vocab has an id {top}, too large (ids must be below {MAX_TOKEN_ID})"
            )
        if len(set(ids)) != len(ids):
            seen: dict[int, str] = {}
            for piece, i in vocab.items():
                if i in seen:
                    raise TokenizerError(
                        f"{where}: model.vocab gives id {i} to two tokens, {seen[i]!r:.40} and {piece!r:.40}"
                    )
                seen[i] = piece
        in_order = ids == list(range(len(ids)))  # the usual layout: no need to place tokens one by one
        pieces: list[Any] = list(vocab.keys()) if in_order else []
        pairs: Iterable[tuple[str, Any]] = () if in_order else vocab.items()
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        try:
            pieces = [entry[0] for entry in vocab]
        except (TypeError, IndexError, KeyError):
            raise TokenizerError(f"{where}: model.vocab is a list but not of [piece, score] pairs") from None
        pairs = ()
        top = len(vocab) - 1
    else:
        raise TokenizerError(
            f"{where}: model.vocab is missing or not a mapping (model type {model.get('type')!r})"
        )

    added_list = data.get("added_tokens") or []
    if not isinstance(added_list, list):
        raise TokenizerError(f"{where}: 'added_tokens' is not a list")
    added: dict[int, dict[str, Any]] = {}
    for entry in added_list:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise TokenizerError(f"{where}: malformed added token {entry!r:.200}")
        i = _check_id(entry.get("id"), where, "added token id")
        if i in added and added[i]["content"] != entry["content"]:
            raise TokenizerError(
                f"{where}: added_tokens gives id {i} to two tokens, {added[i]['content']!r:.40} and "
                f"{entry['content']!r:.40}"
            )
        added[i] = entry
    top = max(top, max(added, default=-1))
    if top < 0:
        raise TokenizerError(f"{where}: the vocabulary is empty")

    if not set(map(type, pieces)) <= {str}:
        raise TokenizerError(f"{where}: model.vocab has a non-string token")
    strs: list[str | None] = pieces + [None] * (top + 1 - len(pieces))
    for s, i in pairs:
        if not isinstance(s, str):
            raise TokenizerError(f"{where}: model.vocab has a non-string token {s!r}")
        strs[i] = s
    for i, entry in added.items():
        strs[i] = entry["content"]
    return strs, added


def _heuristic_eos(
    strs: Sequence[str | None], special: Iterable[int], where: str, tried: str = ""
) -> tuple[int, ...]:
    names = set(EOS_TOKEN_NAMES)
    found = tuple(sorted(i for i in special if strs[i] in names))
    if not found:
        raise TokenizerError(
            f"{where}: found no end-of-sequence token{tried} (looked for special tokens named "
            f"{', '.join(EOS_TOKEN_NAMES)}); pass eos_ids=... explicitly"
        )
    return found


def _assemble(
    token_bytes: list[bytes],
    special: set[int],
    eos_ids: int | Iterable[int] | None,
    heuristic_eos: tuple[int, ...] | None,
    logits_width: int | None,
    kind: str,
    name: str,
    where: str,
    backend: Any = None,
) -> TokenizerInfo:
    """Normalise (specials and EOS carry no bytes; empty tokens are special) and validate."""
    vocab_size = len(token_bytes)
    if eos_ids is None:
        if heuristic_eos is None:
            raise TokenizerError(f"{where}: no eos_ids given")
        eos = heuristic_eos
    else:
        if isinstance(eos_ids, (int, np.integer)):
            eos_ids = (int(eos_ids),)
        elif isinstance(eos_ids, (str, bytes)) or not isinstance(eos_ids, Iterable):
            raise TokenizerError(
                f"{where}: eos_ids must be a token id or a collection of them, got {eos_ids!r:.80}"
            )
        eos = tuple(dict.fromkeys(_check_id(e, where, "eos id") for e in eos_ids))
        if not eos:
            raise TokenizerError(f"{where}: eos_ids is empty; at least one end-of-sequence id is needed")
    for e in eos:
        if e >= vocab_size:
            raise TokenizerError(f"{where}: eos id {e} is out of range (vocab_size={vocab_size})")
    special.update(eos)
    for i in special:
        token_bytes[i] = b""
    if token_bytes.count(b"") > len(special):
        special.update(i for i, b in enumerate(token_bytes) if not b)
    if logits_width is None:
        width = vocab_size
    else:
        width = _check_id(logits_width, where, "logits_width")
        if width < vocab_size:
            raise TokenizerError(
                f"{where}: logits_width={width} is smaller than vocab_size={vocab_size}; "
                "the model's logits must cover every token id"
            )
    return TokenizerInfo(
        token_bytes=tuple(token_bytes),
        special_ids=frozenset(special),
        eos_ids=eos,
        vocab_size=vocab_size,
        logits_width=width,
        kind=kind,
        name=name,
        backend=backend,
    )


def _from_json(
    data: Mapping[str, Any],
    *,
    eos_ids: int | Iterable[int] | None,
    logits_width: int | None,
    name: str,
    where: str,
    backend: Any = None,
) -> TokenizerInfo:
    plan = _plan_decoder(data.get("decoder"), where)
    strs, added = _vocab_strings(data, where)
    special = {i for i, entry in added.items() if entry.get("special")}
    if None in strs:
        special.update(i for i, s in enumerate(strs) if s is None)
    texts = cast("list[str]", list(strs))  # holes (None) are special: blanked here
    for i in special:
        texts[i] = ""
    token_bytes = _apply_plan(plan, texts)
    heuristic = _heuristic_eos(strs, special, where) if eos_ids is None else None
    return _assemble(token_bytes, special, eos_ids, heuristic, logits_width, plan.kind, name, where, backend)


def _name_from_path(path: Path) -> str:
    name = path.name
    for suffix in (".json", ".tokenizer"):
        name = name.removesuffix(suffix)
    if name in ("", "tokenizer") and path.parent.name:
        return path.parent.name
    return name


def _to_json_text(tok: Any, where: str) -> str:
    try:
        text = tok.to_str()
    except Exception as exc:  # e.g. a custom Python component that cannot be serialised
        raise TokenizerError(f"{where}: cannot serialise the tokenizer to JSON: {exc}") from exc
    return str(text)


def _from_slow_transformers(
    tok: Any, *, eos_ids: int | Iterable[int] | None, logits_width: int | None, name: str, where: str
) -> TokenizerInfo:
    """A transformers tokenizer without a ``tokenizers`` backend (a "slow", pure-Python one)."""
    try:
        vocab = dict(tok.get_vocab())
        added = dict(getattr(tok, "added_tokens_decoder", None) or {})
        all_special = list(getattr(tok, "all_special_ids", None) or ())
    except Exception as exc:  # third-party code: report whatever it raised
        raise TokenizerError(f"{where}: could not read the vocabulary: {exc}") from exc
    vocab = {str(s): _check_id(i, where, "token id") for s, i in vocab.items()}
    added = {_check_id(i, where, "added token id"): token for i, token in added.items()}
    top = max([*vocab.values(), *added.keys(), -1])
    if top < 0:
        raise TokenizerError(f"{where}: the vocabulary is empty")
    strs: list[str | None] = [None] * (top + 1)
    for s, i in vocab.items():
        strs[i] = s
    literal: dict[int, bytes] = {}
    special: set[int] = {i for i in all_special if i is not None and 0 <= i <= top}
    for i, token in added.items():
        content = str(getattr(token, "content", token))
        strs[i] = content
        if getattr(token, "special", False):
            special.add(i)
        else:  # slow tokenizers output added tokens verbatim
            literal[i] = content.encode("utf-8")
    special.update(i for i, s in enumerate(strs) if s is None)
    texts = ["" if (s is None or i in special) else s for i, s in enumerate(strs)]

    byte_decoder = getattr(tok, "byte_decoder", None)
    if isinstance(byte_decoder, dict) and byte_decoder:
        kind = "byte_level"
        token_bytes = []
        for s in texts:
            try:
                token_bytes.append(bytes(byte_decoder[c] for c in s))
            except (KeyError, ValueError, TypeError):
                token_bytes.append(s.encode("utf-8"))
    elif hasattr(tok, "sp_model") or any("▁" in s for s in texts):
        kind = "sentencepiece"
        has_byte_tokens = all(f"<0x{b:02X}>" in vocab for b in range(256))
        steps: tuple[tuple[Any, ...], ...] = (("replace", "▁", " "),)
        if has_byte_tokens:
            steps += (("byte_fallback",),)
        token_bytes = _apply_plan(_DecoderPlan(kind, steps), texts)
    else:
        kind = "plain"
        token_bytes = [s.encode("utf-8") for s in texts]
    for i, b in literal.items():
        token_bytes[i] = b

    if eos_ids is None:
        eos_id = getattr(tok, "eos_token_id", None)
        if eos_id is not None:
            eos_ids = (eos_id,)
    heuristic = _heuristic_eos(strs, special, where, " (eos_token_id is None)") if eos_ids is None else None
    return _assemble(token_bytes, special, eos_ids, heuristic, logits_width, kind, name, where)


# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """The byte-level view of a tokenizer that the constraint engine needs.

    Invariants (checked on construction): ``len(token_bytes) == vocab_size``; every special id has
    ``b""`` and every ``b""`` token is special; ``eos_ids`` is non-empty, within the vocabulary and a
    subset of ``special_ids``; ``logits_width >= vocab_size`` (ids ``vocab_size..logits_width-1`` are
    padding with no token).
    """

    #: index = token id; b"" for special tokens and for ids with no token (holes)
    token_bytes: tuple[bytes, ...]
    #: special tokens + holes: never allowed inside a constrained output
    special_ids: frozenset[int]
    #: allowed exactly where the language may end
    eos_ids: tuple[int, ...]
    #: max token id + 1
    vocab_size: int
    #: width of the model's logits, >= vocab_size
    logits_width: int
    #: "byte_level" | "sentencepiece" | "plain"
    kind: str
    #: for messages, e.g. the file stem
    name: str = ""
    #: the tokenizer's own encoder: a ``tokenizers.Tokenizer``, or the path of the ``tokenizer.json`` it
    #: is loaded from on first use (see :meth:`encode_fragment`); None for :meth:`from_vocab` and slow
    #: transformers tokenizers. Not part of the fingerprint: it changes nothing the masks depend on.
    backend: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self._label
        if not isinstance(self.token_bytes, tuple) or not set(map(type, self.token_bytes)) <= {bytes}:
            raise TokenizerError(f"{where}: token_bytes must be a tuple of bytes")
        if self.vocab_size != len(self.token_bytes) or self.vocab_size <= 0:
            raise TokenizerError(
                f"{where}: vocab_size={self.vocab_size} but there are {len(self.token_bytes)} token_bytes"
            )
        if self.kind not in KINDS:
            raise TokenizerError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.logits_width, int) or self.logits_width < self.vocab_size:
            raise TokenizerError(
                f"{where}: logits_width={self.logits_width} is smaller than vocab_size={self.vocab_size}"
            )
        for i in self.special_ids:
            if not (isinstance(i, int) and 0 <= i < self.vocab_size):
                raise TokenizerError(f"{where}: special id {i!r} is out of range")
            if self.token_bytes[i]:
                raise TokenizerError(f"{where}: special id {i} has bytes {self.token_bytes[i]!r}, not b''")
        if self.token_bytes.count(b"") != len(self.special_ids):  # every special id is b"" (checked above)
            empty = next(i for i, b in enumerate(self.token_bytes) if not b and i not in self.special_ids)
            raise TokenizerError(f"{where}: token {empty} has no bytes but is not special")
        if not self.eos_ids:
            raise TokenizerError(f"{where}: eos_ids is empty")
        for e in self.eos_ids:
            if not (isinstance(e, int) and 0 <= e < self.vocab_size):
                raise TokenizerError(f"{where}: eos id {e!r} is out of range (vocab_size={self.vocab_size})")
            if e not in self.special_ids:
                raise TokenizerError(f"{where}: eos id {e} is not in special_ids")

    @property
    def _label(self) -> str:
        return f"tokenizer {self.name!r}" if self.name else "tokenizer"

    def __repr__(self) -> str:
        return (
            f"TokenizerInfo(name={self.name!r}, kind={self.kind!r}, vocab_size={self.vocab_size}, "
            f"logits_width={self.logits_width}, special={len(self.special_ids)}, eos_ids={self.eos_ids})"
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """A stable SHA-256 (hex) of everything the engine depends on: token bytes, specials, EOS, widths.

        The name and the kind are not part of it: two tokenizers with the same fingerprint are
        interchangeable for constraint compilation.
        """
        h = hashlib.sha256(b"constrain.TokenizerInfo/1\0")
        header = [self.vocab_size, self.logits_width, len(self.eos_ids), len(self.special_ids)]
        h.update(np.asarray(header, dtype="<i8").tobytes())
        h.update(np.asarray(self.eos_ids, dtype="<i8").tobytes())
        h.update(np.asarray(sorted(self.special_ids), dtype="<i8").tobytes())
        h.update(np.fromiter(map(len, self.token_bytes), dtype="<i8", count=self.vocab_size).tobytes())
        h.update(b"".join(self.token_bytes))
        return h.hexdigest()

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of a token sequence: the concatenation of ``token_bytes`` (specials add nothing).

        Unlike ``tokenizer.decode`` this keeps a SentencePiece output's leading space (see the module
        docstring) and never replaces invalid UTF-8.
        """
        table = self.token_bytes
        n = self.vocab_size
        out = []
        for value in ids:
            i = operator.index(value)
            if not 0 <= i < n:
                raise TokenizerError(
                    f"{self._label}: token id {i} is out of range (vocab_size={n}"
                    + (
                        f"; ids {n}..{self.logits_width - 1} are logits padding)"
                        if self.logits_width > n
                        else ")"
                    )
                )
            out.append(table[i])
        return b"".join(out)

    # ----------------------------------------------------------------------------------------------------
    # The tokenizer's own segmentation (for forced tokens, see constrain.forced)

    @functools.cached_property
    def _fragment_encoder(self) -> Any:
        """The backend, changed (on a copy) so that it encodes text from the middle of an output.

        SentencePiece-style tokenizers add a ``▁`` in front of the input (a ``Prepend("▁")`` normaliser,
        a ``Metaspace`` pre-tokenizer with ``prepend_scheme`` "always"/"first"), byte-level ones may
        add a space (``ByteLevel(add_prefix_space=True)``): right for a whole text, spurious for a
        fragment. None when there is no backend or it cannot be loaded.
        """
        import tokenizers

        backend = self.backend
        if backend is None:
            return None
        try:
            if not isinstance(backend, tokenizers.Tokenizer):
                backend = tokenizers.Tokenizer.from_file(str(backend))
            parts = {
                key: None if part is None else json.loads(part.__getstate__())
                for key, part in (
                    ("normalizer", backend.normalizer),
                    ("pre_tokenizer", backend.pre_tokenizer),
                )
            }
            fixed = {key: _without_prefix_space(part) for key, part in parts.items()}
            if fixed == parts:
                return backend
            data = json.loads(backend.to_str())
            data.update(fixed)
            return tokenizers.Tokenizer.from_str(json.dumps(data))
        except Exception:  # noqa: BLE001 - a missing or foreign file: forced tokens fall back to greedy
            return None

    def encode_fragment(self, text: str) -> list[int] | None:
        """The ids the tokenizer gives ``text`` on its own, as part of a longer output.

        No special tokens (BOS) and no prefix space are added. None without a backend tokenizer
        (:meth:`from_vocab`, slow transformers tokenizers). The ids are not checked: compare
        ``decode_bytes(ids)`` with the text before relying on them (a normaliser may change it).
        """
        encoder = self._fragment_encoder
        if encoder is None:
            return None
        return list(encoder.encode(text, add_special_tokens=False).ids)

    @functools.cached_property
    def _plain_added_tokens(self) -> bool:
        encoder = self._fragment_encoder
        return encoder is None or any(not t.special for t in encoder.get_added_tokens_decoder().values())

    def fragment_splits_at(self, text: str, at: int) -> bool:
        """True where encoding ``text`` keeps ``text[:at]`` and ``text[at:]`` in separate tokens.

        That is where the pre-tokenizer cuts the (normalised) text at ``at``, so no BPE merge can span
        that point. False where it does not, where the tokenizer cannot tell (no backend, no
        pre-tokenizer: one piece), and where added tokens that are not special may span it (they are
        matched before the pre-tokenizer runs).
        """
        encoder = self._fragment_encoder
        if encoder is None or encoder.pre_tokenizer is None or self._plain_added_tokens:
            return False
        head = text[:at]
        if encoder.normalizer is not None:
            head, text = encoder.normalizer.normalize_str(head), encoder.normalizer.normalize_str(text)
        if not text.startswith(head):
            return False
        return any(end == len(head) for _, (_, end) in encoder.pre_tokenizer.pre_tokenize_str(text))

    @functools.cached_property
    def sorted_token_bytes(self) -> list[bytes]:
        """The distinct non-empty token byte strings, sorted (tokens with a given prefix are a range)."""
        return sorted({b for b in self.token_bytes if b})

    @functools.cached_property
    def token_ids_by_bytes(self) -> dict[bytes, int]:
        """The lowest ordinary (non-special) token id of each non-empty byte string."""
        table: dict[bytes, int] = {}
        special = self.special_ids
        for tid, data in enumerate(self.token_bytes):
            if data and tid not in special:
                table.setdefault(data, tid)
        return table

    @functools.cached_property
    def max_token_length(self) -> int:
        """The length in bytes of the longest token."""
        return max(map(len, self.token_bytes))

    # ----------------------------------------------------------------------------------------------------

    @classmethod
    @checked_arguments
    def from_file(
        cls,
        path: str | PathLike[str],
        *,
        eos_ids: int | Iterable[int] | None = None,
        logits_width: int | None = None,
    ) -> TokenizerInfo:
        """Read a Hugging Face ``tokenizer.json`` (or a folder holding one).

        ``eos_ids`` defaults to the special tokens named like an end of sequence (:data:`EOS_TOKEN_NAMES`);
        ``logits_width`` defaults to the vocabulary size.
        """
        if not isinstance(path, (str, PathLike)):
            raise InvalidInputError(
                f"TokenizerInfo.from_file: path must be a str or os.PathLike, got {type(path).__name__}"
            )
        p = Path(path)
        try:
            is_dir = p.is_dir()
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise TokenizerError(f"cannot read tokenizer file {str(p)!r}: {exc}") from None
        if is_dir:
            if not (p / "tokenizer.json").is_file():
                raise TokenizerError(f"{p} is a folder without a tokenizer.json")
            p = p / "tokenizer.json"
        if not p.exists():
            raise TokenizerError(f"tokenizer file not found: {p}")
        # A regular file of bounded size only: /dev/zero or a FIFO would be read until memory runs out.
        raw = read_regular_file(
            p, what="tokenizer file", limit=validation.MAX_TOKENIZER_FILE_BYTES, error=TokenizerError
        )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TokenizerError(f"{p} is not a tokenizer.json: it is not UTF-8 text") from None
        where = str(p)
        data = _parse_tokenizer_json(text, where)
        return _from_json(
            data,
            eos_ids=eos_ids,
            logits_width=logits_width,
            name=_name_from_path(p),
            where=where,
            backend=p.resolve(),
        )

    @classmethod
    @checked_arguments
    def from_tokenizer(
        cls,
        tok: Any,
        *,
        eos_ids: int | Iterable[int] | None = None,
        logits_width: int | None = None,
    ) -> TokenizerInfo:
        """Read a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer.

        For a transformers tokenizer the EOS ids default to ``tok.eos_token_id`` (and to the named special
        tokens when that is None). A fast tokenizer is read through its ``backend_tokenizer``; a slow one
        through its vocabulary, with the kind guessed from it (``byte_decoder`` means byte-level, ``▁`` or a
        SentencePiece model means sentencepiece).
        """
        import tokenizers

        if isinstance(tok, tokenizers.Tokenizer):
            data = _parse_tokenizer_json(_to_json_text(tok, "tokenizers.Tokenizer"), "tokenizers.Tokenizer")
            return _from_json(
                data, eos_ids=eos_ids, logits_width=logits_width, name="", where="tokenizer", backend=tok
            )

        name = str(getattr(tok, "name_or_path", "") or "")
        where = f"tokenizer {name!r}" if name else f"{type(tok).__name__}"
        backend = getattr(tok, "backend_tokenizer", None)
        if isinstance(backend, tokenizers.Tokenizer):
            if eos_ids is None:
                eos_id = getattr(tok, "eos_token_id", None)
                if eos_id is not None:
                    eos_ids = (eos_id,)
            data = _parse_tokenizer_json(_to_json_text(backend, where), where)
            return _from_json(
                data, eos_ids=eos_ids, logits_width=logits_width, name=name, where=where, backend=backend
            )
        if callable(getattr(tok, "get_vocab", None)) and callable(
            getattr(tok, "convert_ids_to_tokens", None)
        ):
            return _from_slow_transformers(
                tok, eos_ids=eos_ids, logits_width=logits_width, name=name, where=where
            )
        raise TokenizerError(
            "from_tokenizer expects a tokenizers.Tokenizer or a transformers tokenizer, "
            f"got {type(tok).__name__}"
        )

    @classmethod
    @checked_arguments
    def from_vocab(
        cls,
        token_bytes: Sequence[bytes | bytearray | memoryview],
        *,
        eos_ids: int | Iterable[int],
        special_ids: Iterable[int] = (),
        logits_width: int | None = None,
        name: str = "",
    ) -> TokenizerInfo:
        """A hand-written vocabulary (``kind="plain"``), mostly for tests: ``token_bytes[i]`` is token i.

        Special ids, EOS ids and tokens given as ``b""`` become special with no bytes.
        """
        where = f"vocabulary {name!r}" if name else "vocabulary"
        if isinstance(token_bytes, (bytes, str)) or not isinstance(token_bytes, Iterable):
            raise TokenizerError(f"{where}: token_bytes must be a sequence of bytes, one per token id")
        if not isinstance(special_ids, Iterable):
            raise TokenizerError(f"{where}: special_ids must be a collection of token ids")
        tb: list[bytes] = []
        for i, b in enumerate(token_bytes):
            if not isinstance(b, (bytes, bytearray, memoryview)):
                raise TokenizerError(f"{where}: token {i} is {b!r}, not bytes")
            tb.append(bytes(b))
        if not tb:
            raise TokenizerError(f"{where}: the vocabulary is empty")
        special = set()
        for s in special_ids:
            i = _check_id(s, where, "special id")
            if i >= len(tb):
                raise TokenizerError(f"{where}: special id {i} is out of range (vocab_size={len(tb)})")
            special.add(i)
        return _assemble(tb, special, eos_ids, None, logits_width, "plain", name, where)
