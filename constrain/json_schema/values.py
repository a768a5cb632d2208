"""``type``, ``enum`` and ``const``, and the language of any JSON value.

The types' first bytes (``{`` for an object, ``-0123456789`` for a number, ...) let recursive
languages be intersected by cutting first bytes instead of building products (:mod:`.holes`).
``enum``/``const`` values become the texts they may be written as in canonical form
(:func:`enum_language`).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import TYPE_CHECKING, Any

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..caches import register
from ..exceptions import SchemaError
from .key_order import instance_key_order, location_keys, member_location
from .locations import Location
from .numbers import NUMBER_RE, to_decimal
from .references import SchemaNode
from .strings import ANY_CHARS, string_expr

if TYPE_CHECKING:
    from .compiler import CompileContext

TYPES = ("null", "boolean", "object", "array", "number", "string")
#: The bytes a value of each type starts with.
TYPE_FIRST = {
    "null": b"n", "boolean": b"tf", "object": b"{", "array": b"[", "string": b'"',
    "number": b"-0123456789", "integer": b"-0123456789",
}  # fmt: skip
VALUE_FIRST = frozenset(b"".join(TYPE_FIRST.values()))

#: (depth, whitespace, max_whitespace) -> the capped DFA, and ("hole", index, whitespace, max_whitespace) ->
#: the any-value hole's DFA (holes.any_value_hole); a few entries
_ANY_CACHE: dict[tuple[Any, ...], DFA] = {}
register(_ANY_CACHE.clear, constant=True)  # depends on the options only


def json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def types_of(node: SchemaNode, k: dict[str, Any]) -> list[str]:
    """The types ``type`` allows, each once (``integer`` dropped beside ``number``); all without it."""
    t = k.get("type")
    if t is None:
        return list(TYPES)
    names = [t] if isinstance(t, str) else t
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise SchemaError("type must be a string or an array of strings", node.ptr + "/type")
    out: list[str] = []
    for x in names:
        if x not in (*TYPES, "integer"):
            raise SchemaError(f"unknown type {x!r}", node.ptr + "/type")
        if x == "integer" and "number" in names:
            continue
        if x not in out:
            out.append(x)
    return out


def enum_values(ctx: CompileContext, node: SchemaNode, k: dict[str, Any]) -> list[Any] | None:
    """The values ``enum`` and ``const`` (from draft 6) allow together; None when neither is there."""
    values: list[Any] | None = None
    if "enum" in k:
        if not isinstance(k["enum"], list):
            raise SchemaError("enum must be an array", node.ptr + "/enum")
        values = list(k["enum"])
    if "const" in k and ctx.doc.version >= 6:
        values = [k["const"]] if values is None else [v for v in values if json_equal(v, k["const"])]
    return values


def enum_language(ctx: CompileContext, values: list[Any], loc: Location) -> DFA:
    """Every text of ``values`` at ``loc``: numbers in each form the engine reads for their value
    (``1``, ``1.0``, ``1.00``; ``0.5``, ``0.50``, ``5e-1``), so that ``not``/``oneOf`` over an enum stay
    exact, and object keys in any order where the location does not fix it (small objects only)."""
    forms = [_forms(ctx, v, loc) for v in values]
    return A.build(A.alt(*forms)) if forms else empty_dfa("enum")


def _forms(ctx: CompileContext, value: Any, loc: Location) -> A.Expr:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return A.Literal(json.dumps(value, ensure_ascii=False).encode())
    if isinstance(value, (int, float)):
        return A.Regex(number_value_regex(value))
    if isinstance(value, list):
        parts: list[A.Expr] = [A.Literal(b"[")]
        for i, item in enumerate(value):
            if i:
                parts.append(A.Literal(b","))
            parts.append(_forms(ctx, item, ctx.places.item_loc(loc, i) if loc.nodes else loc))
        return A.seq(*parts, A.Literal(b"]"))
    if isinstance(value, dict):
        known = location_keys(ctx.doc, loc) if loc.nodes else []
        fixed, free = instance_key_order(ctx, loc, value)
        orders = [fixed + list(p) for p in itertools.permutations(free)] if len(free) <= 4 else [fixed + free]
        members = {name: _forms(ctx, value[name], member_location(ctx, loc, name, known)) for name in value}
        out: list[A.Expr] = []
        for order in orders:
            parts = [A.Literal(b"{")]
            for i, name in enumerate(order):
                head = ("," if i else "") + json.dumps(name, ensure_ascii=False) + ":"
                parts += [A.Literal(head.encode()), members[name]]
            out.append(A.seq(*parts, A.Literal(b"}")))
        return A.alt(*out) if len(out) > 1 else out[0]
    return A.Literal(json.dumps(value, ensure_ascii=False).encode())


def number_value_regex(value: int | float) -> str:
    """Every text the engine reads for the number ``value`` (never ``-0``): the plain decimal with any
    trailing fraction zeros, and where ``0 < |value| < 1`` its one small exponent form (``5e-1``,
    :data:`~.numbers.SMALL_EXPONENT_RE`)."""
    d = to_decimal(value)
    sign = "-" if d < 0 else ""
    d = d.copy_abs()  # exact (abs() rounds to the context precision)
    text = format(d, "f")  # exact at any size (quantize and normalize round to the context)
    if d == d.to_integral_value():
        return sign + text.split(".")[0] + r"(?:\.0+)?" if d else r"0(?:\.0+)?"
    digits = text.rstrip("0")  # no trailing zeros (a non-integer's text has a point)
    plain = sign + digits.replace(".", r"\.") + "0*"
    if d >= 1:
        return plain
    sig = digits.split(".")[1].lstrip("0")
    mantissa = sig[0] + (r"\." + sig[1:] if len(sig) > 1 else "")
    small = sign + mantissa + f"[eE]-0*{-d.adjusted()}"
    return f"(?:{plain}|{small})"


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[x], b[x]) for x in a)
    return bool(a == b)


def json_types(value: Any) -> tuple[str, ...]:
    """The JSON Schema types ``value`` belongs to (an integral number is both number and integer)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean",)
    if isinstance(value, (int, float)):
        integral = isinstance(value, int) or (math.isfinite(value) and value.is_integer())
        return ("number", "integer") if integral else ("number",)
    if isinstance(value, str):
        return ("string",)
    if isinstance(value, list):
        return ("array",)
    return ("object",)


