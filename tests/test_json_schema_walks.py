"""Random walks through compiled JSON Schemas must produce JSON that ``jsonschema`` accepts.

For schemas from the official suite and from MaskBench (those that compile), each walk starts at the
matcher's start state and picks uniformly among the allowed tokens (``allowed_token_ids``) of the
llama3-128k vocabulary, stopping with some probability where the matcher may end. After ``SOFT_STEPS``
tokens it heads for the nearest end: one-byte tokens along a shortest path of the DFA to an accepting
state (or, for a grammar without a DFA, sampled tokens that allow an end or close a string, array or
object). A walk past ``BYTE_BUDGET`` bytes is given up (not a failure: some languages have no short
members). Every finished walk must decode as UTF-8, parse with ``json.loads`` and validate with the
draft's ``jsonschema`` validator (with the draft's ``FORMAT_CHECKER`` where formats are asserted).

That checks *soundness* (nothing the engine allows is invalid) on outputs a model could produce,
which the test suite's fixed instances cannot.
"""

from __future__ import annotations

import decimal
import functools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from jsonschema import validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

import constrain
from constrain import Grammar, GrammarMatcher
from constrain.exceptions import ConstrainError
from constrain_tools import suites as S

from .shared_data import SHARED, tokenizer_info

SUITE_ROOT = SHARED / "data" / "json-schema-test-suite"
MASKBENCH_SAMPLE = SHARED / "data" / "jsonschemabench" / "maskbench"

WALKS_PER_SCHEMA = 5
SOFT_STEPS = 40  # after this many tokens, head for the nearest end
MAX_STEPS = 3000  # past SOFT_STEPS each step is one byte on a shortest path to an end
BYTE_BUDGET = 4000

#: Groups of the required draft 2020-12 suite that are walked (file, group description): a spread of
#: keywords among the schemas that compile in well under a second.
SUITE_GROUPS = [
    ("additionalProperties.json", "additionalProperties can exist by itself"),
    ("additionalProperties.json", "additionalProperties with propertyNames"),
    ("anyOf.json", "anyOf"),
    ("const.json", "const with object"),
    ("enum.json", "heterogeneous enum validation"),
    ("enum.json", "enum with escaped characters"),
    ("exclusiveMinimum.json", "exclusiveMinimum validation"),
    ("if-then-else.json", "if and else without then"),
    ("items.json", "a schema given for items"),
    ("items.json", "prefixItems validation adjusts the starting index for items"),
    ("maxItems.json", "maxItems validation"),
    ("maxLength.json", "maxLength validation"),
    ("maxProperties.json", "maxProperties validation"),
    ("minimum.json", "minimum validation with signed integer"),
    ("multipleOf.json", "by small number"),
    ("not.json", "forbidden property"),
    ("oneOf.json", "oneOf"),
    ("pattern.json", "pattern validation"),
    ("patternProperties.json", "multiple simultaneous patternProperties are validated"),
    ("prefixItems.json", "a schema given for prefixItems"),
    ("properties.json", "object properties validation"),
    ("properties.json", "properties with escaped characters"),
    ("propertyNames.json", "propertyNames validation"),
    ("ref.json", "relative pointer ref to object"),
    ("refRemote.json", "base URI change - change folder"),
    ("required.json", "required default validation"),
    ("type.json", "object type matches objects"),
    ("unevaluatedItems.json", "unevaluatedItems with tuple"),
    ("unevaluatedProperties.json", "unevaluatedProperties schema"),
    ("uniqueItems.json", "uniqueItems=false with an array of items"),
]
#: ``{"type": "string", "format": F}`` walked with formats asserted, where jsonschema can check F
#: (date-time, hostname, uri and duration need ``jsonschema[format-nongpl]``).
FORMATS = ["date", "time", "date-time", "email", "ipv4", "ipv6", "uuid", "hostname", "uri", "duration"]
#: MaskBench schemas walked (from the unpacked sample in ../shared), as "subset / id".
MASKBENCH_IDS = [
    "BFCL_java / BFCL_java_12",
    "BFCL_parallel_multiple / BFCL_parallel_multiple_14",
    "BFCL_simple / BFCL_simple_103",
    "Github_easy / o11170",
    "Github_easy / o12228",
    "Github_medium / o10297",
    "Github_medium / o11514",
    "Github_trivial / o16363",
    "Github_trivial / o19363",
    "Glaiveai2K / calculate_age_difference_deb6496e",
    "Glaiveai2K / calculate_area_002918bf",
    "JME / JME_13",
    "JME / JME_24",
    "Kubernetes / kb_1047_Normalized",
    "Kubernetes / kb_1060_Normalized",
    "MCPspec / GetPromptRequest",
    "Snowplow / sp_113_Normalized",
    "Snowplow / sp_11_Normalized",
    "Synthesized / draft2019_09_nonvalid_anyOf_id6_subschema1_not_2",
    "WashingtonPost / wp_18_Normalized",
    "WashingtonPost / wp_34_Normalized",
]


