"""CPU backend: a numba loop over rows, bitmask words and bits, writing ``-inf`` in place.

The kernel works on numpy views of the torch tensors; nothing is copied. Every float dtype goes through
the same integer kernel: the logits are viewed as the signed integer type of the same width, and the
bit pattern of ``-inf`` is stored:

========  =========  ======================
dtype     viewed as  ``-inf`` bit pattern
========  =========  ======================
float16   int16      ``0xFC00``
bfloat16  int16      ``0xFF80``
float32   int32      ``0xFF800000``
float64   int64      ``0xFFF0000000000000``
========  =========  ======================

so float16 and bfloat16 run at full speed with no conversion (numpy has no bfloat16). Non-contiguous
logits (a column slice, a transposed view) are written through their strides: numba compiles a separate
strided ("A" layout) version of the loop, so no copy and no write-back is needed.

The loop, per masked row ``r``: for each word ``j`` covering a logits column, skip it if it is ``-1``
(all allowed), fill its 32 columns if it is ``0``, else test bit by bit; then fill every column from
``32 * n_words`` to the logits' width. See ``kernels/_common.py`` for the full semantics.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from constrain.exceptions import KernelUsageError

from ._common import IndicesLike, prepare, rows_or_all

__all__ = ["apply_token_bitmask_inplace_cpu"]

# torch float dtype -> (integer view dtype, numpy scalar holding the -inf bit pattern as a signed integer)
_NEG_INF_BITS: dict[torch.dtype, tuple[torch.dtype, np.integer]] = {
    torch.float16: (torch.int16, np.int16(0xFC00 - (1 << 16))),
    torch.bfloat16: (torch.int16, np.int16(0xFF80 - (1 << 16))),
    torch.float32: (torch.int32, np.int32(0xFF800000 - (1 << 32))),
    torch.float64: (torch.int64, np.int64(0xFFF0000000000000 - (1 << 64))),
}


@njit(cache=True, nogil=True)
def _mask_rows(out, bitmask, rows, fill):
    """``out``: integer view of the logits ``(batch, width)``; ``bitmask``: int32 ``(batch_b, n_words)``;
    ``rows``: int64 row numbers (already range-checked); ``fill``: the ``-inf`` bit pattern."""
    width = out.shape[1]
    n_words = bitmask.shape[1]
    words_in_width = min(n_words, (width + 31) // 32)
    for k in range(rows.shape[0]):
        r = rows[k]
        for j in range(words_in_width):
            word = bitmask[r, j]
            if word == -1:
                continue
            base = j * 32
            stop = min(32, width - base)
            if word == 0:
                for b in range(stop):
                    out[r, base + b] = fill
            else:
                for b in range(stop):
                    if (word >> b) & 1 == 0:
                        out[r, base + b] = fill
        # Columns not covered by the bitmask (logits wider than 32 * n_words) are always forbidden.
        for c in range(n_words * 32, width):
            out[r, c] = fill


def apply_token_bitmask_inplace_cpu(
    logits: torch.Tensor, bitmask: torch.Tensor, indices: IndicesLike = None
) -> None:
    """Set ``logits[r, c] = -inf`` wherever token ``c`` is not allowed by bitmask row ``r``, in place.

    CPU tensors only; any float dtype of ``_common.FLOAT_DTYPES``, any logits strides.
    """
    call = prepare(logits, bitmask, indices)
    if call.logits.device.type != "cpu":
        raise KernelUsageError(
            f"the numba 'cpu' backend needs CPU tensors, got {call.logits.device}; "
            "use backend='triton' or 'torch', or leave backend=None to pick one"
        )
    if call.is_noop:
        return
    int_dtype, fill = _NEG_INF_BITS[call.logits.dtype]
    out = call.logits.detach().view(int_dtype).numpy()
    bits = call.bitmask.detach().numpy()
    rows = rows_or_all(call).numpy()
    _mask_rows(out, bits, rows, fill)
