"""Locating ../shared (real tokenizers and test suites): CI always has it; a user's clone may not."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOKENIZERS = SHARED / "tokenizers"
TOKENIZER_NAMES = ["llama3-128k", "qwen3-151k", "gpt2-50k", "mistral-32k", "gemma3-262k", "smollm2-49k"]


def tokenizer_path(name: str) -> Path:
    """Path of a shared tokenizer file; skips the test (with the reason) when ../shared is absent."""
    path = TOKENIZERS / f"{name}.tokenizer.json"
    if not path.exists():
        pytest.skip(f"../shared is absent (no {path}); CI provides it beside the checkout")
    return path


@functools.cache
def tokenizer_info(name: str):  # type: ignore[no-untyped-def]
    """A TokenizerInfo for a shared tokenizer, loaded once per test session."""
    from constrain import TokenizerInfo

    return TokenizerInfo.from_file(tokenizer_path(name))


@functools.cache
def hf_tokenizer(name: str):  # type: ignore[no-untyped-def]
    """The `tokenizers.Tokenizer` for a shared tokenizer, loaded once per test session."""
    import tokenizers

    return tokenizers.Tokenizer.from_file(str(tokenizer_path(name)))
