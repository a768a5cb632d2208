"""Triton backend (CUDA / ROCm tensors; CPU tensors under ``TRITON_INTERPRET=1``).

What the kernel computes, written as plain loops (``rows`` = ``indices`` or every logits row)::

    for r in rows:                                   # grid axis 0: one program row per masked row
        for blk in range(cdiv(cdiv(width, 32), BLOCK_WORDS)):   # grid axis 1: blocks of words
            for j in range(blk * BLOCK_WORDS, (blk + 1) * BLOCK_WORDS):
                word = bitmask[r, j] if j < n_words else 0      # past the bitmask: nothing allowed
                for b in range(32):
                    c = 32 * j + b
                    if c < width and (word >> b) & 1 == 0:
                        logits[r, c] = -inf

Each program loads ``BLOCK_WORDS`` bitmask words, expands them to a ``[BLOCK_WORDS, 32]`` tile of bits
and stores ``-inf`` (in the logits' own dtype) only where a bit is 0: the logits are never read, only
the forbidden entries are written. Row and column strides are both kernel arguments, so strided rows
(``logits.stride(0) != width``) and even non-unit column strides work without a copy.

``indices`` follow XGrammar's convention: ``indices`` lists the logits rows to mask and row ``i`` of
the logits pairs with row ``i`` of the bitmask. See ``kernels/_common.py`` for the full semantics.

``TRITON_INTERPRET=1`` must be set before this module is first imported for the kernel to run on CPU
tensors (Triton decides at decoration time); ``INTERPRETED`` tells which mode the kernel was built in.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from constrain.exceptions import KernelUsageError

from ._common import IndicesLike, prepare

__all__ = ["INTERPRETED", "apply_token_bitmask_inplace_triton"]

# 128 words = 4096 columns per program; with 4 warps that is 32 columns per thread.
BLOCK_WORDS = 128
NUM_WARPS = 4


# Only the constexpr parameters are annotated: triton reads annotations, so the others stay bare.
@triton.jit
def _apply_token_bitmask_kernel(  # type: ignore[no-untyped-def]
    logits_ptr,
    bitmask_ptr,
    indices_ptr,
    width,
    n_words,
    logits_stride_row,
    logits_stride_col,
    bitmask_stride_row,
    bitmask_stride_word,
    HAS_INDICES: tl.constexpr,
    BLOCK_WORDS: tl.constexpr,
):
    pid_row = tl.program_id(0)
    pid_block = tl.program_id(1)
    if HAS_INDICES:
        row = tl.load(indices_ptr + pid_row).to(tl.int64)
    else:
        row = pid_row.to(tl.int64)
    word_idx = pid_block * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
    words = tl.load(
        bitmask_ptr + row * bitmask_stride_row + word_idx * bitmask_stride_word,
        mask=word_idx < n_words,
        other=0,
    )
    bit_idx = tl.arange(0, 32)
    allowed = ((words[:, None] >> bit_idx[None, :]) & 1) != 0
    col = word_idx[:, None].to(tl.int64) * 32 + bit_idx[None, :]
    forbidden = (col < width) & (~allowed)
    neg_inf = tl.full([BLOCK_WORDS, 32], float("-inf"), logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * logits_stride_row + col * logits_stride_col, neg_inf, mask=forbidden)


def _is_interpreted(fn: object) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - layout of older/newer triton
        return False
    return isinstance(fn, InterpretedFunction)


INTERPRETED: bool = _is_interpreted(_apply_token_bitmask_kernel)


def apply_token_bitmask_inplace_triton(
    logits: torch.Tensor, bitmask: torch.Tensor, indices: IndicesLike = None
) -> None:
    """Set ``logits[r, c] = -inf`` wherever token ``c`` is not allowed by bitmask row ``r``, in place."""
    call = prepare(logits, bitmask, indices)
    if call.logits.device.type == "cpu" and not INTERPRETED:
        raise KernelUsageError(
            "the triton backend needs GPU tensors; for CPU tensors use backend='cpu' (numba) or 'torch', "
            "or set TRITON_INTERPRET=1 before importing constrain.kernels to run Triton's interpreter"
        )
    if call.is_noop:
        return
    out, bits = call.logits, call.bitmask
    width, n_words = out.shape[1], bits.shape[1]
    rows = call.rows
    has_indices = rows is not None
    grid = (call.n_rows, triton.cdiv(triton.cdiv(width, 32), BLOCK_WORDS))
    _apply_token_bitmask_kernel[grid](
        out.detach(),
        bits,
        rows if rows is not None else bits,  # unused when HAS_INDICES is False
        width,
        n_words,
        out.stride(0),
        out.stride(1),
        bits.stride(0),
        bits.stride(1),
        HAS_INDICES=has_indices,
        BLOCK_WORDS=BLOCK_WORDS,
        num_warps=NUM_WARPS,
    )
