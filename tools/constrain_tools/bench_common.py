"""What the ``bench/`` scripts share: the tokenizer view, one adapter per engine, teacher forcing, tables.

Every engine (constrain, xgrammar, llguidance, outlines-core) is driven through one :class:`Engine`
interface: ``build(text)`` (cold: the constraint's text to a matcher at the start state), ``fill(bitmask)``,
``accept(tid)``, ``can_end()``. The regex adapters here build from a regex; ``bench_cfg.py`` and
``bench_recursive_schemas.py`` subclass them to build from a Lark grammar or a JSON Schema.

:func:`run_path` teacher-forces one engine along a token path, timing only the fills and, on a checked
run, recording the mask at every step; :func:`compare_rows` diffs a peer's masks with constrain's.
:func:`run_teacher_forced` is the driver of the grammar benches (every engine, every path, ``repeat``
cold runs), :func:`print_table` the Markdown-style tables all of them print.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import harness

__all__ = [
    "DEFAULT_TOKENIZER",
    "ConstrainEngine",
    "Engine",
    "EngineError",
    "LLGuidanceEngine",
    "MaskDiff",
    "OutlinesCoreEngine",
    "PathResult",
    "PathRun",
    "PatternCase",
    "Vocab",
    "XGrammarEngine",
    "compare_rows",
    "fmt",
    "fmt_ratio",
    "grammar_bench_parser",
    "has_bit",
    "ids_to_words",
    "load_engines",
    "load_vocab",
    "mask_ids",
    "path_stats",
    "pct",
    "print_notes",
    "print_path_table",
    "print_table",
    "run_meta",
    "run_path",
    "run_teacher_forced",
    "write_json",
]

#: The tokenizer every bench uses by default (llama3, 128,256 ids), in the shared folder.
DEFAULT_TOKENIZER = harness.shared_dir() / "tokenizers" / "llama3-128k.tokenizer.json"


class PatternCase(Protocol):
    """What :func:`run_path` needs of a case: the text an engine builds (a regex, Lark text, a schema)."""

    @property
    def name(self) -> str: ...

    @property
    def pattern(self) -> str: ...

    @property
    def examples(self) -> tuple[str, ...]: ...


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


def load_vocab(path: str | Path | None) -> Vocab:
    """The tokenizer.json at ``path`` (a clear error naming ``--tokenizer`` when it is missing), with
    constrain's EOS ids: every peer is given the same ones."""
    import tokenizers

    import constrain

    path = harness.require_path(path, "tokenizer", "--tokenizer")
    tok = tokenizers.Tokenizer.from_file(str(path))
    size = tok.get_vocab_size(with_added_tokens=True)
    data = json.loads(path.read_text(encoding="utf-8"))
    token_bytes = _decode_vocab(data, size)
    eos = tuple(constrain.TokenizerInfo.from_file(path).eos_ids)
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


class _GrammarMatcherEngine(Engine):
    """Engines whose matcher has XGrammar's API: ``fill_next_token_bitmask`` and ``accept_token``."""

    matcher: Any = None

    def fill(self, bitmask: Any) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, 0)

    def accept(self, tid: int) -> bool:
        return bool(self.matcher.accept_token(tid))


class ConstrainEngine(_GrammarMatcherEngine):
    """constrain: ``Grammar.from_regex`` + ``compile`` + ``GrammarMatcher``, every grammar cache cleared
    first (``clear_caches(keep_constants=True, release=False)``: the heap is not trimmed)."""

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
        try:  # process start-up, as the peers load their native code at import
            from constrain.warmup import preload_kernels
        except ImportError:  # an older constrain
            pass
        else:
            preload_kernels()

    def new_bitmask(self) -> Any:
        return self.lib.allocate_token_bitmask(1, self.info.vocab_size)

    def grammar_of(self, text: str) -> Any:
        """The ``constrain.Grammar`` for ``text`` (here a regex; the grammar benches override this)."""
        return self.lib.Grammar.from_regex(text)

    def build(self, regex: str) -> None:
        if self.clear_caches is not None:
            # cold for this grammar; data that depends on no grammar (a tokenizer's key tables, the
            # any-value automata) stays, as in a process that has compiled one schema before, and so do
            # the heap's free pages (a serving process does not trim its heap between schemas)
            try:
                self.clear_caches(keep_constants=True, release=False)
            except TypeError:  # an older constrain
                self.clear_caches()
        try:
            grammar = self.grammar_of(regex)
        except self.lib.ConstrainError as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}") from exc
        self.matcher = self.lib.GrammarMatcher(self.lib.compile(grammar, self.info))

    def can_end(self) -> bool:
        return bool(self.matcher.can_end())


