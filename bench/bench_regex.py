"""Regex-constrained decoding: constrain against xgrammar, llguidance and outlines-core.

For a set of realistic regexes, each engine is teacher-forced along the tokenisation of a few valid
example strings (the same ``tokenizers.Tokenizer`` path for every engine) and measured on:

* correctness: every path token is allowed by the engine's mask and accepted, EOS is allowed at the end;
  constrain's allowed set is compared with each peer's at every step (special / EOS ids excluded);
* time to first mask (TTFM): regex string -> first bitmask filled, with every compile cache cold;
* per-step fill: only the fill call into a preallocated int32 bitmask, along each path, with a fresh
  compile for every path so first-visit costs count as they would for a user.

Usage::

    python bench/bench_regex.py [--tokenizer PATH] [--engines constrain,xgrammar,llguidance,outlines-core]
                                [--repeat N] [--cases SUBSTR,...] [--json OUT]

The peers are the optional ``bench`` extra; a peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER = REPO_ROOT.parent / "shared" / "tokenizers" / "llama3-128k.tokenizer.json"
ALL_ENGINES = ("constrain", "xgrammar", "llguidance", "outlines-core")
WARMUP_REGEX = "[a-z]{1,8}-[0-9]{2}"
WARMUP_TEXT = "warm-42"

# --------------------------------------------------------------------------------------------------------
# The workload: regexes with explicit ASCII classes, so that every engine means the same language.

_DATE = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_NUM_ID = "(0|[1-9][0-9]*)"
_SEMVER_IDS = "[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*"
_LATIN = "A-Za-zÀ-ÖØ-öø-ÿ"
_CJK = "一-鿿ぁ-ゖァ-ヺー"
_URL_CHARS = "a-zA-Z0-9._~%!$&'()*+,;=:@"  # "-" goes last in each class


@dataclass(frozen=True)
class Case:
    """One regex and the valid strings that are teacher-forced through every engine."""

    name: str
    pattern: str
    examples: tuple[str, ...]


CASES: tuple[Case, ...] = (
    Case("iso_date", _DATE, ("2024-02-29", "1999-12-31")),
    Case(
        "iso_datetime_tz",
        f"{_DATE}T{_TIME}(\\.[0-9]{{1,6}})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
        ("2024-05-17T13:45:07Z", "2023-11-02T08:00:00.125+05:30"),
    ),
    Case(
        "email",
        "[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\\.[a-zA-Z0-9-]+)*\\.[a-zA-Z]{2,24}",
        ("ada.lovelace@example.com", "j.doe+news@mail.cs.uni-bonn.de"),
    ),
    Case(
        "uuid",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ("123e4567-e89b-12d3-a456-426614174000", "f47ac10b-58cc-4372-a567-0e02b2c3d479"),
    ),
    Case("ipv4", f"({_OCTET}\\.){{3}}{_OCTET}", ("192.168.0.1", "8.8.4.4", "255.255.255.0")),
    Case(
        "phone",
        "\\+?[0-9]{1,3}[ -]?\\(?[0-9]{3}\\)?[ -]?[0-9]{3}[ -]?[0-9]{4}",
        ("+1 (555) 123-4567", "44 020 555 0199"),
    ),
    Case(
        "json_number",
        "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?",
        ("-12.5e+3", "0", "3.14159265358979"),
    ),
    Case(
        "quoted_string",
        '"([^"\\\\]|\\\\.)*"',
        ('"say \\"hi\\" to C:\\\\temp"', '"tab\\there, newline\\n, unicode \\u00e9 ok"'),
    ),
    Case(
        "url",
        f"https?://[a-zA-Z0-9.-]+(:[0-9]{{1,5}})?(/[{_URL_CHARS}-]*)*(\\?[{_URL_CHARS}/?-]*)?",
        ("https://example.com/path/to/page?q=1&lang=en", "http://localhost:8080/"),
    ),
    Case(
        "semver",
        f"{_NUM_ID}\\.{_NUM_ID}\\.{_NUM_ID}(-{_SEMVER_IDS})?(\\+{_SEMVER_IDS})?",
        ("1.2.3", "10.0.0-rc.1+build.5"),
    ),
    Case("hex_color", "#([0-9a-fA-F]{6}|[0-9a-fA-F]{3})", ("#1a2B3c", "#fff")),
    Case(
        "latin_words",
        f"[{_LATIN}]+( [{_LATIN}]+)*",
        ("Crème brûlée à la française", "Ærøskøbing und Straße"),
    ),
    Case("cjk_words", f"[{_CJK}]+(、[{_CJK}]+)*", ("東京都の天気、晴れ", "カタカナとひらがな")),
    Case(
        "flat_json_object",
        '\\{"name": "[^"]{1,40}", "age": [0-9]{1,3}\\}',
        ('{"name": "Ada Lovelace", "age": 36}', '{"name": "José Martí", "age": 142}'),
    ),
    Case(
        "free_text_500",
        "[^\\n]{1,500}",
        (
            "Structured generation constrains a language model so that every sampled token keeps the "
            "output inside a formal language. The engine compiles the constraint once, then at each "
            "decoding step it produces a bitmask over the vocabulary; tokens outside the mask get a "
            "logit of minus infinity. Fast engines precompute or cache these masks, because a step that "
            "takes longer than the forward pass stalls the whole batch, and users notice latency.",
        ),
    ),
)


# --------------------------------------------------------------------------------------------------------
# The shared tokenizer view


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2 byte-level alphabet: character -> byte (printable Latin-1 bytes are themselves)."""
    direct = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in direct}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _decode_vocab(data: dict[str, Any], size: int) -> list[bytes | None]:
    """Bytes of every non-special token (None for special tokens and holes), from tokenizer.json."""
    decoder = json.dumps(data.get("decoder"))
    strings: list[str | None] = [None] * size
    for text, tid in data["model"]["vocab"].items():
        strings[tid] = text
    special = set()
    for added in data.get("added_tokens", []):
        strings[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    out: list[bytes | None] = [None] * size
    if '"ByteLevel"' in decoder:
        alphabet = _byte_level_alphabet()
        for tid, s in enumerate(strings):
            if s is not None and tid not in special:
                out[tid] = bytes(alphabet[c] for c in s) if all(c in alphabet for c in s) else s.encode()
        return out
    fallback = re.compile("<0x([0-9A-Fa-f]{2})>")
    for tid, s in enumerate(strings):
        if s is None or tid in special:
            continue
        m = fallback.fullmatch(s) if "ByteFallback" in decoder else None
        out[tid] = bytes([int(m.group(1), 16)]) if m else s.replace("▁", " ").encode()
    return out


@dataclass
class Vocab:
    """The tokenizer, loaded once and shared by every engine adapter."""

    path: Path
    tokenizer: Any  # tokenizers.Tokenizer
    size: int
    token_bytes: list[bytes | None]  # None = special or hole
    eos_ids: tuple[int, ...]
    special_ids: frozenset[int] = field(init=False)
    hf: Any = None  # transformers.PreTrainedTokenizerFast, built on demand

    def __post_init__(self) -> None:
        self.special_ids = frozenset(i for i, b in enumerate(self.token_bytes) if not b)

    @property
    def words(self) -> int:
        return (self.size + 31) // 32

    def hf_tokenizer(self) -> Any:
        if self.hf is None:
            import transformers

            self.hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(self.path))
        return self.hf

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def show(self, tid: int) -> str:
        b = self.token_bytes[tid] if tid < len(self.token_bytes) else None
        return f"{tid}:{b!r}" if b is not None else f"{tid}:<special>"


