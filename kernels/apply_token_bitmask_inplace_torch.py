"""Reference backend: plain torch, any device. Every other backend is tested against this one.

It unpacks the bitmask to a bool tensor as wide as the logits (columns past ``32 * n_words`` come out
False) and writes ``torch.where(allowed, logits, -inf)`` back into the masked rows. See
``kernels/_common.py`` for the full semantics.
"""

from __future__ import annotations

import torch

from ._common import IndicesLike, prepare
from .bitmask import bitmask_to_bool

__all__ = ["apply_token_bitmask_inplace_torch"]


def apply_token_bitmask_inplace_torch(
    logits: torch.Tensor, bitmask: torch.Tensor, indices: IndicesLike = None
) -> None:
    """Set ``logits[r, c] = -inf`` wherever token ``c`` is not allowed by bitmask row ``r``, in place."""
    call = prepare(logits, bitmask, indices)
    if call.is_noop:
        return
    rows_logits, bits = call.logits, call.bitmask
    width = rows_logits.shape[1]
    neg_inf = torch.tensor(float("-inf"), dtype=rows_logits.dtype, device=rows_logits.device)
    if call.rows is None:
        allowed = bitmask_to_bool(bits, width)
        rows_logits.copy_(torch.where(allowed, rows_logits, neg_inf))
    else:
        allowed = bitmask_to_bool(bits[call.rows], width)
        rows_logits[call.rows] = torch.where(allowed, rows_logits[call.rows], neg_inf)
