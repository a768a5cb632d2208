"""The ``constrain`` command line: help texts, a regex run, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

import constrain
from constrain.cli import build_parser, main


def test_help_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "constrain", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for word in ("generate-json", "generate", "prepare-model", "examples:"):
        assert word in done.stdout


@pytest.mark.parametrize("command", ["generate-json", "generate", "prepare-model"])
def test_subcommand_help_teaches(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: constrain {command}" in out
    if command != "prepare-model":
        assert "examples:" in out and "--max-new-tokens" in out


def test_suite_and_bench_are_registered_when_tools_are_installed() -> None:
    pytest.importorskip("constrain_tools")
    help_text = build_parser().format_help()
    assert "suite" in help_text and "bench" in help_text


@pytest.mark.parametrize(
    "argv",
    [
        ["suite", "json-schema-test-suite", "--draft", "2020-12"],
        ["bench", "jsonschemabench", "--limit", "1"],
    ],
)
def test_suite_and_bench_say_how_to_get_the_tools_when_absent(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "constrain_tools", None)  # as if constrain-tools were not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install -e tools/" in err and "constrain-tools" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: constrain" in capsys.readouterr().err


def test_generate_with_a_regex(lm: tuple[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    pattern = "(yes|no)"
    code = main(
        ["generate", "--regex", pattern, "--prompt", "Is the sky blue?", "--max-new-tokens", "4", "--stats"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert re.fullmatch(pattern, captured.out.rstrip("\n")), captured.out
    assert "forward passes" in captured.err


def test_budget_exhaustion_exits_1(lm: tuple[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--regex", "[a-z]+( [a-z]+){10}", "--prompt", "Hi", "--max-new-tokens", "2"]
    assert main(args) == 1
    assert "max_new_tokens=2 ran out" in capsys.readouterr().err
    assert main([*args, "--on-budget", "complete"]) == 0
    assert re.fullmatch("[a-z]+( [a-z]+){10}", capsys.readouterr().out.rstrip("\n"))


def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--regex", "(", "--prompt", "x", "--model", "/nonexistent/model"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["generate-json", "--schema", "{not json", "--prompt", "x"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_generate_json(lm: tuple[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(constrain.Grammar, "from_json_schema"):
        pytest.skip("Grammar.from_json_schema is not in this build yet")
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    code = main(
        [
            "generate-json",
            "--schema",
            json.dumps(schema),
            "--prompt",
            "Is water wet?",
            "--max-new-tokens",
            "12",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    value = json.loads(captured.out)
    assert isinstance(value, dict) and isinstance(value["ok"], bool)


def test_a_script_run_from_the_checkout_root_loads_the_model() -> None:
    """`python -c` from the checkout root puts its `kernels/` folder ahead of the hub package `kernels` that
    transformers imports while loading a model; loading the default model must still work there."""
    from pathlib import Path

    from constrain._syspath import checkout_root

    root = checkout_root()
    if root is None:
        pytest.skip("an installed wheel has no checkout root")
    code = (
        "import constrain.models as m, importlib, pathlib; m.default_model(); "
        "print(pathlib.Path(importlib.import_module('kernels').__file__).resolve())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = Path(done.stdout.strip().splitlines()[-1])
    assert root / "kernels" not in loaded.parents, f"the hub package, not the checkout's folder: {loaded}"