def load_vocab(path: Path) -> Vocab:
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(path))
    size = tok.get_vocab_size(with_added_tokens=True)
    data = json.loads(path.read_text(encoding="utf-8"))
    token_bytes = _decode_vocab(data, size)
    try:  # constrain decides EOS; every peer is given the same ids
        import constrain

        eos = tuple(constrain.TokenizerInfo.from_file(path).eos_ids)
    except ImportError:
        names = (
            "<|end_of_text|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|endoftext|>",
            "<|im_end|>",
            "</s>",
            "<eos>",
        )
        eos = tuple(sorted(tid for name in names if (tid := tok.token_to_id(name)) is not None))
    return Vocab(path, tok, size, token_bytes, eos)


# --------------------------------------------------------------------------------------------------------
# Engine adapters: one class per engine, all with the same methods


class EngineError(Exception):
    """An engine rejected a regex (reported and skipped)."""


class Engine(ABC):
    """Adapter interface. ``build`` goes from a regex string to a matcher at the start state, cold."""

    name: str = ""
    note: str = ""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    @abstractmethod
    def new_bitmask(self) -> Any:
        """A preallocated int32 [1, ceil(V/32)] CPU tensor in the layout this engine fills."""

    @abstractmethod
    def build(self, regex: str) -> None:
        """Compile ``regex`` with all caches cold and start a matcher (raises EngineError if rejected)."""

    @abstractmethod
    def fill(self, bitmask: Any) -> None:
        """Write the allowed tokens of the current state into row 0 of ``bitmask``."""

    @abstractmethod
    def accept(self, tid: int) -> bool:
        """Advance by one token; False if the engine rejects it."""

    @abstractmethod
    def can_end(self) -> bool:
        """True where the output so far is complete (EOS may follow)."""

    def mask_row(self) -> np.ndarray:
        """The current mask as int32 words; the buffer is set to all-ones first, so bits an engine
        does not write show up as allowed."""
        bm = self.new_bitmask()
        bm.fill_(-1)
        self.fill(bm)
        return bm[0].numpy().copy()

    def allowed(self) -> set[int]:
        return set(mask_ids(self.mask_row(), self.vocab.size).tolist())


