"""``python -m constrain``: the command line (see :mod:`constrain.cli`)."""

from __future__ import annotations

from ._syspath import unshadow_kernels
from .cli import main

if __name__ == "__main__":
    # `python -m` prepends the working directory: from the checkout root, kernels/ would shadow the hub
    # package `kernels` that transformers imports.
    unshadow_kernels()
    raise SystemExit(main())
