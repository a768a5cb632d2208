"""constrain_tools.suites: loaders, outcomes (with fake compilers), JSON output, expected files, CLI.

The fakes stand in for ``Grammar.from_json_schema``: one accepts everything, one nothing, and an oracle
accepts exactly the suite's instances that ``jsonschema`` validates (a regex union of their compact
serialisations), so the runner's bookkeeping is checked against an engine-independent verdict.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

from constrain import Grammar, TokenizerInfo
from constrain.exceptions import SchemaError, UnsupportedSchemaFeature
from constrain_tools import suites as S

from .shared_data import SHARED

SUITE_ROOT = SHARED / "data" / "json-schema-test-suite"
MASKBENCH = SHARED / "data" / "jsonschemabench"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"../shared is absent (no {path}); CI provides it beside the checkout")
    return path


def compact(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def serialize(instance: Any, schema: Any, **kw: Any) -> str:
    return compact(instance)


def regex_engine(pattern: str) -> S.Engine:
    """Every schema compiles to the same regex."""
    return S.Engine(lambda schema, **kw: Grammar.from_regex(pattern), serialize)


ACCEPT_ALL = r"(?s).*"
ACCEPT_NONE = "\x00"  # no JSON serialisation is a lone NUL


def raising_engine(exc: Callable[[], BaseException]) -> S.Engine:
    def build(schema: Any, **kw: Any) -> Grammar:
        raise exc()

    return S.Engine(build, serialize)


def oracle_engine(suite: S.Suite) -> S.Engine:
    """Accepts exactly the suite instances (of groups with the same schema) that ``jsonschema`` validates."""
    candidates: dict[str, list[Any]] = {}
    for case in suite.cases:
        candidates.setdefault(compact(case.schema), []).extend(i.data for i in case.instances)

    def build(schema: Any, *, registry: Any, formats: str, draft: str | None) -> Grammar:
        spec, cls = (
            (DRAFT202012, validators.Draft202012Validator)
            if draft == "2020-12"
            else (DRAFT7, validators.Draft7Validator)
        )
        reg = Registry().with_resources(
            (uri, Resource.from_contents(doc, default_specification=spec)) for uri, doc in registry.items()
        )
        validator = cls(schema, registry=reg)
        try:
            ok = sorted({compact(x) for x in candidates[compact(schema)] if validator.is_valid(x)})
        except re.error as exc:  # ECMA regex features Python's re lacks (\p{L})
            raise UnsupportedSchemaFeature("pattern", "", str(exc)) from exc
        return Grammar.from_regex("|".join(map(re.escape, ok)) if ok else ACCEPT_NONE)

    return S.Engine(build, serialize)


def byte_tokenizer() -> S.TextTokenizer:
    """One token per byte (ids 0..255) and an EOS (256): tokenisation never matters."""
    info = TokenizerInfo.from_vocab([bytes([b]) for b in range(256)] + [b""], eos_ids=[256], name="bytes")
    return S.TextTokenizer(info, lambda text: list(text.encode("utf-8")), "bytes")


def tiny_suite() -> S.Suite:
    """Two schemas, 3 valid and 3 invalid instances."""
    a = (
        S.TestInstance("t.json / ints / one", "one", 1, True),
        S.TestInstance("t.json / ints / two", "two", 2, True),
        S.TestInstance("t.json / ints / str", "str", "x", False),
    )
    b = (
        S.TestInstance("u.json / strs / é", "é", "é", True),
        S.TestInstance("u.json / strs / null", "null", None, False),
        S.TestInstance("u.json / strs / list", "list", [1, {"a": "b"}], False),
    )
    return S.Suite(
        "tiny",
        (
            S.SchemaCase("t.json", "ints", {"type": "integer"}, a),
            S.SchemaCase("u.json", "strs", {"type": "string"}, b),
        ),
    )


# ==========================================================================================================
# Loaders
# ==========================================================================================================


def test_draft2020_12_required_suite_counts() -> None:
    suite = S.load_json_schema_test_suite(needs(SUITE_ROOT), draft="2020-12")
    files = {c.file for c in suite.cases}
    instances = [i for c in suite.cases for i in c.instances]
    assert len(files) == 46
    assert len(suite.cases) == 383
    assert suite.num_instances == len(instances) == 1299
    assert sum(i.valid for i in instances) == 765
    assert len({i.id for i in instances}) == 1299
    assert {c.formats for c in suite.cases} == {"annotate"}
    assert {c.draft for c in suite.cases} == {"2020-12"}
    first = suite.cases[0]
    assert first.file == "additionalProperties.json"
    assert (
        first.instances[0].id
        == f"additionalProperties.json / {first.group} / {first.instances[0].description}"
    )


@pytest.mark.parametrize(
    ("draft", "required", "optional_other", "optional_format"),
    [("2020-12", 1299, 162, 764), ("7", 927, 118, 676)],
)
def test_suite_counts_with_optional(
    draft: str, required: int, optional_other: int, optional_format: int
) -> None:
    suite = S.load_json_schema_test_suite(needs(SUITE_ROOT), draft=draft, optional=True)
    by_kind = {"required": 0, "optional": 0, "format": 0}
    for c in suite.cases:
        kind = (
            "format" if c.file.startswith("optional/format/") else "optional" if "/" in c.file else "required"
        )
        by_kind[kind] += len(c.instances)
        assert c.formats == ("assert" if kind == "format" else "annotate")
        assert c.draft == draft
    assert by_kind == {"required": required, "optional": optional_other, "format": optional_format}


def test_suite_filter_matches_paths() -> None:
    suite = S.load_json_schema_test_suite(needs(SUITE_ROOT), optional=True, filter="format/date")
    assert {c.file for c in suite.cases} == {"optional/format/date.json", "optional/format/date-time.json"}
    assert S.load_json_schema_test_suite(SUITE_ROOT, filter="no-such-file").cases == ()


def test_unknown_draft_and_missing_root_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="draft must be one of"):
        S.load_json_schema_test_suite(tmp_path, draft="4")
    with pytest.raises(ValueError, match="tests/ and remotes/"):
        S.load_json_schema_test_suite(tmp_path)


def test_remotes_map_localhost_1234_to_the_remotes_folder() -> None:
    root = needs(SUITE_ROOT)
    registry = S.load_remotes(root)
    assert len(registry) == 79
    assert all(uri.startswith("http://localhost:1234/") for uri in registry)
    uri = "http://localhost:1234/draft2020-12/subSchemas.json"
    assert registry[uri] == json.loads((root / "remotes" / "draft2020-12" / "subSchemas.json").read_text())
    assert S.load_remotes(root / "remotes") == registry

    # Every remote document the suites $ref is in the registry, except refs to an $id of the schema itself.
    def collect(node: Any, refs: set[str], ids: set[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("http://localhost:1234/"):
                    refs.add(value.split("#", 1)[0])
                if key == "$id" and isinstance(value, str):
                    ids.add(value.split("#", 1)[0])
                collect(value, refs, ids)
        elif isinstance(node, list):
            for value in node:
                collect(value, refs, ids)

    used: set[str] = set()
    for draft in ("2020-12", "7"):
        for case in S.load_json_schema_test_suite(root, draft=draft, optional=True).cases:
            refs: set[str] = set()
            ids: set[str] = set()
            collect(case.schema, refs, ids)
            for ref in refs:
                if not any(i and (ref == i or ref.endswith("/" + i)) for i in ids):
                    assert ref in registry, f"{case.file} / {case.group}: {ref}"
                    used.add(ref)
    assert "http://localhost:1234/draft2020-12/subSchemas.json" in used and len(used) >= 10


@pytest.mark.parametrize(
    ("name", "subset"),
    [
        ("Github_easy---o10008.json", "Github_easy"),
        ("maskbench/data/JsonSchemaStore---cloudformation.schema.json", "JsonSchemaStore"),
        ("BFCL_java_10.json", "BFCL_java"),
        ("BFCL_parallel_multiple_3.json", "BFCL_parallel_multiple"),
        ("JME_0.json", "JME"),
        ("odd.json", "odd"),
    ],
)
def test_maskbench_subset_names(name: str, subset: str) -> None:
    assert S.maskbench_subset(name) == subset


def _record(n: int, valid: int, invalid: int) -> dict[str, Any]:
    tests = [{"description": f"v{i}", "valid": True, "data": {"n": i}} for i in range(valid)]
    tests += [{"description": f"x{i}", "valid": False, "data": {"n": "x"}} for i in range(invalid)]
    schema = {"$schema": "http://json-schema.org/draft-04/schema#"} if n == 2 else {}
    schema.update({"type": "object", "properties": {"n": {"type": "integer"}}})
    return {"description": f"sample {n}", "meta": {}, "schema": schema, "tests": tests}


RECORDS = {
    "Github_easy---o1.json": _record(1, 2, 1),
    "Github_easy---o2.json": _record(2, 1, 1),
    "Github_easy---o3.json": _record(3, 0, 0),
    "JME_7.json": _record(4, 1, 0),
}


def _write_folder(root: Path) -> Path:
    data = root / "maskbench" / "data"
    data.mkdir(parents=True)
    for name, rec in RECORDS.items():
        (data / name).write_text(json.dumps(rec))
    (root / "maskbench" / "README.md").write_text("not a record")
    return root / "maskbench"


@pytest.fixture
def maskbench_tar(tmp_path: Path, write_tar: Callable[[Path, dict[str, bytes]], Path]) -> Path:
    """RECORDS as an xz tar archive laid out like maskbench-data.tar.xz."""
    members = {f"maskbench/data/{name}": json.dumps(rec).encode() for name, rec in RECORDS.items()}
    return write_tar(tmp_path / "mb.tar.xz", members)


def test_maskbench_loader_from_tar_and_folder_agree(tmp_path: Path, maskbench_tar: Path) -> None:
    from_tar = S.load_maskbench(maskbench_tar)
    from_dir = S.load_maskbench(_write_folder(tmp_path / "unpacked"))
    assert from_tar.cases == from_dir.cases
    assert [(c.file, c.group, len(c.instances)) for c in from_tar.cases] == [
        ("Github_easy", "o1", 3),
        ("Github_easy", "o2", 2),
        ("Github_easy", "o3", 0),  # no tests: kept, it still counts for compile coverage
        ("JME", "JME_7", 1),
    ]
    assert {c.formats for c in from_tar.cases} == {"assert"}
    assert [c.draft for c in from_tar.cases] == ["2020-12", "4", "2020-12", "2020-12"]
    assert from_tar.cases[0].instances[0].id == "Github_easy / o1 / v0"
    assert from_tar.num_instances == 6


def test_maskbench_subset_and_limit(tmp_path: Path, maskbench_tar: Path) -> None:
    path = maskbench_tar
    assert [c.group for c in S.load_maskbench(path, limit=1).cases] == ["o1", "JME_7"]
    assert [c.group for c in S.load_maskbench(path, subsets=["JME"]).cases] == ["JME_7"]
    with pytest.raises(ValueError, match="the subsets are: Github_easy, JME"):
        S.load_maskbench(path, subsets=["Nope"])
    with pytest.raises(ValueError, match="MaskBench not found"):
        S.load_maskbench(tmp_path / "missing.tar.xz")
    (tmp_path / "junk.tar.xz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="neither a folder nor a readable tar"):
        S.load_maskbench(tmp_path / "junk.tar.xz")


def test_maskbench_shared_sample_folder_matches_the_archive() -> None:
    archive = needs(MASKBENCH / "maskbench-data.tar.xz")
    folder = needs(MASKBENCH / "maskbench")
    sample = S.load_maskbench(folder)
    assert len(sample.cases) == 1227
    full = {(c.file, c.group): c for c in S.load_maskbench(archive, subsets=["MCPspec", "BFCL_sql"]).cases}
    assert len(full) == 45 + 19
    picked = [c for c in sample.cases if c.file in ("MCPspec", "BFCL_sql")]
    assert len(picked) == 20 + 19
    for case in picked:
        assert full[(case.file, case.group)] == case


@pytest.mark.slow
def test_maskbench_archive_counts() -> None:
    """The README's table: 11,305 files, 13,964 valid and 23,047 invalid instances (about 5 s to read)."""
    suite = S.load_maskbench(needs(MASKBENCH / "maskbench-data.tar.xz"))
    instances = [i for c in suite.cases for i in c.instances]
    assert len(suite.cases) == 11305
    assert sum(i.valid for i in instances) == 13964
    assert sum(not i.valid for i in instances) == 23047
    assert len({c.file for c in suite.cases}) == 21


