"""End-to-end benchmarks with a real model: ``constrain bench jsonschemabench``.

JSONSchemaBench (Geng et al., 2025, arXiv:2501.10868) asks a model for a JSON instance of each of
~10,000 real-world schemas and measures, per subset:

declared coverage
    the fraction of schemas the engine compiles (an ``UnsupportedSchemaFeature``, a ``SchemaError``, a
    compile past the time limit or a crash count against it);
empirical coverage
    the fraction of schemas whose output is JSON that ``jsonschema`` accepts (the validator of the
    schema's draft, with that draft's ``FORMAT_CHECKER``);
compliance
    the fraction of the *compiled* schemas whose output validates;
efficiency
    grammar compile time, time to first token (TTFT), time per output token (TPOT), forward passes per
    output token and how many output tokens came from grammar-forced continuations (jump-forward).

Each schema runs in two arms with the same model, prompt, greedy decoding and token budget:

constrained
    ``Grammar.from_json_schema`` + ``constrain.compile`` (timed together: the compile time), then
    :func:`constrain.generation.generate` with that grammar. A run that exhausts the budget before the
    JSON can end is non-compliant (``status="budget"``).
unconstrained
    :func:`~constrain.generation.generate` with no constraint; the JSON is pulled out of the text
    (:func:`extract_json`: the whole text, else the first fenced block, else the first ``{...}`` or
    ``[...]`` that parses) and validated the same way. Its compliance is measured on the same compiled
    schemas, so the two arms compare like for like; its empirical coverage is over all schemas.

The prompt follows the paper's 2-shot style: a system message asking for a JSON instance of the given
schema, two fixed schema -> instance exchanges, then the schema under test, all through the model's chat
template. The example instances are written in the compact form the constrained arm emits.

Schemas come from ``data/jsonschemabench`` in the shared folder (:mod:`constrain_tools.harness`:
``$CONSTRAIN_SHARED`` or ``../shared`` beside the checkout): the full ``jsonschemabench-data.tar.xz`` (read
without unpacking; the default) or a folder holding ``data/<Subset>/<id>.json``. Per subset, the file
names are sorted and ``--limit`` of them are drawn with ``random.Random(f"{seed}/{subset}")``, so a
sample depends only on the data, the seed and the subset name.

Usage::

    constrain bench jsonschemabench --subset Glaiveai2K --subset Github_easy --limit 50 \\
        --json bench/results/jsonschemabench.json --plot bench/results/jsonschemabench.png

Timings are taken in one warm process (numba kernels compiled and the vocabulary trie built by a
warm-up run first; the compile caches are not cleared between schemas), with ``torch`` limited to
``--threads`` threads for both arms, and the arms interleaved schema by schema so that load on the
machine affects both alike.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
import tarfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from constrain.exceptions import ConstrainError, InvalidInputError, UnsupportedFeatureError
from constrain.json_schema import detect_draft

from . import harness

__all__ = [
    "DEFAULT_DATA_PATH",
    "DEFAULT_SUBSETS",
    "EXAMPLES",
    "SYSTEM_PROMPT",
    "ArmResult",
    "BenchSchema",
    "CompileResult",
    "SchemaRecord",
    "SubsetSummary",
    "add_arguments",
    "aggregate",
    "build_messages",
    "check_instance",
    "compile_schema",
    "extract_json",
    "format_table",
    "interleave",
    "load_schemas",
    "plot_summaries",
    "run_arm",
    "run_from_args",
    "run_jsonschemabench",
    "sample_names",
    "schema_names",
]

#: ``data/jsonschemabench`` in the shared folder (``$CONSTRAIN_SHARED``, else ``../shared`` by the checkout).
DEFAULT_DATA_PATH = harness.shared_dir() / "data" / "jsonschemabench"
_ARCHIVE_NAME = "jsonschemabench-data.tar.xz"
#: The subsets run when no ``--subset`` is given.
DEFAULT_SUBSETS = ("Glaiveai2K", "Github_easy", "Github_medium")
DEFAULT_LIMIT = 50
DEFAULT_MAX_NEW_TOKENS = 256
#: Compile time limit per schema (seconds); past it the schema counts as not compiled (``timeout``).
DEFAULT_COMPILE_TIMEOUT_S = 60.0

# ------------------------------------------------------------------------------------------------
# The prompt

#: The system message of every request.
SYSTEM_PROMPT = (
    "You are a helpful assistant that writes JSON. The user gives you a JSON Schema; reply with one "
    "JSON value that is valid against it. Reply with the JSON only: no explanation and no Markdown."
)

#: The two fixed schema -> instance examples shown before each schema (2-shot).
EXAMPLES: tuple[tuple[dict[str, Any], Any], ...] = (
    (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
                "email": {"type": "string", "format": "email"},
            },
            "required": ["name", "age"],
        },
        {"name": "Ada Lovelace", "age": 36, "email": "ada@example.com"},
    ),
    (
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "population": {"type": "number"},
                "districts": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "capital": {"type": "boolean"},
            },
            "required": ["city", "capital"],
            "additionalProperties": False,
        },
        {"city": "Oslo", "population": 709037, "districts": ["Frogner", "Grunerlokka"], "capital": True},
    ),
)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _user_message(schema: Any) -> str:
    return "Write a JSON instance of this JSON Schema.\nSchema:\n" + json.dumps(schema, ensure_ascii=False)


def build_messages(schema: Any) -> list[dict[str, str]]:
    """The chat messages for ``schema``: the system message, the two examples, then the schema."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for example_schema, instance in EXAMPLES:
        messages.append({"role": "user", "content": _user_message(example_schema)})
        messages.append({"role": "assistant", "content": _compact(instance)})
    messages.append({"role": "user", "content": _user_message(schema)})
    return messages


