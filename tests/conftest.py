"""Fixtures shared by the test files (tests run with ``--import-mode=importlib``: share here, not by
importing one test file from another)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from constrain._syspath import unshadow_kernels

# `python -m pytest` (the README's test command) prepends the working directory, the checkout root, whose
# kernels/ folder would shadow the hub package `kernels` that transformers >= 5.25 imports.
unshadow_kernels()


@pytest.fixture(scope="module")
def lm() -> Iterator[tuple[Any, Any]]:
    """The default model and tokenizer (SmolLM2-135M), loaded once per process (``default_model`` caches
    it, and the CLI reuses it), with torch single-threaded for the module: several processes share two
    cores, and OpenMP spinning with two threads each made a token 4x slower there. Skips when
    transformers or the model is not installed."""
    pytest.importorskip("transformers")
    import torch

    from constrain.models import ModelNotAvailableError, default_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            yield default_model()
        except ModelNotAvailableError as exc:
            pytest.skip(f"default model not installed: {exc}")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def write_tar() -> Callable[[Path, Mapping[str, bytes]], Path]:
    """``write_tar(path, {member name: bytes})`` writes an xz tar archive (members in name order)."""

    def write(path: Path, members: Mapping[str, bytes]) -> Path:
        with tarfile.open(path, "w:xz") as tf:
            for name, raw in sorted(members.items()):
                info = tarfile.TarInfo(name)
                info.size = len(raw)
                tf.addfile(info, io.BytesIO(raw))
        return path

    return write
