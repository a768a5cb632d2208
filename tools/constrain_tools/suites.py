"""Conformance runs: the official JSON Schema Test Suite and MaskBench (JSONSchemaBench) through the engine.

Each schema goes the way a user's would::

    Grammar.from_json_schema --> constrain.compile --> GrammarMatcher      (timed together: "compile")

and each of its test instances is serialised the way the automaton writes JSON
(:func:`constrain.json_schema.serialize_instance`), tokenised with a real tokenizer and walked through the
matcher token by token. The outcome of one instance is one of:

``pass``
    a valid instance is accepted and the matcher may end there, or an invalid one is rejected;
``false_positive``
    an invalid instance is accepted: the engine would let a model emit output that breaks the schema;
``false_negative``
    a valid instance is rejected: the engine forbids output the schema allows;
``unsupported``
    the schema uses a keyword the engine refuses (:class:`~constrain.exceptions.UnsupportedSchemaFeature`);
``error``
    another :class:`~constrain.exceptions.ConstrainError` (a malformed schema, a dangling ``$ref``, ...);
``timeout``
    compiling the schema took longer than the time limit, or ran past the compile budget
    (``--compile-budget``: :class:`~constrain.CompileBudget`, CPU seconds; none by default, so that
    the verdicts do not depend on the machine's speed);
``crash``
    any other exception: a bug in constrain. The run goes on; the report lists every crash under the table.

Run it from the command line (``constrain suite ...``, or ``python -m constrain_tools.suites ...``)::

    python -m constrain_tools.suites json-schema-test-suite --draft 2020-12 --json out.json
    python -m constrain_tools.suites json-schema-test-suite --optional --filter format/
    python -m constrain_tools.suites maskbench --limit 20 --subset Github_easy --jobs 4
    python -m constrain_tools.suites --update-expected     # rewrite tests/expected/ after an improvement

The data (the suite, MaskBench, the tokenizer) default to the shared folder (:mod:`constrain_tools.harness`:
``$CONSTRAIN_SHARED`` or ``../shared`` beside the checkout).

or from Python: :func:`load_json_schema_test_suite` / :func:`load_maskbench`, then :func:`run_suite`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from constrain.budget import UNLIMITED, CompileBudget, budget_scope
from constrain.compiler import compile as compile_grammar
from constrain.exceptions import (
    CompileBudgetExceeded,
    ConstrainError,
    EmptyLanguageError,
    InvalidInputError,
    UnsupportedFeatureError,
)
from constrain.grammar import Grammar
from constrain.json_schema import detect_draft
from constrain.matcher import GrammarMatcher
from constrain.tokenizer_info import TokenizerInfo

from . import harness

__all__ = [
    "OUTCOMES",
    "Engine",
    "InstanceResult",
    "OutcomeDiff",
    "SchemaCase",
    "SchemaResult",
    "Suite",
    "SuiteResult",
    "TestInstance",
    "TextTokenizer",
    "add_arguments",
    "compare_outcomes",
    "format_table",
    "load_json_schema_test_suite",
    "load_maskbench",
    "load_remotes",
    "main",
    "maskbench_subset",
    "read_expected",
    "run_from_args",
    "run_suite",
    "write_expected",
]

#: Every outcome an instance can have, in the order the table shows them.
OUTCOMES = ("pass", "false_positive", "false_negative", "unsupported", "error", "timeout", "crash")

Formats = Literal["assert", "annotate"]

#: The suite's convention: ``http://localhost:1234/<path>`` is ``remotes/<path>``.
REMOTES_BASE_URI = "http://localhost:1234/"

#: Compile time limit per schema (seconds): past it every instance of the schema counts as ``timeout``.
DEFAULT_TIMEOUT_S = 20.0

_SUITE_PARTS = ("data", "json-schema-test-suite")
_MASKBENCH_PARTS = ("data", "jsonschemabench", "maskbench-data.tar.xz")
_TOKENIZER_PARTS = ("tokenizers", "llama3-128k.tokenizer.json")
DEFAULT_SUITE_PATH = harness.shared_dir().joinpath(*_SUITE_PARTS)
DEFAULT_MASKBENCH_PATH = harness.shared_dir().joinpath(*_MASKBENCH_PARTS)
DEFAULT_TOKENIZER_PATH = harness.shared_dir().joinpath(*_TOKENIZER_PARTS)
#: The committed expected outcomes of the required draft 2020-12 suite (tests/test_json_schema_suite.py),
#: in the checkout (relative to the working directory when this package is not run from one).
_EXPECTED_REL = Path("tests") / "expected" / "json-schema-test-suite-draft2020-12.json"
DEFAULT_EXPECTED_PATH = (harness.checkout_root() or Path()) / _EXPECTED_REL
REGENERATE_COMMAND = "python -m constrain_tools.suites --update-expected"

_DRAFT_FOLDERS = {"2020-12": "draft2020-12", "7": "draft7"}


# ==========================================================================================================
# Data
# ==========================================================================================================


@dataclass(frozen=True)
class TestInstance:
    """One JSON instance with its verdict: ``valid`` says whether it satisfies the schema."""

    __test__ = False  # not a pytest class, despite the name

    #: unique within its suite: ``"<file> / <group> / <test>"`` (a ``" [2]"`` suffix on repeats)
    id: str
    description: str
    data: Any
    valid: bool


@dataclass(frozen=True)
class SchemaCase:
    """One schema and its instances (a test-suite group or a MaskBench record)."""

    #: the row of the results table: a test file (``"ref.json"``) or a MaskBench subset
    file: str
    #: the group description, or the MaskBench schema id
    group: str
    schema: Any
    instances: tuple[TestInstance, ...]
    #: how ``format`` is compiled: enforced (``"assert"``) or ignored (``"annotate"``)
    formats: Formats = "annotate"
    #: the draft handed to the compiler (``"2020-12"`` or ``"7"``); the schema's ``$schema`` may override it
    draft: str | None = None


@dataclass(frozen=True)
class Suite:
    """Schemas with instances, and the documents remote ``$ref`` s resolve to (nothing is fetched)."""

    name: str
    cases: tuple[SchemaCase, ...]
    #: URI -> schema document
    registry: Mapping[str, Any] = field(default_factory=dict)
    #: what was loaded (draft, optional, path, ...), copied into the results
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_instances(self) -> int:
        """How many instances the suite holds."""
        return sum(len(c.instances) for c in self.cases)


def _unique_id(seen: Counter[str], base: str) -> str:
    seen[base] += 1
    return base if seen[base] == 1 else f"{base} [{seen[base]}]"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read JSON from {path}: {exc}") from exc


# ---- the official JSON Schema Test Suite ------------------------------------------------------------------


def load_remotes(root: str | Path) -> dict[str, Any]:
    """The suite's ``remotes/`` folder as a registry: ``http://localhost:1234/<path>`` -> parsed document.

    ``root`` is the suite root (holding ``remotes/``) or the ``remotes/`` folder itself.
    """
    base = Path(root)
    remotes = base if base.name == "remotes" else base / "remotes"
    if not remotes.is_dir():
        raise InvalidInputError(f"{remotes} is not a folder: pass the JSON Schema Test Suite root")
    return {
        REMOTES_BASE_URI + p.relative_to(remotes).as_posix(): _read_json(p)
        for p in sorted(remotes.rglob("*.json"))
    }


def load_json_schema_test_suite(
    root: str | Path = DEFAULT_SUITE_PATH,
    *,
    draft: str = "2020-12",
    optional: bool = False,
    filter: str | None = None,
) -> Suite:
    """Load ``tests/draft<draft>/*.json`` (and with ``optional``, ``optional/**``) of the official suite.

    Required tests and the other optional ones compile ``format`` as an annotation (what the drafts
    say by default); ``optional/format/`` compiles it as an assertion, which is what those tests check.
    ``filter`` keeps files whose path (relative to the draft folder, e.g. ``optional/format/date.json``)
    contains it.
    """
    if draft not in _DRAFT_FOLDERS:
        raise InvalidInputError(f"draft must be one of {', '.join(_DRAFT_FOLDERS)}, got {draft!r}")
    base = Path(root)
    folder = base / "tests" / _DRAFT_FOLDERS[draft]
    if not folder.is_dir():
        raise InvalidInputError(
            f"{folder} is not a folder: pass the root of a JSON-Schema-Test-Suite checkout "
            "(the folder holding tests/ and remotes/)"
        )
    files = sorted(folder.glob("*.json"))
    if optional:
        files += sorted((folder / "optional").rglob("*.json"))
    seen: Counter[str] = Counter()
    cases: list[SchemaCase] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if filter and filter not in rel:
            continue
        groups = _read_json(path)
        if not isinstance(groups, list):
            raise InvalidInputError(f"{path}: expected a list of test groups, got {type(groups).__name__}")
        formats: Formats = "assert" if rel.startswith("optional/format/") else "annotate"
        for g in groups:
            desc = str(g["description"])
            tests = tuple(
                TestInstance(
                    id=_unique_id(seen, f"{rel} / {desc} / {t['description']}"),
                    description=str(t["description"]),
                    data=t["data"],
                    valid=bool(t["valid"]),
                )
                for t in g["tests"]
            )
            cases.append(SchemaCase(rel, desc, g["schema"], tests, formats, draft))
    return Suite(
        name=f"json-schema-test-suite draft{draft}" + (" +optional" if optional else ""),
        cases=tuple(cases),
        registry=load_remotes(base),
        options={"draft": draft, "optional": optional, "filter": filter, "path": str(base)},
    )


# ---- MaskBench ---------------------------------------------------------------------------------------------

_NUMBERED = re.compile(r"^(?P<subset>.+)_\d+$")


def maskbench_subset(file_name: str) -> str:
    """The subset of a MaskBench file: the part before ``---``, or the name less a ``_<n>`` suffix.

    ``Github_easy---o10008.json`` -> ``Github_easy``; ``BFCL_java_10.json`` -> ``BFCL_java``;
    ``JME_3.json`` -> ``JME``.
    """
    stem = Path(file_name).name.removesuffix(".json")
    if "---" in stem:
        return stem.split("---", 1)[0]
    m = _NUMBERED.match(stem)
    return m.group("subset") if m else stem


def _maskbench_id(file_name: str) -> str:
    stem = Path(file_name).name.removesuffix(".json")
    return stem.split("---", 1)[1] if "---" in stem else stem


def _iter_maskbench_files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(file name, reader) of every ``*.json`` in a folder (by name) or a tar archive (in archive order)."""
    if path.is_dir():
        for p in sorted(path.rglob("*.json")):
            yield p.name, p.read_bytes
        return
    if not path.is_file():
        raise InvalidInputError(
            f"MaskBench not found at {path}: pass --path with maskbench-data.tar.xz or an unpacked folder"
        )
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInputError(f"{path} is neither a folder nor a readable tar archive: {exc}") from exc
    with archive as tf:
        # Archive order (MaskBench's archive is sorted by name): seeking backwards in an xz stream
        # would decompress it again from the start.
        for member in tf:
            if not (member.isfile() and member.name.endswith(".json")):
                continue

            def read(member: tarfile.TarInfo = member) -> bytes:
                f = tf.extractfile(member)
                if f is None:  # pragma: no cover - regular files always have data
                    raise InvalidInputError(f"{path}: cannot read {member.name}")
                return f.read()

            yield Path(member.name).name, read


def load_maskbench(
    path: str | Path = DEFAULT_MASKBENCH_PATH,
    *,
    subsets: Iterable[str] | None = None,
    limit: int | None = None,
    recursive_only: bool = False,
) -> Suite:
    """Load MaskBench records from ``maskbench-data.tar.xz`` (read without unpacking) or a folder of them.

    Each record ``{"description", "meta", "schema", "tests": [{"description", "data", "valid"}]}``
    becomes one :class:`SchemaCase` in the row of its subset (:func:`maskbench_subset`); records
    without tests are kept (they still measure compile coverage and time). ``subsets`` keeps only
    those subsets; ``limit`` keeps the first ``limit`` schemas (by file name) of each subset;
    ``recursive_only`` keeps only schemas with a ``$ref`` cycle (:func:`has_ref_cycle`), before ``limit``.
    ``format`` is enforced (MaskBench's verdicts were made with format assertion on), and the draft
    comes from the schema's ``$schema`` (2020-12 where there is none, as Python's ``jsonschema`` does).
    """
    root = Path(path)
    wanted = set(subsets) if subsets else None
    taken: Counter[str] = Counter()
    seen_subsets: set[str] = set()
    seen_ids: Counter[str] = Counter()
    cases: list[SchemaCase] = []
    for name, read in _iter_maskbench_files(root):
        subset = maskbench_subset(name)
        seen_subsets.add(subset)
        if wanted is not None and subset not in wanted:
            continue
        if limit is not None and taken[subset] >= limit:
            continue
        try:
            record = json.loads(read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{root}: {name} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or "schema" not in record:
            raise InvalidInputError(f"{root}: {name} is not a MaskBench record (no 'schema')")
        if recursive_only and not _is_recursive(record["schema"]):
            continue
        taken[subset] += 1
        sid = _maskbench_id(name)
        tests = tuple(
            TestInstance(
                id=_unique_id(seen_ids, f"{subset} / {sid} / {t.get('description', '')}"),
                description=str(t.get("description", "")),
                data=t["data"],
                valid=bool(t["valid"]),
            )
            for t in record.get("tests") or ()
        )
        schema = record["schema"]
        cases.append(SchemaCase(subset, sid, schema, tests, "assert", _draft_of(schema)))
    if wanted is not None and not wanted & seen_subsets:
        raise InvalidInputError(
            f"no MaskBench subset named {', '.join(sorted(wanted))}; the subsets are: "
            + ", ".join(sorted(seen_subsets))
        )
    return Suite(
        name="maskbench" + (f" ({', '.join(sorted(wanted))})" if wanted else ""),
        cases=tuple(cases),
        registry={},
        options={
            "path": str(root),
            "subsets": sorted(wanted) if wanted else None,
            "limit": limit,
            "recursive_only": recursive_only,
        },
    )


def _is_recursive(schema: Any) -> bool:
    from constrain.json_schema import has_ref_cycle

    try:
        return has_ref_cycle(schema, draft=_draft_of(schema) or "2020-12")
    except Exception:  # noqa: BLE001 - a schema that cannot be walked: the run itself reports why
        return False


def _draft_of(schema: Any) -> str:
    """The draft a MaskBench schema's ``$schema`` names, else ``"2020-12"`` (what Python's
    ``jsonschema`` assumes, and MaskBench's verdicts come from it)."""
    return detect_draft(schema, "2020-12", by_marker=True) or "2020-12"


# ==========================================================================================================
# The engine under test
# ==========================================================================================================


_WARM_UP_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "string", "pattern": "^x+$", "maxLength": 5, "format": "date"},
        "b": {"type": "integer", "minimum": 1, "maximum": 100, "multipleOf": 3},
        "c": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"not": {"type": "null"}}]},
    },
    "required": ["a"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Engine:
    """The two schema-facing calls the runner makes; tests swap in fakes.

    ``grammar_from_schema(schema, *, registry, formats, draft)`` returns a :class:`~constrain.Grammar`
    (the runner then calls :func:`constrain.compile`); ``serialize(instance, schema, *, registry,
    formats, draft)`` returns the text the grammar is expected to accept for a valid instance.
    """

    grammar_from_schema: Callable[..., Any]
    serialize: Callable[..., str]
    #: a small schema compiled (untimed, errors ignored) before the run, so that JIT compilation of
    #: the engine's numba kernels counts against neither the first schema's time nor its time limit
    warm_up_schema: Any = None
    #: the compile budget of each schema (both stages); None: no budget, so that the verdicts do not
    #: depend on the machine's speed (the time limit ``timeout_s`` still holds)
    compile_budget: CompileBudget | None = None

    @classmethod
    def default(
        cls, compile_budget: CompileBudget | None = None, *, max_any_depth: int | None = None
    ) -> Engine:
        """``Grammar.from_json_schema`` and ``serialize_instance``, with the same draft and formats;
        ``compile_budget`` bounds each schema's compile (default: none); ``max_any_depth`` as in
        ``from_json_schema`` (``None``, the default: unconstrained values exact at any depth)."""
        from constrain.json_schema import SchemaOptions, serialize_instance

        def grammar_from_schema(
            schema: Any, *, registry: Mapping[str, Any], formats: str, draft: Any
        ) -> Grammar:
            options: dict[str, Any] = {
                "registry": registry,
                "formats": formats,
                "max_any_depth": max_any_depth,
            }
            if draft is not None:
                options["draft"] = draft
            # the runner's scope (the engine's budget, none by default) holds: see _compile_case
            with budget_scope(None):
                return Grammar.from_json_schema(schema, **options)

        def serialize(
            instance: Any, schema: Any, *, registry: Mapping[str, Any], formats: str, draft: Any
        ) -> str:
            options = (
                SchemaOptions(formats=formats)
                if draft is None
                else SchemaOptions(formats=formats, draft=draft)
            )
            return serialize_instance(instance, schema, registry=registry, options=options)

        return cls(grammar_from_schema, serialize, _WARM_UP_SCHEMA, compile_budget)


@dataclass(frozen=True)
class TextTokenizer:
    """A :class:`~constrain.TokenizerInfo` with the encoder that turns text into that tokenizer's ids."""

    info: TokenizerInfo
    encode: Callable[[str], Sequence[int]]
    name: str = ""

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """A Hugging Face ``tokenizer.json``; text is encoded with ``add_special_tokens=False``."""
        import tokenizers

        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(
                f"tokenizer file not found: {p} (pass --tokenizer PATH to a tokenizer.json)"
            )
        hf = tokenizers.Tokenizer.from_file(str(p))

        def encode(text: str) -> Sequence[int]:
            return list(hf.encode(text, add_special_tokens=False).ids)

        info = TokenizerInfo.from_file(p)
        return cls(info, encode, info.name or p.name)


def _walk(matcher: GrammarMatcher, tokenizer: TextTokenizer, text: str) -> tuple[bool, bool]:
    """Feed ``text`` to a fresh ``matcher``; (accepted and may end there, fell back to raw bytes)."""
    data = text.encode("utf-8")
    ids = tokenizer.encode(text)
    table = tokenizer.info.token_bytes
    if b"".join(table[i] if 0 <= i < len(table) else b"\0\0" for i in ids) != data:
        # The tokenizer normalised or dropped something: the ids do not spell the text. Walk the bytes.
        return bool(matcher.accept_bytes(data)) and bool(matcher.can_end()), True
    for i in ids:
        if not matcher.accept_token(i):
            return False, False
    return bool(matcher.can_end()), False


# ==========================================================================================================
# Results
# ==========================================================================================================


@dataclass(frozen=True)
class InstanceResult:
    """What happened to one instance."""

    id: str
    file: str
    group: str
    test: str
    valid: bool
    #: one of :data:`OUTCOMES`
    outcome: str
    #: the keyword for ``unsupported``; the message for ``error`` / ``crash`` / ``timeout``
    detail: str = ""

    @property
    def label(self) -> str:
        """The outcome as the expected-results file writes it (``unsupported:<keyword>`` for unsupported)."""
        return f"unsupported:{self.detail}" if self.outcome == "unsupported" else self.outcome

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {
            "id": self.id,
            "file": self.file,
            "group": self.group,
            "test": self.test,
            "valid": self.valid,
            "outcome": self.outcome,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class SchemaResult:
    """What happened when one schema was compiled."""

    file: str
    group: str
    #: ``"compiled"``, ``"unsupported"``, ``"error"``, ``"timeout"`` or ``"crash"``
    status: str
    #: seconds for ``from_json_schema`` + ``compile`` + ``GrammarMatcher`` (None unless it finished)
    compile_s: float | None
    keyword: str = ""
    pointer: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {"file": self.file, "group": self.group, "status": self.status}
        if self.compile_s is not None:
            out["compile_ms"] = round(self.compile_s * 1000, 3)
        for key in ("keyword", "pointer", "message"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _counts(instances: Iterable[InstanceResult]) -> dict[str, int]:
    c = Counter(r.outcome for r in instances)
    out = {"instances": sum(c.values())}
    out.update({o: c.get(o, 0) for o in OUTCOMES})
    return out


def _compile_stats(schemas: Sequence[SchemaResult]) -> dict[str, Any]:
    times = [s.compile_s for s in schemas if s.compile_s is not None and s.status == "compiled"]
    p50, p90 = _percentile(times, 0.5), _percentile(times, 0.9)
    return {
        "schemas": len(schemas),
        "compiled": sum(s.status == "compiled" for s in schemas),
        "compile_ms_p50": None if p50 is None else round(p50 * 1000, 3),
        "compile_ms_p90": None if p90 is None else round(p90 * 1000, 3),
        "compile_ms_max": round(max(times) * 1000, 3) if times else None,
        "compile_ms_total": round(sum(times) * 1000, 3),
    }


@dataclass
class SuiteResult:
    """Everything one run produced: per-schema compile results and per-instance outcomes."""

    suite: str
    options: dict[str, Any]
    schemas: list[SchemaResult] = field(default_factory=list)
    instances: list[InstanceResult] = field(default_factory=list)
    #: instances whose token ids did not spell their text, walked as raw bytes instead
    tokenizer_fallbacks: int = 0
    elapsed_s: float = 0.0

    def totals(self) -> dict[str, Any]:
        """Instance counts by outcome, plus schema compile statistics."""
        return {**_counts(self.instances), **_compile_stats(self.schemas)}

    def per_file(self) -> dict[str, dict[str, Any]]:
        """:meth:`totals` per test file (or MaskBench subset), in suite order."""
        files = list(dict.fromkeys([s.file for s in self.schemas] + [r.file for r in self.instances]))
        return {
            f: {
                **_counts(r for r in self.instances if r.file == f),
                **_compile_stats([s for s in self.schemas if s.file == f]),
            }
            for f in files
        }

    def unsupported_keywords(self) -> dict[str, int]:
        """Unsupported keyword -> number of instances it made unsupported, most frequent first."""
        return dict(Counter(r.detail for r in self.instances if r.outcome == "unsupported").most_common())

    def unsupported_keyword_schemas(self) -> dict[str, int]:
        """Unsupported keyword -> number of schemas it made unsupported, most frequent first."""
        return dict(Counter(s.keyword for s in self.schemas if s.status == "unsupported").most_common())

    def outcomes(self) -> dict[str, str]:
        """Instance id -> outcome label (``pass``, ``unsupported:<keyword>``, ...), as expected files hold."""
        return {r.id: r.label for r in self.instances}

    def crashes(self) -> list[SchemaResult | InstanceResult]:
        """Schemas and instances whose handling raised something other than a ConstrainError."""
        out: list[SchemaResult | InstanceResult] = [s for s in self.schemas if s.status == "crash"]
        out += [
            r for r in self.instances if r.outcome == "crash" and r.detail.startswith(("serialize:", "walk:"))
        ]
        return out

    def to_json(self, *, cases: bool = True) -> dict[str, Any]:
        """The ``--json`` document: totals at the top level, then per file, keywords, failures and cases."""
        out: dict[str, Any] = {"suite": self.suite, "options": self.options, **self.totals()}
        out["tokenizer_fallbacks"] = self.tokenizer_fallbacks
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["per_file"] = self.per_file()
        out["unsupported_keywords"] = self.unsupported_keywords()
        out["unsupported_keyword_schemas"] = self.unsupported_keyword_schemas()
        out["schemas_failed"] = [s.to_json() for s in self.schemas if s.status != "compiled"]
        if cases:
            out["schema_results"] = [s.to_json() for s in self.schemas]
            out["cases"] = [r.to_json() for r in self.instances]
        return out


# ==========================================================================================================
# The runner
# ==========================================================================================================


def run_suite(
    suite: Suite,
    tokenizer: TextTokenizer,
    *,
    engine: Engine | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    progress: bool = False,
    jobs: int = 1,
    log_path: str | Path | None = None,
) -> SuiteResult:
    """Compile every schema of ``suite`` and walk every instance through its matcher.

    Never raises for what a schema or instance does: each failure becomes an outcome (see the module
    docstring). ``engine`` defaults to :meth:`Engine.default` (the real compiler); ``progress`` draws
    a bar on stderr. ``jobs > 1`` runs schemas in that many forked worker processes (POSIX only;
    elsewhere it runs serially); the outcomes are the same, in the same order. ``log_path``, when
    given, gets one JSON line per schema (its result and its instances') as soon as that schema is
    done, in the order they finish: a run cut off part way still leaves what it did.
    """
    engine = engine if engine is not None else Engine.default()
    result = SuiteResult(
        suite=suite.name,
        options={**suite.options, "tokenizer": tokenizer.name, "timeout_s": timeout_s},
    )
    if engine.warm_up_schema is not None:
        _warm_up(engine, tokenizer)
    bar = harness.Progress(len(suite.cases), progress, unit="schemas")
    started = time.perf_counter()
    cases = suite.cases

    def work(i: int) -> _CaseOutcome:
        return _run_case(cases[i], suite, tokenizer, engine, timeout_s)

    with harness.JsonlLog(log_path) as log:

        def on_done(outcome: _CaseOutcome, done: int, i: int) -> None:
            bar.update(done, cases[i].file)
            schema, instances, _ = outcome
            log.write({"schema": schema.to_json(), "instances": [r.to_json() for r in instances]})

        if jobs > 1 and len(cases) > 1 and harness.can_fork():
            crashed = lambda i, message: _crashed(cases[i], message)  # noqa: E731
            outcomes = harness.map_in_workers(len(cases), work, jobs, on_done, crashed)
        else:
            outcomes = []
            for i in range(len(cases)):
                outcomes.append(work(i))
                on_done(outcomes[-1], i + 1, i)
    bar.close()
    for schema_result, instances, fallbacks in outcomes:
        result.schemas.append(schema_result)
        result.instances.extend(instances)
        result.tokenizer_fallbacks += fallbacks
    result.elapsed_s = time.perf_counter() - started
    return result


def _warm_up(engine: Engine, tokenizer: TextTokenizer) -> None:
    """Compile ``engine.warm_up_schema`` once, untimed; any failure shows up again in the real run."""
    for formats in ("assert", "annotate"):
        try:
            with budget_scope(UNLIMITED):  # JIT compilation must not blow a budget
                grammar = engine.grammar_from_schema(
                    engine.warm_up_schema, registry={}, formats=formats, draft=None
                )
                GrammarMatcher(compile_grammar(grammar, tokenizer.info)).accept_bytes(b'{"a":"x"}')
        except Exception:  # noqa: BLE001 - only a warm-up: the run reports what is wrong
            return


_CaseOutcome = tuple[SchemaResult, list[InstanceResult], int]


def _run_case(
    case: SchemaCase, suite: Suite, tokenizer: TextTokenizer, engine: Engine, timeout_s: float | None
) -> _CaseOutcome:
    """Compile one schema and walk its instances: (schema result, instance results, byte fallbacks)."""
    schema_result, matcher = _compile_case(case, suite, tokenizer, engine, timeout_s)
    instances: list[InstanceResult] = []
    fallbacks = 0
    for inst in case.instances:
        if matcher is None and schema_result.status == "compiled":  # an empty language: rejects all
            instances.append(_instance(case, inst, "false_negative" if inst.valid else "pass"))
            continue
        if matcher is None:
            detail = schema_result.keyword if schema_result.status == "unsupported" else schema_result.message
            instances.append(_instance(case, inst, schema_result.status, detail))
            continue
        r, fell_back = _run_instance(case, inst, suite, tokenizer, engine, matcher)
        fallbacks += fell_back
        instances.append(r)
    return schema_result, instances, fallbacks


def _crashed(case: SchemaCase, message: str) -> _CaseOutcome:
    schema = SchemaResult(case.file, case.group, "crash", None, message=message)
    return schema, [_instance(case, inst, "crash", message) for inst in case.instances], 0


def _instance(case: SchemaCase, inst: TestInstance, outcome: str, detail: str = "") -> InstanceResult:
    return InstanceResult(inst.id, case.file, case.group, inst.description, inst.valid, outcome, detail)


def _compile_case(
    case: SchemaCase, suite: Suite, tokenizer: TextTokenizer, engine: Engine, timeout_s: float | None
) -> tuple[SchemaResult, GrammarMatcher | None]:
    """Compile one schema: (its SchemaResult, a matcher or None)."""
    t0 = time.perf_counter()
    alarm = harness.Alarm()
    timed_out = SchemaResult(case.file, case.group, "timeout", None, message=f"compile > {timeout_s} s")
    try:
        with harness.deadline(timeout_s) as alarm, budget_scope(engine.compile_budget or UNLIMITED):
            grammar = engine.grammar_from_schema(
                case.schema, registry=suite.registry, formats=case.formats, draft=case.draft
            )
            compiled = compile_grammar(grammar, tokenizer.info)
            matcher = GrammarMatcher(compiled)
    except harness.Timeout:
        return timed_out, None
    except CompileBudgetExceeded as exc:  # refused early: counted with the time limit's refusals
        message = f"compile budget: {exc}"
        return SchemaResult(case.file, case.group, "timeout", None, "", exc.pointer, message), None
    except EmptyLanguageError:
        if alarm.fired:
            return timed_out, None
        # The engine refuses a schema that no value satisfies: it accepts nothing (see _run_case).
        return SchemaResult(case.file, case.group, "compiled", time.perf_counter() - t0), None
    except UnsupportedFeatureError as exc:
        if alarm.fired:
            return timed_out, None
        keyword = str(getattr(exc, "keyword", "") or type(exc).__name__)
        pointer = str(getattr(exc, "pointer", "") or "")
        return SchemaResult(case.file, case.group, "unsupported", None, keyword, pointer, str(exc)), None
    except ConstrainError as exc:
        if alarm.fired:
            return timed_out, None
        pointer = str(getattr(exc, "pointer", "") or "")
        message = f"{type(exc).__name__}: {exc}"
        return SchemaResult(case.file, case.group, "error", None, "", pointer, message), None
    except Exception as exc:  # noqa: BLE001 - a bug in constrain: record it, keep running
        if alarm.fired:  # the timeout, wrapped on its way out of native code
            return timed_out, None
        return SchemaResult(
            case.file, case.group, "crash", None, message=harness.summarize_exception(exc)
        ), None
    elapsed = time.perf_counter() - t0
    if timeout_s is not None and elapsed > timeout_s:
        message = f"compile took {elapsed:.1f} s > {timeout_s:g} s"
        return SchemaResult(case.file, case.group, "timeout", elapsed, message=message), None
    return SchemaResult(case.file, case.group, "compiled", elapsed), matcher


def _run_instance(
    case: SchemaCase,
    inst: TestInstance,
    suite: Suite,
    tokenizer: TextTokenizer,
    engine: Engine,
    matcher: GrammarMatcher,
) -> tuple[InstanceResult, bool]:
    """Serialise, tokenise and walk one instance: (its result, whether the walk fell back to bytes)."""
    try:
        text = engine.serialize(
            inst.data, case.schema, registry=suite.registry, formats=case.formats, draft=case.draft
        )
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _instance(case, inst, "error", f"serialize: not valid UTF-8 text: {exc}"), False
    except ConstrainError as exc:
        return _instance(case, inst, "error", f"serialize: {type(exc).__name__}: {exc}"), False
    except Exception as exc:  # noqa: BLE001 - a bug in constrain: record it, keep running
        return _instance(case, inst, "crash", f"serialize: {harness.summarize_exception(exc)}"), False
    matcher.reset()
    try:
        accepted, fell_back = _walk(matcher, tokenizer, text)
    except Exception as exc:  # noqa: BLE001 - a bug in the matcher: record it, keep running
        return _instance(case, inst, "crash", f"walk: {harness.summarize_exception(exc)}"), False
    if accepted == inst.valid:
        outcome = "pass"
    else:
        outcome = "false_negative" if inst.valid else "false_positive"
    return _instance(case, inst, outcome), fell_back


# ==========================================================================================================
# Expected outcomes (the committed regression file)
# ==========================================================================================================


@dataclass(frozen=True)
class OutcomeDiff:
    """How a run's outcomes differ from the expected ones. Each list holds ``(id, expected, actual)``."""

    #: passed before and not now, or a new false positive / crash
    regressions: list[tuple[str, str, str]]
    #: did not pass before and passes now (or a false positive went away)
    improvements: list[tuple[str, str, str]]
    #: any other difference (``unsupported:a`` -> ``unsupported:b``, ``error`` -> ``false_negative``, ...)
    changed: list[tuple[str, str, str]]
    #: in the expected file, not in the run (the suite lost or renamed a test)
    missing: list[str]
    #: in the run, not in the expected file (a new test)
    added: list[str]

    @property
    def has_regressions(self) -> bool:
        """True when something got worse."""
        return bool(self.regressions)

    @property
    def is_current(self) -> bool:
        """True when the run matches the expected file exactly."""
        return not (self.regressions or self.improvements or self.changed or self.missing or self.added)

    def format(self, limit: int = 50) -> str:
        """A human summary, regressions first, each list cut at ``limit`` lines."""
        lines: list[str] = []

        def section(title: str, rows: Sequence[str]) -> None:
            if rows:
                lines.append(f"{title} ({len(rows)}):")
                lines.extend(f"  {row}" for row in rows[:limit])
                if len(rows) > limit:
                    lines.append(f"  ... and {len(rows) - limit} more")

        section("REGRESSIONS", [f"{i}: {e} -> {a}" for i, e, a in self.regressions])
        section("improvements", [f"{i}: {e} -> {a}" for i, e, a in self.improvements])
        section("changed", [f"{i}: {e} -> {a}" for i, e, a in self.changed])
        section("missing from the run", self.missing)
        section("not in the expected file", self.added)
        return "\n".join(lines)


def compare_outcomes(expected: Mapping[str, str], actual: Mapping[str, str]) -> OutcomeDiff:
    """Classify every difference between two ``id -> outcome label`` maps."""
    regressions: list[tuple[str, str, str]] = []
    improvements: list[tuple[str, str, str]] = []
    changed: list[tuple[str, str, str]] = []
    for key, now in actual.items():
        was = expected.get(key)
        if was is None or was == now:
            continue
        row = (key, was, now)
        if (
            (was == "pass")
            or (now == "false_positive")
            or (now == "crash")
            or (now == "timeout" and was != "timeout")
        ):
            regressions.append(row)
        elif now == "pass" or was == "false_positive":
            improvements.append(row)
        else:
            changed.append(row)
    missing = [k for k in expected if k not in actual]
    added = [k for k in actual if k not in expected]
    return OutcomeDiff(regressions, improvements, changed, missing, added)


def write_expected(result: SuiteResult, path: str | Path) -> None:
    """Write ``result`` as an expected-results file: ``{"about": {...}, "outcomes": {id: label}}``."""
    doc = {
        "about": {
            "suite": result.suite,
            "options": {k: v for k, v in result.options.items() if k not in ("path", "timeout_s")},
            "totals": _counts(result.instances),
            "regenerate": REGENERATE_COMMAND,
        },
        "outcomes": result.outcomes(),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_expected(path: str | Path) -> dict[str, str]:
    """The ``id -> outcome label`` map of an expected-results file."""
    doc = _read_json(Path(path))
    outcomes = doc.get("outcomes") if isinstance(doc, dict) else None
    if not isinstance(outcomes, dict):
        raise InvalidInputError(f"{path} is not an expected-results file (no 'outcomes' object)")
    return {str(k): str(v) for k, v in outcomes.items()}


# ==========================================================================================================
# Report
# ==========================================================================================================


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.1f}")


def format_table(result: SuiteResult) -> str:
    """The results table: one row per file (or subset), then the totals, crashes and keywords."""
    cols = ["schemas", "compiled", "instances", *OUTCOMES]
    short = {
        "false_positive": "false+",
        "false_negative": "false-",
        "unsupported": "unsupp",
        "instances": "inst",
    }
    width = {c: max(7, len(short.get(c, c))) for c in cols}
    rows = [(name, stats) for name, stats in result.per_file().items()]
    rows.append(("TOTAL", result.totals()))
    name_w = max(len("file"), *(len(n) for n, _ in rows))
    header = (
        f"{'file':<{name_w}} "
        + " ".join(f"{short.get(c, c):>{width[c]}}" for c in cols)
        + f" {'pass%':>6} {'p50 ms':>7} {'p90 ms':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, stats in rows:
        if name == "TOTAL":
            lines.append("-" * len(header))
        n = stats["instances"]
        pct = f"{100 * stats['pass'] / n:.1f}" if n else "-"
        lines.append(
            f"{name:<{name_w}} "
            + " ".join(f"{stats[c]:>{width[c]}}" for c in cols)
            + f" {pct:>6} {_fmt_ms(stats['compile_ms_p50']):>7} {_fmt_ms(stats['compile_ms_p90']):>7}"
        )
    out = "\n".join(lines)
    crashes = result.crashes()
    if crashes:
        out += f"\n\n!!! {len(crashes)} CRASH(ES): not ConstrainErrors, so bugs in constrain !!!\n"
        for c in crashes[:20]:
            msg = c.message if isinstance(c, SchemaResult) else c.detail
            out += f"  {c.file} / {c.group}: {msg}\n"
        if len(crashes) > 20:
            out += f"  ... and {len(crashes) - 20} more (see --json)\n"
    kws = result.unsupported_keyword_schemas()
    if kws:
        out += "\nunsupported keywords (schemas): " + ", ".join(f"{k} {v}" for k, v in list(kws.items())[:15])
    if result.tokenizer_fallbacks:
        out += f"\n{result.tokenizer_fallbacks} instance(s) walked as raw bytes (ids did not spell the text)"
    out += f"\n{len(result.schemas)} schemas, {len(result.instances)} instances in {result.elapsed_s:.1f} s"
    return out


def _format_failures(result: SuiteResult, limit: int) -> str:
    """The first ``limit`` false positives, false negatives and errors, for the terminal."""
    parts: list[str] = []
    for outcome in ("false_positive", "false_negative"):
        rows = [r for r in result.instances if r.outcome == outcome]
        if rows and limit:
            parts.append(f"{outcome} ({len(rows)}):")
            parts.extend(f"  {r.id}" for r in rows[:limit])
            if len(rows) > limit:
                parts.append(f"  ... and {len(rows) - limit} more")
    errors = Counter(s.message for s in result.schemas if s.status == "error")
    if errors and limit:
        parts.append(f"compile errors ({sum(errors.values())} schemas):")
        parts.extend(f"  {n} x {msg[:160]}" for msg, n in errors.most_common(limit))
    return "\n".join(parts)


# ==========================================================================================================
# Command line
# ==========================================================================================================


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        default=harness.default_path(*_TOKENIZER_PARTS),
        metavar="PATH",
        help="tokenizer.json whose tokens the instances are walked with "
        "(default: ../shared/tokenizers/llama3-128k.tokenizer.json when present)",
    )
    p.add_argument("--json", metavar="OUT", help="write totals, per-file results and every case to OUT")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"compile time limit per schema in seconds; 0 for none (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--compile-budget",
        type=float,
        default=0.0,
        metavar="S",
        help="refuse a schema's compile early past S seconds of CPU time (constrain.CompileBudget; counted "
        "as timeout); 0 for none (default: none, so that verdicts do not depend on the machine)",
    )
    p.add_argument(
        "--max-any-depth",
        type=int,
        default=None,
        metavar="N",
        help="cap values no schema constrains at depth N (max_any_depth=N); default: exact at any depth",
    )
    p.add_argument("--show", type=int, default=20, metavar="N", help="list the first N failures of each kind")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="compile schemas in N forked processes (default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--log",
        metavar="OUT.jsonl",
        help="write each schema's outcome as a JSON line as soon as it is done (kept if the run is cut off)",
    )
    p.set_defaults(func=run_from_args)


def _add_suite_commands(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    sub = parser.add_subparsers(dest="suite_command", metavar="SUITE")
    sub.required = required

    jsts = sub.add_parser(
        "json-schema-test-suite",
        help="the official JSON Schema Test Suite",
        description="Run the official JSON Schema Test Suite through the engine. Required tests compile "
        "format as an annotation; optional/format/ as an assertion.",
    )
    jsts.add_argument("--draft", choices=sorted(_DRAFT_FOLDERS), default="2020-12")
    jsts.add_argument("--optional", action="store_true", help="also run optional/** (incl. optional/format/)")
    jsts.add_argument(
        "--path",
        default=harness.default_path(*_SUITE_PARTS),
        metavar="ROOT",
        help="the suite root holding tests/ and remotes/ (default: ../shared/data/json-schema-test-suite)",
    )
    jsts.add_argument("--filter", metavar="SUBSTR", help="only files whose path contains SUBSTR")
    jsts.add_argument("--write-expected", metavar="PATH", help="write the expected-results file to PATH")
    jsts.add_argument(
        "--expected", metavar="PATH", help="compare with an expected-results file; exit 1 on regressions"
    )
    _add_common(jsts)

    mb = sub.add_parser(
        "maskbench",
        help="MaskBench (JSONSchemaBench schemas with valid and invalid instances)",
        description="Run MaskBench through the engine, format enforced, one table row per subset.",
    )
    mb.add_argument(
        "--path",
        default=harness.default_path(*_MASKBENCH_PARTS),
        metavar="PATH",
        help="maskbench-data.tar.xz or a folder of MaskBench records "
        "(default: ../shared/data/jsonschemabench/maskbench-data.tar.xz)",
    )
    mb.add_argument("--limit", type=int, metavar="N", help="at most N schemas from each subset")
    mb.add_argument("--subset", action="append", metavar="NAME", help="only this subset (repeat for several)")
    mb.add_argument(
        "--recursive",
        action="store_true",
        help="only schemas with a $ref cycle (the context-free engine's share of MaskBench)",
    )
    _add_common(mb)


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``suite`` (with ``json-schema-test-suite`` and ``maskbench``) on a CLI's subparsers.

    Each leaf sets ``func=run_from_args``; call ``args.func(args)`` for the exit code.
    """
    suite = subparsers.add_parser(
        "suite",
        help="run the JSON Schema Test Suite or MaskBench",
        description="Conformance runs: every instance is serialised, tokenised and walked through the "
        "matcher; false positives (invalid output accepted) are the outcome to watch.",
    )
    _add_suite_commands(suite)
    return suite


def _err(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


def run_from_args(args: argparse.Namespace, *, engine: Engine | None = None) -> int:
    """Run the suite ``args`` describe; print the table. Exit code: 0, 1 on crashes or regressions, 2 on
    bad arguments."""
    out = sys.stdout
    if not args.tokenizer:
        return _err(f"no tokenizer: pass --tokenizer PATH to a tokenizer.json, or set {harness.SHARED_ENV}")
    if not Path(args.tokenizer).is_file():
        return _err(f"tokenizer file not found: {args.tokenizer} (pass --tokenizer PATH to a tokenizer.json)")
    if not args.path:
        return _err(
            f"no data: pass --path, or set {harness.SHARED_ENV} to the shared folder holding data/ "
            "(../shared is not beside this checkout)"
        )
    try:
        if args.suite_command == "maskbench":
            suite = load_maskbench(
                args.path, subsets=args.subset, limit=args.limit, recursive_only=args.recursive
            )
        else:
            suite = load_json_schema_test_suite(
                args.path, draft=args.draft, optional=args.optional, filter=args.filter
            )
        if not suite.cases:
            return _err(f"nothing to run: {suite.name} has no schemas with these options")
        tokenizer = TextTokenizer.from_file(args.tokenizer)
        budget = getattr(args, "compile_budget", 0.0) or 0.0
        if budget < 0:
            return _err(f"--compile-budget must be >= 0 seconds, got {budget:g}")
        if engine is None:
            engine = Engine.default(
                CompileBudget(budget) if budget else None,
                max_any_depth=getattr(args, "max_any_depth", None),
            )
    except ConstrainError as exc:
        return _err(str(exc))
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_suite(
        suite,
        tokenizer,
        engine=engine,
        timeout_s=args.timeout if args.timeout > 0 else None,
        progress=progress,
        jobs=max(1, args.jobs),
        log_path=args.log,
    )
    out.write(format_table(result) + "\n")
    failures = _format_failures(result, args.show)
    if failures:
        out.write("\n" + failures + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n")
        out.write(f"wrote {args.json}\n")
    code = 1 if result.crashes() else 0
    if getattr(args, "write_expected", None):
        write_expected(result, args.write_expected)
        out.write(f"wrote {args.write_expected}\n")
    if getattr(args, "expected", None):
        diff = compare_outcomes(read_expected(args.expected), result.outcomes())
        if not diff.is_current:
            out.write("\n" + diff.format() + "\n")
        if diff.has_regressions:
            code = 1
        elif not diff.is_current:
            out.write(f"\nno regressions; update the expected file with: {REGENERATE_COMMAND}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m constrain_tools.suites``: the ``suite`` subcommands, plus ``--update-expected``."""
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m constrain_tools.suites", description=doc.split("\n")[0])
    parser.add_argument(
        "--update-expected",
        action="store_true",
        help=f"rerun the required draft 2020-12 suite and rewrite {_EXPECTED_REL}",
    )
    _add_suite_commands(parser, required=False)
    args = parser.parse_args(argv)
    if args.update_expected:
        jobs = str(min(4, os.cpu_count() or 1))
        args = parser.parse_args(
            # No time limit: a timeout depends on the machine, and the file must not.
            [
                "json-schema-test-suite",
                "--write-expected",
                str(DEFAULT_EXPECTED_PATH),
                "--jobs",
                jobs,
                "--timeout",
                "0",
            ]
        )
    if not getattr(args, "suite_command", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
