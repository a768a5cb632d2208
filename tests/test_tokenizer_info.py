"""TokenizerInfo: token id -> bytes for the six real tokenizers, checked against the tokenizers library."""

from __future__ import annotations

import functools
import json
import pickle
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from constrain.exceptions import InvalidInputError, TokenizerError
from constrain.tokenizer_info import EOS_TOKEN_NAMES, TokenizerInfo

tokenizers = pytest.importorskip("tokenizers")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"../shared is absent ({SHARED} not found); CI always has it"
)

# name -> (kind, vocab_size, some EOS ids that must be found by the heuristic)
REAL = {
    "llama3-128k": ("byte_level", 128256, {128001, 128009}),
    "qwen3-151k": ("byte_level", 151669, {151643, 151645}),
    "gpt2-50k": ("byte_level", 50257, {50256}),
    "mistral-32k": ("sentencepiece", 32000, {2}),
    "gemma3-262k": ("sentencepiece", 262145, {1, 106}),
    "smollm2-49k": ("byte_level", 49152, {0, 2}),
}
NAMES = list(REAL)


def path_of(name: str) -> Path:
    return SHARED / f"{name}.tokenizer.json"


@functools.cache
def info_of(name: str) -> TokenizerInfo:
    return TokenizerInfo.from_file(path_of(name))


@functools.cache
def tok_of(name: str) -> Any:
    return tokenizers.Tokenizer.from_file(str(path_of(name)))


