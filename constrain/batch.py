"""Batched constrained generation: many prompts through one model batch, one matcher per row.

:func:`generate_batch` and :func:`generate_json_batch` are the batch forms of :func:`constrain.generate`
and :func:`constrain.generate_json`; :class:`BatchGenerator` holds what they share across calls (the
model, the compiled constraint), which is what the ``constrain batch`` command and the Ray Data actor
(:func:`ray_generate`) keep per process.

How a batch runs (:meth:`BatchGenerator.generate`):

1. the constraint is compiled once; every prompt gets its own :class:`~constrain.GrammarMatcher`;
2. the prompts are left-padded to one ``(rows, longest)`` tensor (an attention mask hides the padding
   and position ids count real tokens only, so each row sees what it would see alone) and prefilled in
   one forward pass;
3. each step, the live rows' masks are filled in parallel by a thread pool (the numba mask code releases
   the GIL), applied to the batch's logits in one kernel call, and each row samples its token;
4. a row that finishes (EOS, a grammar that lets nothing follow, the budget) leaves the batch: its row is
   dropped from the KV cache (``reorder_cache``), so the finished rows cost no compute;
5. a row's failure (the budget ran out, the JSON does not validate, a malformed prompt) becomes that
   row's :attr:`BatchResult.error`, a :class:`~constrain.ConstrainError`; the other rows are unaffected.

Results come back in input order. The loop is the one-token-per-pass reference loop of
:func:`constrain.generate` with ``speculate=False``: with greedy decoding each row's output is the one
``generate(prompt, ..., speculate=False)`` gives (up to float rounding in batched matmuls), and with
``seed`` each row draws from its own generator seeded with ``seed``, as a one-prompt call would.

:func:`ray_generate` runs the same job with Ray Data (``pip install constrain[ray]``): ``map_batches``
over :class:`RayBatchWorker`, an actor class that loads the model and compiles the constraint once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConstrainError, InvalidInputError

__all__ = [
    "BatchGenerator",
    "BatchResult",
    "RayBatchWorker",
    "generate_batch",
    "generate_json_batch",
    "ray_generate",
    "result_record",
]

#: Rows per model batch unless told otherwise: 16 keeps the padded prefill of chat prompts small on a CPU.
DEFAULT_BATCH_SIZE = 16


@dataclass
class BatchResult:
    """The outcome of one prompt of a batch.

    Attributes:
        index: the prompt's position in the input.
        text: the output text (None where the row failed before any output).
        token_ids: the output token ids (EOS included, as in :class:`~constrain.GenerationResult`).
        finish_reason: ``"eos"``, ``"grammar"``, ``"length"``, ``"completed"``, or ``"error"``.
        stats: prompt and output tokens, the forward passes the row took part in, its times.
        value: the parsed JSON value (or pydantic instance) for :func:`generate_json_batch`.
        error: the row's failure (:class:`~constrain.BudgetExhaustedError`,
            :class:`~constrain.OutputValidationError`, :class:`~constrain.InvalidInputError`), else None.
    """

    index: int
    text: str | None
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""
    stats: Any = None
    value: Any = None
    error: ConstrainError | None = None

    @property
    def ok(self) -> bool:
        """Whether the row succeeded."""
        return self.error is None

    def unwrap(self) -> Any:
        """The value (JSON batches) or the text, or raise the row's error."""
        if self.error is not None:
            raise self.error
        return self.value if self.value is not None else self.text


def result_record(row_id: Any, result: BatchResult, *, json_output: bool) -> dict[str, Any]:
    """The JSON-lines record of one row: ``{"id", "output"}`` or ``{"id", "error": {"type", "message"}}``."""
    if result.error is not None:
        return {"id": row_id, "error": {"type": type(result.error).__name__, "message": str(result.error)}}
    output: Any = result.value if json_output else result.text
    if json_output and hasattr(output, "model_dump"):  # a pydantic instance
        output = output.model_dump(mode="json")
    return {"id": row_id, "output": output}