# ==========================================================================================================
# Outcomes with fake compilers
# ==========================================================================================================


def test_accept_all_makes_every_invalid_instance_a_false_positive() -> None:
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=regex_engine(ACCEPT_ALL), timeout_s=None)
    assert r.totals()["pass"] == 3 and r.totals()["false_positive"] == 3 and r.totals()["false_negative"] == 0
    outcomes = ["pass", "pass", "false_positive", "pass", "false_positive", "false_positive"]
    assert [x.outcome for x in r.instances] == outcomes


def test_accept_none_makes_every_valid_instance_a_false_negative() -> None:
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=regex_engine(ACCEPT_NONE), timeout_s=None)
    assert (r.totals()["pass"], r.totals()["false_negative"], r.totals()["false_positive"]) == (3, 3, 0)


def test_a_prefix_is_not_acceptance() -> None:
    """The walk must end in an accepting state: '1' is a prefix of '12' but not accepted by it."""
    engine = regex_engine("12")
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=engine, timeout_s=None)
    assert r.instances[0].outcome == "false_negative"  # 1 is valid, the grammar wants 12


def test_oracle_fake_passes_the_2020_12_suite() -> None:
    """A compiler that accepts exactly what jsonschema validates scores jsonschema's own agreement."""
    suite = S.load_json_schema_test_suite(needs(SUITE_ROOT), draft="2020-12")
    r = S.run_suite(suite, byte_tokenizer(), engine=oracle_engine(suite), timeout_s=None)
    t = r.totals()
    assert t["instances"] == 1299
    assert t["false_positive"] == 0 and t["error"] == 0 and t["crash"] == 0 and t["timeout"] == 0
    # jsonschema cannot compile \p{L} (5 instances) and disagrees with the suite on one vocabulary test.
    assert t["unsupported"] == 5 and r.unsupported_keywords() == {"pattern": 5}
    assert t["false_negative"] == 1
    assert t["pass"] == 1293
    assert {x.id for x in r.instances if x.outcome == "false_negative"} == {
        "vocabulary.json / schema that uses custom metaschema with with no validation vocabulary / "
        "no validation: invalid number, but it still validates"
    }
    assert t["compiled"] == 381 and t["schemas"] == 383


