"""``constrain bench jsonschemabench``: sampling, JSON extraction, validation, aggregation, and one real run.

Oracles: hand-computed aggregates over fake records, ``jsonschema`` for the real run's output, and the
shared data's own file listing for the sample. The one real run (a Glaiveai2K schema, 48 new tokens,
single-threaded) takes about 15 s on a 2-core machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from constrain.cli import main
from constrain.exceptions import InvalidInputError
from constrain_tools.jsonschemabench import (
    DEFAULT_DATA_PATH,
    ArmResult,
    BenchSchema,
    CompileResult,
    DuplicateKeyHook,
    SchemaRecord,
    aggregate,
    build_messages,
    check_instance,
    compile_schema,
    extract_json,
    format_table,
    interleave,
    load_schemas,
    plot_summaries,
    run_schema,
    sample_names,
    schema_names,
)

from .shared_data import tokenizer_info

SAMPLE_FOLDER = DEFAULT_DATA_PATH / "data"

# ------------------------------------------------------------------------------------------------
# Sampling


def test_sample_is_sorted_seeded_and_independent_of_input_order() -> None:
    names = [f"s{i:03d}.json" for i in range(100)]
    first = sample_names(names, 10, seed=0, subset="A")
    assert first == sorted(first) and len(set(first)) == 10
    assert sample_names(list(reversed(names)), 10, seed=0, subset="A") == first
    assert sample_names(names, 10, seed=0, subset="A") == first
    # the seed and the subset name both pick the sample; a limit past the count keeps everything
    assert sample_names(names, 10, seed=1, subset="A") != first
    assert sample_names(names, 10, seed=0, subset="B") != first
    assert sample_names(names, 500, seed=0, subset="A") == names
    assert sample_names(names, None, seed=0, subset="A") == names


def _write_data(root: Path, subsets: dict[str, int]) -> dict[str, Any]:
    schemas = {}
    for subset, count in subsets.items():
        folder = root / "data" / subset
        folder.mkdir(parents=True)
        for i in range(count):
            schema = {"type": "object", "title": f"{subset}-{i}"}
            (folder / f"x{i:02d}.json").write_text(json.dumps(schema))
            schemas[f"{subset}/x{i:02d}.json"] = schema
    return schemas


def test_archive_and_folder_give_the_same_sample(
    tmp_path: Path, write_tar: Callable[[Path, dict[str, bytes]], Path]
) -> None:
    schemas = _write_data(tmp_path / "unpacked", {"A": 12, "B": 5})
    members = {f"data/{name}": json.dumps(schema).encode() for name, schema in schemas.items()}
    archive = write_tar(tmp_path / "jsonschemabench-data.tar.xz", members)
    from_folder = load_schemas(tmp_path / "unpacked", ["B", "A"], limit=4, seed=3)
    from_archive = load_schemas(archive, ["B", "A"], limit=4, seed=3)
    from_parent = load_schemas(tmp_path, ["B", "A"], limit=4, seed=3)  # the folder holding the archive
    assert from_folder == from_archive == from_parent
    assert [s.subset for s in from_folder] == ["B"] * 4 + ["A"] * 4  # subsets in the order given
    for item in from_folder:
        assert item.schema == schemas[f"{item.subset}/{item.name}"]
    expected_names = {"A": [f"x{i:02d}.json" for i in range(12)], "B": [f"x{i:02d}.json" for i in range(5)]}
    assert schema_names(archive) == expected_names
    with pytest.raises(InvalidInputError, match=r"no subset named C.*A, B"):
        load_schemas(archive, ["C"])


def test_interleave_is_round_robin() -> None:
    items = [
        BenchSchema(subset, f"{i}", {})
        for subset, count in (("A", 3), ("B", 1), ("C", 2))
        for i in range(count)
    ]
    order = [(s.subset, s.name) for s in interleave(items)]
    assert order == [("A", "0"), ("B", "0"), ("C", "0"), ("A", "1"), ("C", "1"), ("A", "2")]
    assert interleave([]) == []


def test_shared_sample_is_reproducible() -> None:
    if not SAMPLE_FOLDER.is_dir():
        pytest.skip(f"../shared is absent (no {SAMPLE_FOLDER})")
    first = load_schemas(SAMPLE_FOLDER, ["Glaiveai2K", "Github_easy"], limit=3, seed=7)
    again = load_schemas(SAMPLE_FOLDER, ["Glaiveai2K", "Github_easy"], limit=3, seed=7)
    assert [(s.subset, s.name) for s in first] == [(s.subset, s.name) for s in again]
    available = schema_names(SAMPLE_FOLDER)
    for item in first:
        assert item.name in available[item.subset]


# ------------------------------------------------------------------------------------------------
# Prompt, extraction, validation


def test_prompt_is_two_shot_chat() -> None:
    schema = {"type": "integer"}
    messages = build_messages(schema)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert json.dumps(schema) in messages[-1]["content"]
    for m in messages[2:5:2]:  # the example answers are compact JSON
        assert json.loads(m["content"]) is not None and ", " not in m["content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  "just a string"\n', "just a string"),
        ("42", 42),
        ('Here it is:\n```json\n{"a": [1, 2]}\n```\nDone.', {"a": [1, 2]}),
        ('```\n{"b": null}\n```', {"b": None}),
        ('Sure! {"a": 1} and then {"b": 2}', {"a": 1}),
        ('{not json} but [1, {"x": true}] is', [1, {"x": True}]),
        ('```json\n{"broken": \n```\n{"ok": 1}', {"ok": 1}),
    ],
)
def test_extract_json_finds_the_value(text: str, expected: Any) -> None:
    assert extract_json(text) == (True, expected)


@pytest.mark.parametrize("text", ["", "no json here", '{"a": 1', "```json\n{oops}\n```"])
def test_extract_json_reports_nothing(text: str) -> None:
    assert extract_json(text) == (False, None)


def test_duplicate_keys_are_noticed() -> None:
    hook = DuplicateKeyHook()
    assert extract_json('x {"a": 1, "a": 2}', hook=hook) == (True, {"a": 2})
    assert hook.duplicates
    assert extract_json('{"a": 1, "b": {"a": 2}}', hook=hook) == (True, {"a": 1, "b": {"a": 2}})
    assert not hook.duplicates


def test_check_instance_uses_the_drafts_validator_and_formats() -> None:
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 3, "exclusiveMaximum": True}
    assert check_instance(2, draft4) == (True, "")
    assert not check_instance(3, draft4)[0]  # boolean exclusiveMaximum: draft 4 only
    date = {"type": "string", "format": "date"}
    assert check_instance("2024-02-29", date)[0]
    ok, message = check_instance("2023-02-29", date)
    assert not ok and "date" in message
    remote = {"$ref": "https://example.com/nowhere.json"}
    ok, message = check_instance({}, remote)  # nothing is fetched: the validator's error is a fail
    assert not ok and message.startswith("validator error")


def test_compile_schema_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    info = tokenizer_info("smollm2-49k")
    # No time limit here: in a fresh process this compile includes numba's first JIT of the mask
    # kernels, which on a loaded 2-core machine took over the 60 s default (CI at 8546609).
    ok = compile_schema({"type": "boolean"}, info, timeout_s=None)
    assert ok.status == "compiled" and ok.time_s is not None and ok.compiled is not None
    unsupported = compile_schema({"type": "array", "uniqueItems": True}, info)
    assert (unsupported.status, unsupported.keyword, unsupported.pointer) == (
        "unsupported",
        "uniqueItems",
        "#/uniqueItems",
    )
    assert compile_schema({"minimum": "x"}, info).status == "error"

    from constrain.grammar import Grammar

    def slow(schema: Any, **options: Any) -> Any:
        import time

        time.sleep(5)

    monkeypatch.setattr(Grammar, "from_json_schema", staticmethod(slow))
    assert compile_schema({"type": "null"}, info, timeout_s=0.2).status == "timeout"

    def broken(schema: Any, **options: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(Grammar, "from_json_schema", staticmethod(broken))
    crash = compile_schema({"type": "null"}, info)
    assert crash.status == "crash" and "KeyError" in crash.message


# ------------------------------------------------------------------------------------------------
# Aggregation


def _arm(
    status: str,
    tokens: int | None = None,
    passes: int = 0,
    forced: int = 0,
    ttft: float = 0.0,
    tpot: float = 0.0,
    dup: bool = False,
) -> ArmResult:
    """A fake arm result; with ``tokens`` it ran (statistics present)."""
    arm = ArmResult(status, duplicate_keys=dup)
    if tokens is not None:
        arm.output_tokens, arm.forward_passes, arm.forced_tokens = tokens, passes, forced
        arm.time_to_first_token_s, arm.time_per_output_token_s = ttft, tpot
    return arm


def _record(subset: str, comp: CompileResult, con: ArmResult, unc: ArmResult) -> SchemaRecord:
    return SchemaRecord(subset, "x.json", "2020-12", 10, comp, con, unc)


def _fake_records() -> list[SchemaRecord]:
    ok = CompileResult("compiled", 0.010)
    return [
        # A: 4 schemas, 3 compiled; constrained valid on 2, budget on 1; unconstrained valid on 2 (one
        # of them on the schema that did not compile)
        _record("A", ok, _arm("valid", 10, 6, 4, 0.5, 0.02), _arm("valid", 20, 20, 0, 0.4, 0.04)),
        _record(
            "A",
            CompileResult("compiled", 0.030),
            _arm("valid", 20, 14, 6, 0.7, 0.03, dup=True),
            _arm("invalid", 30, 30, 0, 0.6, 0.05),
        ),
        _record(
            "A",
            CompileResult("compiled", 0.020),
            _arm("budget", 30, 30, 0, 0.6, 0.04),
            _arm("not_json", 30, 30, 0, 0.5, 0.06),
        ),
        _record(
            "A",
            CompileResult("unsupported", keyword="uniqueItems"),
            _arm("not_compiled"),
            _arm("valid", 10, 10, 0, 0.3, 0.03),
        ),
        # B: 1 schema, compiled, prompt too long for both arms
        _record("B", CompileResult("compiled", 0.050), _arm("too_long"), _arm("too_long")),
    ]


def test_aggregate_computes_the_papers_metrics() -> None:
    summaries = aggregate(_fake_records())
    assert [s.subset for s in summaries] == ["A", "B", "all"]
    a, b, overall = summaries
    assert (a.n, a.compiled, a.declared_coverage, a.unsupported) == (4, 3, 0.75, 1)
    assert (a.valid_c, a.empirical_coverage_c, a.compliance_c) == (2, 0.5, pytest.approx(2 / 3))
    assert (a.valid_u, a.empirical_coverage_u) == (2, 0.5)
    assert a.compliance_u == pytest.approx(1 / 3)  # valid among the 3 compiled schemas only
    assert (a.budget_c, a.not_json_u, a.duplicate_keys_c, a.duplicate_keys_u) == (1, 1, 1, 0)
    assert a.compile_time_median_s == pytest.approx(0.020)
    assert a.ttft_median_c_s == pytest.approx(0.6)  # the budget run counts: it generated tokens
    assert a.ttft_median_u_s == pytest.approx(0.45)
    assert a.tpot_median_c_s == pytest.approx(0.03)
    assert a.tpot_median_u_s == pytest.approx(0.045)
    assert a.tpot_ratio == pytest.approx(0.03 / 0.045)
    assert (a.output_tokens_c, a.forward_passes_c, a.forced_tokens_c) == (60, 50, 10)
    assert a.tokens_per_pass_c == pytest.approx(1.2)
    assert a.forced_fraction_c == pytest.approx(10 / 60)
    assert a.tokens_per_pass_u == pytest.approx(1.0)
    assert (b.n, b.compiled, b.too_long, b.valid_c, b.compliance_c, b.ttft_median_c_s) == (
        1,
        1,
        1,
        0,
        0.0,
        None,
    )
    assert (overall.n, overall.compiled, overall.valid_c, overall.compliance_c) == (5, 4, 2, 0.5)
    table = format_table(summaries)
    for needle in ("A", "B", "all", "75.0%", "66.7%", "1.20", "10 (16.7%)"):
        assert needle in table


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    plot_summaries(aggregate(_fake_records()), out, title="fake")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_cli_rejects_an_unknown_subset(capsys: pytest.CaptureFixture[str]) -> None:
    if not SAMPLE_FOLDER.is_dir():
        pytest.skip(f"../shared is absent (no {SAMPLE_FOLDER})")
    code = main(["bench", "jsonschemabench", "--data", str(SAMPLE_FOLDER), "--subset", "Nope"])
    assert code == 2
    assert "Glaiveai2K" in capsys.readouterr().err  # the error lists the subsets there are


# ------------------------------------------------------------------------------------------------
# One real run


def test_one_glaive_schema_both_arms(lm: tuple[Any, Any]) -> None:
    path = SAMPLE_FOLDER / "Glaiveai2K" / "convert_temperature_33a6db10.json"
    if not path.is_file():
        pytest.skip(f"../shared is absent (no {path})")
    from constrain.models import tokenizer_info_for

    model, tokenizer = lm
    schema = json.loads(path.read_text())
    record = run_schema(
        BenchSchema("Glaiveai2K", path.name, schema),
        model=model,
        tokenizer=tokenizer,
        tokenizer_info=tokenizer_info_for(tokenizer),
        max_new_tokens=48,
    )
    assert record.compile.status == "compiled" and record.compile.time_s is not None
    con, unc = record.constrained, record.unconstrained
    assert con.status == "valid", con
    import jsonschema

    jsonschema.validate(json.loads(con.text or ""), schema)  # the oracle, independently of the bench
    for arm in (con, unc):
        assert arm.ran and arm.text is not None
        assert 0 < (arm.output_tokens or 0) <= 48
        assert (arm.forward_passes or 0) >= 1 and (arm.prompt_tokens or 0) > 100
        assert (arm.time_to_first_token_s or 0) > 0
    # no grammar, nothing forced; the default drafter's prompt lookup may still verify several tokens per pass
    assert unc.forced_tokens == 0 and 1 <= (unc.forward_passes or 0) <= (unc.output_tokens or 0)
    assert (con.forward_passes or 0) <= (con.output_tokens or 0)
    assert unc.status in ("valid", "invalid", "not_json")
    dumped = record.to_json()
    assert "compiled" not in dumped["compile"]
    json.dumps(dumped)  # JSON-ready
    summary = aggregate([record])[0]
    assert (summary.n, summary.compiled, summary.valid_c, summary.compliance_c) == (1, 1, 1, 1.0)


@pytest.mark.parametrize("engine", ["constrain-hf", "xgrammar-hf", "llguidance-hf"])
def test_transformers_processor_arm(lm: tuple[Any, Any], engine: str) -> None:
    """The peers' arms of the speculative bench: transformers ``generate`` masked by each engine's
    processor gives schema-valid JSON (checked here by ``jsonschema`` itself, not by the bench)."""
    from constrain_tools import hf_arms

    missing = hf_arms.available_engines([engine])
    if missing:
        pytest.skip(missing[engine])  # the peers come from the optional bench extra
    import jsonschema

    model, tokenizer = lm
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    from constrain.generation import encode_prompt

    prompt = encode_prompt(tokenizer, build_messages(schema), None)
    engines = hf_arms.HFEngines(tokenizer, int(model.config.vocab_size))
    arm = hf_arms.run_hf_arm(engines, engine, schema, prompt, model=model, max_new_tokens=40)
    assert arm.status == "valid", arm
    jsonschema.validate(json.loads(arm.text), schema)
    assert arm.forward_passes == arm.output_tokens >= 2 and arm.decode_time_s > 0
    if engine == "constrain-hf":  # a schema the metaschema rejects is a coverage miss, not a crash
        bad = hf_arms.run_hf_arm(engines, engine, {"type": "nonsense"}, prompt, model=model, max_new_tokens=4)
        assert bad.status == "not_compiled" and "SchemaError" in bad.message