class XGrammarEngine(_GrammarMatcherEngine):
    """xgrammar: ``compile_regex`` with the compile cache off, then ``GrammarMatcher``."""

    name = "xgrammar"

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        import xgrammar

        self.lib = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(
            vocab.hf_tokenizer(), vocab_size=vocab.size, stop_token_ids=list(vocab.eos_ids)
        )
        self.compiler = xgrammar.GrammarCompiler(self.info, cache_enabled=False)
        self.note = (
            f"GrammarCompiler(cache_enabled=False, max_threads=8 default) on {harness.cpu_count()} CPUs"
        )
        self.matcher: Any = None

    def new_bitmask(self) -> Any:
        return self.lib.allocate_token_bitmask(1, self.vocab.size)

    def compile(self, text: str) -> Any:
        """The ``xgrammar.CompiledGrammar`` for ``text`` (here a regex; the grammar benches override this)."""
        return self.compiler.compile_regex(text)

    def build(self, regex: str) -> None:
        try:
            compiled = self.compile(regex)
        except RuntimeError as exc:
            raise EngineError(str(exc).splitlines()[0]) from exc
        self.matcher = self.lib.GrammarMatcher(compiled)

    def can_end(self) -> bool:
        # accepting a stop token is the only public "can end" query; fork so the state is untouched
        twin = self.matcher.fork()
        return bool(twin.accept_token(self.vocab.eos_ids[0]) and twin.is_terminated())


class LLGuidanceEngine(Engine):
    """llguidance: ``grammar_from_regex`` + ``LLMatcher``."""

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

    def grammar_of(self, text: str) -> Any:
        """The llguidance grammar for ``text`` (here a regex; the grammar benches override this)."""
        return self.lib.LLMatcher.grammar_from_regex(text)

    def build(self, regex: str) -> None:
        try:
            grammar = self.grammar_of(regex)
        except ValueError as exc:
            raise EngineError(str(exc).splitlines()[0]) from exc
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
    """outlines-core: ``Index`` + ``Guide`` over the raw token bytes."""

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


# --------------------------------------------------------------------------------------------------------
# Bitmask helpers


def mask_ids(row: np.ndarray, size: int) -> np.ndarray:
    """The token ids below ``size`` whose bit is set in the int32 words ``row``."""
    bits = np.unpackbits(np.ascontiguousarray(row).view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:size])


def ids_to_words(ids: Any, words: int) -> np.ndarray:
    """``words`` int32 words with exactly the bits of ``ids`` set."""
    bits = np.zeros(words * 32, dtype=np.uint8)
    bits[list(ids)] = 1
    return np.packbits(bits, bitorder="little").view(np.int32)


def has_bit(row: np.ndarray, tid: int) -> bool:
    """Whether token ``tid`` is allowed by the int32 words ``row``."""
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
    engine: Engine, case: PatternCase, tokens: list[int], bitmask: Any, check: bool, step_gap_s: float = 0.0
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
    """Add to ``diff`` how the masks ``peer`` differ from ``ref`` (constrain's) step by step: ordinary
    tokens, EOS and other special ids counted apart; ``label`` names the path in ``diff.first``."""
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
# Tables


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def fmt(x: float, digits: int = 1) -> str:
    """``x`` with thousands separators and ``digits`` decimals (none from 100,000 up); ``-`` for NaN."""
    if x != x:  # nan
        return "-"
    return f"{x:,.{digits}f}" if abs(x) < 1e5 else f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    """A ratio with two significant digits (none from 10 up); ``-`` for NaN."""
    return "-" if x != x else f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(
            "| "
            + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + " |"
        )


# --------------------------------------------------------------------------------------------------------
# The grammar benches' driver (bench_cfg.py, bench_recursive_schemas.py)


@dataclass
class PathResult:
    """One engine's measurements over the cases of a grammar bench."""

    engine: str
    note: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # case -> compile or correctness failure
    ttfm_ms: dict[str, list[float]] = field(default_factory=dict)  # per case, per run
    fill_us: dict[str, list[float]] = field(default_factory=dict)  # per case, every step of every run
    diffs: dict[str, Any] = field(default_factory=dict)  # case -> MaskDiff.to_json, peers only


def load_engines(
    adapters: dict[str, Callable[[Vocab], Engine]], names: Sequence[str], vocab: Vocab, warm: PatternCase
) -> tuple[list[Engine], dict[str, PathResult]]:
    """Build the named engines (one not installed is skipped with a note) and warm each one up along
    ``warm``'s first example, so JIT and import time are left out of the timings."""
    engines: list[Engine] = []
    results: dict[str, PathResult] = {}
    for name in names:
        try:
            eng = adapters[name](vocab)
        except ImportError as exc:
            print(f"skipping {name}: {exc}")
            continue
        engines.append(eng)
        results[name] = PathResult(name, eng.note)
        run_path(eng, warm, vocab.encode(warm.examples[0]), eng.new_bitmask(), check=False)
    return engines, results