@functools.cache
def raw_json(name: str) -> dict[str, Any]:
    with open(path_of(name), encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def decoder_steps(name: str) -> list[dict[str, Any]]:
    dec = raw_json(name)["decoder"]
    return dec["decoders"] if dec["type"] == "Sequence" else [dec]


def anchor_id(name: str) -> int:
    """A plain token "a": decoding [a] + ids keeps any leading space of ids (no text-level strip)."""
    i = tok_of(name).token_to_id("a")
    assert i is not None
    assert info_of(name).token_bytes[i] == b"a"
    return int(i)


def expected_text(name: str, text: str) -> str:
    """What the tokenizer's normalizer does to a text that decoding cannot undo."""
    if name == "qwen3-151k":  # NFC normalizer
        return unicodedata.normalize("NFC", text)
    if name == "mistral-32k":  # Prepend("▁") + Replace(" " -> "▁"); "▁" decodes as a space
        return (" " + text if text else "").replace("▁", " ")
    if name == "gemma3-262k":  # Replace(" " -> "▁")
        return text.replace("▁", " ")
    return text  # no normalizer


@functools.cache
def single_bytes(name: str) -> frozenset[int]:
    return frozenset(b[0] for b in info_of(name).token_bytes if len(b) == 1)


@functools.cache
def special_contents(name: str) -> tuple[str, ...]:
    return tuple(t["content"] for t in raw_json(name)["added_tokens"] if t["special"])


def representable(name: str, text: str) -> bool:
    """Whether the text encodes to ordinary tokens that spell it.

    Not so when it holds a special token's text (encoded as that special token), or, for a byte-level
    tokenizer, a byte with no token (SmolLM2 lacks 21 bytes; its BPE drops them silently).
    """
    if any(s in text for s in special_contents(name)):
        return False
    return info_of(name).kind != "byte_level" or set(text.encode("utf-8")) <= single_bytes(name)


def check_round_trip(name: str, text: str) -> None:
    info, tok = info_of(name), tok_of(name)
    ids = tok.encode(text, add_special_tokens=False).ids
    got = info.decode_bytes(ids)
    # 1. the tokenizers library's own decode; an anchor token in front keeps the leading space that
    #    SentencePiece's Strip(start=1) decoder would otherwise drop from the whole text
    a = anchor_id(name)
    anchored = tok.decode([a, *ids], skip_special_tokens=False)
    assert anchored.encode("utf-8") == b"a" + got, (name, text)
    plain = tok.decode(ids)
    if any(s["type"] == "Strip" and s.get("start") for s in decoder_steps(name)) and got.startswith(b" "):
        assert b" " + plain.encode("utf-8") == got, (name, text)
    else:
        assert plain.encode("utf-8") == got, (name, text)
    # 2. the original text, as the normalizer leaves it
    assert got == expected_text(name, text).encode("utf-8"), (name, text)


TEXTS = [
    "Hello world",
    "hello, World! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "x",
    " ",
    "  two leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "\t\ttabs\tand\ttabs",
    "line one\nline two\n\nline four\n",
    "\r\nwindows\r\nnewlines\r\n",
    "\n\n\n\n\n\n\n\n",
    " " * 40,
    "def f(x: int) -> int:\n    return x * 2  # comment\n",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] ^ 0xFF; }",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%o''brien%';",
    '{"name": "Alice", "age": 30, "tags": ["a", "b"], "ok": true, "x": null}',
    '{\n  "nested": {"deep": [1, 2.5, -3e10, {"k": "v"}]}\n}',
    '<html><body class="main">&amp; &lt;tag&gt;</body></html>',
    "https://example.com/path?query=1&other=two#frag",
    "3.14159265358979323846 1e-10 0x1F 1_000_000",
    "1234567890" * 5,
    "émoji 😀🎉🚀 and family 👩‍👩‍👧‍👦 and flag 🇫🇷",
    "🙂",
    "日本語のテキストです。東京は大きい。",
    "中文文本，包括标点符号！",
    "한국어 텍스트",
    "café naïve résumé façade Ångström",
    "Ñandú, pingüino, Straße, Øresund, Łódź",
    "Ελληνικά γράμματα",
    "Русский текст с пробелами",
    "مرحبا بالعالم",
    "עברית",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "mixed: English, 日本語, العربية, русский, 😀",
    "combining: e\u0301 a\u0308 n\u0303",  # NFD: NFC changes it for Qwen
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "\x07bell\x00nul\x1bescape",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙",
    "math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ ≤ ∞",
    "quotes: “curly” ‘single’ «guillemets» — dash … ellipsis",
    "non\u00a0breaking\u00a0space and soft\u00adhyphen",
    "▁ a literal lower one eighth block ▁▁",
    "ĠĊ look like byte-level stand-ins",
    "<0x41> is text here",
    "'s 't 're 've 'm 'll 'd",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "a" * 300,
    "",
]


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_kind_size_and_eos(name: str) -> None:
    kind, size, eos = REAL[name]
    info = info_of(name)
    assert info.kind == kind
    assert info.vocab_size == size == len(info.token_bytes)
    assert info.logits_width == size
    assert eos <= set(info.eos_ids)
    assert set(info.eos_ids) <= info.special_ids
    assert info.name == name
    for e in info.eos_ids:
        assert tok_of(name).id_to_token(e) in EOS_TOKEN_NAMES
    data = raw_json(name)
    specials = {t["id"] for t in data["added_tokens"] if t["special"]}
    assert specials <= info.special_ids
    assert all(info.token_bytes[i] == b"" for i in info.special_ids)
    # no holes in these files: the specials are exactly the special added tokens
    assert info.special_ids == specials
    assert sum(1 for b in info.token_bytes if not b) == len(specials)
    assert tok_of(name).get_vocab_size(with_added_tokens=True) == size


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_every_token_matches_tokenizers_decode(name: str) -> None:
    """Each ordinary token, decoded after an anchor, is exactly its bytes (lossy where not UTF-8)."""
    info, tok = info_of(name), tok_of(name)
    a = anchor_id(name)
    ids = [i for i in range(info.vocab_size) if i not in info.special_ids]
    decoded = tok.decode_batch([[a, i] for i in ids], skip_special_tokens=False)
    bad = [
        (i, info.token_bytes[i], d)
        for i, d in zip(ids, decoded)
        if d != "a" + info.token_bytes[i].decode("utf-8", errors="replace")
    ]
    assert not bad, bad[:10]
    # specials contribute nothing, as with skip_special_tokens
    some = sorted(info.special_ids)[:50]
    assert tok.decode([a, *some, a], skip_special_tokens=True) == "aa"


@needs_shared
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_round_trip_texts(name: str, text: str) -> None:
    assert representable(name, text)
    check_round_trip(name, text)