class ConstrainEngine(Engine):
    name = "constrain"

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        import constrain
        import constrain.compiler

        self.lib = constrain
        self.clear_caches = getattr(constrain.compiler, "clear_caches", None)
        if self.clear_caches is None:
            self.note = "constrain.compiler.clear_caches missing: compile cache may be warm"
        self.info = constrain.TokenizerInfo.from_file(vocab.path, eos_ids=vocab.eos_ids)
        self.matcher: Any = None

    def new_bitmask(self) -> Any:
        return self.lib.allocate_token_bitmask(1, self.info.vocab_size)

    def build(self, regex: str) -> None:
        if self.clear_caches is not None:
            self.clear_caches()
        try:
            grammar = self.lib.Grammar.from_regex(regex)
        except self.lib.ConstrainError as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}") from exc
        self.matcher = self.lib.GrammarMatcher(self.lib.compile(grammar, self.info))

    def fill(self, bitmask: Any) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, 0)

    def accept(self, tid: int) -> bool:
        return bool(self.matcher.accept_token(tid))

    def can_end(self) -> bool:
        return bool(self.matcher.can_end())


class XGrammarEngine(Engine):
    name = "xgrammar"

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        import xgrammar

        self.lib = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(
            vocab.hf_tokenizer(), vocab_size=vocab.size, stop_token_ids=list(vocab.eos_ids)
        )
        self.compiler = xgrammar.GrammarCompiler(self.info, cache_enabled=False)
        self.note = f"GrammarCompiler(cache_enabled=False, max_threads=8 default) on {_cpus()} CPUs"
        self.matcher: Any = None

    def new_bitmask(self) -> Any:
        return self.lib.allocate_token_bitmask(1, self.vocab.size)

    def build(self, regex: str) -> None:
        try:
            compiled = self.compiler.compile_regex(regex)
        except RuntimeError as exc:
            raise EngineError(str(exc).splitlines()[0]) from exc
        self.matcher = self.lib.GrammarMatcher(compiled)

    def fill(self, bitmask: Any) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, 0)

    def accept(self, tid: int) -> bool:
        return bool(self.matcher.accept_token(tid))

    def can_end(self) -> bool:
        # accepting a stop token is the only public "can end" query; fork so the state is untouched
        twin = self.matcher.fork()
        return bool(twin.accept_token(self.vocab.eos_ids[0]) and twin.is_terminated())


class LLGuidanceEngine(Engine):
    name = "llguidance"

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.lib = llguidance
        self.torch_api = llguidance.torch
        self.tokenizer = llguidance.hf.from_tokenizer(
            vocab.hf_tokenizer(), n_vocab=vocab.size, eos_token=list(vocab.eos_ids)
        )
        self.matcher: Any = None

    def new_bitmask(self) -> Any:
        return self.torch_api.allocate_token_bitmask(1, self.vocab.size)

    def build(self, regex: str) -> None:
        grammar = self.lib.LLMatcher.grammar_from_regex(regex)
        matcher = self.lib.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise EngineError(matcher.get_error().splitlines()[0])
        self.matcher = matcher

    def fill(self, bitmask: Any) -> None:
        self.torch_api.fill_next_token_bitmask(self.matcher, bitmask, 0)

    def accept(self, tid: int) -> bool:
        return bool(self.matcher.consume_token(tid)) and not self.matcher.is_error()

    def can_end(self) -> bool:
        return bool(self.matcher.is_accepting())


