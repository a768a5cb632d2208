"""Tests for constrain.kernels: the bitmask helpers and every apply_token_bitmask_inplace backend.

The torch reference is checked against a pure-python, bit-by-bit oracle in float64; every other backend
is checked for exact equality with the reference (the whole underlying storage is compared, so writes
outside a non-contiguous view are caught too).

Triton runs on CPU only through its interpreter, which must be switched on (TRITON_INTERPRET=1) before
triton is imported. So, without a GPU, ``test_triton_backend_interpreted_on_cpu`` reruns this file in a
child pytest with TRITON_INTERPRET=1; there the ``test_triton_*`` tests are defined and run the real
kernel on CPU tensors. With a GPU (or TRITON_INTERPRET=1 already set) they run in this process instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain.exceptions import ConstrainError, KernelUsageError
from constrain.kernels import (
    allocate_token_bitmask,
    apply_token_bitmask_inplace,
    bitmask_to_bool,
    bool_to_bitmask,
    get_bitmask_shape,
    reset_token_bitmask,
)
from constrain.kernels.apply_token_bitmask_inplace_cpu import apply_token_bitmask_inplace_cpu
from constrain.kernels.apply_token_bitmask_inplace_torch import apply_token_bitmask_inplace_torch

ApplyFn = Callable[..., None]

ALL_VOCABS = list(range(32001, 32033))  # every residue of V mod 32
TRITON_VOCABS = [32001, 32016, 32017, 32031, 32032]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
NEG_INF = float("-inf")

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
TRITON_IN_PROCESS = HAS_TRITON and (HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1")
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread() -> Iterator[None]:
    """The tensors here are small: torch's intra-op threads only add overhead, and on a busy machine
    (other processes on the cores) they make every op wait for a descheduled thread, ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def n_words(vocab: int) -> int:
    return (vocab + 31) // 32


def widths_for(vocab: int) -> list[int]:
    """Logits as wide as the vocabulary, and wider (by 1, by 37, past the bitmask's padding)."""
    return [vocab, vocab + 1, vocab + 37, 32 * n_words(vocab) + 64]