@needs_shared
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=60))
def test_round_trip_hypothesis(name: str, text: str) -> None:
    assume(representable(name, text))
    check_round_trip(name, text)


FRAGMENTS = [
    " ",
    "  ",
    "\n",
    "\t",
    "\r\n",
    "a",
    "the",
    " the",
    "Hello",
    "{",
    "}",
    '"',
    ":",
    ",",
    "0",
    "42",
    "é",
    "e\u0301",
    "日本",
    "😀",
    "👩‍👧",
    "مرحبا",
    "▁",
    "Ġ",
    "<",
    ">",
    "<0x41>",
    "\x00",
    "𝔘",
    "ß",
]


@needs_shared
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=30))
def test_round_trip_hypothesis_fragments(name: str, parts: list[str]) -> None:
    """Joined fragments: whitespace runs, code punctuation and multi-byte characters next to each other."""
    text = "".join(parts)
    assume(representable(name, text))
    check_round_trip(name, text)


@needs_shared
def test_byte_level_partial_utf8_tokens() -> None:
    """Byte-level tokens may hold part of a UTF-8 character; only the whole output is valid."""
    info = info_of("llama3-128k")
    partial = [b for b in info.token_bytes if b and not _is_utf8(b)]
    assert len(partial) > 100
    ids = tok_of("llama3-128k").encode("𝔘𝔫", add_special_tokens=False).ids
    assert any(not _is_utf8(info.token_bytes[i]) for i in ids)
    assert info.decode_bytes(ids) == "𝔘𝔫".encode()
    # the GPT-2 alphabet: Ġ is a space, Ċ a newline, every byte has a single-byte token
    assert info.token_bytes[tok_of("llama3-128k").token_to_id("Ġthe")] == b" the"
    assert info.token_bytes[tok_of("llama3-128k").token_to_id("Ċ")] == b"\n"
    singles = {b for b in info.token_bytes if len(b) == 1}
    assert len(singles) == 256


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@needs_shared
@pytest.mark.parametrize("name", ["mistral-32k", "gemma3-262k"])
def test_byte_fallback(name: str) -> None:
    info, tok = info_of(name), tok_of(name)
    for b in range(256):
        assert info.token_bytes[tok.token_to_id(f"<0x{b:02X}>")] == bytes([b])
    for text in ["𝔘", "\x00", "a\x00b", "𝔘\x00", "\U00040000"]:
        enc = tok.encode(text, add_special_tokens=False)
        byte_tokens = [(t, i) for t, i in zip(enc.tokens, enc.ids) if t.startswith("<0x")]
        assert byte_tokens, (text, enc.tokens)
        for t, i in byte_tokens:
            assert info.token_bytes[i] == bytes([int(t[3:5], 16)])
        assert info.decode_bytes(enc.ids) == expected_text(name, text).encode()
    enc = tok.encode("𝔘", add_special_tokens=False)
    assert [info.token_bytes[i] for i in enc.ids[-4:]] == [b"\xf0", b"\x9d", b"\x94", b"\x98"]
    # some bytes also have a literal token: two ids, the same bytes
    if name == "mistral-32k":
        assert tok.encode("\x07", add_special_tokens=False).tokens == ["▁", "\x07"]
        assert (
            info.token_bytes[tok.token_to_id("\x07")]
            == info.token_bytes[tok.token_to_id("<0x07>")]
            == b"\x07"
        )


@needs_shared
def test_sentencepiece_spaces_and_leading_space() -> None:
    mistral, gemma = info_of("mistral-32k"), info_of("gemma3-262k")
    tm = tok_of("mistral-32k")
    hello = tm.token_to_id("▁Hello")
    assert mistral.token_bytes[hello] == b" Hello"
    # the decoder's Strip(start=1) drops the leading space of the whole text, not of the token
    assert tm.decode([hello]) == "Hello"
    assert mistral.decode_bytes([hello, hello]) == b" Hello Hello"
    assert tm.decode([hello, hello]) == "Hello Hello"
    # gemma: no prepended space; its non-special added tokens "▁▁"... decode to spaces, "\n\n" to newlines
    tg = tok_of("gemma3-262k")
    assert gemma.token_bytes[tg.token_to_id("▁▁")] == b"  "
    assert gemma.token_bytes[tg.token_to_id("\n\n")] == b"\n\n"
    assert tg.decode([tg.token_to_id("▁▁")]) == "  "
    assert gemma.token_bytes[tg.token_to_id("<mask>")] == b"<mask>"  # non-special added token
    assert 4 not in gemma.special_ids


