"""Benchmark apply_token_bitmask_inplace: every available backend, V=128256, several batch sizes.

    python bench/bench_kernels.py [--json OUT] [--dtype float32] [--batches 1,8,64,512,4096]

It first checks every backend against the torch reference (exit status 1 on a mismatch), then times
each backend on each device it can run on:

* CPU: ``torch`` (the reference) and ``cpu`` (numba), plus ``xgrammar`` if importable; batch sizes are
  capped at ``--max-cpu-batch`` (default 512) to keep the run short. Timed with
  ``time.perf_counter_ns`` around each call, after warm-up calls.
* CUDA (when available): ``torch``, ``triton`` and ``xgrammar`` (``xgrammar.apply_token_bitmask_inplace``
  if importable), timed with a pair of ``torch.cuda.Event`` per call.

Masking is idempotent (a logit that is -inf stays -inf), so one logits tensor is reused across calls.
Two bitmask patterns: ``random`` (every bit a coin flip: the worst case for bit loops) and ``sparse``
(about 1% of the words allow anything, the rest forbid all: what a JSON grammar typically produces).

For each result the script reports the median and p99 latency in microseconds, the speed-up over the
torch reference on the same device, and the ratio to a memory-bandwidth floor:
``floor = (bitmask bytes + logits bytes) / bandwidth``, where each logit is assumed touched once and the
bandwidth is measured by a plain device copy (``dst.copy_(src)``: bytes read + bytes written / time).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from constrain.kernels import apply_token_bitmask_inplace, available_backends, bitmask_to_bool

VOCAB = 128256
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_bitmask(batch: int, vocab: int, pattern: str, gen: torch.Generator) -> torch.Tensor:
    n_words = (vocab + 31) // 32
    if pattern == "random":
        return torch.randint(-(2**31), 2**31, (batch, n_words), generator=gen, dtype=torch.int64).to(
            torch.int32
        )
    if pattern == "sparse":
        words = torch.zeros(batch, n_words, dtype=torch.int32)
        allow = torch.rand(batch, n_words, generator=gen) < 0.01
        return words.masked_fill_(allow, -1)
    raise ValueError(pattern)


def backend_fns(device: str) -> dict[str, Callable[..., None]]:
    """name -> fn(logits, bitmask) for every backend that can run on ``device``."""
    fns: dict[str, Callable[..., None]] = {}
    installed = available_backends()
    fns["torch"] = lambda lg, bm: apply_token_bitmask_inplace(lg, bm, backend="torch")
    if device == "cpu" and "cpu" in installed:
        fns["cpu"] = lambda lg, bm: apply_token_bitmask_inplace(lg, bm, backend="cpu")
    if device == "cuda" and "triton" in installed:
        fns["triton"] = lambda lg, bm: apply_token_bitmask_inplace(lg, bm, backend="triton")
    if importlib.util.find_spec("xgrammar") is not None:
        try:
            import xgrammar

            fns["xgrammar"] = lambda lg, bm: xgrammar.apply_token_bitmask_inplace(lg, bm)
        except Exception as exc:  # noqa: BLE001 - a broken optional peer must not stop the benchmark
            print(f"  (xgrammar not usable: {exc!r})")
    return fns


def check_correctness(device: str, fns: dict[str, Callable[..., None]], dtype: torch.dtype) -> dict[str, str]:
    """Compare every backend with the unpacked bitmask; returns name -> 'ok' or the failure."""
    gen = torch.Generator().manual_seed(0)
    status: dict[str, str] = {}
    for pattern in ("random", "sparse"):
        bitmask = make_bitmask(4, VOCAB, pattern, gen)
        logits = torch.randn(4, VOCAB, generator=gen).to(dtype)
        expected = torch.where(bitmask_to_bool(bitmask, VOCAB), logits, float("-inf"))
        for name, fn in fns.items():
            out = logits.to(device)
            try:
                fn(out, bitmask.to(device))
                ok = torch.equal(out.cpu(), expected)
                result = "ok" if ok else f"MISMATCH ({pattern} mask)"
            except Exception as exc:  # noqa: BLE001 - report, keep going with the others
                result = f"error: {exc!r}"
            if status.get(name, "ok") == "ok":
                status[name] = result
    return status


def time_calls(fn: Callable[[], object], budget_s: float, device: str) -> list[float]:
    """Microseconds per call of ``fn``, after warm-up calls, for about ``budget_s`` seconds.

    CPU: ``time.perf_counter_ns`` around each call, 5 to 2000 calls. CUDA: a pair of ``torch.cuda.Event``
    per call, 10 to 2000 calls (the count set from one synchronised call).
    """
    cuda = device == "cuda"
    min_reps, max_reps = (10, 2000) if cuda else (5, 2000)
    for _ in range(10 if cuda else 3):
        fn()
    if not cuda:
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() < deadline):
            t0 = time.perf_counter_ns()
            fn()
            times.append((time.perf_counter_ns() - t0) / 1e3)
        return times
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(min_reps, budget_s / one)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]


def measure_bandwidth(device: str) -> float:
    """Bytes per second of a plain copy (read + write) of a 256 MiB (CUDA) / 64 MiB (CPU) buffer."""
    n_bytes = (256 if device == "cuda" else 64) * 2**20
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), 0.5, device)
    return 2 * n_bytes / (statistics.median(times) * 1e-6)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batches", default="1,8,64,512,4096")
    parser.add_argument("--max-cpu-batch", type=int, default=512)
    parser.add_argument("--patterns", default="random,sparse")
    parser.add_argument("--budget-s", type=float, default=0.4, help="timing budget per configuration")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU torch ops); default: torch's")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    batches = [int(b) for b in args.batches.split(",")]
    patterns = args.patterns.split(",")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    report: dict[str, Any] = {
        "vocab": VOCAB,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "devices": {},
        "results": [],
    }
    failed = False
    gen = torch.Generator().manual_seed(1)
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(f"== {device} ({name})")
        fns = backend_fns(device)
        status = check_correctness(device, fns, dtype)
        for backend, result in status.items():
            print(f"  correctness {backend:9s} {result}")
        failed |= any(r != "ok" for r in status.values())
        fns = {k: v for k, v in fns.items() if status[k] == "ok"}
        bandwidth = measure_bandwidth(device)
        report["devices"][device] = {
            "name": name,
            "copy_bandwidth_GBps": bandwidth / 1e9,
            "correctness": status,
        }
        print(f"  copy bandwidth {bandwidth / 1e9:.1f} GB/s")
        header = f"  {'mask':7s} {'batch':>5s} {'backend':9s} {'median us':>11s} {'p99 us':>11s}"
        print(header + f" {'vs torch':>9s} {'floor us':>10s} {'x floor':>8s}")
        for pattern in patterns:
            for batch in batches:
                if device == "cpu" and batch > args.max_cpu_batch:
                    continue
                bitmask = make_bitmask(batch, VOCAB, pattern, gen).to(device)
                logits = torch.randn(batch, VOCAB, generator=gen).to(dtype).to(device)
                floor_us = (bitmask.numel() * 4 + logits.numel() * logits.element_size()) / bandwidth * 1e6
                medians: dict[str, float] = {}
                for backend, fn in fns.items():
                    times = time_calls(functools.partial(fn, logits, bitmask), args.budget_s, device)
                    med, p99 = statistics.median(times), percentile(times, 0.99)
                    medians[backend] = med
                    speedup = medians["torch"] / med if "torch" in medians else float("nan")
                    row = {
                        "device": device,
                        "mask": pattern,
                        "batch": batch,
                        "backend": backend,
                        "median_us": med,
                        "p99_us": p99,
                        "reps": len(times),
                        "speedup_vs_torch": speedup,
                        "floor_us": floor_us,
                        "ratio_to_floor": med / floor_us,
                    }
                    report["results"].append(row)
                    print(
                        f"  {pattern:7s} {batch:5d} {backend:9s} {med:11.1f} {p99:11.1f} {speedup:8.2f}x"
                        f" {floor_us:10.1f} {med / floor_us:7.1f}x"
                    )
                del logits, bitmask
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