def test_unsupported_error_and_crash_are_counted_per_instance() -> None:
    suite = tiny_suite()
    tok = byte_tokenizer()
    r = S.run_suite(
        suite, tok, engine=raising_engine(lambda: UnsupportedSchemaFeature("uniqueItems", "/items"))
    )
    assert r.totals()["unsupported"] == 6
    assert r.unsupported_keywords() == {"uniqueItems": 6}
    assert r.unsupported_keyword_schemas() == {"uniqueItems": 2}
    assert set(r.outcomes().values()) == {"unsupported:uniqueItems"}
    assert r.schemas[0].pointer == "/items"

    r = S.run_suite(
        suite, tok, engine=raising_engine(lambda: SchemaError("bad type", "/type")), timeout_s=None
    )
    assert r.totals()["error"] == 6 and not r.crashes()
    assert "SchemaError: bad type" in r.schemas[0].message and r.schemas[0].pointer == "/type"

    r = S.run_suite(suite, tok, engine=raising_engine(lambda: ZeroDivisionError("oops")), timeout_s=None)
    assert r.totals()["crash"] == 6 and len(r.crashes()) == 2
    assert r.schemas[0].message.startswith("ZeroDivisionError: oops [")
    assert "CRASH" in S.format_table(r)


def test_serializer_failures_are_per_instance() -> None:
    def bad_serialize(instance: Any, schema: Any, **kw: Any) -> str:
        if instance == 2:
            raise KeyError("bug")
        if instance is None:
            raise SchemaError("cannot serialise", "")
        if instance == "é":
            return "\ud800"  # a lone surrogate: not UTF-8
        return compact(instance)

    engine = S.Engine(lambda schema, **kw: Grammar.from_regex(ACCEPT_ALL), bad_serialize)
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=engine, timeout_s=None)
    assert [x.outcome for x in r.instances] == [
        "pass",
        "crash",
        "false_positive",
        "error",
        "error",
        "false_positive",
    ]
    assert r.instances[1].detail.startswith("serialize: KeyError")
    assert len(r.crashes()) == 1