def run_teacher_forced(
    cases: Sequence[PatternCase],
    engines: Sequence[Engine],
    results: dict[str, PathResult],
    vocab: Vocab,
    repeat: int,
    *,
    announce: bool = False,
) -> None:
    """``repeat`` cold runs of every engine along every example path of every case; the first run of
    each path is checked, and each peer's masks are compared with constrain's (``results[*].diffs``).

    An engine that rejects a case or fails a check gets ``errors[case]`` and is not timed further on it.
    ``announce`` prints one line per case (its paths and tokens) as it starts.
    """
    for case in cases:
        paths = [vocab.encode(x) for x in case.examples]
        for text, ids in zip(case.examples, paths):
            if b"".join(vocab.token_bytes[t] or b"" for t in ids) != text.encode():
                raise SystemExit(f"{case.name}: the token path does not spell {text!r}")
        if announce:
            print(f"{case.name}: {len(paths)} paths, {sum(map(len, paths))} tokens", flush=True)
        rows: dict[str, list[list[np.ndarray]]] = {}
        for eng in engines:
            res = results[eng.name]
            bitmask = eng.new_bitmask()
            res.ttfm_ms[case.name] = []
            res.fill_us[case.name] = []
            for p, ids in enumerate(paths):
                for rep in range(repeat):
                    try:
                        r = run_path(eng, case, ids, bitmask, check=(rep == 0))
                    except EngineError as exc:
                        res.errors[case.name] = f"compile: {exc}"
                        break
                    if r.error:
                        res.errors[case.name] = f"path {p}: {r.error}"
                        break
                    if rep == 0:
                        rows.setdefault(eng.name, []).append(r.rows)
                    res.ttfm_ms[case.name].append(r.ttfm_ns / 1e6)
                    res.fill_us[case.name].extend(ns / 1e3 for ns in r.fill_ns)
                if case.name in res.errors:
                    break
        base = rows.get("constrain")
        for name, peer_rows in rows.items():
            if name == "constrain" or base is None:
                continue
            diff = MaskDiff()
            for k, (a_path, b_path) in enumerate(zip(base, peer_rows)):
                compare_rows(a_path, b_path, vocab, diff, f"path {k}")
            results[name].diffs[case.name] = diff.to_json(vocab)


def path_stats(res: PathResult, case: str) -> dict[str, float]:
    """TTFM p50 (ms), fill p50 / p99 / max (µs) and the number of fills of one engine on one case."""
    f = res.fill_us.get(case, [])
    return {
        "ttfm_p50_ms": pct(res.ttfm_ms.get(case, []), 50),
        "fill_p50_us": pct(f, 50),
        "fill_p99_us": pct(f, 99),
        "fill_max_us": max(f) if f else float("nan"),
        "steps": float(len(f)),
    }


def print_path_table(
    kind: str, cases: Sequence[PatternCase], results: dict[str, PathResult], vocab: Vocab, repeat: int
) -> None:
    """The per-case table of a grammar bench (``kind`` heads the first column), after a line naming the
    tokenizer, the runs and the CPUs."""
    print(
        f"\ntokenizer {vocab.path.name} ({vocab.size} tokens), "
        f"{repeat} cold runs per path, {harness.cpu_count()} CPUs"
    )
    headers = [kind, "engine", "TTFM ms p50", "fill us p50", "p99", "max", "steps", "mask diff vs constrain"]
    table = []
    for case in cases:
        for name, res in results.items():
            if case.name in res.errors:
                table.append(
                    [case.name, name, "-", "-", "-", "-", "-", "FAILED: " + res.errors[case.name][:90]]
                )
                continue
            st = path_stats(res, case.name)
            d = res.diffs.get(case.name)
            dd = ""
            if d:
                dd = f"{d['differing_steps']}/{d['steps']} steps"
                if d["eos_steps"]:
                    dd += f", EOS {d['eos_steps']}"
            table.append(
                [
                    case.name,
                    name,
                    fmt(st["ttfm_p50_ms"], 2),
                    fmt(st["fill_p50_us"]),
                    fmt(st["fill_p99_us"]),
                    fmt(st["fill_max_us"]),
                    str(int(st["steps"])),
                    dd,
                ]
            )
    print_table(headers, table)


def print_notes(results: dict[str, PathResult]) -> None:
    """Each engine's note and the first mask differences of each case."""
    for name, res in results.items():
        if res.note:
            print(f"note {name}: {res.note}")
        for case_name, d in res.diffs.items():
            for line in d["first"]:
                print(f"diff {name} {case_name}: {line}")


def run_meta(vocab: Vocab, repeat: int) -> dict[str, Any]:
    """The ``meta`` object of a grammar bench's ``--json``."""
    import platform

    return {
        "tokenizer": str(vocab.path),
        "vocab_size": vocab.size,
        "repeat": repeat,
        "cpus": harness.cpu_count(),
        "python": platform.python_version(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def grammar_bench_parser(doc: str | None, engines: Sequence[str]) -> argparse.ArgumentParser:
    """The options every grammar bench takes: --tokenizer, --engines, --repeat, --cases, --json."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    p.add_argument("--engines", default=",".join(engines))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="")
    p.add_argument("--json", default="")
    return p


def write_json(path: str | Path, payload: Any) -> None:
    """Write a bench's ``--json`` output (its folder created) and say so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