@needs_shared
def test_qwen_non_special_added_tokens_and_logits_width() -> None:
    qwen = info_of("qwen3-151k")
    tq = tok_of("qwen3-151k")
    think = tq.token_to_id("<think>")
    assert think not in qwen.special_ids
    assert qwen.token_bytes[think] == b"<think>"
    assert tq.token_to_id("<|im_end|>") in qwen.special_ids
    wide = TokenizerInfo.from_file(path_of("qwen3-151k"), logits_width=151936)
    assert wide.logits_width == 151936 and wide.vocab_size == 151669
    assert wide.token_bytes == qwen.token_bytes
    assert wide.fingerprint != qwen.fingerprint
    with pytest.raises(TokenizerError, match=r"logits_width=151000 is smaller than vocab_size=151669"):
        TokenizerInfo.from_file(path_of("qwen3-151k"), logits_width=151000)
    with pytest.raises(TokenizerError, match="out of range"):
        wide.decode_bytes([151700])  # logits padding: no token


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_from_tokenizer_matches_from_file(name: str) -> None:
    info = info_of(name)
    via_tok = TokenizerInfo.from_tokenizer(tok_of(name))
    assert via_tok.token_bytes == info.token_bytes
    assert via_tok.special_ids == info.special_ids
    assert via_tok.eos_ids == info.eos_ids
    assert via_tok.kind == info.kind
    assert via_tok.fingerprint == info.fingerprint


@needs_shared
@pytest.mark.parametrize("name", ["gpt2-50k", "mistral-32k", "qwen3-151k"])
def test_from_transformers_fast(name: str) -> None:
    transformers = pytest.importorskip("transformers")
    info = info_of(name)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path_of(name)))
    got = TokenizerInfo.from_tokenizer(fast)
    assert got.token_bytes == info.token_bytes
    assert got.special_ids == info.special_ids
    assert got.eos_ids == info.eos_ids  # eos_token_id is None here: the named specials
    assert got.fingerprint == info.fingerprint
    if name == "qwen3-151k":
        fast.eos_token = "<|im_end|>"
        assert fast.eos_token_id == 151645
        assert TokenizerInfo.from_tokenizer(fast).eos_ids == (151645,)
        explicit = TokenizerInfo.from_tokenizer(fast, eos_ids=[151643], logits_width=151936)
        assert explicit.eos_ids == (151643,)
        assert explicit.logits_width == 151936