def test_slow_compiles_time_out_and_the_run_goes_on() -> None:
    def slow(schema: Any, **kw: Any) -> Grammar:
        if schema == {"type": "integer"}:
            time.sleep(5)
        return Grammar.from_regex(ACCEPT_ALL)

    t0 = time.perf_counter()
    engine = S.Engine(slow, serialize, warm_up_schema={"type": "string"})  # JIT compiles before the clock
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=engine, timeout_s=0.2)
    assert time.perf_counter() - t0 < 3
    assert [x.outcome for x in r.instances[:3]] == ["timeout"] * 3
    assert r.schemas[0].status == "timeout" and r.schemas[1].status == "compiled"


def test_parallel_run_matches_serial_and_survives_a_dying_worker(tmp_path: Path) -> None:
    import os

    suite = S.Suite("four", tiny_suite().cases * 2)

    def build(schema: Any, **kw: Any) -> Grammar:
        return Grammar.from_regex(r"-?[0-9]+" if schema == {"type": "integer"} else r'"[^"]*"')

    engine = S.Engine(build, serialize)
    log = tmp_path / "serial.jsonl"
    serial = S.run_suite(suite, byte_tokenizer(), engine=engine, timeout_s=None, log_path=log)
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["schema"] for x in logged] == [x.to_json() for x in serial.schemas]
    parallel = S.run_suite(suite, byte_tokenizer(), engine=S.Engine(build, serialize), jobs=2, timeout_s=None)
    assert parallel.outcomes() == serial.outcomes()
    assert [x.outcome for x in parallel.instances] == [x.outcome for x in serial.instances]
    assert parallel.totals()["pass"] == 12

    parent = os.getpid()

    def dies_on_strings(schema: Any, **kw: Any) -> Grammar:
        if schema == {"type": "string"} and os.getpid() != parent:
            os._exit(3)  # a segfault, as far as the pool can tell
        return build(schema)

    log = tmp_path / "parallel.jsonl"
    r = S.run_suite(
        suite,
        byte_tokenizer(),
        engine=S.Engine(dies_on_strings, serialize),
        jobs=2,
        timeout_s=None,
        log_path=log,
    )
    assert [s.status for s in r.schemas] == ["compiled", "crash", "compiled", "crash"]
    # The log has every schema, crashes included, each with its instances (in finishing order).
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted(x["schema"]["status"] for x in lines) == ["compiled", "compiled", "crash", "crash"]
    assert sum(len(x["instances"]) for x in lines) == len(r.instances)
    assert "worker process died" in r.schemas[1].message
    assert [x.outcome for x in r.instances[:3]] == ["pass", "pass", "pass"]
    assert len(r.crashes()) == 2