# ==========================================================================================================
# The walker (checked on a regex grammar first, so it is trusted before it judges the schema compiler)
# ==========================================================================================================


@dataclass
class Walk:
    """One random walk: the bytes it produced, or None when it was given up."""

    text: bytes | None
    steps: int


CLOSERS = (b'"', b"]", b"}")


def random_walk(compiled: constrain.CompiledGrammar, rng: random.Random) -> Walk:
    """Walk from the start state picking allowed tokens at random; see the module docstring."""
    info = compiled.tokenizer_info
    eos = np.asarray(info.eos_ids)
    table = info.token_bytes
    dist = _distances(compiled)
    m = GrammarMatcher(compiled)
    out = bytearray()
    for step in range(MAX_STEPS):
        steering = step >= SOFT_STEPS
        if m.can_end() and rng.random() < (0.8 if steering else 0.2):
            break
        tok = _shortest_step(compiled, dist, m.state, rng) if steering and dist is not None else None
        if tok is None:
            ids = m.allowed_token_ids()
            ids = ids[~np.isin(ids, eos)]
            if ids.shape[0] == 0:
                break  # only EOS is allowed
            tok = _steer(m, ids, rng, table) if steering else int(ids[rng.randrange(ids.shape[0])])
        if not m.accept_token(tok):
            raise AssertionError(f"token {tok} {table[tok]!r} is allowed but accept_token refused it")
        out += table[tok]
        if len(out) > BYTE_BUDGET:
            return Walk(None, step + 1)
    if not m.can_end():
        return Walk(None, MAX_STEPS)
    if not m.accept_token(int(eos[0])):
        raise AssertionError("can_end() is True but EOS was refused")
    return Walk(bytes(out), m.num_steps - 1)


_DIST_CACHE: dict[int, tuple[constrain.CompiledGrammar, np.ndarray | None]] = {}


def _distances(compiled: constrain.CompiledGrammar) -> np.ndarray | None:
    """Bytes from each DFA state to the nearest accepting state (None for a grammar without a DFA)."""
    hit = _DIST_CACHE.get(id(compiled))
    if hit is not None and hit[0] is compiled:
        return hit[1]
    dfa = getattr(compiled, "dfa", None)
    dist: np.ndarray | None = None
    if dfa is not None:
        trans = np.asarray(dfa.transitions)
        n = trans.shape[0]
        reached = np.asarray(dfa.accepting, dtype=bool).copy()
        dist = np.where(reached, 0, np.iinfo(np.int64).max)
        safe = np.where(trans >= 0, trans, n)  # dead -> a sentinel that is never reached
        d = 0
        while True:
            newly = np.append(reached, False)[safe].any(axis=1) & ~reached
            if not newly.any():
                break
            d += 1
            dist[newly] = d
            reached |= newly
    _DIST_CACHE[id(compiled)] = (compiled, dist)
    return dist