@needs_shared
def test_from_transformers_slow_byte_level(tmp_path: Path) -> None:
    """A pure-Python transformers tokenizer (no tokenizers backend) is read through its vocabulary."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "ClvpTokenizer", None)
    if cls is None:
        pytest.skip("transformers has no ClvpTokenizer")
    model = raw_json("gpt2-50k")["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges), encoding="utf-8")
    slow = cls(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert not hasattr(slow, "backend_tokenizer")
    got = TokenizerInfo.from_tokenizer(slow)
    gpt2 = info_of("gpt2-50k")
    assert got.kind == "byte_level"
    assert got.token_bytes[:50256] == gpt2.token_bytes[:50256]
    assert got.eos_ids == (slow.eos_token_id,)
    assert set(slow.all_special_ids) <= got.special_ids
    ids = tok_of("gpt2-50k").encode("Hello wörld 😀", add_special_tokens=False).ids
    assert got.decode_bytes(ids) == "Hello wörld 😀".encode()


class FakeSlowSentencePiece:
    """Duck-types the few attributes of a slow transformers SentencePiece tokenizer that we read."""

    name_or_path = "fake-sp"
    eos_token_id = 2

    def __init__(self) -> None:
        self._vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁Hello": 3, "▁world": 4, "!": 5}
        for b in range(256):
            self._vocab[f"<0x{b:02X}>"] = 6 + b
        self.all_special_ids = [0, 1, 2]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        inverse = {i: s for s, i in self._vocab.items()}
        return [inverse[i] for i in ids]


def test_from_slow_sentencepiece_like() -> None:
    info = TokenizerInfo.from_tokenizer(FakeSlowSentencePiece())
    assert info.kind == "sentencepiece"
    assert info.name == "fake-sp"
    assert info.eos_ids == (2,)
    assert info.special_ids == {0, 1, 2}
    assert info.decode_bytes([1, 3, 4, 5, 6 + 0xE2, 6 + 0x82, 6 + 0xAC, 2]) == " Hello world!€".encode()


def test_from_tokenizer_rejects_other_objects() -> None:
    with pytest.raises(TokenizerError, match=r"expects a tokenizers\.Tokenizer or a transformers tokenizer"):
        TokenizerInfo.from_tokenizer(object())


# ------------------------------------------------------------------------------------------------------
# Small hand-made tokenizers


def tiny_tokenizer_json(
    vocab: dict[str, Any],
    decoder: dict[str, Any] | None,
    added: list[dict[str, Any]] | None = None,
    model_type: str = "BPE",
    byte_fallback: bool = False,
) -> dict[str, Any]:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, **t}
            for t in added or []
        ],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": decoder,
        "model": {
            "type": model_type,
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": byte_fallback,
            "vocab": vocab,
            "merges": [],
        },
    }


def write_json(tmp_path: Path, data: Any, name: str = "tiny.tokenizer.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_byte_level_token_outside_alphabet_is_utf8(tmp_path: Path) -> None:
    """As in tokenizers' ByteLevel decoder: a token with a character outside the alphabet is its UTF-8."""
    vocab = {"a": 0, "Ġb": 1, "é": 2, " c": 3, "€x": 4, "Ġ€": 5, "\u00a0": 6, "ĊĉĠ": 7}
    added = [{"id": 8, "content": "<|endoftext|>", "special": True}]
    decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path = write_json(tmp_path, tiny_tokenizer_json(vocab, decoder, added))
    info = TokenizerInfo.from_file(path)
    assert info.kind == "byte_level"
    assert info.token_bytes[:8] == (
        b"a",
        b" b",
        b"\xe9",
        b" c",
        "€x".encode(),
        "Ġ€".encode(),
        "\u00a0".encode(),
        b"\n\t ",
    )
    assert info.eos_ids == (8,)
    tok = tokenizers.Tokenizer.from_file(str(path))
    for i in range(8):
        assert tok.decode([0, i]) == "a" + info.token_bytes[i].decode("utf-8", errors="replace")


def test_holes_added_tokens_override_and_names(tmp_path: Path) -> None:
    vocab = {"<unk>": 0, "a": 1, "b": 2, "c": 3}
    added = [
        {"id": 0, "content": "<unk>", "special": True},
        {"id": 3, "content": "C!", "special": False},  # same id as "c" in the vocab: the added token wins
        {"id": 7, "content": "</s>", "special": True},  # ids 4..6 are holes
        {"id": 8, "content": "<extra>", "special": False},
    ]
    path = write_json(tmp_path, tiny_tokenizer_json(vocab, None, added))
    info = TokenizerInfo.from_file(path)
    assert info.kind == "plain"
    assert info.vocab_size == 9
    assert info.token_bytes == (b"", b"a", b"b", b"C!", b"", b"", b"", b"", b"<extra>")
    assert info.special_ids == {0, 4, 5, 6, 7}
    assert info.eos_ids == (7,)
    assert info.name == "tiny"
    assert info.decode_bytes([1, 4, 3, 7, 8]) == b"aC!<extra>"
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    same = TokenizerInfo.from_file(folder)
    assert same.name == "my-model"
    assert same.fingerprint == info.fingerprint