class OutlinesCoreEngine(Engine):
    name = "outlines-core"

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        import outlines_core

        self.lib = outlines_core
        # Keys are the raw token bytes (outlines-core takes str or bytes keys; a str key would be read
        # as the UTF-8 of the byte-level *alphabet* text, e.g. "Ġ", not as the bytes the token stands for).
        tokens: dict[bytes, list[int]] = {}
        for tid, b in enumerate(vocab.token_bytes):
            if b is not None and tid not in vocab.eos_ids:
                tokens.setdefault(b, []).append(tid)
        self.vocabulary = outlines_core.Vocabulary(vocab.eos_ids[0], tokens)
        self.note = f"one EOS id only ({vocab.eos_ids[0]}): Vocabulary takes a single eos_token_id"
        self.guide: Any = None

    def new_bitmask(self) -> Any:
        import torch

        return torch.zeros((1, self.vocab.words), dtype=torch.int32)

    def build(self, regex: str) -> None:
        try:
            index = self.lib.Index(regex, self.vocabulary)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(str(exc).splitlines()[0]) from exc
        self.guide = self.lib.Guide(index)

    def fill(self, bitmask: Any) -> None:
        self.guide.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

    def accept(self, tid: int) -> bool:
        if tid in self.vocab.eos_ids:  # the Guide has no transition on EOS; it is allowed in final states
            return bool(self.guide.is_finished())
        try:
            self.guide.advance(tid, return_tokens=False)
        except ValueError:
            return False
        return True

    def can_end(self) -> bool:
        return bool(self.guide.is_finished())


ADAPTERS: dict[str, type[Engine]] = {
    "constrain": ConstrainEngine,
    "xgrammar": XGrammarEngine,
    "llguidance": LLGuidanceEngine,
    "outlines-core": OutlinesCoreEngine,
}


def _constrain_background() -> bool | None:
    try:
        import constrain.compiler
    except ImportError:
        return None
    return bool(getattr(constrain.compiler, "BACKGROUND_PRECOMPUTE", False))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------------
# Bitmask helpers


def mask_ids(row: np.ndarray, size: int) -> np.ndarray:
    bits = np.unpackbits(np.ascontiguousarray(row).view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:size])


def ids_to_words(ids: Any, words: int) -> np.ndarray:
    bits = np.zeros(words * 32, dtype=np.uint8)
    bits[list(ids)] = 1
    return np.packbits(bits, bitorder="little").view(np.int32)


def has_bit(row: np.ndarray, tid: int) -> bool:
    return bool((int(row[tid >> 5]) >> (tid & 31)) & 1)


# --------------------------------------------------------------------------------------------------------
# Correctness: teacher forcing and mask comparison


@dataclass
class PathRun:
    """One cold run of an engine along a token path."""

    ttfm_ns: int = 0  # build + first fill
    build_ns: int = 0
    fill_ns: list[int] = field(default_factory=list)  # every fill on the path, the first one included
    error: str = ""  # correctness failure (checked runs only)
    rows: list[np.ndarray] = field(default_factory=list)  # checked runs: the mask at every step


