"""Compile budgets (issue 20, item 4) and the shortest completion at any nesting (item 6)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import constrain
from constrain import CompileBudget, CompileBudgetExceeded, Grammar, GrammarMatcher
from constrain.budget import budget_scope

from .shared_data import tokenizer_info

# A schema whose compile builds many products of object automata: far more work than 1 ms.
HEAVY = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "array", "items": {"type": "integer"}, "maxItems": 3} for i in range(12)
    },
    "not": {"required": ["p0", "p1"]},
}


def test_a_tiny_budget_refuses_with_the_pointer() -> None:
    with pytest.raises(CompileBudgetExceeded) as err, budget_scope(CompileBudget(seconds=1e-9)):
        Grammar.from_json_schema(json.loads(json.dumps(HEAVY)) | {"title": "tiny budget"})
    assert err.value.pointer.startswith("#")
    assert "budget" in str(err.value)
    assert isinstance(err.value, constrain.ConstrainError)


def test_default_budget_lets_ordinary_schemas_compile() -> None:
    info = tokenizer_info("gpt2-50k")
    compiled = constrain.compile(
        Grammar.from_json_schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
        info,
        budget=CompileBudget(seconds=60),
    )
    assert GrammarMatcher(compiled).accept_bytes(b'{"a":1}')


def test_budget_is_checked() -> None:
    with pytest.raises(constrain.InvalidInputError):
        CompileBudget(seconds=-1)


@pytest.mark.parametrize("depth", [17, 60, 500])
def test_shortest_completion_closes_any_nesting(depth: int) -> None:
    """A* with the grammar's lower bound: depth 500 of the json grammar closes with 500 brackets (the
    breadth-first search gave up at depth 17)."""
    info = tokenizer_info("gpt2-50k")
    m = GrammarMatcher(constrain.compile(Grammar.from_lark(name="json"), info))
    assert m.accept_bytes(b'{"a":' + b"[" * depth)
    assert m.completion_bytes() == b"0" + b"]" * depth + b"}" or m.completion_bytes() == b"]" * depth + b"}"
    for t in m.shortest_completion():
        assert m.accept_token(t)
    assert m.can_end()


# ---- where the refusal comes from and whom it blames -----------------------------------------------


def test_the_blame_goes_to_the_subschema_that_spent_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: one costly subschema is named itself; many cheap siblings name their parent."""
    import constrain.budget as B

    clock = [0.0]
    monkeypatch.setattr(B.time, "thread_time", lambda: clock[0])
    # this clock runs faster than the wall clock: no bound from the last read, read it every time
    monkeypatch.setattr(B, "_CPU_READ_EVERY_S", 0.0)
    with budget_scope(CompileBudget(seconds=10)), B.pointer_scope("#"):
        clock[0] = 1
        with B.pointer_scope("#/properties/cheap"):
            clock[0] = 2
        with B.pointer_scope("#/properties/costly"), B.pointer_scope("#/properties/costly/items"):
            clock[0] = 11
            with pytest.raises(CompileBudgetExceeded) as err:
                B.check("minimization")
    assert err.value.pointer == "#/properties/costly/items" and err.value.keyword == "items"
    assert "minimization" in str(err.value) and "9.0 s of it" in str(err.value)

    clock[0] = 0.0
    with budget_scope(CompileBudget(seconds=10)), B.pointer_scope("#"), B.pointer_scope("#/$defs/many"):
        for i in range(20):
            with B.pointer_scope(f"#/$defs/many/properties/p{i}"):
                clock[0] += 0.9 if i == 7 else 0.6
        with pytest.raises(CompileBudgetExceeded) as err:
            B.check()
    assert err.value.pointer == "#/$defs/many" and err.value.keyword == "$defs"
    # the parent is blamed, and its costliest finished part named beside it
    assert "costliest part so far: #/$defs/many/properties/p7, 0.9 s" in str(err.value)


def test_the_kernels_ask_the_clock_from_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subset construction and Hopcroft's refinement call the budget's clock every few hundred rounds
    (from numba's object mode), so a large automaton is stopped mid-kernel, not after it."""
    import constrain.automata.determinize as D
    import constrain.automata.minimize as M
    from constrain.automata import regex_to_dfa

    calls = {"determinize": 0, "minimize": 0}

    def counting(name: str, real: Any) -> Any:
        def time_up() -> bool:
            calls[name] += 1
            return bool(real())

        return time_up

    monkeypatch.setattr(D, "_time_up", counting("determinize", D._time_up))
    monkeypatch.setattr(M, "_time_up", counting("minimize", M._time_up))
    with budget_scope(CompileBudget(seconds=60)):
        dfa = regex_to_dfa("(a|b)*a(a|b){11}x?(?#budget-kernels)")  # 2**12 subsets, no cache hit
    assert dfa.num_states > 4096
    assert calls["determinize"] > 0 and calls["minimize"] > 0


def test_a_state_budget_refuses_with_the_pointer() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a|b)*a(a|b){9}$"}}}
    with pytest.raises(CompileBudgetExceeded) as err, budget_scope(CompileBudget(max_states=500)):
        Grammar.from_json_schema(schema)
    assert err.value.pointer.startswith("#/properties/code") and "max_states=500" in str(err.value)
    assert Grammar.from_json_schema(schema)  # the default budget compiles it