def test_unigram_metaspace_and_per_token_strip(tmp_path: Path) -> None:
    vocab = [["<unk>", 0.0], ["</s>", 0.0], ["▁Hello", -1.0], ["▁world", -2.0], ["▁", -3.0], ["x▁y", -4.0]]
    added = [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "</s>", "special": True}]
    data = tiny_tokenizer_json({}, None, added, model_type="Unigram")
    data["model"] = {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": False}
    data["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    info = TokenizerInfo.from_file(write_json(tmp_path, data))
    assert info.kind == "sentencepiece"
    assert info.token_bytes == (b"", b"", b" Hello", b" world", b" ", b"x y")
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tiny.tokenizer.json"))
    assert tok.decode([2, 3]) == "Hello world"  # Metaspace drops the first token's space: text-level
    assert tok.decode([5, 2, 3]) == "xy Hello world"  # it drops every "▁" of the first token
    assert tok.decode([2, 5, 3]) == "Hellox y world"

    # a Strip *before* Fuse strips every token (per-token), after Fuse only the whole text
    steps = [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]
    data["decoder"] = {"type": "Sequence", "decoders": steps}
    per_token = TokenizerInfo.from_file(write_json(tmp_path, data, "strip.json"))
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "strip.json"))
    assert per_token.token_bytes[2:4] == (b"Hello", b"world")
    assert tok.decode([2, 3]) == "Helloworld"
    assert 4 in per_token.special_ids  # "▁" strips to nothing: it can add no bytes
    data["decoder"] = {"type": "Sequence", "decoders": [steps[0], {"type": "Fuse"}, steps[1]]}
    text_level = TokenizerInfo.from_file(write_json(tmp_path, data, "fused.json"))
    assert text_level.token_bytes[2:4] == (b" Hello", b" world")


def test_fast_reader_handles_any_key_order(tmp_path: Path) -> None:
    """The merges-skipping JSON reader gives the same result whatever the layout of the file."""
    vocab = {"a": 0, "b": 1, "ab": 2, "merges": 3, "vocab": 4, '"decoder"': 5}
    added = [{"id": 6, "content": "<|endoftext|>", "special": True}]
    base = tiny_tokenizer_json(vocab, {"type": "ByteLevel"}, added)
    base["model"]["merges"] = [["a", "b"], ["]}}", "x"]]
    reference = TokenizerInfo.from_file(write_json(tmp_path, base, "ref.json"))
    assert reference.token_bytes[:6] == (b"a", b"b", b"ab", b"merges", b"vocab", b'"decoder"')
    layouts = {
        "model-first": {"model": base["model"], **{k: v for k, v in base.items() if k != "model"}},
        "merges-first": {**base, "model": {"merges": base["model"]["merges"], **base["model"]}},
        "decoder-last": {**{k: v for k, v in base.items() if k != "decoder"}, "decoder": base["decoder"]},
        "vocab-last": {
            **base,
            "model": {**{k: v for k, v in base["model"].items() if k != "vocab"}, "vocab": vocab},
        },
    }
    for label, data in layouts.items():
        for indent in (None, 2):
            path = tmp_path / f"{label}-{indent}.json"
            path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
            assert TokenizerInfo.from_file(path).fingerprint == reference.fingerprint, (label, indent)


@needs_shared
def test_fast_reader_agrees_with_json_module(tmp_path: Path) -> None:
    """The real files, with merges skipped, read the same as fully parsed and re-serialised ones."""
    data = raw_json("mistral-32k")
    path = tmp_path / "compact.json"
    path.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=True), encoding="utf-8")
    assert TokenizerInfo.from_file(path).fingerprint == info_of("mistral-32k").fingerprint


@needs_shared
@pytest.mark.parametrize("name", ["gemma3-262k", "llama3-128k"])
def test_from_file_is_fast(name: str) -> None:
    """About 0.4 s (gemma3) and 0.13 s (llama3) on 2 cores: the BPE merges are skipped, not parsed."""
    info_of(name)  # warm the page cache
    best = min(_timed(lambda: TokenizerInfo.from_file(path_of(name))) for _ in range(2))
    if name.startswith("gemma"):  # relative to a plain json.load of the same file, robust to a busy machine
        with open(path_of(name), encoding="utf-8") as f:
            full_parse = _timed(lambda: json.load(f))
        assert best < full_parse, (best, full_parse)
    else:
        assert best < 1.5, best


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------------
# from_vocab and the invariants


