"""String keywords as languages over the quoted JSON string: ``minLength``, ``maxLength``, ``pattern``
and ``format``; also the keys of ``patternProperties``.

A string's language is ``"`` + the intersection of its keywords' content languages + ``"``, where the
content is the JSON-escaped text (one code point may be an escape such as ``\\n`` or ``\\u00e9``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import automata as A
from ..automata import DFA, dfa_from_arrays, empty_dfa
from ..exceptions import RegexSyntaxError, SchemaError, UnsupportedRegexFeature, UnsupportedSchemaFeature
from .references import SchemaNode

if TYPE_CHECKING:
    from .compiler import CompileContext

#: Any JSON string content; one code point of it.
ANY_CHARS = A.Regex(r"(?s).*", 0, True)
ONE_CHAR = A.Regex(r"(?s).", 0, True)
#: Length bounds past this are refused (or dropped under ``lenient``): the DFA is one layer per code point.
MAX_COUNTED_LENGTH = 10_000
#: Formats no finite automaton can check.
UNENFORCEABLE_FORMATS = {"regex"}


def string_expr(content: A.Expr) -> A.Expr:
    """``"content"``: a JSON string whose (escaped) text is in ``content``."""
    return A.seq(A.Literal(b'"'), content, A.Literal(b'"'))


def string_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any]) -> DFA:
    """The strings ``node``'s string keywords allow."""
    content: list[DFA] = []
    lo = k.get("minLength", 0)
    hi = k.get("maxLength")
    for name, v in (("minLength", lo), ("maxLength", hi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v)):
            raise SchemaError(f"{name} must be a non-negative integer", f"{node.ptr}/{name}")
    if lo or hi is not None:
        top = int(hi) if hi is not None else int(lo)
        if top > MAX_COUNTED_LENGTH:
            name = "maxLength" if hi is not None else "minLength"
            ctx.unsupported(name, f"{node.ptr}/{name}", f"a length bound of {top} is too large to count")
        else:
            content.append(length_dfa(int(lo), None if hi is None else int(hi)))
    if "pattern" in k:
        p = k["pattern"]
        if not isinstance(p, str):
            raise SchemaError("pattern must be a string", f"{node.ptr}/pattern")
        dfa = pattern_dfa(ctx, p, f"{node.ptr}/pattern")
        if dfa is not None:
            content.append(dfa)
    if "format" in k and ctx.options.formats == "assert" and isinstance(k["format"], str):
        from .formats import format_max_length, format_regex

        regex = format_regex(k["format"])
        if regex is not None:
            content.append(A.build(A.Regex(regex, 0, True)))
            longest = format_max_length(k["format"])
            if longest is not None:
                content.append(length_dfa(0, longest))
        elif k["format"] in UNENFORCEABLE_FORMATS:
            ctx.unsupported("format", f"{node.ptr}/format", f"format {k['format']!r} is not regular")
    body = ctx.intersect(*content) if content else A.build(ANY_CHARS)
    return A.build(string_expr(A.Embed(body)))


def pattern_dfa(ctx: CompileContext, pattern: str, ptr: str) -> DFA | None:
    """String contents that ``pattern`` (ECMA-262) finds a match in; None where it is dropped (lenient)."""
    from .ecma_regex import search_regex

    try:
        return A.build(A.Regex(search_regex(pattern), 0, True))
    except UnsupportedRegexFeature as e:
        ctx.unsupported(ptr.rsplit("/", 1)[-1], ptr, str(e))
        return None
    except RegexSyntaxError as e:
        raise SchemaError(f"invalid regex {pattern!r}: {e}", ptr) from None


def key_dfa(ctx: CompileContext, pattern: str, ptr: str) -> DFA | None:
    """Quoted keys whose decoded text matches ``pattern`` (search semantics)."""
    body = pattern_dfa(ctx, pattern, ptr)
    return None if body is None else A.build(string_expr(A.Embed(body)))


def length_dfa(lo: int, hi: int | None) -> DFA:
    """JSON string contents of ``lo`` to ``hi`` code points, as layered copies of the one-char DFA."""
    if hi is not None and hi < lo:
        return empty_dfa("minLength > maxLength")
    top = hi if hi is not None else lo
    if top > 20_000:
        raise UnsupportedSchemaFeature("maxLength", "", f"a length bound of {top} is too large to count")
    char = A.build(ONE_CHAR)
    acc_states = np.flatnonzero(char.accepting)
    # The one-char automaton has a single accepting state with no way out: it is the next layer's start.
    (final,) = acc_states.tolist()
    inner = [s for s in range(char.num_states) if s != final and s != char.start]
    local = {char.start: 0, **{s: i + 1 for i, s in enumerate(inner)}}
    width = len(local)
    layers = top + 1
    n = layers * width
    trans = np.full((n, 256), -1, dtype=np.int32)
    for layer in range(layers):
        base = layer * width
        for s, i in local.items():
            row = char.transitions[s]
            for b in np.flatnonzero(row >= 0).tolist():
                t = int(row[b])
                if t == final:
                    if layer + 1 < layers:
                        trans[base + i, b] = (layer + 1) * width
                    elif hi is None:
                        trans[base + i, b] = layer * width  # saturate: stay on the last layer
                else:
                    trans[base + i, b] = base + local[t]
    accepting = np.zeros(n, dtype=bool)
    for layer in range(lo, layers):
        accepting[layer * width] = True
    return dfa_from_arrays(trans, accepting, 0, f"length {lo}..{hi}")