def run_path(
    engine: Engine, case: Case, tokens: list[int], bitmask: Any, check: bool, step_gap_s: float = 0.0
) -> PathRun:
    """Build cold, then fill before each path token and once at the end; only the fills are timed.

    With ``check`` the bitmask is set to all-ones before each fill (so bits an engine leaves unwritten
    show up as allowed), and the path token, ``accept`` and the final EOS are checked, all untimed.
    ``step_gap_s`` sleeps (untimed, GIL released) after each accept, standing in for the model's
    forward pass; 0 (the default) times fills back to back, the worst case for work done ahead.
    """
    clock = time.perf_counter_ns
    run = PathRun()
    vocab = engine.vocab
    gc.collect()
    gc.disable()
    try:
        if check:
            bitmask.fill_(-1)
        t0 = clock()
        engine.build(case.pattern)
        t1 = clock()
        engine.fill(bitmask)
        t2 = clock()
        run.build_ns, run.ttfm_ns = t1 - t0, t2 - t0
        run.fill_ns.append(t2 - t1)
        for step, tid in enumerate(tokens):
            if check:
                row = bitmask[0].numpy().copy()
                run.rows.append(row)
                if not has_bit(row, tid):
                    run.error = f"step {step}: token {vocab.show(tid)} not in mask"
                    return run
            if not engine.accept(tid) and check:
                run.error = f"step {step}: token {vocab.show(tid)} rejected by accept"
                return run
            if step_gap_s:
                time.sleep(step_gap_s)
            if check:
                bitmask.fill_(-1)
            t = clock()
            engine.fill(bitmask)
            run.fill_ns.append(clock() - t)
    finally:
        gc.enable()
    if check:
        row = bitmask[0].numpy().copy()
        run.rows.append(row)
        if not any(has_bit(row, e) for e in vocab.eos_ids):
            run.error = "end: no EOS id in the final mask"
        elif not engine.can_end():
            run.error = "end: the engine says the output cannot end here"
    return run


@dataclass
class MaskDiff:
    """How a peer's allowed sets differ from constrain's along the paths of one regex."""

    steps: int = 0
    differing_steps: int = 0  # ordinary (non-special) tokens differ
    eos_steps: int = 0  # the EOS bits differ (not counted above)
    special_steps: int = 0  # other special ids differ (not counted above)
    # token id -> number of steps where only constrain (only the peer) allows it
    only_constrain: dict[int, int] = field(default_factory=dict)
    only_peer: dict[int, int] = field(default_factory=dict)
    first: list[str] = field(default_factory=list)  # a few human-readable first differences

    def to_json(self, vocab: Vocab) -> dict[str, Any]:
        def top(d: dict[int, int]) -> list[list[Any]]:
            return [[vocab.show(t), n] for t, n in sorted(d.items(), key=lambda kv: -kv[1])[:20]]

        return {
            "steps": self.steps,
            "differing_steps": self.differing_steps,
            "eos_steps": self.eos_steps,
            "special_steps": self.special_steps,
            "only_constrain_tokens": len(self.only_constrain),
            "only_peer_tokens": len(self.only_peer),
            "only_constrain_top": top(self.only_constrain),
            "only_peer_top": top(self.only_peer),
            "first": self.first,
        }


def compare_rows(
    ref: list[np.ndarray], peer: list[np.ndarray], vocab: Vocab, diff: MaskDiff, label: str
) -> None:
    ordinary = ~ids_to_words(vocab.special_ids | set(range(vocab.size, vocab.words * 32)), vocab.words)
    eos = ids_to_words(vocab.eos_ids, vocab.words)
    other_special = ids_to_words(vocab.special_ids - set(vocab.eos_ids), vocab.words)
    for step, (a, b) in enumerate(zip(ref, peer)):
        diff.steps += 1
        x = a ^ b
        diff.eos_steps += bool((x & eos).any())
        diff.special_steps += bool((x & other_special).any())
        if not (x & ordinary).any():
            continue
        diff.differing_steps += 1
        only_a = mask_ids(a & ~b & ordinary, vocab.size)
        only_b = mask_ids(b & ~a & ordinary, vocab.size)
        for t in only_a.tolist():
            diff.only_constrain[t] = diff.only_constrain.get(t, 0) + 1
        for t in only_b.tolist():
            diff.only_peer[t] = diff.only_peer.get(t, 0) + 1
        if len(diff.first) < 3:
            diff.first.append(
                f"{label} step {step}: only constrain {len(only_a)} "
                f"{[vocab.show(t) for t in only_a[:4].tolist()]}, only peer {len(only_b)} "
                f"{[vocab.show(t) for t in only_b[:4].tolist()]}"
            )


# --------------------------------------------------------------------------------------------------------
# Timing


def warm_up(engine: Engine) -> None:
    bitmask = engine.new_bitmask()
    for _ in range(2):
        engine.build(WARMUP_REGEX)
        engine.fill(bitmask)
        for tid in engine.vocab.encode(WARMUP_TEXT):
            engine.accept(tid)
            engine.fill(bitmask)


# --------------------------------------------------------------------------------------------------------
# Driver