class BatchGenerator:
    """A model, its tokenizer and one compiled constraint, ready to run batches of prompts.

    Args:
        regex / grammar / schema: at most one constraint, as in :func:`constrain.generate`; ``grammar``
            may also be a Lark file path or the name of a shipped grammar.
        json_output: parse and validate each output as JSON against ``schema`` (what
            :func:`generate_json_batch` sets); needs ``schema``.
        model, tokenizer: as in :func:`constrain.generate` (None: the default model).
        max_new_tokens, temperature, top_p, seed, chat, on_budget, sampler: as in
            :func:`constrain.generate`, per row; ``on_budget="raise"`` makes a row that runs out of
            budget report a :class:`~constrain.BudgetExhaustedError` as its error.
        batch_size: rows per model batch; longer inputs run in consecutive batches.
        workers: threads that fill the rows' masks (default: the CPU count, at most 8).
        schema_options: passed to ``Grammar.from_json_schema``.
    """

    def __init__(
        self,
        *,
        regex: str | None = None,
        grammar: Any = None,
        schema: Any = None,
        json_output: bool = False,
        model: Any = None,
        tokenizer: Any = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        chat: bool | None = None,
        on_budget: str = "raise",
        sampler: Any = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        **schema_options: Any,
    ) -> None:
        from .generation import compile_constraint, make_sampler, resolve_model
        from .models import tokenizer_info_for

        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 0:
            raise InvalidInputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if on_budget not in ("raise", "complete"):
            raise InvalidInputError(f"on_budget must be 'raise' or 'complete', got {on_budget!r}")
        if json_output and schema is None:
            raise InvalidInputError("json_output=True needs schema=")
        self.pydantic_cls: Any = None
        if schema is not None:
            from .json_schema.loading import is_pydantic_model, load_schema

            self.pydantic_cls = schema if is_pydantic_model(schema) else None
            schema = load_schema(schema)
        if isinstance(grammar, (str, os.PathLike)):
            grammar = _lark_grammar(grammar)
        self.schema = schema
        self.json_output = json_output
        self.model, self.tokenizer = resolve_model(model, tokenizer)
        self.info = tokenizer_info_for(self.tokenizer)
        # compiled ONCE: every row's matcher walks this shared, immutable object
        self.compiled = compile_constraint(
            self.info, regex=regex, grammar=grammar, schema=schema, schema_options=schema_options
        )
        from .exceptions import ArgumentError
        from .sampling.methods import resolve_method

        # a batch runs the masked loop: a token sampler or Masked(); AWRS(...) is refused, typed
        chosen, token_sampler, _ = resolve_method(None, sampler)
        if chosen != "masked":
            raise ArgumentError(f"batched generation runs the masked loop only; got sampler={sampler!r}")
        self.sampler = token_sampler if token_sampler is not None else make_sampler(temperature, top_p)
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.chat = chat
        self.on_budget = on_budget
        self.batch_size = batch_size
        self.workers = workers if workers is not None else max(1, min(8, os.cpu_count() or 1))

    def generate(
        self, prompts: Sequence[Any], on_result: Callable[[BatchResult], None] | None = None
    ) -> list[BatchResult]:
        """Run every prompt (a string or a list of chat messages); results in input order.

        ``on_result(result)`` is called as each row finishes (finish order), e.g. to write it out.
        Errors in single rows never raise; errors of the model itself do.
        """
        prompts = list(prompts)
        results: list[BatchResult | None] = [None] * len(prompts)

        def done(result: BatchResult) -> None:
            results[result.index] = result
            if on_result is not None:
                on_result(result)

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="constrain-mask") as pool:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                self._run_chunk(start, chunk, pool, done)
        return [r for r in results if r is not None]

    # -- one model batch ------------------------------------------------------------------------

    def _run_chunk(
        self,
        start: int,
        prompts: Sequence[Any],
        pool: ThreadPoolExecutor,
        done: Callable[[BatchResult], None],
    ) -> None:
        from .generation import GenerationStats, encode_prompt
        from .matcher import GrammarMatcher

        rows: list[_Row] = []
        for offset, prompt in enumerate(prompts):
            index = start + offset
            try:
                if not isinstance(prompt, (str, list, tuple)):
                    raise InvalidInputError(
                        f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}"
                    )
                ids = encode_prompt(self.tokenizer, prompt, self.chat)
            except ConstrainError as exc:
                done(BatchResult(index, None, finish_reason="error", stats=GenerationStats(), error=exc))
                continue
            matcher = GrammarMatcher(self.compiled) if self.compiled is not None else None
            rows.append(_Row(index, ids, matcher, self._generator(), GenerationStats(prompt_tokens=len(ids))))
        if rows:
            _BatchLoop(self, rows, pool, done).run()

    def _generator(self) -> Any:
        if self.seed is None:
            return None
        import torch

        device = next(self.model.parameters()).device
        return torch.Generator(device=device).manual_seed(self.seed)

    def finish(self, row: _Row, finish: str, t0: float) -> BatchResult:
        """The row's result: budget handling, decoding and (for JSON) validation, as in
        :func:`constrain.generate` and :func:`constrain.generate_json`."""
        from .generation import BudgetExhaustedError, OutputValidationError, validate_json

        stats = row.stats
        out = row.out
        matcher = row.matcher
        stats.output_tokens = len(out)
        eos = frozenset(self.info.eos_ids)
        if finish == "length" and matcher is not None and not matcher.can_end():
            if self.on_budget == "raise":
                stats.total_time_s = time.perf_counter() - t0
                partial = self.info.decode_bytes(out).decode("utf-8", errors="replace")
                error = BudgetExhaustedError(partial, list(out), stats, self.max_new_tokens)
                return BatchResult(row.index, partial, list(out), "length", stats, error=error)
            completion = matcher.shortest_completion()
            for token in completion:
                matcher.accept_token(token)
            out.extend(completion)
            stats.completion_tokens = len(completion)
            finish = "completed"
        stats.total_time_s = time.perf_counter() - t0
        if not out:
            stats.time_to_first_token_s = stats.total_time_s
        raw = self.info.decode_bytes([t for t in out if t not in eos])
        text = raw.decode("utf-8", errors="strict" if matcher is not None else "replace")
        result = BatchResult(row.index, text, list(out), finish, stats)
        if self.json_output:
            try:
                value = validate_json(text, self.schema)
                if self.pydantic_cls is not None:
                    try:
                        value = self.pydantic_cls.model_validate(value)
                    except ValueError as exc:  # pydantic.ValidationError is a ValueError
                        raise OutputValidationError(
                            f"the output does not validate as {self.pydantic_cls.__name__}: {exc}", text, exc
                        ) from None
                result.value = value
            except OutputValidationError as exc:
                result.error = exc
        return result