def test_budget_arguments_are_checked() -> None:
    info = tokenizer_info("gpt2-50k")
    grammar = Grammar.from_regex("[0-9]{2}")
    constrain.compile(grammar, info)  # cached now: the check must not be skipped by a cache hit
    for bad in ("fast", -1, 0, float("inf"), True):
        with pytest.raises(constrain.InvalidInputError, match="budget"):
            constrain.compile(grammar, info, budget=bad)  # type: ignore[arg-type]
    assert constrain.compile(grammar, info, budget=30) is constrain.compile(grammar, info)
    for kwargs in ({"max_states": 0}, {"wall_seconds": -2}, {"max_states": 1.5}):
        with pytest.raises(constrain.InvalidInputError):
            CompileBudget(**kwargs)


def test_wall_clock_budget() -> None:
    with (
        pytest.raises(CompileBudgetExceeded, match="wall time"),
        budget_scope(CompileBudget(seconds=None, wall_seconds=1e-9)),
    ):
        Grammar.from_json_schema(json.loads(json.dumps(HEAVY)) | {"title": "wall budget"})


def test_unknown_keyword_arguments_of_compile_and_the_matcher() -> None:
    from constrain.exceptions import ArgumentError

    info = tokenizer_info("gpt2-50k")
    grammar = Grammar.from_regex("[0-9]{2}")
    with pytest.raises(ArgumentError, match="budgett"):
        constrain.compile(grammar, info, budgett=3)  # type: ignore[call-arg]
    with pytest.raises(ArgumentError, match="timeout"):
        constrain.compiler.default_compiler().compile(grammar, info, timeout=3)  # type: ignore[call-arg]
    compiled = constrain.compile(grammar, info)
    with pytest.raises(ArgumentError, match="track"):
        GrammarMatcher(compiled, track=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # still a TypeError, as Python's own
        GrammarMatcher()  # type: ignore[call-arg]


# ---- the budget through the CLI and the suite runner ---------------------------------------------------


def test_cli_compile_budget(capsys: pytest.CaptureFixture[str]) -> None:
    from constrain.cli import main

    schema = json.dumps(HEAVY | {"title": "cli budget"})
    # refused before the model loads, naming where, exit code 2
    assert main(["generate-json", "--schema", schema, "--prompt", "x", "--compile-budget", "1e-9"]) == 2
    err = capsys.readouterr().err
    assert "compile budget" in err and "#" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--regex", "a", "--prompt", "x", "--compile-budget", "soon"])
    assert exit_info.value.code == 2
    assert "--compile-budget" in capsys.readouterr().err


def test_suite_runner_budget_option() -> None:
    pytest.importorskip("constrain_tools")
    from constrain_tools import suites as S

    info = constrain.TokenizerInfo.from_vocab(
        [bytes([b]) for b in range(256)] + [b""], eos_ids=[256], name="bytes"
    )
    tok = S.TextTokenizer(info, lambda text: list(text.encode("utf-8")), "bytes")
    heavy = HEAVY | {"title": "suite budget"}
    suite = S.Suite(
        "one", (S.SchemaCase("h.json", "heavy", heavy, (S.TestInstance("h / {}", "{}", {}, True),)),)
    )
    refused = S.run_suite(suite, tok, engine=S.Engine.default(CompileBudget(seconds=1e-9)), timeout_s=None)
    assert refused.schemas[0].status == "timeout" and "compile budget" in refused.schemas[0].message
    assert S.Engine.default().compile_budget is None  # the suite's verdicts do not depend on the machine


def test_from_json_schema_takes_a_budget() -> None:
    with pytest.raises(CompileBudgetExceeded, match="compile budget"):
        Grammar.from_json_schema(HEAVY | {"title": "grammar budget"}, budget=1e-9)
    with pytest.raises(constrain.InvalidInputError, match="budget"):
        Grammar.from_json_schema({"type": "integer"}, budget="soon")  # type: ignore[arg-type]
    # not part of the grammar: the same value and cache entry whatever the budget
    assert Grammar.from_json_schema({"type": "integer"}, budget=30) == Grammar.from_json_schema(
        {"type": "integer"}
    )


def test_numba_jit_time_is_not_charged_to_the_budget() -> None:
    """A kernel's first call JIT-compiles it (a cold numba cache after install): that is not the
    user's compile, so a budget far smaller than the JIT time still passes."""
    import numba

    from constrain.budget import _JIT, CompileBudget, budget_scope, check

    @numba.njit(cache=False)
    def fresh_kernel(n: int) -> int:  # a new function: numba has to compile it here
        total = 0
        for i in range(n):
            total += i * i % 7
        return total

    with budget_scope(CompileBudget(seconds=0.002)):
        t0, jit0 = time.thread_time(), _JIT.seconds()
        assert fresh_kernel(1000) == sum(i * i % 7 for i in range(1000))
        spent, jit = time.thread_time() - t0, _JIT.seconds() - jit0
        check("after the JIT")  # would raise if the JIT counted
    assert spent > 0.002  # the JIT really took longer than the budget (numba takes milliseconds at least)
    assert 0 < jit <= spent + 1e-6