def make_bitmask(batch: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Random bitmask: row 0 allows everything, row 1 nothing, other rows mix all-0, all-1 and random words.

    The padding bits (ids >= vocab) are random too: the kernels must follow them like any other bit.
    """
    nw = n_words(vocab)
    rand = torch.randint(-(2**31), 2**31, (batch, nw), generator=gen, dtype=torch.int64).to(torch.int32)
    kind = torch.randint(0, 3, (batch, nw), generator=gen)
    words = torch.where(
        kind == 0, torch.zeros_like(rand), torch.where(kind == 1, -torch.ones_like(rand), rand)
    )
    if batch > 1:
        words[0] = -1
        words[1] = 0
    return words


def make_logits_base(shape: Sequence[int], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)


# A layout builds a base tensor and a function taking the base to the logits view handed to the kernel.
Layout = Callable[
    [int, int, torch.dtype, torch.Generator], tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
]


def layout_contiguous(batch: int, width: int, dtype: torch.dtype, gen: torch.Generator):  # type: ignore[no-untyped-def]
    return make_logits_base((batch, width), dtype, gen), lambda t: t


def layout_1d(batch: int, width: int, dtype: torch.dtype, gen: torch.Generator):  # type: ignore[no-untyped-def]
    assert batch == 1
    return make_logits_base((width,), dtype, gen), lambda t: t


def layout_column_slice(batch: int, width: int, dtype: torch.dtype, gen: torch.Generator):  # type: ignore[no-untyped-def]
    return make_logits_base((batch, width + 45), dtype, gen), lambda t: t[:, 13 : 13 + width]


def layout_transposed(batch: int, width: int, dtype: torch.dtype, gen: torch.Generator):  # type: ignore[no-untyped-def]
    return make_logits_base((width, batch), dtype, gen), lambda t: t.t()


def layout_row_stride(batch: int, width: int, dtype: torch.dtype, gen: torch.Generator):  # type: ignore[no-untyped-def]
    return make_logits_base((2 * batch, width), dtype, gen), lambda t: t[::2]


LAYOUTS: dict[str, Layout] = {
    "contiguous": layout_contiguous,
    "1d": layout_1d,
    "colslice": layout_column_slice,
    "transposed": layout_transposed,
    "rowstride": layout_row_stride,
}

# (batch, layout, indices) cases run for every (vocab, width, dtype).
CASES: list[tuple[int, str, object]] = [
    (1, "contiguous", None),
    (1, "1d", None),
    (1, "colslice", [0]),
    (5, "contiguous", None),
    (5, "contiguous", [0, 2, 4]),
    (5, "colslice", None),
    (5, "colslice", torch.tensor([4, 1, 3])),  # unordered, as a tensor
    (5, "transposed", None),
    (5, "transposed", [3, 0]),
    (5, "rowstride", [2, 2, 1]),  # repeated index
    (5, "contiguous", []),  # empty: nothing changes
]

TRITON_CASES: list[tuple[int, str, object]] = [
    (1, "1d", None),
    (5, "contiguous", None),
    (5, "colslice", torch.tensor([4, 1, 3])),
    (5, "transposed", [0, 2]),
    (5, "rowstride", None),
    (5, "contiguous", []),
]


def rotating(cases: list[tuple[int, str, object]], start: int, k: int) -> list[tuple[int, str, object]]:
    """``k`` consecutive cases from ``start`` (cyclically): the sweeps rotate through the cases so that,
    over all vocab sizes, every case meets every width and dtype without running the full product."""
    return [cases[(start + i) % len(cases)] for i in range(k)]


def check_against_reference(
    apply_fn: ApplyFn,
    vocab: int,
    width: int,
    dtype: torch.dtype,
    batch: int,
    layout: str,
    indices: object,
    gen: torch.Generator,
    device: str = "cpu",
) -> None:
    base, view = LAYOUTS[layout](batch, width, dtype, gen)
    bitmask = make_bitmask(batch, vocab, gen)
    if layout == "1d":
        bitmask = bitmask[0]  # 1-D logits with a 1-D bitmask
    expected = base.clone()
    apply_token_bitmask_inplace_torch(view(expected), bitmask, indices)
    got = base.clone().to(device)
    dev_indices = indices.to(device) if isinstance(indices, torch.Tensor) else indices
    apply_fn(view(got), bitmask.to(device), dev_indices)
    got = got.cpu()
    if not torch.equal(got, expected):
        diff = (got != expected).nonzero()[:5].tolist()
        raise AssertionError(
            f"{apply_fn.__name__} differs from the reference: V={vocab} width={width} {dtype} batch={batch} "
            f"layout={layout} indices={indices!r}; first differing (base) positions {diff}"
        )
    if indices is not None and len(indices) == 0:  # type: ignore[arg-type]
        assert torch.equal(got, base)


# --------------------------------------------------------------------------------------------------
# The reference against a pure-python oracle
# --------------------------------------------------------------------------------------------------


def oracle_allowed(words: list[int], width: int) -> list[bool]:
    """Bit by bit, in plain python: column c is allowed iff it is covered by a word and its bit is set."""
    covered = 32 * len(words)
    return [c < covered and (words[c // 32] >> (c % 32)) & 1 == 1 for c in range(width)]


def oracle_apply(logits: torch.Tensor, allowed_rows: dict[int, list[bool]]) -> torch.Tensor:
    """The expected result as float64 rows (logits is 2-D here); ``allowed_rows``: row -> oracle_allowed."""
    values = logits.double().tolist()
    for r, allowed in allowed_rows.items():
        values[r] = [v if ok else NEG_INF for v, ok in zip(values[r], allowed)]
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("vocab", ALL_VOCABS)
def test_reference_matches_python_oracle(vocab: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    layouts = ["contiguous", "colslice", "transposed", "rowstride"]
    for i, width in enumerate(widths_for(vocab)):
        bitmask = make_bitmask(4, vocab, gen)
        indices = None if i % 2 == 0 else [3, 1]
        layout = layouts[(vocab + i) % len(layouts)]
        words = bitmask.tolist()
        rows = range(4) if indices is None else indices
        allowed_rows = {r: oracle_allowed(words[r], width) for r in rows}
        for dtype in (torch.float64, torch.bfloat16):
            base, view = LAYOUTS[layout](4, width, dtype, gen)
            expected = oracle_apply(view(base), allowed_rows)
            out = base.clone()
            apply_token_bitmask_inplace_torch(view(out), bitmask, indices)
            assert torch.equal(view(out).double(), expected), (vocab, width, dtype, layout)


def test_reference_rule_for_padding_and_wide_columns() -> None:
    # V = 40: 2 words; ids 40..63 are padding (they follow their bits); ids >= 64 are always -inf.
    bitmask = torch.tensor([[-1, -1]], dtype=torch.int32)
    logits = torch.zeros(1, 70)
    apply_token_bitmask_inplace_torch(logits, bitmask)
    assert torch.isfinite(logits[0, :64]).all() and torch.isneginf(logits[0, 64:]).all()
    logits = torch.zeros(1, 70)
    apply_token_bitmask_inplace_torch(logits, bool_to_bitmask(torch.ones(1, 40, dtype=torch.bool)))
    assert torch.isfinite(logits[0, :40]).all() and torch.isneginf(logits[0, 40:]).all()
    # Logits narrower than the bitmask: the extra words are ignored.
    logits = torch.zeros(1, 10)
    apply_token_bitmask_inplace_torch(logits, torch.tensor([[0b101, 0]], dtype=torch.int32))
    assert torch.isneginf(logits[0]).tolist() == [c not in (0, 2) for c in range(10)]


# --------------------------------------------------------------------------------------------------
# numba CPU backend (and the dispatcher) against the reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("vocab", ALL_VOCABS)
def test_cpu_backend_matches_reference(vocab: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(vocab * 7 + DTYPES.index(dtype))
    for width in widths_for(vocab):
        for batch, layout, indices in CASES:
            check_against_reference(
                apply_token_bitmask_inplace_cpu, vocab, width, dtype, batch, layout, indices, gen
            )


def test_cpu_backend_float64_and_dispatcher_default() -> None:
    gen = torch.Generator().manual_seed(0)
    for batch, layout, indices in CASES:
        check_against_reference(
            apply_token_bitmask_inplace_cpu, 32003, 32100, torch.float64, batch, layout, indices, gen
        )
        check_against_reference(
            apply_token_bitmask_inplace, 32003, 32100, torch.float32, batch, layout, indices, gen
        )


@settings(max_examples=150, deadline=None)
@given(
    vocab=st.integers(1, 200),
    extra=st.integers(-40, 80),
    batch=st.integers(1, 4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    layout=st.sampled_from(["contiguous", "colslice", "transposed", "rowstride"]),
    data=st.data(),
)
def test_cpu_backend_random_shapes(
    vocab: int, extra: int, batch: int, dtype: torch.dtype, layout: str, data: st.DataObject
) -> None:
    width = max(1, vocab + extra)
    indices = data.draw(st.none() | st.lists(st.integers(0, batch - 1), max_size=6))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    check_against_reference(apply_token_bitmask_inplace_cpu, vocab, width, dtype, batch, layout, indices, gen)


def test_cpu_backend_fp16_bf16_write_true_negative_infinity() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.ones(1, 64, dtype=dtype)
        apply_token_bitmask_inplace_cpu(logits, torch.tensor([[0x0000FFFF, 0]], dtype=torch.int32))
        assert torch.isneginf(logits[0, 16:]).all() and (logits[0, :16] == 1).all()
        assert logits.dtype == dtype


def test_cpu_backend_rejects_non_cpu_tensors() -> None:
    logits = torch.empty(1, 64, device="meta")
    with pytest.raises(KernelUsageError, match="CPU tensors"):
        apply_token_bitmask_inplace_cpu(logits, torch.empty(1, 2, dtype=torch.int32, device="meta"))


# --------------------------------------------------------------------------------------------------
# Dispatcher and argument checking
# --------------------------------------------------------------------------------------------------


def test_dispatcher_picks_backends_and_does_not_import_triton() -> None:
    code = (
        "import sys, torch\n"
        "import constrain.kernels as K\n"
        "assert K._pick_backend(torch.empty(1)) == 'cpu'\n"
        "assert K._pick_backend(torch.empty(1, device='meta')) == 'torch'\n"
        "x = torch.zeros(2, 40)\n"
        "K.apply_token_bitmask_inplace(x, K.bool_to_bitmask(torch.rand(2, 40) > 0.5))\n"
        "K.apply_token_bitmask_inplace(x, K.allocate_token_bitmask(2, 40), backend='torch')\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "assert set(K._loaded) == {'cpu', 'torch'}, K._loaded\n"
        # (after the check: torch's own meta-device kernels import triton)
        "m = torch.empty(2, 40, device='meta')\n"
        "K.apply_token_bitmask_inplace(m, torch.empty(2, 2, dtype=torch.int32, device='meta'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_forced_backends_agree() -> None:
    gen = torch.Generator().manual_seed(1)
    bitmask = make_bitmask(3, 1000, gen)
    logits = make_logits_base((3, 1040), torch.float32, gen)
    results = []
    for backend in ("torch", "cpu"):
        out = logits.clone()
        apply_token_bitmask_inplace(out, bitmask, [2, 0], backend=backend)
        results.append(out)
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0][1], logits[1])  # row 1 not listed: untouched


def _bad_call(logits: torch.Tensor, bitmask: torch.Tensor, indices: object = None, **kw: object) -> None:
    apply_token_bitmask_inplace(logits, bitmask, indices, **kw)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize(
    ("logits", "bitmask", "indices", "match"),
    [
        (
            torch.zeros(2, 64),
            torch.zeros(2, 2, dtype=torch.int64),
            None,
            "bitmask must be int32.*allocate_token_bitmask",
        ),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.uint8), None, "must be int32"),
        (
            torch.zeros(2, 64, dtype=torch.int32),
            torch.zeros(2, 2, dtype=torch.int32),
            None,
            "logits must be float",
        ),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32, device="meta"), None, "same device"),
        (torch.zeros(2, 2, 64), torch.zeros(2, 2, dtype=torch.int32), None, "logits must be"),
        (torch.zeros(2, 64), torch.zeros(2, 2, 2, dtype=torch.int32), None, "bitmask must be"),
        (torch.zeros(3, 64), torch.zeros(2, 2, dtype=torch.int32), None, "batch.*indices"),
        (torch.zeros(3, 64), torch.zeros(2, 2, dtype=torch.int32), [2], r"\[0, 2\)"),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32), [-1], "negative"),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32), [0.5], "integers"),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32), [[0]], "1-D"),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32), torch.tensor([True, False]), "integers"),
        (torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int32), "ab", "indices must be"),
        (torch.zeros(1, 64).expand(2, 64), torch.zeros(2, 2, dtype=torch.int32), None, "expanded"),
        ([[0.0]], torch.zeros(1, 1, dtype=torch.int32), None, "torch.Tensor"),
    ],
)
def test_bad_arguments_raise_typed_errors(
    backend: str, logits: torch.Tensor, bitmask: torch.Tensor, indices: object, match: str
) -> None:
    with pytest.raises(KernelUsageError, match=match) as info:
        _bad_call(logits, bitmask, indices, backend=backend)
    assert isinstance(info.value, ConstrainError) and isinstance(info.value, ValueError)


def test_unknown_backend_and_cpu_backend_on_other_devices() -> None:
    with pytest.raises(KernelUsageError, match="unknown backend"):
        _bad_call(torch.zeros(1, 32), torch.zeros(1, 1, dtype=torch.int32), backend="cuda")
    with pytest.raises(KernelUsageError, match="CPU tensors"):
        _bad_call(
            torch.empty(1, 32, device="meta"),
            torch.empty(1, 1, dtype=torch.int32, device="meta"),
            backend="cpu",
        )


def test_indices_do_not_touch_other_rows_and_accept_many_forms() -> None:
    gen = torch.Generator().manual_seed(2)
    bitmask = make_bitmask(6, 300, gen)
    logits = make_logits_base((4, 310), torch.float32, gen)  # bitmask has more rows than the logits
    for indices in ([1, 3], (3, 1), range(1, 4, 2), torch.tensor([3, 1], dtype=torch.int32)):
        for backend in ("torch", "cpu"):
            out = logits.clone()
            apply_token_bitmask_inplace(out, bitmask, indices, backend=backend)
            assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
            exp = logits.clone()
            exp[[1, 3]] = torch.where(bitmask_to_bool(bitmask[[1, 3]], 310), exp[[1, 3]], NEG_INF)
            assert torch.equal(out, exp)


def test_zero_width_and_empty_batch_are_noops() -> None:
    for backend in ("torch", "cpu"):
        apply_token_bitmask_inplace(torch.zeros(0, 64), torch.zeros(0, 2, dtype=torch.int32), backend=backend)
        apply_token_bitmask_inplace(torch.zeros(2, 0), torch.zeros(2, 2, dtype=torch.int32), backend=backend)


def test_requires_grad_logits_are_masked() -> None:
    logits = torch.zeros(1, 64, requires_grad=True)
    with torch.no_grad():
        apply_token_bitmask_inplace(logits, torch.tensor([[-1, 0]], dtype=torch.int32))
    assert torch.isneginf(logits[0, 32:]).all() and (logits[0, :32] == 0).all()


# --------------------------------------------------------------------------------------------------
# Bitmask helpers
# --------------------------------------------------------------------------------------------------


def test_allocate_and_reset() -> None:
    assert get_bitmask_shape(3, 32000) == (3, 1000)
    assert get_bitmask_shape(1, 32001) == (1, 1001)
    assert get_bitmask_shape(0, 1) == (0, 1)
    bm = allocate_token_bitmask(4, 128256)
    assert bm.dtype == torch.int32 and bm.shape == (4, 4008) and bm.device.type == "cpu"
    assert (bm == -1).all()
    assert allocate_token_bitmask(1, 33, pin_memory=True).shape == (1, 2)  # ignored without CUDA
    bm.zero_()
    reset_token_bitmask(bm)
    assert (bm == -1).all()
    for bad in ((-1, 10), (1, 0), (1.5, 10), (True, 10)):
        with pytest.raises(KernelUsageError):
            get_bitmask_shape(*bad)
    with pytest.raises(KernelUsageError, match="int32"):
        reset_token_bitmask(torch.zeros(2, dtype=torch.int64))


def test_bool_to_bitmask_known_words() -> None:
    allowed = torch.zeros(2, 40, dtype=torch.bool)
    allowed[0, 0] = allowed[0, 31] = allowed[0, 33] = True
    allowed[1, :32] = True
    words = bool_to_bitmask(allowed)
    assert words.dtype == torch.int32
    assert words.tolist() == [[1 - 2**31, 2], [-1, 0]]
    assert bool_to_bitmask(torch.ones(64, dtype=torch.bool)).tolist() == [-1, -1]
    unpacked = bitmask_to_bool(torch.tensor([-1], dtype=torch.int32), 40)
    assert unpacked.tolist() == [True] * 32 + [False] * 8  # past 32 * n_words: forbidden
    with pytest.raises(KernelUsageError):
        bool_to_bitmask(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(KernelUsageError):
        bitmask_to_bool(torch.zeros(3, dtype=torch.int64), 10)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 4).flatmap(
        lambda width: st.lists(
            st.lists(st.booleans(), min_size=width, max_size=width), min_size=1, max_size=3
        )
    )
    | st.lists(st.lists(st.booleans(), min_size=70, max_size=70), min_size=1, max_size=3),
    vocab_extra=st.integers(0, 200),
)
def test_bitmask_pack_unpack_round_trip(rows: list[list[bool]], vocab_extra: int) -> None:
    allowed = torch.tensor(rows, dtype=torch.bool)
    vocab = allowed.shape[1]
    words = bool_to_bitmask(allowed)
    assert words.shape == get_bitmask_shape(len(rows), vocab)
    assert torch.equal(bitmask_to_bool(words, vocab), allowed)
    assert torch.equal(bool_to_bitmask(bitmask_to_bool(words, vocab)), words)
    # Wider unpacking: padding bits are 0, uncovered columns are False.
    wide = bitmask_to_bool(words, vocab + vocab_extra)
    assert torch.equal(wide[:, :vocab], allowed) and not wide[:, vocab:].any()
    # Single-row form and agreement with the bit-by-bit oracle.
    assert torch.equal(bool_to_bitmask(allowed[0]), words[0])
    assert oracle_allowed(words[0].tolist(), vocab) == rows[0]


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=5))
def test_bitmask_unpack_pack_round_trip_from_words(words: list[int]) -> None:
    bitmask = torch.tensor(words, dtype=torch.int32)
    assert torch.equal(bool_to_bitmask(bitmask_to_bool(bitmask, 32 * len(words))), bitmask)


# --------------------------------------------------------------------------------------------------
# Triton backend
# --------------------------------------------------------------------------------------------------

if TRITON_IN_PROCESS:

    @pytest.fixture(scope="module")
    def triton_apply() -> ApplyFn:
        from constrain.kernels import apply_token_bitmask_inplace_triton as mod

        # Make sure the kernel really runs: compiled on a GPU, interpreted on CPU tensors.
        assert HAS_CUDA or mod.INTERPRETED, "TRITON_INTERPRET=1 was not in effect when triton was imported"
        return mod.apply_token_bitmask_inplace_triton

    @pytest.mark.parametrize("vocab", TRITON_VOCABS)
    def test_triton_kernel_matches_reference(triton_apply: ApplyFn, vocab: int) -> None:
        gen = torch.Generator().manual_seed(vocab)
        for i, width in enumerate(widths_for(vocab)):
            for j, dtype in enumerate(DTYPES):
                for batch, layout, indices in rotating(TRITON_CASES, vocab + 2 * i + 3 * j, 2):
                    check_against_reference(
                        triton_apply, vocab, width, dtype, batch, layout, indices, gen, device=KERNEL_DEVICE
                    )

    def test_triton_kernel_small_and_odd_shapes(triton_apply: ApplyFn) -> None:
        gen = torch.Generator().manual_seed(3)
        for vocab, width in ((1, 1), (1, 40), (33, 33), (64, 5000), (4097, 4100), (300, 9000)):
            for batch, layout, indices in (
                (2, "contiguous", None),
                (3, "transposed", [2, 0]),
                (1, "1d", None),
            ):
                check_against_reference(
                    triton_apply,
                    vocab,
                    width,
                    torch.float32,
                    batch,
                    layout,
                    indices,
                    gen,
                    device=KERNEL_DEVICE,
                )

    def test_triton_kernel_through_dispatcher(triton_apply: ApplyFn) -> None:
        gen = torch.Generator().manual_seed(4)
        for batch, layout, indices in TRITON_CASES:

            def forced(logits: torch.Tensor, bitmask: torch.Tensor, idx: object) -> None:
                apply_token_bitmask_inplace(logits, bitmask, idx, backend="triton")

            check_against_reference(
                forced, 32005, 32080, torch.bfloat16, batch, layout, indices, gen, device=KERNEL_DEVICE
            )

    def test_triton_kernel_rejects_bad_arguments(triton_apply: ApplyFn) -> None:
        with pytest.raises(KernelUsageError, match="int32"):
            triton_apply(torch.zeros(1, 64), torch.zeros(1, 2, dtype=torch.int64))
        with pytest.raises(KernelUsageError, match=r"\[0, 1\)"):
            triton_apply(torch.zeros(1, 64), torch.zeros(1, 2, dtype=torch.int32), [1])

elif HAS_TRITON:

    def test_triton_backend_interpreted_on_cpu() -> None:
        """Rerun this file's triton tests in a child process with TRITON_INTERPRET=1 (see module doc)."""
        repo = Path(__file__).resolve().parents[1]
        cmd = [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-p", "no:cacheprovider"]
        cmd += ["-k", "triton_kernel", "-rs"]
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        summary = out.strip().splitlines()[-1]
        n_tests = len(TRITON_VOCABS) + 3
        assert f"{n_tests} passed" in summary and "skipped" not in summary, summary

    def test_triton_backend_refuses_cpu_tensors_without_interpreter() -> None:
        code = (
            "import os, torch; os.environ.pop('TRITON_INTERPRET', None)\n"
            "from constrain.exceptions import KernelUsageError\n"
            "from constrain.kernels import apply_token_bitmask_inplace\n"
            "try:\n"
            "    bm = torch.zeros(1, 2, dtype=torch.int32)\n"
            "    apply_token_bitmask_inplace(torch.zeros(1, 64), bm, backend='triton')\n"
            "except KernelUsageError as e:\n"
            "    assert 'TRITON_INTERPRET' in str(e)\n"
            "else:\n"
            "    raise SystemExit('no error')\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