@dataclass
class _Row:
    """One prompt's state in a running batch."""

    index: int
    prompt_ids: list[int]
    matcher: Any
    generator: Any
    stats: Any
    out: list[int] = field(default_factory=list)


class _BatchLoop:
    """The decoding loop of one model batch (see the module docstring)."""

    def __init__(
        self,
        gen: BatchGenerator,
        rows: list[_Row],
        pool: ThreadPoolExecutor,
        done: Callable[[BatchResult], None],
    ) -> None:
        import torch
        from transformers import DynamicCache

        from .generation import cache_argument
        from .kernels import allocate_token_bitmask

        self.gen = gen
        self.rows = rows
        self.pool = pool
        self.done = done
        self.model = gen.model
        self.device = next(self.model.parameters()).device
        self.cache = DynamicCache(config=self.model.config)
        self.cache_arg = cache_argument(self.model)
        self.bitmask = allocate_token_bitmask(len(rows), gen.info.vocab_size)
        self.eos = frozenset(gen.info.eos_ids)
        self.torch = torch

    def _forward(self, ids: Any, attention: Any, positions: Any) -> Any:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_arg: self.cache},
            )
        # A normal (not inference-mode) float32 copy: the masks are applied in place.
        return out.logits[:, -1].to(torch.float32, copy=True)

    def _fill(self, matcher: Any, j: int) -> None:
        matcher.fill_next_token_bitmask(self.bitmask, j)

    def _finished(self, row: _Row) -> str:
        """Why ``row`` stops before its next token ("" if it goes on): the checks of the one-prompt loop."""
        matcher = row.matcher
        if matcher is not None and matcher.must_end():
            return "eos" if matcher.is_terminated() else "grammar"
        if row.out and matcher is None and row.out[-1] in self.eos:
            return "eos"
        if self.gen.max_new_tokens - len(row.out) <= 0:
            return "length"
        return ""

    def run(self) -> None:
        from .kernels import apply_token_bitmask_inplace

        torch = self.torch
        t0 = time.perf_counter()
        gen = self.gen
        live = list(self.rows)  # batch position -> row
        attention: Any = None
        positions: Any = None
        passes = 0
        while True:
            keep = []
            for j, row in enumerate(live):
                finish = self._finished(row)
                if finish:
                    row.stats.forward_passes = passes
                    self.done(gen.finish(row, finish, t0))
                else:
                    keep.append(j)
            if not keep:
                return
            if attention is None:
                # the prefill: left padding, masked out; positions count real tokens only
                live = [live[j] for j in keep]
                width = max(len(r.prompt_ids) for r in live)
                pad = _pad_id(gen.tokenizer)
                ids = torch.tensor(
                    [[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in live],
                    dtype=torch.long,
                    device=self.device,
                )
                attention = torch.tensor(
                    [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in live],
                    dtype=torch.long,
                    device=self.device,
                )
                positions = (attention.cumsum(-1) - 1).clamp(min=0)
            else:
                if len(keep) < len(live):
                    # finished rows leave the batch: their KV-cache rows are dropped
                    index = torch.tensor(keep, dtype=torch.long, device=self.device)
                    self.cache.reorder_cache(index)
                    attention = attention.index_select(0, index)
                    positions = positions.index_select(0, index)
                    live = [live[j] for j in keep]
                ids = torch.tensor([[r.out[-1]] for r in live], dtype=torch.long, device=self.device)
                attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=1)
                positions = positions[:, -1:] + 1
            logits = self._forward(ids, attention, positions)
            passes += 1
            n = len(live)
            if live[0].matcher is not None:
                matchers = [row.matcher for row in live]
                if n > 1:  # the numba mask fills release the GIL: rows fill side by side
                    list(self.pool.map(self._fill, matchers, range(n)))
                else:
                    self._fill(matchers[0], 0)
                bitmask = self.bitmask[:n].to(logits.device, non_blocking=True)
                apply_token_bitmask_inplace(logits, bitmask)
            elif logits.shape[1] > gen.info.vocab_size:  # ids past the vocabulary are padding
                logits[:, gen.info.vocab_size :] = float("-inf")
            for j, row in enumerate(live):
                token = gen.sampler.sample(logits[j], row.generator)
                if row.matcher is not None and not row.matcher.accept_token(token):
                    raise ConstrainError(
                        f"token {token} passed the mask but the matcher rejected it (engine bug)"
                    )
                row.out.append(token)
                if len(row.out) == 1:
                    row.stats.time_to_first_token_s = time.perf_counter() - t0


