"""Keep the checkout root off ``sys.path``, where its ``kernels/`` folder would shadow the hub package.

The source tree keeps the bitmask kernels in a top-level ``kernels/`` folder that installs as
``constrain.kernels``. When a process runs *from the checkout root* with that root on ``sys.path``
(``python -m pytest``, ``python -m constrain``, a Ray worker started there: each prepends the working
directory), a bare ``import kernels`` finds that folder instead of the PyPI package ``kernels`` that
transformers >= 5.25 imports (``ImportError: cannot import name 'CUDAProperties' from 'kernels'``).
Nothing in constrain imports the root itself (the installed or editable package maps ``constrain.kernels``
to the folder), so those entries can go.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["checkout_root", "unshadow_kernels"]


def checkout_root() -> Path | None:
    """The source checkout this ``constrain`` was imported from, when it has the top-level ``kernels/``
    folder beside ``constrain/``; None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "kernels" / "__init__.py").is_file() and (root / "constrain").is_dir() else None


def unshadow_kernels() -> None:
    """Drop the checkout root (and ``""``, the working directory, when that is the root) from
    ``sys.path``, and forget a ``kernels`` module already imported from the root's folder. Idempotent;
    does nothing outside a source checkout."""
    root = checkout_root()
    if root is None:
        return
    cwd = Path(os.getcwd()).resolve()

    def is_root(entry: str) -> bool:
        try:
            return (Path(entry).resolve() if entry else cwd) == root
        except OSError:  # an entry that cannot be resolved is not the root
            return False

    sys.path[:] = [entry for entry in sys.path if not is_root(entry)]
    shadow = sys.modules.get("kernels")
    if shadow is not None and Path(getattr(shadow, "__file__", "") or "").resolve().parent.parent == root:
        for name in [n for n in sys.modules if n == "kernels" or n.startswith("kernels.")]:
            del sys.modules[name]