# ------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class BenchSchema:
    """One benchmark schema: its subset, file name (``o10008.json``) and the parsed schema."""

    subset: str
    name: str
    schema: Any


_MEMBER_RE = re.compile(r"(?:^|/)data/([^/]+)/([^/]+\.json)$")


def _archive_path(path: Path) -> Path | None:
    if path.is_file():
        return path
    candidate = path / _ARCHIVE_NAME
    return candidate if candidate.is_file() else None


def _folder_root(path: Path) -> Path:
    return path / "data" if (path / "data").is_dir() else path


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _iter_sources(path: Path, subsets: set[str] | None) -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    """``(subset, file name, read)`` for every schema file under ``path`` (an archive or a folder)."""
    archive = _archive_path(path)
    if archive is not None:
        try:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    match = _MEMBER_RE.search(member.name)
                    if not member.isfile() or match is None:
                        continue
                    subset, name = match.groups()
                    if subsets is not None and subset not in subsets:
                        continue
                    handle = tf.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    yield subset, name, _constant(data)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"cannot read the archive {archive}: {exc}") from None
        return
    root = _folder_root(path)
    if not root.is_dir():
        raise InvalidInputError(
            f"{path} is neither {_ARCHIVE_NAME} nor a folder with data/<Subset>/*.json; pass --data"
        )
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if subsets is not None and folder.name not in subsets:
            continue
        for file in sorted(folder.glob("*.json")):
            yield folder.name, file.name, file.read_bytes


def schema_names(path: str | Path = DEFAULT_DATA_PATH) -> dict[str, list[str]]:
    """Subset -> sorted schema file names found under ``path`` (an archive or a folder)."""
    found: dict[str, list[str]] = {}
    for subset, name, _ in _iter_sources(Path(path), None):
        found.setdefault(subset, []).append(name)
    return {k: sorted(v) for k, v in sorted(found.items())}


def sample_names(names: Iterable[str], limit: int | None, seed: int, subset: str) -> list[str]:
    """A reproducible sample of ``limit`` names: sorted first, then drawn with
    ``random.Random(f"{seed}/{subset}")`` (string seeds hash the same in every process), returned sorted.

    ``limit=None`` (or one past the count) keeps them all.
    """
    ordered = sorted(set(names))
    if limit is None or limit >= len(ordered):
        return ordered
    if limit < 0:
        raise InvalidInputError(f"limit must be >= 0, got {limit}")
    rng = random.Random(f"{seed}/{subset}")
    return sorted(rng.sample(ordered, limit))


def load_schemas(
    path: str | Path = DEFAULT_DATA_PATH,
    subsets: Sequence[str] = DEFAULT_SUBSETS,
    *,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
) -> list[BenchSchema]:
    """The sampled schemas of ``subsets`` (in the order given; by file name within a subset).

    ``path`` is ``jsonschemabench-data.tar.xz`` (read without unpacking), the folder holding it (the
    archive is preferred: it has every schema), or a folder with ``data/<Subset>/*.json``.

    Raises:
        InvalidInputError: the data is missing, a subset does not exist, or a file is not JSON.
    """
    wanted = list(dict.fromkeys(subsets))
    if not wanted:
        raise InvalidInputError("no subset given; pass --subset NAME")
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(
            f"data not found: {path} (pass --data PATH, or set {harness.SHARED_ENV} to the shared folder)"
        )
    raw: dict[str, dict[str, Callable[[], bytes]]] = {}
    seen: set[str] = set()
    for subset, name, read in _iter_sources(path, None):
        seen.add(subset)
        if subset in wanted:
            raw.setdefault(subset, {})[name] = read
    missing = [s for s in wanted if s not in raw]
    if missing:
        raise InvalidInputError(
            f"no subset named {', '.join(missing)} in {path}; the subsets are: {', '.join(sorted(seen))}"
        )
    out: list[BenchSchema] = []
    for subset in wanted:
        for name in sample_names(raw[subset], limit, seed, subset):
            try:
                schema = json.loads(raw[subset][name]())
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"{path}: {subset}/{name} is not JSON: {exc}") from None
            out.append(BenchSchema(subset, name, schema))
    return out


# ------------------------------------------------------------------------------------------------
# Checking outputs


class DuplicateKeyHook:
    """A ``json`` ``object_pairs_hook`` that builds dicts (the last value of a key wins, as ``json``
    does) and notes whether any object repeated a key (``duplicates``; reset it between parses)."""

    def __init__(self) -> None:
        self.duplicates = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            self.duplicates = True
        return out