def _pad_id(tokenizer: Any) -> int:
    """A token id for the padding (masked out, so any id works): the tokenizer's pad, EOS, or 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def _lark_grammar(value: str | os.PathLike[str]) -> Any:
    """A Lark grammar file, or the name of a shipped grammar."""
    from pathlib import Path

    from .grammar import Grammar

    path = Path(value)
    return Grammar.from_lark(path) if path.is_file() else Grammar.from_lark(name=str(value))


def generate_batch(
    prompts: Sequence[Any],
    *,
    regex: str | None = None,
    grammar: Any = None,
    schema: Any = None,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    on_budget: str = "raise",
    sampler: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
    **schema_options: Any,
) -> list[BatchResult]:
    """:func:`constrain.generate` over many prompts in one model batch (``batch_size`` rows at a time).

    Returns one :class:`BatchResult` per prompt, in input order: ``.text`` is the output, ``.error`` a
    row's failure (a budget that ran out under ``on_budget="raise"``, a malformed prompt), which never
    stops the other rows. ``on_result`` is called as each row finishes. Other arguments as in
    :func:`constrain.generate` (masked sampling, one token per forward pass); see :class:`BatchGenerator`.
    """
    gen = BatchGenerator(
        regex=regex,
        grammar=grammar,
        schema=schema,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        chat=chat,
        on_budget=on_budget,
        sampler=sampler,
        batch_size=batch_size,
        workers=workers,
        **schema_options,
    )
    return gen.generate(prompts, on_result)


def generate_json_batch(
    schema: Any,
    prompts: Sequence[Any],
    *,
    model: Any = None,
    tokenizer: Any = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    on_budget: str = "raise",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
    **schema_options: Any,
) -> list[BatchResult]:
    """:func:`constrain.generate_json` over many prompts in one model batch: the schema is compiled once,
    each row's output is parsed and validated (``.value``; a pydantic instance for a pydantic model
    class), and a row that fails reports an :class:`~constrain.OutputValidationError` or
    :class:`~constrain.BudgetExhaustedError` in ``.error``. Results in input order.

    Example::

        results = generate_json_batch(schema, ["Ada was 36.", "Alan was 41."])
        values = [r.value for r in results if r.ok]
    """
    gen = BatchGenerator(
        schema=schema,
        json_output=True,
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        chat=chat,
        on_budget=on_budget,
        batch_size=batch_size,
        workers=workers,
        **schema_options,
    )
    return gen.generate(prompts, on_result)


# ------------------------------------------------------------------------------------------------
# Ray Data


class RayBatchWorker:
    """The Ray Data actor: loads the model and compiles the constraint ONCE (in ``__init__``), then
    turns each batch ``{"id": [...], "prompt": [...]}`` into ``{"id": [...], "record": [...]}``, where a
    record is the JSON text of :func:`result_record`'s dict.

    ``options`` are :class:`BatchGenerator`'s keyword arguments; ``model`` there is a local model path
    or None (the default model), loaded inside the actor. ``threads`` sets torch's intra-op threads.
    ``json_columns``: the ``id`` and ``prompt`` columns hold JSON text (what :func:`ray_generate` builds,
    so ids and chat prompts of any JSON shape pass through Arrow unchanged); else plain values.

    Use it on your own dataset::

        ds = ray.data.read_json("prompts.jsonl")  # columns id, prompt
        out = ds.map_batches(
            RayBatchWorker,
            fn_constructor_kwargs={"options": {"schema": schema, "json_output": True}},
            batch_size=16,
            compute=ray.data.ActorPoolStrategy(size=2),
        )
    """

    def __init__(self, options: Mapping[str, Any], threads: int = 1, json_columns: bool = False) -> None:
        from ._syspath import unshadow_kernels

        unshadow_kernels()  # a worker started in the checkout root has it on sys.path
        import torch

        torch.set_num_threads(threads)
        self.json_columns = json_columns
        self.generator = BatchGenerator(**dict(options))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Generate for one Ray Data batch."""
        import json

        if self.json_columns:
            ids = [json.loads(str(i)) for i in batch["id"]]
            prompts = [json.loads(str(p)) for p in batch["prompt"]]
        else:
            ids = [_plain(i) for i in batch["id"]]
            prompts = [_plain(p) for p in batch["prompt"]]
        results = self.generator.generate(prompts)
        records = [
            json.dumps(result_record(i, r, json_output=self.generator.json_output), ensure_ascii=False)
            for i, r in zip(ids, results)
        ]
        return {"id": [json.dumps(i) for i in ids], "record": records}