@dataclass
class EngineResult:
    name: str
    note: str = ""
    setup_s: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # case -> rejection message
    failed: dict[str, str] = field(default_factory=dict)  # case -> correctness failure
    diffs: dict[str, MaskDiff] = field(default_factory=dict)
    ttfm_ns: dict[str, list[int]] = field(default_factory=dict)  # case -> samples
    fill_ns: dict[str, list[list[int]]] = field(default_factory=dict)  # case -> one list per path run
    slow: dict[str, float] = field(default_factory=dict)  # case -> build seconds (timed once only)

    def timed_cases(self) -> list[str]:
        return list(self.ttfm_ns)


def make_engines(names: list[str], vocab: Vocab) -> tuple[list[Engine], dict[str, EngineResult]]:
    engines: list[Engine] = []
    results: dict[str, EngineResult] = {}
    for name in names:
        t = time.perf_counter()
        try:
            engine = ADAPTERS[name](vocab)
        except ImportError as exc:
            print(f"  {name}: not installed ({exc}); skipped (pip install -e '.[bench]')")
            continue
        setup = time.perf_counter() - t
        warm_up(engine)
        engines.append(engine)
        results[name] = EngineResult(name, engine.note, setup)
        print(f"  {name}: tokenizer converted in {setup:.2f} s" + (f"; {engine.note}" if engine.note else ""))
    return engines, results


def run_cases(
    cases: list[Case],
    engines: list[Engine],
    results: dict[str, EngineResult],
    repeat: int,
    max_build_s: float,
    step_gap_s: float = 0.0,
) -> None:
    """``repeat`` cold runs of every example path per engine; the first one is also the checked run."""
    bitmasks = {e.name: e.new_bitmask() for e in engines}
    gc.collect()
    gc.freeze()  # the vocabularies are long-lived: keep them out of the per-run collections (0.2 s each)
    try:
        _run_repeats(cases, engines, results, repeat, max_build_s, bitmasks, step_gap_s)
    finally:
        gc.unfreeze()


def _run_repeats(
    cases: list[Case],
    engines: list[Engine],
    results: dict[str, EngineResult],
    repeat: int,
    max_build_s: float,
    bitmasks: dict[str, Any],
    step_gap_s: float = 0.0,
) -> None:
    vocab = engines[0].vocab
    for r in range(repeat):
        t = time.perf_counter()
        for case in cases:
            ref_rows: dict[int, list[np.ndarray]] = {}  # constrain runs first: it is the reference
            for engine in engines:
                res = results[engine.name]
                if case.name in res.skipped or case.name in res.failed or (r and case.name in res.slow):
                    continue
                for k, example in enumerate(case.examples):
                    tokens = vocab.encode(example)
                    try:
                        run = run_path(
                            engine, case, tokens, bitmasks[engine.name], check=r == 0, step_gap_s=step_gap_s
                        )
                    except EngineError as exc:
                        res.skipped[case.name] = str(exc)
                        print(f"  {case.name:18s} {engine.name:14s} rejected: {exc}")
                        break
                    if run.error:
                        res.failed[case.name] = f"example {k} ({example[:30]!r}): {run.error}"
                        res.ttfm_ns.pop(case.name, None)
                        res.fill_ns.pop(case.name, None)
                        print(f"  {case.name:18s} {engine.name:14s} FAILED {res.failed[case.name]}")
                        break
                    res.ttfm_ns.setdefault(case.name, []).append(run.ttfm_ns)
                    res.fill_ns.setdefault(case.name, []).append(run.fill_ns)
                    if r == 0 and run.build_ns > max_build_s * 1e9:
                        res.slow[case.name] = run.build_ns / 1e9
                    if r == 0 and engine.name == "constrain":
                        ref_rows[k] = run.rows
                    elif r == 0 and k in ref_rows:
                        diff = res.diffs.setdefault(case.name, MaskDiff())
                        compare_rows(ref_rows[k], run.rows, vocab, diff, f"ex{k}")
        label = "checked + timed" if r == 0 else "timed"
        print(f"  run {r + 1}/{repeat} ({label}): {time.perf_counter() - t:.1f} s")


# --------------------------------------------------------------------------------------------------------
# Reporting


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary(res: EngineResult, cases: list[str]) -> dict[str, float]:
    ttfm = [statistics.median(res.ttfm_ns[c]) / 1e6 for c in cases]
    steps = [t / 1e3 for c in cases for run in res.fill_ns[c] for t in run]
    return {
        "ttfm_p50_ms": pct(ttfm, 50),
        "ttfm_p90_ms": pct(ttfm, 90),
        "fill_p50_us": pct(steps, 50),
        "fill_p99_us": pct(steps, 99),
        "fill_max_us": max(steps) if steps else float("nan"),
    }


