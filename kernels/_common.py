"""Argument checking shared by every ``apply_token_bitmask_inplace`` backend.

Semantics (all backends):

* ``logits`` is ``(batch, width)`` or ``(width,)`` (one row), float16 / bfloat16 / float32 / float64,
  any strides (no two elements may share memory).
* ``bitmask`` is ``int32`` ``(batch_b, n_words)`` or ``(n_words,)`` (one row), on the logits' device.
* ``indices is None``: ``batch == batch_b`` and every row is masked; logits row ``i`` uses bitmask
  row ``i``.
* ``indices`` given (XGrammar's convention): only logits rows ``indices[k]`` are masked, each with
  bitmask row ``indices[k]`` (the same number); other rows are left untouched. Every index must lie in
  ``[0, min(batch, batch_b))``. Order does not matter and repeats are allowed.
* Column ``c < 32 * n_words`` keeps its logit when bit ``c % 32`` of word ``c // 32`` is set and becomes
  ``-inf`` otherwise; columns ``c >= 32 * n_words`` (logits wider than the bitmask) always become
  ``-inf``. Ids between the vocabulary size ``V`` and ``32 * n_words`` follow their bits like any other,
  so they are masked only if those padding bits are 0, which the matcher (and ``bool_to_bitmask``)
  guarantees. Bitmask words past the logits' width are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from constrain.exceptions import KernelUsageError

IndicesLike = Sequence[int] | torch.Tensor | None

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class MaskCall:
    """A checked call: 2-D views of the caller's tensors and the rows to mask."""

    logits: torch.Tensor  # (batch, width), a view of the caller's tensor (writes go through)
    bitmask: torch.Tensor  # (batch_b, n_words) int32
    rows: torch.Tensor | None  # int64, on logits.device, every entry in range; None means all rows

    @property
    def n_rows(self) -> int:
        return self.logits.shape[0] if self.rows is None else self.rows.numel()

    @property
    def is_noop(self) -> bool:
        return self.n_rows == 0 or self.logits.shape[1] == 0


def _check_no_self_overlap(logits: torch.Tensor) -> None:
    for size, stride in zip(logits.shape, logits.stride()):
        if size > 1 and stride == 0:
            raise KernelUsageError(
                "logits must not be an expanded/broadcast view (a stride of 0): its rows share memory, "
                "so masking one row would mask the others; pass logits.contiguous() and use the result"
            )


def _normalize_indices(indices: IndicesLike, device: torch.device, limit: int) -> torch.Tensor | None:
    if indices is None:
        return None
    if isinstance(indices, torch.Tensor):
        rows = indices
    else:
        try:
            rows = torch.as_tensor(indices)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise KernelUsageError(
                f"indices must be None, a sequence of ints or a 1-D integer tensor; got {indices!r}"
            ) from exc
        if rows.numel() == 0:
            rows = rows.to(torch.int64)
    if rows.dtype == torch.bool or rows.dtype.is_floating_point or rows.dtype.is_complex:
        raise KernelUsageError(f"indices must hold integers (row numbers), got dtype {rows.dtype}")
    if rows.dim() != 1:
        raise KernelUsageError(f"indices must be 1-D (a list of row numbers), got shape {tuple(rows.shape)}")
    if rows.numel():
        # (On an accelerator this reads two numbers back: a device sync. Pass a list to avoid it.)
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= limit:
            raise KernelUsageError(
                f"indices must lie in [0, {limit}) (the logits and the bitmask both need that row), "
                f"got values in [{lo}, {hi}]; negative indices are not supported"
            )
    return rows.to(device=device, dtype=torch.int64)


def prepare(logits: torch.Tensor, bitmask: torch.Tensor, indices: IndicesLike = None) -> MaskCall:
    """Check the arguments of an ``apply_token_bitmask_inplace`` call and bring them to 2-D."""
    if not isinstance(logits, torch.Tensor):
        raise KernelUsageError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not isinstance(bitmask, torch.Tensor):
        raise KernelUsageError(
            f"bitmask must be a torch.Tensor, got {type(bitmask).__name__}; use allocate_token_bitmask(...)"
        )
    if logits.dtype not in FLOAT_DTYPES:
        raise KernelUsageError(
            f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}; "
            "cast them first (e.g. logits.float())"
        )
    if bitmask.dtype != torch.int32:
        raise KernelUsageError(
            f"bitmask must be int32, got {bitmask.dtype}; use allocate_token_bitmask(batch, vocab_size) "
            "or bool_to_bitmask(...), or convert with bitmask.to(torch.int32)"
        )
    if logits.device != bitmask.device:
        raise KernelUsageError(
            f"logits ({logits.device}) and bitmask ({bitmask.device}) must be on the same device; "
            f"move the bitmask with bitmask.to({str(logits.device)!r}, non_blocking=True)"
        )
    if logits.dim() not in (1, 2):
        raise KernelUsageError(f"logits must be (batch, width) or (width,), got shape {tuple(logits.shape)}")
    if bitmask.dim() not in (1, 2):
        raise KernelUsageError(
            f"bitmask must be (batch, ceil(vocab_size/32)) or (ceil(vocab_size/32),), "
            f"got shape {tuple(bitmask.shape)}"
        )
    logits2d = logits if logits.dim() == 2 else logits.unsqueeze(0)
    bitmask2d = bitmask if bitmask.dim() == 2 else bitmask.unsqueeze(0)
    _check_no_self_overlap(logits2d)
    if indices is None and logits2d.shape[0] != bitmask2d.shape[0]:
        raise KernelUsageError(
            f"logits batch ({logits2d.shape[0]}) and bitmask batch ({bitmask2d.shape[0]}) differ; "
            "pass indices=[...] to mask only some rows, or allocate the bitmask with the logits' batch size"
        )
    limit = min(logits2d.shape[0], bitmask2d.shape[0])
    rows = _normalize_indices(indices, logits.device, limit)
    return MaskCall(logits=logits2d, bitmask=bitmask2d, rows=rows)


def rows_or_all(call: MaskCall) -> torch.Tensor:
    """The rows to mask as an int64 tensor on the logits' device (all rows when ``indices`` was None)."""
    if call.rows is not None:
        return call.rows
    return torch.arange(call.logits.shape[0], dtype=torch.int64, device=call.logits.device)