@functools.cache
def _byte_tokens(info: constrain.TokenizerInfo) -> dict[int, int]:
    """Byte -> the id of the token made of that byte alone (byte-level vocabularies have all 256)."""
    out: dict[int, int] = {}
    for tid, data in enumerate(info.token_bytes):
        if len(data) == 1:
            out.setdefault(data[0], tid)
    return out


def _shortest_step(
    compiled: constrain.CompiledGrammar, dist: np.ndarray, state: int, rng: random.Random
) -> int | None:
    """A one-byte token on a shortest path to an accepting state (random among ties), or None."""
    row = np.asarray(compiled.grammar.to_dfa().transitions[state])
    live = np.flatnonzero(row >= 0)
    if live.shape[0] == 0:
        return None
    d = dist[row[live]]
    best = live[d == d.min()]
    tok = _byte_tokens(compiled.tokenizer_info).get(int(best[rng.randrange(best.shape[0])]))
    return tok


def _steer(m: GrammarMatcher, ids: np.ndarray, rng: random.Random, table: tuple[bytes, ...]) -> int:
    """Without a DFA to measure: among up to 64 sampled candidates, one after which the matcher may
    end, else one holding a closing byte, else any."""
    picks = [int(ids[rng.randrange(ids.shape[0])]) for _ in range(min(64, ids.shape[0]))]
    closing = []
    for tok in picks:
        if m.accept_token(tok):
            ends = m.can_end()
            m.rollback(1)
            if ends:
                return tok
        if any(c in table[tok] for c in CLOSERS):
            closing.append(tok)
    return closing[0] if closing else picks[0]


def llama3() -> constrain.TokenizerInfo:
    return tokenizer_info("llama3-128k")


def test_walker_on_a_regex_grammar() -> None:
    pattern = r'\{"n":(0|[1-9][0-9]{0,5}),"s":"[a-z ]{0,30}"\}'
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 999999}, "s": {"type": "string", "maxLength": 30}},
        "required": ["n", "s"],
    }
    compiled = constrain.compile(Grammar.from_regex(pattern), llama3())
    rng = random.Random(0)
    validator = validators.Draft202012Validator(schema)
    walks = [random_walk(compiled, rng) for _ in range(10)]
    done = [w.text for w in walks if w.text is not None]
    assert len(done) >= 8
    for text in done:
        validator.validate(json.loads(text.decode("utf-8")))


# ==========================================================================================================
# Schemas
# ==========================================================================================================


@dataclass(frozen=True)
class Target:
    """A schema to walk, with what it takes to validate its outputs."""

    schema: Any
    formats: str
    draft: str
    registry: Mapping[str, Any]


def _skip_without(path: Any) -> None:
    if not path.exists():
        pytest.skip(f"../shared is absent (no {path}); CI provides it beside the checkout")


@functools.cache
def _suite() -> S.Suite:
    return S.load_json_schema_test_suite(SUITE_ROOT, draft="2020-12")


@functools.cache
def _maskbench() -> dict[str, S.SchemaCase]:
    return {f"{c.file} / {c.group}": c for c in S.load_maskbench(MASKBENCH_SAMPLE).cases}


def _parse_float(text: str) -> float | decimal.Decimal:
    """The float, unless it loses the number: a random walk writes numbers like 4116...320.12 (111
    digits), which as a float is a whole number and would pass for an integer."""
    value = float(text)
    try:
        exact = decimal.Decimal(text)
    except decimal.InvalidOperation:  # an exponent past Decimal's range (1e999999999999): keep +-inf
        return value
    if math.isfinite(value) and decimal.Decimal(repr(value)) == exact:
        return value
    return exact