def test_a_timeout_that_native_code_rewraps_is_still_a_timeout() -> None:
    """numba reports an exception raised by the alarm during a jitted call as a SystemError."""

    def wrapped(schema: Any, **kw: Any) -> Grammar:
        try:
            time.sleep(5)
        except BaseException as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc
        return Grammar.from_regex(ACCEPT_ALL)

    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=S.Engine(wrapped, serialize), timeout_s=0.2)
    assert [s.status for s in r.schemas] == ["timeout", "timeout"]
    assert not r.crashes()


def test_walk_uses_token_ids_and_falls_back_to_bytes_when_they_do_not_spell_the_text() -> None:
    base = byte_tokenizer()
    # Ids that spell something else: the walk must notice and feed the bytes instead.
    liar = S.TextTokenizer(base.info, lambda text: [ord("z")] * len(text), "liar")
    r = S.run_suite(tiny_suite(), liar, engine=regex_engine(r"[0-9]+"), timeout_s=None)
    assert r.tokenizer_fallbacks == 6
    assert [x.outcome for x in r.instances[:3]] == ["pass", "pass", "pass"]


def test_real_tokenizer_walks_tokens() -> None:
    from .shared_data import tokenizer_path

    tok = S.TextTokenizer.from_file(tokenizer_path("gpt2-50k"))
    r = S.run_suite(tiny_suite(), tok, engine=regex_engine(r'-?[0-9]+|"[^"]*"'), timeout_s=None)
    assert r.tokenizer_fallbacks == 0
    assert [x.outcome for x in r.instances] == ["pass", "pass", "false_positive", "pass", "pass", "pass"]


