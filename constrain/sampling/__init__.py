"""Sampling under a constraint that follows the model: AWRS, SMC and ASAp (see docs/architecture.md).

``AWRS`` and ``Masked`` are the decoding loop's sampler objects (``generate(..., sampler=AWRS())``)."""

from .methods import AWRS, Masked

__all__ = ["AWRS", "Masked"]