def _is_integer(checker: Any, value: Any) -> bool:
    if isinstance(value, decimal.Decimal):  # exact, at any number of digits (no context rounding)
        _sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            return False  # NaN or infinity
        return exponent >= 0 or not any(digits[max(0, len(digits) + exponent) :])
    return bool(validators.Draft202012Validator.TYPE_CHECKER.is_type(value, "integer"))


def _validator(target: Target) -> Any:
    spec = DRAFT202012 if target.draft == "2020-12" else DRAFT7
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=spec)) for uri, doc in target.registry.items()
    )
    if isinstance(target.schema, dict) and "$schema" in target.schema:
        cls = validators.validator_for(target.schema)
    else:
        cls = validators.Draft202012Validator if target.draft == "2020-12" else validators.Draft7Validator
    # The draft's own checker: a bare FormatChecker() mixes in draft 3's formats ("time" as %H:%M:%S).
    checker = cls.FORMAT_CHECKER if target.formats == "assert" else None
    cls = validators.extend(cls, type_checker=cls.TYPE_CHECKER.redefine("integer", _is_integer))
    return cls(target.schema, registry=registry, format_checker=checker)


def check_walks(target: Target, seed: str, walks: int = WALKS_PER_SCHEMA) -> None:
    """Compile ``target`` (skip if the engine refuses it), walk it ``walks`` times, validate every output."""
    try:
        grammar = Grammar.from_json_schema(
            target.schema, registry=target.registry, formats=target.formats, draft=target.draft
        )
    except ConstrainError as exc:
        pytest.skip(f"does not compile: {exc}")
    compiled = constrain.compile(grammar, llama3())
    m = GrammarMatcher(compiled)
    if not m.can_end() and m.allowed_token_ids().shape[0] == 0:
        pytest.skip("the empty language: nothing to walk")
    validator = _validator(target)
    rng = random.Random(seed)
    done: list[bytes] = []
    failures: list[str] = []
    for _ in range(walks):
        walk = random_walk(compiled, rng)
        if walk.text is None:
            continue
        done.append(walk.text)
        try:
            value = json.loads(walk.text.decode("utf-8"), parse_float=_parse_float)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            failures.append(f"{walk.text!r} is not JSON: {exc}")
            continue
        try:
            errors = [e.message for e in validator.iter_errors(value)]
        except (TypeError, decimal.InvalidOperation):
            continue  # jsonschema cannot do this arithmetic on a Decimal (multipleOf of a huge number)
        if errors:
            failures.append(f"{walk.text!r} is invalid: {errors[0]}")
    assert not failures, f"{len(failures)} invalid outputs:\n" + "\n".join(failures)
    assert done, f"all {walks} walks were given up (no output within {BYTE_BUDGET} bytes)"


@pytest.mark.parametrize(("file", "group"), SUITE_GROUPS, ids=[f"{f}/{g}" for f, g in SUITE_GROUPS])
def test_walks_of_suite_schemas_validate(file: str, group: str) -> None:
    _skip_without(SUITE_ROOT)
    suite = _suite()
    case = next((c for c in suite.cases if c.file == file and c.group == group), None)
    assert case is not None, f"no group {group!r} in {file}"
    check_walks(Target(case.schema, "annotate", "2020-12", suite.registry), f"{file}/{group}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_walks_of_formats_validate(fmt: str) -> None:
    if fmt not in validators.Draft202012Validator.FORMAT_CHECKER.checkers:
        pytest.skip(f"jsonschema cannot check {fmt!r} here; install jsonschema[format-nongpl]")
    check_walks(Target({"type": "string", "format": fmt}, "assert", "2020-12", {}), fmt, walks=8)


@pytest.mark.parametrize("key", MASKBENCH_IDS)
def test_walks_of_maskbench_schemas_validate(key: str) -> None:
    _skip_without(MASKBENCH_SAMPLE)
    case = _maskbench().get(key)
    assert case is not None, f"no MaskBench schema {key!r} in the sample"
    check_walks(Target(case.schema, "assert", case.draft or "2020-12", {}), key)
