"""The shared token-bitmask format and helpers to allocate, reset, pack and unpack it.

Format (the same as XGrammar, llguidance and outlines-core): an ``int32`` tensor of shape
``(batch, ceil(vocab_size / 32))``. Bit ``i`` (least significant first) of word ``j`` allows token
``32 * j + i``; a set bit allows the token, a clear bit forbids it. A word of ``-1`` (all 32 bits set)
allows its 32 tokens. The bits of ids ``vocab_size .. 32 * ceil(vocab_size / 32) - 1`` exist only as
padding: the matcher always clears them, and :func:`bool_to_bitmask` packs them as 0.
"""

from __future__ import annotations

import torch

from constrain.exceptions import KernelUsageError

__all__ = [
    "allocate_token_bitmask",
    "bitmask_to_bool",
    "bool_to_bitmask",
    "get_bitmask_shape",
    "reset_token_bitmask",
]

BITS_PER_WORD = 32


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KernelUsageError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise KernelUsageError(f"{name} must be >= {minimum}, got {value}")
    return value


def get_bitmask_shape(batch_size: int, vocab_size: int) -> tuple[int, int]:
    """The shape ``(batch_size, ceil(vocab_size / 32))`` of a bitmask for ``batch_size`` sequences."""
    _check_count("batch_size", batch_size, 0)
    _check_count("vocab_size", vocab_size, 1)
    return batch_size, (vocab_size + BITS_PER_WORD - 1) // BITS_PER_WORD


def allocate_token_bitmask(batch_size: int, vocab_size: int, *, pin_memory: bool = False) -> torch.Tensor:
    """A new CPU ``int32`` bitmask of shape :func:`get_bitmask_shape`, every bit set (all tokens allowed).

    ``pin_memory=True`` pins the host memory (faster, asynchronous copies to the GPU) when CUDA is
    available; without CUDA it is ignored, since pinning needs a CUDA runtime.
    """
    shape = get_bitmask_shape(batch_size, vocab_size)
    pin = bool(pin_memory) and torch.cuda.is_available()
    return torch.full(shape, -1, dtype=torch.int32, pin_memory=pin)


def reset_token_bitmask(bitmask: torch.Tensor) -> None:
    """Set every bit of ``bitmask`` in place (allow all tokens again)."""
    if not isinstance(bitmask, torch.Tensor) or bitmask.dtype != torch.int32:
        raise KernelUsageError("bitmask must be an int32 torch.Tensor; use allocate_token_bitmask(...)")
    bitmask.fill_(-1)


def _bit_positions(device: torch.device) -> torch.Tensor:
    return torch.arange(BITS_PER_WORD, dtype=torch.int32, device=device)


def bitmask_to_bool(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Unpack ``bitmask`` (``int32[..., n_words]``) to a bool tensor ``[..., vocab_size]``: True = allowed.

    ``vocab_size`` may be smaller than ``32 * n_words`` (the padding bits are dropped) or larger (the
    ids past ``32 * n_words`` are not covered by the bitmask and come out False, i.e. forbidden: the same
    rule the apply kernels use for logits wider than the bitmask).
    """
    if not isinstance(bitmask, torch.Tensor) or bitmask.dtype != torch.int32:
        raise KernelUsageError("bitmask must be an int32 torch.Tensor; use allocate_token_bitmask(...)")
    if bitmask.dim() < 1:
        raise KernelUsageError("bitmask must have at least one dimension (..., n_words)")
    _check_count("vocab_size", vocab_size, 0)
    n_words = bitmask.shape[-1]
    # Arithmetic right shift of a negative int32 still leaves the wanted bit in position 0.
    bits = (bitmask.unsqueeze(-1) >> _bit_positions(bitmask.device)) & 1
    allowed = bits.to(torch.bool).reshape(*bitmask.shape[:-1], n_words * BITS_PER_WORD)
    covered = n_words * BITS_PER_WORD
    if vocab_size <= covered:
        return allowed[..., :vocab_size].contiguous()
    out = torch.zeros(*bitmask.shape[:-1], vocab_size, dtype=torch.bool, device=bitmask.device)
    out[..., :covered] = allowed
    return out


def bool_to_bitmask(allowed: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor ``[..., vocab_size]`` (True = allowed) into an ``int32[..., ceil(vocab_size/32)]``
    bitmask on the same device. Padding bits past ``vocab_size`` are 0 (forbidden)."""
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise KernelUsageError("bool_to_bitmask expects a torch.bool tensor of shape [..., vocab_size]")
    if allowed.dim() < 1:
        raise KernelUsageError("bool_to_bitmask expects at least one dimension [..., vocab_size]")
    vocab_size = allowed.shape[-1]
    n_words = (vocab_size + BITS_PER_WORD - 1) // BITS_PER_WORD
    pad = n_words * BITS_PER_WORD - vocab_size
    if pad:
        filler = torch.zeros(*allowed.shape[:-1], pad, dtype=torch.bool, device=allowed.device)
        allowed = torch.cat([allowed, filler], dim=-1)
    grouped = allowed.reshape(*allowed.shape[:-1], n_words, BITS_PER_WORD).to(torch.int64)
    weights = torch.pow(2, torch.arange(BITS_PER_WORD, dtype=torch.int64, device=allowed.device))
    words = (grouped * weights).sum(dim=-1)  # in [0, 2**32): unsigned value of each word
    # Reinterpret as two's-complement int32 explicitly rather than relying on a wrapping cast.
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)