# ==========================================================================================================
# Output
# ==========================================================================================================


def test_json_output_shape() -> None:
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=regex_engine(ACCEPT_ALL), timeout_s=None)
    doc = json.loads(json.dumps(r.to_json()))
    for key in ("instances", *S.OUTCOMES, "schemas", "compiled", "compile_ms_p50", "compile_ms_p90"):
        assert key in doc, key
    assert doc["instances"] == 6 and doc["pass"] == 3 and doc["false_positive"] == 3
    assert sum(doc[o] for o in S.OUTCOMES) == doc["instances"]
    assert set(doc["per_file"]) == {"t.json", "u.json"}
    assert doc["per_file"]["t.json"]["instances"] == 3 and doc["per_file"]["t.json"]["schemas"] == 1
    assert doc["unsupported_keywords"] == {}
    assert len(doc["cases"]) == 6
    assert doc["cases"][2] == {
        "id": "t.json / ints / str",
        "file": "t.json",
        "group": "ints",
        "test": "str",
        "valid": False,
        "outcome": "false_positive",
    }
    assert doc["options"]["tokenizer"] == "bytes"
    assert "cases" not in r.to_json(cases=False)
    table = S.format_table(r)
    assert table.splitlines()[0].split()[:4] == ["file", "schemas", "compiled", "inst"]
    assert "TOTAL" in table


def test_expected_file_roundtrip_and_comparison(tmp_path: Path) -> None:
    r = S.run_suite(tiny_suite(), byte_tokenizer(), engine=regex_engine(ACCEPT_ALL), timeout_s=None)
    path = tmp_path / "expected.json"
    S.write_expected(r, path)
    assert S.read_expected(path) == r.outcomes()
    doc = json.loads(path.read_text())
    assert doc["about"]["regenerate"] == S.REGENERATE_COMMAND
    assert S.compare_outcomes(r.outcomes(), r.outcomes()).is_current

    expected = {
        "a": "pass",
        "b": "false_positive",
        "c": "unsupported:x",
        "d": "error",
        "e": "false_negative",
        "f": "unsupported:x",
        "g": "pass",
        "gone": "pass",
    }
    actual = {
        "a": "false_negative",  # regression
        "b": "pass",  # improvement
        "c": "false_positive",  # new false positive: regression
        "d": "pass",  # improvement
        "e": "unsupported:y",  # changed
        "f": "crash",  # regression
        "g": "pass",
        "new": "pass",
    }
    diff = S.compare_outcomes(expected, actual)
    assert [k for k, _, _ in diff.regressions] == ["a", "c", "f"]
    assert [k for k, _, _ in diff.improvements] == ["b", "d"]
    assert [k for k, _, _ in diff.changed] == ["e"]
    assert diff.missing == ["gone"] and diff.added == ["new"]
    assert diff.has_regressions and not diff.is_current
    assert diff.format().startswith("REGRESSIONS (3):\n  a: pass -> false_negative")
    with pytest.raises(ValueError, match="not an expected-results file"):
        (tmp_path / "bad.json").write_text("[]")
        S.read_expected(tmp_path / "bad.json")