def extract_json(text: str, *, hook: DuplicateKeyHook | None = None) -> tuple[bool, Any]:
    """Pull a JSON value out of free model text: ``(found, value)``.

    Tried in order: the whole text; the first fenced block (```` ```json ... ``` ````, or an unlabelled
    fence); the first ``{`` or ``[`` from which a JSON value parses (anything after it is ignored).
    ``hook`` (reset before each attempt) tells afterwards whether the value found repeated a key.
    """
    hook = hook if hook is not None else DuplicateKeyHook()
    decoder = json.JSONDecoder(object_pairs_hook=hook)

    def attempt(fragment: str, start: int = 0, whole: bool = True) -> tuple[bool, Any]:
        hook.duplicates = False
        try:
            value, end = decoder.raw_decode(fragment, start)
        except ValueError:
            return False, None
        if whole and fragment[end:].strip():
            return False, None
        return True, value

    found = attempt(text.strip())
    if found[0]:
        return found
    fence = re.search(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", text, re.DOTALL)
    if fence is not None:
        found = attempt(fence.group(1).strip())
        if found[0]:
            return found
    for match in re.finditer(r"[{\[]", text):
        found = attempt(text, match.start(), whole=False)
        if found[0]:
            return found
    hook.duplicates = False
    return False, None


def check_instance(value: Any, schema: Any) -> tuple[bool, str]:
    """Validate ``value`` with ``jsonschema``: the validator of the schema's ``$schema`` (2020-12 when
    absent), with that draft's ``FORMAT_CHECKER``. ``(valid, message)``; nothing is fetched (remote
    ``$ref`` s do not resolve, and then the value counts as invalid with the error as its message).
    """
    import jsonschema
    import referencing

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER, registry=referencing.Registry())
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Exception as exc:  # noqa: BLE001 - the validator itself failed on this schema: not a pass
        return False, f"validator error: {type(exc).__name__}: {exc}"[:500]
    if error is None:
        return True, ""
    where = "/".join(map(str, error.absolute_path)) or "(root)"
    return False, f"at {where}: {error.message}"[:500]


# ------------------------------------------------------------------------------------------------
# Records


@dataclass
class CompileResult:
    """The compile step of one schema.

    ``status``: ``"compiled"``, ``"unsupported"`` (a keyword the engine refuses; ``keyword`` and
    ``pointer`` name it), ``"error"`` (another :class:`ConstrainError`: a malformed schema),
    ``"timeout"`` or ``"crash"`` (an exception that is a bug in constrain). ``time_s`` is the time
    ``Grammar.from_json_schema`` plus ``constrain.compile`` took (``None`` unless compiled).
    """

    status: str
    time_s: float | None = None
    message: str = ""
    keyword: str = ""
    pointer: str = ""
    compiled: Any = field(default=None, repr=False, compare=False)


@dataclass
class ArmResult:
    """One arm's run on one schema.

    ``status``: ``"valid"``, ``"invalid"`` (JSON that fails validation), ``"not_json"`` (no JSON value
    found in the text), ``"budget"`` (constrained: the budget ran out before the JSON could end),
    ``"not_compiled"`` (constrained: the schema did not compile, nothing ran), ``"too_long"`` (the
    prompt plus the budget exceed the model's context: nothing ran), ``"error"`` or ``"crash"``.
    The statistics are those of :class:`constrain.generation.GenerationStats` (``None``: nothing ran).
    ``duplicate_keys``: the JSON found repeats a key in some object (``json`` and ``jsonschema`` then see
    the last value; it does not change ``status``, as in the paper's checker).
    """

    status: str
    text: str | None = None
    finish_reason: str | None = None
    message: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    forward_passes: int | None = None
    forced_tokens: int | None = None
    draft_tokens: int | None = None
    accepted_draft_tokens: int | None = None
    time_to_first_token_s: float | None = None
    time_per_output_token_s: float | None = None
    total_time_s: float | None = None
    duplicate_keys: bool = False

    @property
    def valid(self) -> bool:
        """The output is JSON that validates against the schema."""
        return self.status == "valid"

    @property
    def ran(self) -> bool:
        """The model ran (statistics are present)."""
        return self.output_tokens is not None