def fmt(x: float, digits: int = 1) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.{digits}f}" if abs(x) < 1e5 else f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    return "-" if x != x else f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(
            "| "
            + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + " |"
        )


def report(cases: list[Case], results: dict[str, EngineResult]) -> dict[str, Any]:
    ref = results.get("constrain")
    keys = ["ttfm_p50_ms", "ttfm_p90_ms", "fill_p50_us", "fill_p99_us", "fill_max_us"]
    rows = []
    summaries: dict[str, Any] = {}
    for name, res in results.items():
        timed = res.timed_cases()
        if not timed:
            continue
        s = summary(res, timed)
        row = [name, *(fmt(s[k]) for k in keys)]
        ratios: dict[str, float] = {}
        if ref is not None and name != "constrain":
            common = [c for c in timed if c in ref.ttfm_ns]  # ratios only over regexes both engines ran
            mine, theirs = summary(res, common), summary(ref, common)
            ratios = {k: mine[k] / theirs[k] for k in keys}
            row.append(" / ".join(fmt_ratio(ratios[k]) for k in keys))
        else:
            row.append("1 (reference)" if name == "constrain" else "-")
        rows.append(row)
        summaries[name] = {**s, "ratio_vs_constrain": ratios, "regexes_timed": len(timed)}
    print(
        "\nOverall (TTFM percentiles over per-regex medians; fill percentiles over every step of every run)"
    )
    print(
        "ratio = peer / constrain for TTFM p50 / TTFM p90 / fill p50 / fill p99 / fill max"
        " (>1: constrain faster)"
    )
    print_table(
        [
            "engine",
            "TTFM p50 (ms)",
            "TTFM p90 (ms)",
            "fill p50 (µs)",
            "fill p99 (µs)",
            "fill max (µs)",
            "ratio",
        ],
        rows,
    )

    names = [n for n, r in results.items() if r.timed_cases() or r.skipped or r.failed]
    per_regex_rows = []
    for case in cases:
        cells = [case.name]
        for n in names:
            res = results[n]
            if case.name in res.ttfm_ns:
                fill50 = pct([t / 1e3 for run in res.fill_ns[case.name] for t in run], 50)
                cells.append(f"{fmt(statistics.median(res.ttfm_ns[case.name]) / 1e6, 2)} / {fmt(fill50)}")
            else:
                cells.append("rejected" if case.name in res.skipped else "FAILED")
        per_regex_rows.append(cells)
    print("\nPer regex: TTFM median (ms) / fill p50 (µs)")
    print_table(["regex", *names], per_regex_rows)
    return summaries


def print_findings(results: dict[str, EngineResult], vocab: Vocab) -> None:
    print("\nCorrectness")
    for name, res in results.items():
        for case, msg in res.skipped.items():
            print(f"  {name}: rejected {case}: {msg}")
        for case, msg in res.failed.items():
            print(f"  {name}: FAILED {case}: {msg}")
        for case, secs in res.slow.items():
            print(f"  {name}: {case} timed once only (build took {secs:.1f} s > --max-build-s)")
        for case, d in res.diffs.items():
            parts = []
            if d.differing_steps:
                parts.append(
                    f"ordinary tokens differ at {d.differing_steps}/{d.steps} steps "
                    f"({len(d.only_constrain)} ids only constrain, {len(d.only_peer)} ids only {name})"
                )
            if d.eos_steps:
                parts.append(f"EOS bits differ at {d.eos_steps} steps")
            if d.special_steps:
                parts.append(f"special ids differ at {d.special_steps} steps")
            if parts:
                print(f"  {name} vs constrain, {case}: " + "; ".join(parts))
                for line in d.first[:2]:
                    print(f"      {line}")
    if "constrain" in results and len(results) > 1:
        totals = {
            n: sum(d.differing_steps for d in r.diffs.values())
            for n, r in results.items()
            if n != "constrain"
        }
        print(
            "  steps with differing ordinary-token sets vs constrain: "
            + ", ".join(f"{n} {v}" for n, v in totals.items())
        )


