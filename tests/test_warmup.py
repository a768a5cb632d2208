"""Loading numba's cached kernels ahead of use (``constrain.warmup.preload_kernels``)."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r"""
import json
from constrain.warmup import numba_kernels, preload_kernels
first = preload_kernels()
second = preload_kernels()
cached, loaded = [], []
for name, disp in numba_kernels().items():
    try:
        index = disp._cache._cache_file._load_index()
    except Exception:
        continue
    if index:
        cached.append(name)
        if disp.signatures:
            loaded.append(name)
print(json.dumps({"first": first, "second": second, "cached": cached, "loaded": loaded}))
"""


def test_every_module_with_kernels_is_preloaded() -> None:
    """``preload_kernels`` imports the modules it lists before loading their kernels: a module with a
    numba kernel missing from the list had its kernels loaded at their first call instead (the stack
    engine's tables: about 55 ms in the first recursive schema's compile)."""
    from pathlib import Path

    from constrain import warmup

    root = Path(warmup.__file__).parent
    with_kernels = {
        "constrain." + ".".join(p.relative_to(root).with_suffix("").parts)
        for p in root.rglob("*.py")
        if "numba.njit" in p.read_text() and p.name != "warmup.py"
    }
    assert with_kernels, "constrain's kernels are numba.njit functions"
    assert with_kernels <= set(warmup._KERNEL_MODULES), with_kernels - set(warmup._KERNEL_MODULES)


def test_preload_loads_every_cached_kernel_once() -> None:
    """In a new process, every kernel with an entry in numba's cache is loaded before its first call,
    and a second call does nothing. (After ``constrain warmup``, as setup runs it, that is every kernel
    the data path uses; in a checkout without a warm cache there may be none, and nothing to check.)"""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["second"] == 0
    assert got["first"] >= len(got["cached"])
    assert sorted(got["loaded"]) == sorted(got["cached"])


_NO_JIT_SCRIPT = r"""
import json
from numba.core import compiler
from constrain.warmup import preload_kernels
preload_kernels()
compiled = []
for name in ("compile_extra", "compile_ir"):
    def hook(*args, _orig=getattr(compiler, name), **kwargs):
        compiled.append(str(kwargs.get("func_ir", args[1] if len(args) > 1 else "?"))[:200])
        return _orig(*args, **kwargs)
    setattr(compiler, name, hook)
from constrain.automata.determinize import nfa_to_dfa
from constrain.automata.regex import RegexBuilder, regex_nfa
nfa, start, final = regex_nfa("[cd]*c[cd]{9}", 0, RegexBuilder)
dfa = nfa_to_dfa(nfa, start, final, "[cd]*c[cd]{9}")
print(json.dumps({"states": dfa.num_states, "compiled": compiled}))
"""


def test_preload_compiles_the_budget_checks() -> None:
    """After ``preload_kernels``, a subset construction of 1,024 subsets and its minimisation compile
    nothing: their budget checks are ``numba.objmode`` blocks, compiled in every process the first time
    they are reached (numba does not cache them), which cost about 90 ms in the first compile of a
    schema of a few hundred states before the preload reached them."""
    done = subprocess.run(
        [sys.executable, "-c", _NO_JIT_SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["states"] == 1024
    assert got["compiled"] == []


def test_walk_signatures_cover_read_only_and_writable_tables() -> None:
    """The warm-up calls the trie walks on a DFA's read-only transitions and on a writable split table,
    and a context-free byte step from Python: numba compiles one signature per kind, and a fill that
    met a missing one paid the JIT mid-decoding (273 ms in the MaskBench step bench)."""
    import constrain
    from constrain.cfg import fast_step
    from constrain.masks import walks
    from constrain.warmup import _walk_signatures

    info = constrain.TokenizerInfo.from_vocab([bytes([b]) for b in range(256)] + [b"ab", b""], eos_ids=257)
    _walk_signatures(constrain.compile(constrain.Grammar.from_regex("[a-c]{1,4}x"), info))
    _walk_signatures(constrain.compile(constrain.Grammar.from_lark('start: "a" start | "b"'), info))
    for kernel in (walks.walk_trie_long, walks.walk_trie_fast, walks.walk_trie_long_plain):
        kinds = {sig[0].mutable for sig in kernel.signatures}
        assert kinds == {True, False}, kernel
    assert any("TablesType" in type(sig[0]).__name__ for sig in fast_step.step.signatures)