def any_value_parts(ctx: CompileContext, inner: A.Expr | None) -> A.Expr:
    """Any scalar, and where ``inner`` is given, arrays and objects whose values are ``inner``."""
    scalar = A.alt(A.Regex(r"null|true|false|" + NUMBER_RE), string_expr(ANY_CHARS))
    if inner is None:
        return scalar
    ws = ctx.ws
    member = A.seq(string_expr(ANY_CHARS), ws, A.Literal(b":"), ws, inner)
    return A.alt(scalar, ctx.bracketed(b"[", inner, b"]"), ctx.bracketed(b"{", member, b"}"))


def any_value_around_hole(ctx: CompileContext, hole: DFA, index: int) -> DFA:
    """Any canonical JSON value whose nested values are ``hole`` (hole number ``index``): the any-value
    hole's own language. It depends on the index and the whitespace only, so it is built once per
    process (3 ms a schema before)."""
    key = ("hole", index, ctx.options.whitespace, ctx.options.max_whitespace)
    got = _ANY_CACHE.get(key)
    if got is None:
        got = _ANY_CACHE[key] = A.build(any_value_parts(ctx, A.Embed(hole)), "<any JSON value>")
    return got


def capped_any_value(ctx: CompileContext, depth: int) -> DFA:
    """Any canonical JSON value nested at most ``depth`` deep (keys in any order), as a DFA (cached per
    process)."""
    key = (depth, ctx.options.whitespace, ctx.options.max_whitespace)
    got = _ANY_CACHE.get(key)
    if got is not None:
        return got
    inner = A.Embed(capped_any_value(ctx, depth - 1)) if depth > 0 else None
    dfa = A.build(any_value_parts(ctx, inner), f"<any JSON value, depth {depth}>")
    _ANY_CACHE[key] = dfa
    return dfa
