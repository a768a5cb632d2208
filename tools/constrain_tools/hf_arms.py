"""Transformers ``generate`` arms with a grammar logits processor: XGrammar, llguidance and constrain.

The comparison JSONSchemaBench itself makes: each engine compiles the schema for the model's tokenizer
(coverage), masks greedy ``model.generate`` through a ``LogitsProcessor`` (compliance), and its time per
output token is the decode time after the first token over the tokens after it. All three go through the
same transformers loop, so the ratios compare engines, not loops. Optional: the peers come from the
``bench`` extra; an engine that does not import is reported as not installed.

XGrammar ships its own processor (``xgrammar.contrib.hf.LogitsProcessor``). llguidance ships none for
transformers: :class:`LLGuidanceProcessor` is ours, built on its documented ``LLMatcher`` and
``llguidance.torch`` mask functions. constrain's is :class:`constrain.adapters.hf.JSONSchemaLogitsProcessor`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

from . import jsonschemabench as jsb

__all__ = ["HF_ENGINES", "HFArm", "LLGuidanceProcessor", "available_engines", "run_hf_arm"]

#: Engines this module can run, in table order.
HF_ENGINES = ("constrain-hf", "xgrammar-hf", "llguidance-hf")


def available_engines(names: list[str]) -> dict[str, str]:
    """``{engine: reason}`` for the engines of ``names`` that cannot run here (missing package)."""
    modules = {"xgrammar-hf": "xgrammar", "llguidance-hf": "llguidance"}
    missing: dict[str, str] = {}
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        try:
            __import__(module)
        except ImportError as exc:
            missing[name] = f"{module} not installed ({exc}); pip install -e '.[bench]'"
    return missing


class LLGuidanceProcessor:
    """A transformers logits processor over one llguidance ``LLMatcher`` (batch 1, one generate call)."""

    def __init__(self, ll_tokenizer: Any, grammar: str, vocab_size: int) -> None:
        import llguidance

        with warnings.catch_warnings():  # its torch module uses the deprecated torch.jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            import llguidance.torch

        self._torch_api = llguidance.torch
        self.matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        if self.matcher.is_error():
            raise ValueError(self.matcher.get_error())
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._started:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self._started = True
        self._torch_api.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        self._torch_api.apply_token_bitmask_inplace(scores, self.bitmask)
        return scores


class _StepClock:
    """A no-op logits processor that records when each decoding step reaches the processors."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.times.append(time.perf_counter())
        return scores


@dataclass
class HFArm:
    """One engine's result on one schema."""

    status: str  # valid | invalid | not_json | budget | not_compiled | error
    compile_s: float | None = None
    output_tokens: int = 0
    forward_passes: int = 0
    decode_time_s: float = 0.0
    text: str = ""
    message: str = ""
    duplicate_keys: bool = False

    @property
    def valid(self) -> bool:
        """The output is JSON that validates against the schema."""
        return self.status == "valid"


class HFEngines:
    """Per-tokenizer state of the engines (tokenizer conversions are slow: made once)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._xgr_compiler: Any = None
        self._ll_tokenizer: Any = None

    def processor(self, engine: str, schema: Any) -> Any:
        """Compile ``schema`` for ``engine`` and return a fresh logits processor (raises on failure)."""
        text = json.dumps(schema)
        if engine == "constrain-hf":
            from constrain.adapters.hf import JSONSchemaLogitsProcessor

            return JSONSchemaLogitsProcessor(schema, self.tokenizer)
        if engine == "xgrammar-hf":
            import xgrammar
            import xgrammar.contrib.hf

            if self._xgr_compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
                self._xgr_compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
            compiled = self._xgr_compiler.compile_json_schema(text)
            return xgrammar.contrib.hf.LogitsProcessor(compiled)
        if engine == "llguidance-hf":
            import llguidance
            import llguidance.hf

            if self._ll_tokenizer is None:
                self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
            grammar = llguidance.LLMatcher.grammar_from_json_schema(text)
            return LLGuidanceProcessor(self._ll_tokenizer, grammar, self.vocab_size)
        raise ValueError(f"unknown engine {engine!r}; expected one of {HF_ENGINES}")


def run_hf_arm(
    engines: HFEngines, engine: str, schema: Any, prompt_ids: list[int], *, model: Any, max_new_tokens: int
) -> HFArm:
    """Compile ``schema`` with ``engine``, then greedy ``model.generate`` masked by its processor.

    Never raises for what the engine or schema does: a compile failure is ``not_compiled``, a failure
    while generating is ``error`` (with the message).
    """
    import torch
    from transformers import LogitsProcessorList

    t0 = time.perf_counter()
    try:
        processor = engines.processor(engine, schema)
    except Exception as exc:  # noqa: BLE001 - a peer's failure to compile is a coverage figure
        return HFArm("not_compiled", message=f"{type(exc).__name__}: {exc}"[:500])
    compile_s = time.perf_counter() - t0
    clock = _StepClock()
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    eos = model.generation_config.eos_token_id
    try:
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([processor, clock]),
                pad_token_id=eos if isinstance(eos, int) else eos[0],
            )
    except Exception as exc:  # noqa: BLE001 - record it, keep benchmarking
        return HFArm("error", compile_s, message=f"{type(exc).__name__}: {exc}"[:500])
    new = out[0, len(prompt_ids) :].tolist()
    ends = {eos} if isinstance(eos, int) else set(eos)
    finished = bool(new) and new[-1] in ends
    text = engines.tokenizer.decode([t for t in new if t not in ends], skip_special_tokens=True)
    steps = len(clock.times)
    arm = HFArm(
        "",
        compile_s,
        output_tokens=len(new),
        forward_passes=steps,
        decode_time_s=clock.times[-1] - clock.times[0] if steps > 1 else 0.0,
        text=text,
    )
    if not finished:
        arm.status = "budget"
        return arm
    hook = jsb.DuplicateKeyHook()
    try:
        value = json.loads(text, object_pairs_hook=hook)
    except ValueError:
        arm.status = "not_json"
        return arm
    arm.duplicate_keys = hook.duplicates
    ok, message = jsb.check_instance(value, schema)
    arm.status = "valid" if ok else "invalid"
    arm.message = message
    return arm