# ==========================================================================================================
# Command line
# ==========================================================================================================


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@pytest.fixture(scope="module")
def tiny_tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer.json with the 256 byte tokens and an EOS, written with `tokenizers`."""
    import tokenizers
    from tokenizers import AddedToken, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    path = tmp_path_factory.mktemp("tok") / "tiny.tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def tiny_suite_root(tmp_path: Path) -> Path:
    tests = tmp_path / "suite" / "tests" / "draft2020-12"
    tests.mkdir(parents=True)
    (tmp_path / "suite" / "remotes").mkdir()
    (tmp_path / "suite" / "remotes" / "int.json").write_text('{"type": "integer"}')
    groups = [
        {
            "description": "integers",
            "schema": {"$ref": "http://localhost:1234/int.json"},
            "tests": [
                {"description": "one", "data": 1, "valid": True},
                {"description": "str", "data": "é", "valid": False},
            ],
        }
    ]
    (tests / "int.json").write_text(json.dumps(groups))
    return tmp_path / "suite"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="constrain")
    S.add_arguments(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_registers_suite_commands() -> None:
    args = _parse(["suite", "json-schema-test-suite", "--draft", "7", "--optional", "--filter", "ref"])
    assert args.func is S.run_from_args
    assert (args.command, args.suite_command, args.draft, args.optional, args.filter) == (
        "suite",
        "json-schema-test-suite",
        "7",
        True,
        "ref",
    )
    args = _parse(["suite", "maskbench", "--limit", "3", "--subset", "JME", "--subset", "MCPspec"])
    assert (args.suite_command, args.limit, args.subset) == ("maskbench", 3, ["JME", "MCPspec"])
    with pytest.raises(SystemExit):
        _parse(["suite"])  # a suite must be named


def test_cli_runs_writes_json_and_checks_expected(
    tiny_suite_root: Path, tiny_tokenizer_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def build(schema: Any, *, registry: Any, formats: str, draft: str | None) -> Grammar:
        seen.update(registry=registry, formats=formats, draft=draft)
        return Grammar.from_regex(r"-?[0-9]+")

    engine = S.Engine(build, serialize)
    out, expected = tmp_path / "out.json", tmp_path / "expected.json"
    common = [
        "--path",
        str(tiny_suite_root),
        "--tokenizer",
        str(tiny_tokenizer_file),
        "--no-progress",
        "--timeout",
        "0",
    ]
    args = _parse(
        ["suite", "json-schema-test-suite", *common, "--json", str(out), "--write-expected", str(expected)]
    )
    assert S.run_from_args(args, engine=engine) == 0
    assert seen == {
        "registry": {"http://localhost:1234/int.json": {"type": "integer"}},
        "formats": "annotate",
        "draft": "2020-12",
    }
    doc = json.loads(out.read_text())
    assert (doc["instances"], doc["pass"]) == (2, 2)
    assert S.read_expected(expected) == {
        "int.json / integers / one": "pass",
        "int.json / integers / str": "pass",
    }
    assert "TOTAL" in capsys.readouterr().out

    accept_all = regex_engine(ACCEPT_ALL)
    args = _parse(["suite", "json-schema-test-suite", *common, "--expected", str(expected)])
    assert S.run_from_args(args, engine=accept_all) == 1
    assert "REGRESSIONS (1):\n  int.json / integers / str: pass -> false_positive" in capsys.readouterr().out


def test_cli_maskbench(
    tmp_path: Path, maskbench_tar: Path, tiny_tokenizer_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = maskbench_tar
    args = _parse(
        [
            "suite",
            "maskbench",
            "--path",
            str(path),
            "--tokenizer",
            str(tiny_tokenizer_file),
            "--limit",
            "1",
            "--timeout",
            "0",
        ]
    )
    assert S.run_from_args(args, engine=regex_engine(ACCEPT_ALL)) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Github_easy\s+1\s+1\s+3\s+2\s+1\s", out, re.M), out
    assert re.search(r"^JME\s+1\s+1\s+1\s+1\s", out, re.M), out


def test_cli_bad_arguments_exit_2(
    tmp_path: Path, tiny_tokenizer_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = regex_engine(ACCEPT_ALL)
    args = _parse(
        ["suite", "maskbench", "--path", str(tmp_path / "nope"), "--tokenizer", str(tiny_tokenizer_file)]
    )
    assert S.run_from_args(args, engine=engine) == 2
    assert "MaskBench not found" in capsys.readouterr().err
    args = _parse(
        ["suite", "maskbench", "--path", str(tmp_path), "--tokenizer", str(tmp_path / "missing.json")]
    )
    assert S.run_from_args(args, engine=engine) == 2
    assert "tokenizer file not found" in capsys.readouterr().err
    args = _parse(["suite", "maskbench", "--path", str(tmp_path), "--tokenizer", str(tiny_tokenizer_file)])
    assert S.run_from_args(args, engine=engine) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert S.main([]) == 2