def test_from_vocab() -> None:
    info = TokenizerInfo.from_vocab([b"a", b"b", b"ab", b"<eos>", b"", bytearray(b"\xe2\x82")], eos_ids=[3])
    assert info.kind == "plain"
    assert info.vocab_size == info.logits_width == 6
    assert info.token_bytes == (b"a", b"b", b"ab", b"", b"", b"\xe2\x82")
    assert info.special_ids == {3, 4}  # EOS and the empty token
    assert info.eos_ids == (3,)
    assert info.decode_bytes([0, 2, 5, 3]) == b"aab\xe2\x82"
    assert info.decode_bytes(iter([])) == b""
    wide = TokenizerInfo.from_vocab([b"x", b"y"], eos_ids=1, special_ids=[1], logits_width=64, name="tiny")
    assert wide.logits_width == 64 and wide.token_bytes == (b"x", b"") and wide.name == "tiny"
    assert "tiny" in repr(wide) and "logits_width=64" in repr(wide)
    numpy = pytest.importorskip("numpy")
    assert wide.decode_bytes(numpy.array([0, 0, 1])) == b"xx"


def test_fingerprint_is_stable_and_sensitive() -> None:
    base = TokenizerInfo.from_vocab([b"a", b"b", b""], eos_ids=[2])
    assert len(base.fingerprint) == 64
    assert base.fingerprint == TokenizerInfo.from_vocab([b"a", b"b", b""], eos_ids=[2]).fingerprint
    assert base.fingerprint == TokenizerInfo.from_vocab([b"a", b"b", b"x"], eos_ids=[2], name="n").fingerprint
    others = [
        TokenizerInfo.from_vocab([b"a", b"c", b""], eos_ids=[2]),
        TokenizerInfo.from_vocab([b"ab", b"", b""], eos_ids=[2]),
        TokenizerInfo.from_vocab([b"a", b"b", b""], eos_ids=[2], logits_width=4),
        TokenizerInfo.from_vocab([b"a", b"b", b"", b"c"], eos_ids=[2]),
        TokenizerInfo.from_vocab([b"a", b"b", b""], eos_ids=[1, 2]),
    ]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 1 + len(others)
    assert pickle.loads(pickle.dumps(base)).fingerprint == base.fingerprint
    assert base.fingerprint is base.fingerprint  # cached


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token_bytes": [b"a"], "eos_ids": [1]}, r"eos id 1 is out of range \(vocab_size=1\)"),
        ({"token_bytes": [b"a"], "eos_ids": [-1]}, "eos id -1 is negative"),
        ({"token_bytes": [b"a"], "eos_ids": []}, "eos_ids is empty"),
        ({"token_bytes": [b"a"], "eos_ids": ["0"]}, "is not an integer id"),
        ({"token_bytes": [b"a", b""], "eos_ids": [1], "logits_width": 1}, "logits_width=1 is smaller"),
        ({"token_bytes": [], "eos_ids": [0]}, "the vocabulary is empty"),
        ({"token_bytes": [b"a", "b"], "eos_ids": [0]}, "token 1 is 'b', not bytes"),
        ({"token_bytes": b"ab", "eos_ids": [0]}, "sequence of bytes"),
        ({"token_bytes": [b"a", b""], "eos_ids": [1], "special_ids": [5]}, "special id 5 is out of range"),
    ],
)
def test_from_vocab_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        TokenizerInfo.from_vocab(**kwargs)


def test_direct_construction_is_validated() -> None:
    ok: dict[str, Any] = {
        "token_bytes": (b"a", b""),
        "special_ids": frozenset({1}),
        "eos_ids": (1,),
        "vocab_size": 2,
        "logits_width": 2,
        "kind": "plain",
    }
    assert TokenizerInfo(**ok).vocab_size == 2
    broken: list[tuple[dict[str, Any], str]] = [
        ({"vocab_size": 3}, "vocab_size=3 but there are 2"),
        ({"kind": "wordpiece"}, "kind 'wordpiece' is not one of"),
        ({"special_ids": frozenset()}, "token 1 has no bytes but is not special"),
        ({"special_ids": frozenset({0, 1})}, "special id 0 has bytes"),
        ({"eos_ids": ()}, "eos_ids is empty"),
        ({"eos_ids": (0,)}, "eos id 0 is not in special_ids"),
        ({"logits_width": 1}, "logits_width=1 is smaller"),
        ({"token_bytes": [b"a", b""]}, "must be a tuple of bytes"),
    ]
    for change, message in broken:
        with pytest.raises(TokenizerError, match=message):
            TokenizerInfo(**{**ok, **change})


