"""``uniqueItems``: beyond regular languages in general, exact where the arrays are a finite set.

The arrays the rest of the schema allows are enumerated (up to :data:`MAX_ARRAYS`), and those with a
repeated item dropped. An infinite set of arrays is refused (or the keyword dropped under ``lenient``).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..limits import DEFAULT_LIMITS, current_limits
from .arrays import count_keyword
from .holes import fill_in
from .recursion import has_holes
from .references import SchemaNode
from .values import json_equal

if TYPE_CHECKING:
    from .compiler import CompileContext

MAX_ARRAYS = DEFAULT_LIMITS.max_arrays


def unique_items_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any], result: DFA) -> DFA:
    """``result`` less the arrays with a repeated item."""
    hi = count_keyword(node, k, "maxItems")
    if hi is not None and hi <= 1:
        return result
    result = fill_in(ctx, result)
    if has_holes(result):
        ctx.unsupported("uniqueItems", f"{node.ptr}/uniqueItems", "the arrays hold recursive values")
        return result
    arrays = ctx.intersect(result, A.build(A.Regex(r"\[(?s:.*)")))
    strings = enumerate_strings(arrays, current_limits().max_arrays)
    if strings is None:
        ctx.unsupported("uniqueItems", f"{node.ptr}/uniqueItems", "the set of possible arrays is infinite")
        return result
    others = ctx.difference(result, arrays)
    keep = [s for s in strings if _all_unique(json.loads(s))]
    finite = A.build(A.alt(*[A.Literal(s) for s in keep])) if keep else empty_dfa("uniqueItems")
    return A.union(others, finite)


def _all_unique(items: Any) -> bool:
    if not isinstance(items, list):
        return True
    return not any(json_equal(items[i], items[j]) for i in range(len(items)) for j in range(i))


def enumerate_strings(dfa: DFA, limit: int) -> list[bytes] | None:
    """Every string of a finite language, or None when it is infinite or has more than ``limit``."""
    if A.is_empty(dfa):
        return []
    out: list[bytes] = []
    trans = dfa.transitions
    on_path: set[int] = set()

    def walk(state: int, prefix: bytes) -> bool:
        if state in on_path:
            return False  # a cycle: infinite
        if dfa.accepting[state]:
            out.append(prefix)
            if len(out) > limit:
                return False
        on_path.add(state)
        row = trans[state]
        for b in np.flatnonzero(row >= 0).tolist():
            if not walk(int(row[b]), prefix + bytes([b])):
                return False
        on_path.discard(state)
        return True

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        ok = walk(dfa.start, b"")
    finally:
        sys.setrecursionlimit(old)
    return out if ok else None
