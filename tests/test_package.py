"""Packaging: the design card's top-level folders install inside the one namespace; the demo runs."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import constrain

from .shared_data import tokenizer_path

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_map_to_top_level_folders() -> None:
    for sub, folder in [("kernels", "kernels"), ("adapters", "adapters"), ("grammars", "grammars")]:
        module = importlib.import_module(f"constrain.{sub}")
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent == (REPO / folder).resolve()


def test_public_api_and_typing_marker() -> None:
    for name in constrain.__all__:
        assert hasattr(constrain, name), name
    assert (Path(constrain.__file__).parent / "py.typed").exists()
    assert issubclass(constrain.UnsupportedRegexFeature, constrain.ConstrainError)
    assert issubclass(constrain.TokenizerError, constrain.ConstrainError)


def test_demo_runs_and_prints_matching_outputs() -> None:
    tok = tokenizer_path("smollm2-49k")
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "regex_demo.py"), "--tokenizer", str(tok), "--samples", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in out.stdout.splitlines() if "tokens" in line and "{" in line]
    assert len(lines) == 2, out.stdout


def test_import_constrain_does_not_load_torch() -> None:
    code = "import constrain, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_lazy_names_load_on_first_use() -> None:
    assert {"generate", "generate_json", "apply_token_bitmask_inplace", "allocate_token_bitmask"} <= set(
        dir(constrain)
    )
    assert constrain.allocate_token_bitmask(1, 64).shape == (1, 2)
    assert callable(constrain.generate) and callable(constrain.generate_json)