def test_decode_bytes_rejects_bad_ids() -> None:
    info = TokenizerInfo.from_vocab([b"a", b""], eos_ids=[1], logits_width=8)
    with pytest.raises(
        TokenizerError, match=r"token id 2 is out of range \(vocab_size=2; ids 2..7 are logits"
    ):
        info.decode_bytes([0, 2])
    with pytest.raises(TokenizerError, match="token id -1 is out of range"):
        info.decode_bytes([-1])
    with pytest.raises(TypeError):
        info.decode_bytes([0.5])  # type: ignore[list-item]


def test_errors_are_input_errors() -> None:
    assert issubclass(TokenizerError, InvalidInputError)
    assert issubclass(TokenizerError, ValueError)


# ------------------------------------------------------------------------------------------------------
# from_file errors


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        TokenizerInfo.from_file(tmp_path / "missing.json")
    with pytest.raises(TokenizerError, match=r"is a folder without a tokenizer\.json"):
        TokenizerInfo.from_file(tmp_path)
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"is not a tokenizer\.json: invalid JSON"):
        TokenizerInfo.from_file(tmp_path / "garbage.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TokenizerError, match="not UTF-8 text"):
        TokenizerInfo.from_file(tmp_path / "binary.json")
    (tmp_path / "config.json").write_text('{"model_type": "llama", "vocab_size": 32000}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="no 'model' section"):
        TokenizerInfo.from_file(tmp_path / "config.json")
    (tmp_path / "list.json").write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(TokenizerError, match="no 'model' section"):
        TokenizerInfo.from_file(tmp_path / "list.json")

    vocab = {"a": 0, "b": 1}
    end = [{"id": 2, "content": "</s>", "special": True}]
    cases = [
        (tiny_tokenizer_json(vocab, None, [{"id": 2, "content": "<pad>", "special": True}]), "pass eos_ids="),
        (
            tiny_tokenizer_json(vocab, {"type": "WordPiece", "prefix": "##"}, end),
            "decoder 'WordPiece' cannot",
        ),
        (tiny_tokenizer_json(vocab, {"type": "CTC"}, end), "decoder 'CTC' cannot be expressed"),
        (
            tiny_tokenizer_json(vocab, {"type": "Replace", "pattern": {"Regex": "x+"}, "content": ""}, end),
            "only Replace decoders with a plain string pattern",
        ),
        (tiny_tokenizer_json({"a": 0, "b": "1"}, None, end), "maps a token to '1', not an integer id"),
        (tiny_tokenizer_json({"a": 0, "b": -1}, None, end), "negative id"),
        (tiny_tokenizer_json({}, None), "the vocabulary is empty"),
        ({**tiny_tokenizer_json(vocab, None, end), "model": {"type": "BPE"}}, "model.vocab is missing"),
    ]
    for data, message in cases:
        path = write_json(tmp_path, data, "case.json")
        with pytest.raises(TokenizerError, match=message):
            TokenizerInfo.from_file(path)

    path = write_json(tmp_path, tiny_tokenizer_json(vocab, None, end), "ok.json")
    assert TokenizerInfo.from_file(path).eos_ids == (2,)
    assert TokenizerInfo.from_file(path, eos_ids=[0]).eos_ids == (0,)  # an explicit EOS becomes special
    assert TokenizerInfo.from_file(path, eos_ids=[0]).token_bytes == (b"", b"b", b"")
    with pytest.raises(TokenizerError, match=r"eos id 3 is out of range \(vocab_size=3\)"):
        TokenizerInfo.from_file(path, eos_ids=[3])
    with pytest.raises(TokenizerError, match="logits_width=2 is smaller than vocab_size=3"):
        TokenizerInfo.from_file(path, logits_width=2)