@dataclass
class SchemaRecord:
    """Everything measured for one schema (what ``--json`` writes per schema)."""

    subset: str
    name: str
    draft: str
    schema_chars: int
    compile: CompileResult
    constrained: ArmResult
    unconstrained: ArmResult

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the compiled grammar left out)."""
        out = asdict(self)
        out["compile"].pop("compiled", None)
        return out


# ------------------------------------------------------------------------------------------------
# Running one schema


def compile_schema(
    schema: Any, tokenizer_info: Any, *, timeout_s: float | None = DEFAULT_COMPILE_TIMEOUT_S
) -> CompileResult:
    """``Grammar.from_json_schema(schema)`` then ``constrain.compile`` for ``tokenizer_info``, timed.

    Never raises for what the schema does; each failure is a status (see :class:`CompileResult`).
    Warnings from the compiler are kept in ``message``.
    """
    from constrain.compiler import compile as compile_grammar
    from constrain.grammar import Grammar

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, harness.deadline(timeout_s):
            warnings.simplefilter("always")
            grammar = Grammar.from_json_schema(schema)
            compiled = compile_grammar(grammar, tokenizer_info)
    except harness.Timeout:
        return CompileResult("timeout", message=f"compile > {timeout_s:g} s")
    except UnsupportedFeatureError as exc:
        keyword = str(getattr(exc, "keyword", "") or type(exc).__name__)
        return CompileResult("unsupported", None, str(exc)[:1000], keyword, str(getattr(exc, "pointer", "")))
    except ConstrainError as exc:
        pointer = str(getattr(exc, "pointer", "") or "")
        return CompileResult("error", None, f"{type(exc).__name__}: {exc}"[:1000], "", pointer)
    except Exception as exc:  # noqa: BLE001 - a bug in constrain: record it, keep benchmarking
        return CompileResult("crash", None, harness.summarize_exception(exc, frames=3, max_chars=1000))
    elapsed = time.perf_counter() - t0
    if timeout_s is not None and elapsed > timeout_s:
        return CompileResult("timeout", message=f"compile took {elapsed:.1f} s > {timeout_s:g} s")
    message = "; ".join(str(w.message) for w in caught)[:1000]
    return CompileResult("compiled", elapsed, message, compiled=compiled)


def _with_stats(result: ArmResult, stats: Any) -> ArmResult:
    result.prompt_tokens = int(stats.prompt_tokens)
    result.output_tokens = int(stats.output_tokens)
    result.forward_passes = int(stats.forward_passes)
    result.forced_tokens = int(stats.forced_tokens)
    result.draft_tokens = int(stats.draft_tokens)
    result.accepted_draft_tokens = int(stats.accepted_draft_tokens)
    result.time_to_first_token_s = float(stats.time_to_first_token_s)
    result.time_per_output_token_s = float(stats.time_per_output_token_s)
    result.total_time_s = float(stats.total_time_s)
    return result


def run_arm(
    schema: Any,
    messages: Sequence[Mapping[str, str]],
    *,
    model: Any,
    tokenizer: Any,
    compiled: Any = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    drafter: str | None = None,
) -> ArmResult:
    """Generate greedily for ``messages``, with the grammar ``compiled`` (constrained) or with none
    (``compiled=None``: unconstrained, the JSON is extracted from the text), and validate the JSON
    against ``schema``. Never raises for what the model or schema does.
    """
    from constrain.generation import BudgetExhaustedError, generate

    constraint: dict[str, Any] = {"grammar": compiled} if compiled is not None else {}
    if drafter is not None:  # a named composition (constrain.speculation.make_drafter); None: the default
        from constrain.speculation import make_drafter

        made = make_drafter(drafter, model)
        constraint.update(drafter=made, speculate=made is not None)
    try:
        result = generate(
            list(messages),
            model=model,
            tokenizer=tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            return_stats=True,
            **constraint,
        )
    except BudgetExhaustedError as exc:
        arm = ArmResult("budget", exc.partial_text, "length", f"max_new_tokens={exc.budget} ran out")
        return _with_stats(arm, exc.stats)
    except ConstrainError as exc:
        return ArmResult("error", message=f"{type(exc).__name__}: {exc}"[:1000])
    except Exception as exc:  # noqa: BLE001 - a bug: record it, keep benchmarking
        return ArmResult("crash", message=harness.summarize_exception(exc, frames=3, max_chars=1000))
    arm = _with_stats(ArmResult("", result.text, result.finish_reason), result.stats)
    hook = DuplicateKeyHook()
    if compiled is not None:  # the grammar's output is the JSON itself, nothing to extract
        try:
            value, found = json.loads(result.text, object_pairs_hook=hook), True
        except ValueError:
            value, found = None, False
    else:
        found, value = extract_json(result.text, hook=hook)
    if not found:
        arm.status = "not_json"
        return arm
    arm.duplicate_keys = hook.duplicates
    ok, message = check_instance(value, schema)
    arm.status = "valid" if ok else "invalid"
    arm.message = message
    return arm


def _context_limit(model: Any) -> int | None:
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def run_schema(
    item: BenchSchema,
    *,
    model: Any,
    tokenizer: Any,
    tokenizer_info: Any,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    compile_timeout_s: float | None = DEFAULT_COMPILE_TIMEOUT_S,
    unconstrained: bool = True,
    drafter: str | None = None,
) -> SchemaRecord:
    """Compile one schema and run both arms on it (the unconstrained one even where the schema did
    not compile: it still counts towards that arm's empirical coverage)."""
    from constrain.generation import encode_prompt

    comp = compile_schema(item.schema, tokenizer_info, timeout_s=compile_timeout_s)
    messages = build_messages(item.schema)
    prompt_tokens = len(encode_prompt(tokenizer, messages, None))
    limit = _context_limit(model)
    too_long = limit is not None and prompt_tokens + max_new_tokens > limit
    skipped = ArmResult(
        "too_long", message=f"{prompt_tokens} prompt tokens + {max_new_tokens} > context {limit}"
    )
    skipped.prompt_tokens = prompt_tokens
    if comp.status != "compiled":
        con = ArmResult("not_compiled", message=comp.message)
    elif too_long:
        con = skipped
    else:
        con = run_arm(
            item.schema,
            messages,
            model=model,
            tokenizer=tokenizer,
            compiled=comp.compiled,
            max_new_tokens=max_new_tokens,
            drafter=drafter,
        )
    if not unconstrained:
        unc = ArmResult("skipped")
    elif too_long:
        unc = ArmResult(**asdict(skipped))
    else:
        unc = run_arm(item.schema, messages, model=model, tokenizer=tokenizer, max_new_tokens=max_new_tokens)
    comp.compiled = None  # do not keep every schema's automaton alive
    return SchemaRecord(
        item.subset,
        item.name,
        detect_draft(item.schema, "2020-12", by_marker=True) or "2020-12",
        len(json.dumps(item.schema)),
        comp,
        con,
        unc,
    )


# ------------------------------------------------------------------------------------------------
# Aggregates


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class SubsetSummary:
    """Per-subset aggregates (the paper's metrics). Fractions are in [0, 1]; ``None`` where undefined.

    ``*_c`` is the constrained arm, ``*_u`` the unconstrained one. Timing medians are over the runs of
    that arm (TPOT over runs with at least two output tokens); ``tpot_ratio`` is the constrained median
    over the unconstrained one. ``compliance_u`` is over the same compiled schemas as ``compliance_c``.
    ``duplicate_keys_*`` counts valid outputs that repeat an object key (see :class:`ArmResult`).
    """

    subset: str
    n: int
    compiled: int
    declared_coverage: float | None
    unsupported: int
    compile_errors: int
    compile_timeouts: int
    compile_crashes: int
    too_long: int
    valid_c: int
    valid_u: int
    empirical_coverage_c: float | None
    empirical_coverage_u: float | None
    compliance_c: float | None
    compliance_u: float | None
    budget_c: int
    invalid_c: int
    not_json_u: int
    duplicate_keys_c: int
    duplicate_keys_u: int
    compile_time_median_s: float | None
    ttft_median_c_s: float | None
    ttft_median_u_s: float | None
    tpot_median_c_s: float | None
    tpot_median_u_s: float | None
    tpot_ratio: float | None
    output_tokens_c: int
    output_tokens_u: int
    forward_passes_c: int
    forward_passes_u: int
    forced_tokens_c: int
    tokens_per_pass_c: float | None
    tokens_per_pass_u: float | None
    forced_fraction_c: float | None


def _summarize(subset: str, records: Sequence[SchemaRecord]) -> SubsetSummary:
    n = len(records)
    compiled = [r for r in records if r.compile.status == "compiled"]
    status = [r.compile.status for r in records]
    con = [r.constrained for r in records]
    unc = [r.unconstrained for r in records]
    con_ran = [a for a in con if a.ran]
    unc_ran = [a for a in unc if a.ran]
    valid_c = sum(a.valid for a in con)
    valid_u = sum(a.valid for a in unc)
    valid_u_compiled = sum(r.unconstrained.valid for r in compiled)
    out_c = sum(a.output_tokens or 0 for a in con_ran)
    out_u = sum(a.output_tokens or 0 for a in unc_ran)
    passes_c = sum(a.forward_passes or 0 for a in con_ran)
    passes_u = sum(a.forward_passes or 0 for a in unc_ran)
    forced_c = sum(a.forced_tokens or 0 for a in con_ran)
    tpot_c = _median(a.time_per_output_token_s for a in con_ran if (a.output_tokens or 0) > 1)
    tpot_u = _median(a.time_per_output_token_s for a in unc_ran if (a.output_tokens or 0) > 1)
    unc_measured = any(a.status != "skipped" for a in unc)
    return SubsetSummary(
        subset=subset,
        n=n,
        compiled=len(compiled),
        declared_coverage=len(compiled) / n if n else None,
        unsupported=status.count("unsupported"),
        compile_errors=status.count("error"),
        compile_timeouts=status.count("timeout"),
        compile_crashes=status.count("crash"),
        too_long=sum(a.status == "too_long" for a in unc) if unc_measured else 0,
        valid_c=valid_c,
        valid_u=valid_u,
        empirical_coverage_c=valid_c / n if n else None,
        empirical_coverage_u=valid_u / n if n and unc_measured else None,
        compliance_c=valid_c / len(compiled) if compiled else None,
        compliance_u=valid_u_compiled / len(compiled) if compiled and unc_measured else None,
        budget_c=sum(a.status == "budget" for a in con),
        invalid_c=sum(a.status in ("invalid", "not_json") for a in con),
        not_json_u=sum(a.status == "not_json" for a in unc),
        duplicate_keys_c=sum(a.valid and a.duplicate_keys for a in con),
        duplicate_keys_u=sum(a.valid and a.duplicate_keys for a in unc),
        compile_time_median_s=_median(r.compile.time_s for r in compiled),
        ttft_median_c_s=_median(a.time_to_first_token_s for a in con_ran),
        ttft_median_u_s=_median(a.time_to_first_token_s for a in unc_ran),
        tpot_median_c_s=tpot_c,
        tpot_median_u_s=tpot_u,
        tpot_ratio=_ratio(tpot_c, tpot_u),
        output_tokens_c=out_c,
        output_tokens_u=out_u,
        forward_passes_c=passes_c,
        forward_passes_u=passes_u,
        forced_tokens_c=forced_c,
        tokens_per_pass_c=out_c / passes_c if passes_c else None,
        tokens_per_pass_u=out_u / passes_u if passes_u else None,
        forced_fraction_c=forced_c / out_c if out_c else None,
    )


def aggregate(records: Sequence[SchemaRecord], *, overall: bool = True) -> list[SubsetSummary]:
    """One :class:`SubsetSummary` per subset (in first-seen order), then ``"all"`` when ``overall``
    and there is more than one subset."""
    groups: dict[str, list[SchemaRecord]] = {}
    for record in records:
        groups.setdefault(record.subset, []).append(record)
    out = [_summarize(subset, rows) for subset, rows in groups.items()]
    if overall and len(groups) > 1:
        out.append(_summarize("all", list(records)))
    return out


# ------------------------------------------------------------------------------------------------
# Output


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{1e3 * x:.{digits}f}"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_table(summaries: Sequence[SubsetSummary]) -> str:
    """The stdout report: a quality table and an efficiency table, one row per subset."""
    quality = [
        [
            s.subset,
            str(s.n),
            f"{s.compiled} ({_pct(s.declared_coverage)})",
            _pct(s.empirical_coverage_c),
            _pct(s.compliance_c),
            _pct(s.empirical_coverage_u),
            _pct(s.compliance_u),
            f"{s.unsupported}/{s.compile_errors}/{s.compile_timeouts}/{s.compile_crashes}",
            str(s.budget_c),
            f"{s.duplicate_keys_c} / {s.duplicate_keys_u}",
            str(s.too_long),
        ]
        for s in summaries
    ]
    speed = [
        [
            s.subset,
            _ms(s.compile_time_median_s),
            f"{_ms(s.ttft_median_c_s, 0)} / {_ms(s.ttft_median_u_s, 0)}",
            f"{_ms(s.tpot_median_c_s)} / {_ms(s.tpot_median_u_s)}",
            _num(s.tpot_ratio),
            f"{s.output_tokens_c} / {s.forward_passes_c}",
            _num(s.tokens_per_pass_c),
            f"{s.output_tokens_u} / {s.forward_passes_u}",
            f"{s.forced_tokens_c} ({_pct(s.forced_fraction_c)})",
        ]
        for s in summaries
    ]
    lines = [
        "Quality (c = constrained, u = unconstrained; compliance = valid among compiled schemas)",
        *_render(
            [
                "subset",
                "n",
                "compiled (declared)",
                "emp.cov c",
                "compl. c",
                "emp.cov u",
                "compl. u",
                "unsup/err/timeout/crash",
                "budget c",
                "dup.keys c / u",
                "too long",
            ],
            quality,
        ),
        "",
        "Efficiency (medians; TTFT and TPOT in ms, constrained / unconstrained)",
        *_render(
            [
                "subset",
                "compile ms",
                "TTFT c / u",
                "TPOT c / u",
                "TPOT ratio",
                "tokens/passes c",
                "tok/pass c",
                "tokens/passes u",
                "forced c",
            ],
            speed,
        ),
    ]
    return "\n".join(lines)


def plot_summaries(summaries: Sequence[SubsetSummary], path: str | Path, *, title: str = "") -> None:
    """Bar charts per subset, both arms: empirical coverage, compliance and TPOT (matplotlib, Agg).

    Raises:
        InvalidInputError: matplotlib is not installed (``pip install matplotlib``, or the bench extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError("--plot needs matplotlib: pip install matplotlib") from None

    names = [s.subset for s in summaries]
    xs = list(range(len(names)))
    w = 0.38
    panels: list[tuple[str, list[float], list[float], str]] = [
        (
            "empirical coverage (%)",
            [100 * (s.empirical_coverage_c or 0) for s in summaries],
            [100 * (s.empirical_coverage_u or 0) for s in summaries],
            "%",
        ),
        (
            "compliance (% of compiled)",
            [100 * (s.compliance_c or 0) for s in summaries],
            [100 * (s.compliance_u or 0) for s in summaries],
            "%",
        ),
        (
            "time per output token (ms, median)",
            [1e3 * (s.tpot_median_c_s or 0) for s in summaries],
            [1e3 * (s.tpot_median_u_s or 0) for s in summaries],
            "ms",
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for ax, (label, con, unc, unit) in zip(axes, panels):
        bars_c = ax.bar([x - w / 2 for x in xs], con, w, label="constrained")
        bars_u = ax.bar([x + w / 2 for x in xs], unc, w, label="unconstrained")
        fmt = "%.0f" if unit == "%" else "%.1f"
        ax.bar_label(bars_c, fmt=fmt, fontsize=7)
        ax.bar_label(bars_u, fmt=fmt, fontsize=7)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        if unit == "%":
            ax.set_ylim(0, 105)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The run


#: Compiled once before timing: exercises the compiler's applicators, numbers, patterns and formats so
#: that numba's JIT compilation is not charged to the first benchmark schema that uses them.
_WARM_UP_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "string", "pattern": "^x+$", "maxLength": 5, "format": "date"},
        "b": {"type": "integer", "minimum": 1, "maximum": 100, "multipleOf": 3},
        "c": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"not": {"type": "null"}}]},
        "d": {"oneOf": [{"enum": ["x", "y"]}, {"type": "boolean"}]},
        "e": {"$ref": "#/definitions/e"},
    },
    "definitions": {"e": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["a"],
}


def _warm_up(model: Any, tokenizer: Any, info: Any, max_new_tokens: int) -> None:
    """Compile a feature-rich schema and the example schemas and run both arms briefly, so numba's
    JIT, the vocabulary trie and torch's first-call costs are not charged to the first benchmark schema."""
    compile_schema(_WARM_UP_SCHEMA, info, timeout_s=None)
    for example_schema, _ in EXAMPLES:
        comp = compile_schema(example_schema, info, timeout_s=None)
        messages = build_messages(example_schema)
        budget = min(max_new_tokens, 24)
        for compiled, tokens in ((comp.compiled, budget), (None, min(budget, 8))):
            run_arm(
                example_schema,
                messages,
                model=model,
                tokenizer=tokenizer,
                compiled=compiled,
                max_new_tokens=tokens,
            )


def _label(record: SchemaRecord) -> str:
    c, u = record.constrained, record.unconstrained
    tail = (
        f" ({record.compile.keyword or record.compile.message[:60]})"
        if record.compile.status != "compiled"
        else ""
    )
    return f"{record.subset}/{record.name}: compile={record.compile.status}{tail} c={c.status} u={u.status}"


def run_jsonschemabench(
    schemas: Sequence[BenchSchema],
    *,
    model: Any,
    tokenizer: Any,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    compile_timeout_s: float | None = DEFAULT_COMPILE_TIMEOUT_S,
    unconstrained: bool = True,
    warm_up: bool = True,
    progress: bool = False,
    stream: IO[str] | None = None,
    on_record: Callable[[list[SchemaRecord]], None] | None = None,
    drafter: str | None = None,
) -> tuple[list[SchemaRecord], bool]:
    """Run every schema (both arms); ``(records, interrupted)``.

    ``on_record(records)`` is called after each schema (the CLI saves partial results with it). Ctrl-C
    drops the schema in progress and returns the records so far with ``interrupted=True``.
    """
    from constrain.models import tokenizer_info_for

    info = tokenizer_info_for(tokenizer)
    if warm_up:
        _warm_up(model, tokenizer, info, max_new_tokens)
    bar = harness.Progress(len(schemas), progress, stream, lines=True)
    records: list[SchemaRecord] = []
    interrupted = False
    try:
        for item in schemas:
            record = run_schema(
                item,
                model=model,
                tokenizer=tokenizer,
                tokenizer_info=info,
                max_new_tokens=max_new_tokens,
                compile_timeout_s=compile_timeout_s,
                unconstrained=unconstrained,
                drafter=drafter,
            )
            records.append(record)
            bar.update(len(records), _label(record))
            if on_record is not None:
                on_record(records)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return records, interrupted


def interleave(schemas: Sequence[BenchSchema]) -> list[BenchSchema]:
    """Round-robin over the subsets (first of each, then second of each, ...), keeping each subset's
    order: a run stopped early then has about as many schemas of every subset."""
    groups: dict[str, list[BenchSchema]] = {}
    for item in schemas:
        groups.setdefault(item.subset, []).append(item)
    longest = max((len(g) for g in groups.values()), default=0)
    return [g[i] for i in range(longest) for g in groups.values() if i < len(g)]


def _load(model_arg: str, dtype: str) -> tuple[Any, Any]:
    from constrain.models import default_model, load_model

    if model_arg == "default":
        return default_model() if dtype == "float32" else load_model(None, dtype=dtype)
    return load_model(model_arg, dtype=dtype)


def _write_json(path: Path, config: Mapping[str, Any], records: Sequence[SchemaRecord]) -> None:
    """Write the ``--json`` payload atomically (a partial run leaves a readable file)."""
    payload = {
        "config": dict(config),
        "aggregates": [asdict(s) for s in aggregate(records)],
        "records": [r.to_json() for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_from_args(args: argparse.Namespace) -> int:
    """``constrain bench jsonschemabench``: run, print the tables, write ``--json`` / ``--plot``.

    Schemas run round-robin over the subsets (:func:`interleave`). The ``--json`` file is rewritten
    after every schema (``config.complete`` is false until the end), so a long run can be inspected
    while it goes; SIGTERM or Ctrl-C stops it with everything written for the schemas done. Exit code
    0 (1 when interrupted).
    """
    import torch

    from constrain import __version__

    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be >= 1, got {args.limit}")
    if args.max_new_tokens < 1:
        raise InvalidInputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
    subsets = list(dict.fromkeys(args.subset or DEFAULT_SUBSETS))
    schemas = load_schemas(args.data, subsets, limit=args.limit, seed=args.seed)
    torch.set_num_threads(args.threads)
    model, tokenizer = _load(args.model, args.dtype)
    started = time.time()
    config: dict[str, Any] = {
        "benchmark": "jsonschemabench",
        "command": " ".join(["constrain", *sys.argv[1:]]) if sys.argv else "",
        "data": str(args.data),
        "subsets": subsets,
        "limit": args.limit,
        "seed": args.seed,
        "schemas": len(schemas),
        "model": args.model,
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "decoding": "greedy",
        "drafter": getattr(args, "drafter", None) or "default",
        "threads": args.threads,
        "compile_timeout_s": args.compile_timeout,
        "system_prompt": SYSTEM_PROMPT,
        "examples": [{"schema": s, "instance": i} for s, i in EXAMPLES],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "constrain": __version__,
        "torch": torch.__version__,
        "complete": False,
    }
    out = Path(args.json) if args.json else None

    def save(records: list[SchemaRecord]) -> None:
        if out is not None:
            _write_json(out, {**config, "wall_time_s": round(time.time() - started, 1)}, records)

    with harness.stop_on_sigterm(), harness.JsonlLog(getattr(args, "log", None)) as log:

        def on_record(records: list[SchemaRecord]) -> None:
            log.write(records[-1].to_json())
            save(records)

        records, interrupted = run_jsonschemabench(
            interleave(schemas),
            model=model,
            tokenizer=tokenizer,
            max_new_tokens=args.max_new_tokens,
            compile_timeout_s=args.compile_timeout if args.compile_timeout > 0 else None,
            unconstrained=not args.no_unconstrained,
            progress=not args.quiet,
            on_record=on_record,
            drafter=getattr(args, "drafter", None),
        )
    summaries = aggregate(records)
    sys.stdout.write(format_table(summaries) + "\n")
    config.update(complete=not interrupted, interrupted=interrupted)
    if out is not None:
        save(records)
        sys.stderr.write(f"wrote {out}\n")
    if args.plot:
        title = (
            f"JSONSchemaBench ({len(records)} schemas), model {args.model}, greedy, "
            f"max {args.max_new_tokens} new tokens"
        )
        plot_summaries(summaries, args.plot, title=title)
        sys.stderr.write(f"wrote {args.plot}\n")
    if interrupted:
        sys.stderr.write(f"interrupted after {len(records)} of {len(schemas)} schemas\n")
    return 1 if interrupted else 0


_JSB_EPILOG = """\
examples:
  constrain bench jsonschemabench --subset Glaiveai2K --limit 5
  constrain bench jsonschemabench --subset Glaiveai2K --subset Github_easy --subset Github_medium \\
      --limit 50 --json bench/results/jsonschemabench.json --plot bench/results/jsonschemabench.png

Each schema is compiled (declared coverage, compile time), then generated for twice with the same
2-shot chat prompt, greedy decoding and token budget: constrained by the schema, and unconstrained
(the JSON is extracted from the text). Outputs are validated with jsonschema (the schema's draft, format
checking on). Progress goes to stderr, the tables to stdout.
"""


def add_arguments(subparsers: Any) -> Any:
    """Register ``bench`` (with ``jsonschemabench``) on a CLI's subparsers; leaves set ``func``.
    Returns the subparsers of ``bench``, where other benchmarks add themselves."""
    bench = subparsers.add_parser(
        "bench",
        help="end-to-end benchmarks with a model (JSONSchemaBench)",
        description="End-to-end benchmarks: constrained vs unconstrained generation with a real model.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    jsb = sub.add_parser(
        "jsonschemabench",
        help="coverage, compliance and speed on JSONSchemaBench (arXiv:2501.10868)",
        description="JSONSchemaBench: declared/empirical coverage, compliance, compile time, TTFT and TPOT "
        "per subset, constrained vs unconstrained.",
        epilog=_JSB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    jsb.add_argument(
        "--data",
        default=str(DEFAULT_DATA_PATH),
        metavar="PATH",
        help=f"{_ARCHIVE_NAME}, the folder holding it, or a folder with data/<Subset>/*.json "
        "(default: ../shared/data/jsonschemabench, the full archive)",
    )
    jsb.add_argument(
        "--subset",
        action="append",
        metavar="NAME",
        help=f"a subset to run (repeatable; default: {', '.join(DEFAULT_SUBSETS)})",
    )
    jsb.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"schemas sampled per subset (default {DEFAULT_LIMIT})",
    )
    jsb.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sample (default 0)")
    jsb.add_argument(
        "--model", default="default", metavar="PATH", help="'default' (SmolLM2-135M) or a local model folder"
    )
    jsb.add_argument("--dtype", default="float32", help="model dtype: float32 (default) or bfloat16")
    jsb.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="M",
        help=f"output token budget of both arms (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    jsb.add_argument(
        "--threads", type=int, default=1, metavar="T", help="torch threads, both arms (default 1)"
    )
    jsb.add_argument(
        "--compile-timeout",
        type=float,
        default=DEFAULT_COMPILE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"compile time limit per schema; 0 = none (default {DEFAULT_COMPILE_TIMEOUT_S:g})",
    )
    jsb.add_argument("--no-unconstrained", action="store_true", help="run the constrained arm only")
    jsb.add_argument(
        "--drafter",
        metavar="NAME",
        help="the constrained arm's drafter: 'none' or parts of forced, ngram, draft-model, layer-skip "
        "joined by '+' (default: generate's default, forced+ngram)",
    )
    jsb.add_argument("--json", metavar="OUT", help="write per-schema records and aggregates to OUT")
    jsb.add_argument("--plot", metavar="OUT.png", help="write bar charts (needs matplotlib)")
    jsb.add_argument(
        "--log",
        metavar="OUT.jsonl",
        help="write each schema's record as a JSON line as soon as it is done (kept if the run is cut off)",
    )
    jsb.add_argument("--quiet", action="store_true", help="no progress on stderr")
    jsb.set_defaults(func=run_from_args)
    bench.set_defaults(func=lambda args: _bench_help(bench))
    return sub


def _bench_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