def _plain(value: Any) -> Any:
    """A numpy scalar or array from a Ray batch as plain Python (ids and chat-message lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def ray_generate(
    items: Iterable[Mapping[str, Any]],
    *,
    address: str | None = None,
    num_cpus: int = 2,
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """Run a batch job with Ray Data; yields one record per item, as Ray finishes them (any order).

    ``items`` are ``{"id": ..., "prompt": ...}`` dicts (ids must be JSON values); each yielded record is
    ``{"id", "output"}`` or ``{"id", "error": {"type", "message"}}``, as ``constrain batch`` writes them.
    ``options`` are :class:`BatchGenerator`'s (``schema=``/``regex=``/``grammar=`` as JSON values or
    strings, ``json_output``, ``model`` as a local path, ``max_new_tokens``, ...); they are shipped to
    ``concurrency`` actors, each loading the model and compiling the constraint once
    (``ds.map_batches(RayBatchWorker, compute=ActorPoolStrategy(size=concurrency), ...)``).

    Ray starts a local cluster with ``num_cpus`` CPUs, unless ``address`` names an existing one
    (``"auto"``, or ``"ray://head:10001"`` for Ray Client); there, every node needs constrain and the
    model installed. Needs ``pip install constrain[ray]``.
    """
    import json

    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError("--ray / ray_generate needs Ray Data: pip install 'constrain[ray]'") from exc
    rows = [{"id": json.dumps(item["id"]), "prompt": json.dumps(item["prompt"])} for item in items]
    if not rows:
        return
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(rows).map_batches(
            RayBatchWorker,
            fn_constructor_kwargs={
                "options": dict(options, batch_size=batch_size),
                "threads": threads,
                "json_columns": True,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=cpus_per_actor,
            batch_format="numpy",
        )
        for out in ds.iter_rows():
            yield json.loads(out["record"])
    finally:
        if started:
            ray.shutdown()