def validate_cases(cases: list[Case], vocab: Vocab) -> None:
    """Our own workload must be right: examples match (Python re) and the token path spells them."""
    for case in cases:
        for example in case.examples:
            if not re.fullmatch(case.pattern, example):
                raise SystemExit(f"bench bug: {example!r} does not match {case.name}")
            spelled = b"".join(vocab.token_bytes[t] or b"" for t in vocab.encode(example))
            if spelled != example.encode():
                raise SystemExit(f"bench bug: the token path of {example!r} spells {spelled!r}")


def compare_with_constrain_bytes(vocab: Vocab) -> str:
    """Cross-check our independent byte decoding (fed to outlines-core) against constrain's."""
    try:
        import constrain
    except ImportError:
        return "constrain not importable"
    info = constrain.TokenizerInfo.from_file(vocab.path, eos_ids=vocab.eos_ids)
    mine = [b or b"" for b in vocab.token_bytes]
    bad = [i for i, (a, b) in enumerate(zip(mine, info.token_bytes)) if a != b]
    if len(mine) != len(info.token_bytes):
        return f"vocab sizes differ: {len(mine)} here, {len(info.token_bytes)} in constrain"
    return "identical" if not bad else f"{len(bad)} ids differ, e.g. {bad[:5]}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    p.add_argument("--engines", default=",".join(ALL_ENGINES))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--max-build-s",
        type=float,
        default=1.0,
        help="an engine whose first build of a regex takes longer (s) is timed on that regex only once",
    )
    p.add_argument("--cases", default="", help="comma-separated substrings of case names (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write every raw number here")
    p.add_argument(
        "--step-gap-ms",
        type=float,
        default=0.0,
        help="untimed sleep after each accepted token, standing in for a forward pass (default 0)",
    )
    p.add_argument(
        "--constrain-background",
        choices=("on", "off"),
        default="",
        help="force constrain's background mask fill on or off (default: the library default)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:  # benchmark this checkout's constrain, also when not installed
        sys.path.insert(0, str(REPO_ROOT))
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ADAPTERS))
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {', '.join(ADAPTERS)}")
    names.sort(key=ALL_ENGINES.index)  # constrain first: it is the reference for the mask comparison
    if args.constrain_background:
        import constrain.compiler

        constrain.compiler.BACKGROUND_PRECOMPUTE = args.constrain_background == "on"
    wanted = [s for s in args.cases.split(",") if s]
    cases = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]

    started = time.perf_counter()
    vocab = load_vocab(args.tokenizer)
    print(
        f"tokenizer {args.tokenizer.name}: {vocab.size} ids, {len(vocab.special_ids)} special, "
        f"EOS {vocab.eos_ids}"
    )
    validate_cases(cases, vocab)
    byte_check = compare_with_constrain_bytes(vocab)
    print(f"token bytes (bench's own decoding vs constrain.TokenizerInfo): {byte_check}")
    print("engines:")
    engines, results = make_engines(names, vocab)
    if not engines:
        raise SystemExit("no engine available")
    print(f"runs ({args.repeat} cold runs per example path; the first also checks and compares masks):")
    run_cases(cases, engines, results, args.repeat, args.max_build_s, args.step_gap_ms / 1e3)
    summaries = report(cases, results)
    print_findings(results, vocab)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    if args.json:
        out = {
            "meta": {
                "tokenizer": str(args.tokenizer),
                "vocab_size": vocab.size,
                "eos_ids": vocab.eos_ids,
                "repeat": args.repeat,
                "step_gap_ms": args.step_gap_ms,
                "constrain_background": _constrain_background(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "python": sys.version.split()[0],
                "machine": f"{platform.machine()} {platform.processor()} {_cpus()} CPUs",
                "token_bytes_check": byte_check,
            },
            "cases": [{"name": c.name, "pattern": c.pattern, "examples": list(c.examples)} for c in cases],
            "summary": summaries,
            "engines": {
                n: {
                    "note": r.note,
                    "setup_s": r.setup_s,
                    "skipped": r.skipped,
                    "failed": r.failed,
                    "mask_diffs": {c: d.to_json(vocab) for c, d in r.diffs.items()},
                    "timed_once": r.slow,
                    "ttfm_ns": r.ttfm_ns,
                    "fill_ns": r.fill_ns,
                }
                for n, r in results.items()
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
