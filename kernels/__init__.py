"""Token-bitmask kernels (installed as ``constrain.kernels``).

``apply_token_bitmask_inplace(logits, bitmask, indices=None, *, backend=None)`` sets every logit whose
token the bitmask forbids to ``-inf``, in place. Backends, one module each:

* ``"torch"``  -- :mod:`.apply_token_bitmask_inplace_torch`, the plain-torch reference (any device);
* ``"cpu"``    -- :mod:`.apply_token_bitmask_inplace_cpu`, a numba loop (CPU tensors);
* ``"triton"`` -- :mod:`.apply_token_bitmask_inplace_triton`, a Triton kernel (GPU tensors).

``backend=None`` picks triton for CUDA tensors (torch if triton is not installed), numba for CPU tensors
(torch if numba is not installed) and torch for any other device. Backends are imported on first use:
triton is never imported unless the triton backend is used.

Bitmask format and semantics: see :mod:`.bitmask` and :mod:`._common`. In short, the bitmask is
``int32[batch, ceil(V/32)]`` (bit ``i`` of word ``j`` allows token ``32*j+i``); logits columns past
``32 * n_words`` are always set to ``-inf``; ids between ``V`` and ``32 * n_words`` follow their
(padding) bits, which the matcher keeps at 0; with ``indices``, only logits rows ``indices[k]`` are
masked, each with bitmask row ``indices[k]``.

Importing this package does not import torch: the bitmask helpers (:mod:`.bitmask`) load on first
access (PEP 562 ``__getattr__``) and the backends on first use, so ``import constrain`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from constrain.exceptions import KernelUsageError

if TYPE_CHECKING:
    import torch

    from ._common import IndicesLike
    from .bitmask import (
        allocate_token_bitmask,
        bitmask_to_bool,
        bool_to_bitmask,
        get_bitmask_shape,
        reset_token_bitmask,
    )

__all__ = [
    "BACKENDS",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "available_backends",
    "bitmask_to_bool",
    "bool_to_bitmask",
    "get_bitmask_shape",
    "reset_token_bitmask",
]

Backend = Literal["torch", "cpu", "triton"]

BACKENDS: tuple[str, ...] = ("torch", "cpu", "triton")

# backend name -> (module, function, the package it needs)
_MODULES: dict[str, tuple[str, str, str]] = {
    "torch": ("apply_token_bitmask_inplace_torch", "apply_token_bitmask_inplace_torch", "torch"),
    "cpu": ("apply_token_bitmask_inplace_cpu", "apply_token_bitmask_inplace_cpu", "numba"),
    "triton": ("apply_token_bitmask_inplace_triton", "apply_token_bitmask_inplace_triton", "triton"),
}

#: the bitmask helpers, imported from :mod:`.bitmask` (and torch with them) on first access
_BITMASK_NAMES = frozenset(
    {
        "allocate_token_bitmask",
        "bitmask_to_bool",
        "bool_to_bitmask",
        "get_bitmask_shape",
        "reset_token_bitmask",
    }
)


def __getattr__(name: str) -> Any:
    if name == "bitmask":
        return importlib.import_module(".bitmask", __name__)
    if name not in _BITMASK_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".bitmask", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _BITMASK_NAMES)


_loaded: dict[str, Callable[..., None]] = {}
_installed: dict[str, bool] = {}


def _has_package(name: str) -> bool:
    if name not in _installed:
        _installed[name] = importlib.util.find_spec(name) is not None
    return _installed[name]


def _load(backend: str) -> Callable[..., None]:
    fn = _loaded.get(backend)
    if fn is None:
        module_name, fn_name, _ = _MODULES[backend]
        module = importlib.import_module(f".{module_name}", __name__)
        fn = getattr(module, fn_name)
        _loaded[backend] = fn
    return fn


def available_backends() -> list[str]:
    """The backends whose packages are installed (it does not say which devices they can run on)."""
    return [name for name, (_, _, package) in _MODULES.items() if _has_package(package)]


def _pick_backend(logits: torch.Tensor) -> str:
    import torch

    device_type = logits.device.type if isinstance(logits, torch.Tensor) else "cpu"
    if device_type == "cuda" and _has_package("triton"):
        return "triton"
    if device_type == "cpu" and _has_package("numba"):
        return "cpu"
    return "torch"


def apply_token_bitmask_inplace(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    indices: IndicesLike = None,
    *,
    backend: Backend | None = None,
) -> None:
    """Set ``logits[r, c] = -inf`` wherever bitmask row ``r`` forbids token ``c``, in place.

    Args:
        logits: ``(batch, width)`` or ``(width,)``; float16, bfloat16, float32 or float64; any strides.
        bitmask: ``int32`` ``(batch, ceil(V/32))`` or ``(ceil(V/32),)`` on the logits' device.
        indices: ``None`` (mask every row; the batch sizes must match) or the logits rows to mask (a
            list or 1-D integer tensor); row ``i`` of the logits uses row ``i`` of the bitmask.
        backend: ``"torch"``, ``"cpu"`` or ``"triton"`` to force one; ``None`` picks by device.

    Raises:
        KernelUsageError: wrong dtype, device, shape or indices, or a backend that cannot take these
            tensors; the message says how to fix the call.
    """
    if backend is None:
        backend = _pick_backend(logits)  # type: ignore[assignment]
    elif backend not in _MODULES:
        raise KernelUsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or None")
    assert backend is not None
    package = _MODULES[backend][2]
    if not _has_package(package):
        raise KernelUsageError(
            f"backend {backend!r} needs the {package!r} package, which is not installed; "
            f"install it or pick another backend (installed: {', '.join(available_backends())})"
        )
    _load(backend)(logits, bitmask, indices)
