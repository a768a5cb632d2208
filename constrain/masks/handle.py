"""One numba handle on a tuple of arrays, for kernels that read many tables.

Passing ``n`` arrays into a numba kernel from Python costs one unboxing per array (about 0.2 µs
each), and inside numba every array taken out of a tuple is reference counted (an atomic add each).
A :class:`Tables` handle is one pointer to unbox, and :func:`tables_of` hands the kernel the tuple
with the reference counts switched off. Index the tuple with module-level integer constants (numba
folds them), as the trie walks (:mod:`constrain.masks.walks`) do.
"""

from __future__ import annotations

from typing import Any

import numba
from numba.core import cgutils, types
from numba.experimental import structref
from numba.extending import intrinsic, overload


def _borrowed(typingctx: Any, tables: Any) -> Any:
    """The same tuple of arrays without their reference counts (meminfo and parent set to null).

    numba counts references to every array it takes out of a tuple or passes on, each an atomic add
    (a null meminfo skips it). The Python caller holds the arrays for the whole call, and no numba
    code may keep one past it.
    """
    items = tuple(getattr(tables, "types", ())) if isinstance(tables, types.BaseTuple) else ()
    if not items or not all(isinstance(t, types.Array) for t in items):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        out = args[0]
        for i, ty in enumerate(sig.args[0]):
            ary = context.make_array(ty)(context, builder, value=builder.extract_value(out, i))
            ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
            ary.parent = cgutils.get_null_value(ary.parent.type)
            out = builder.insert_value(out, ary._getvalue(), i)
        return out

    return tables(tables), codegen


borrowed: Any = intrinsic(_borrowed)
"""Inside numba: a tuple of arrays without reference counting (see :func:`_borrowed`)."""


@structref.register
class TablesType(types.StructRef):
    """numba type of :class:`Tables`: one field, ``tabs``, the tuple of arrays."""

    def preprocess_fields(self, fields: Any) -> Any:
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class Tables(structref.StructRefProxy):
    """A handle on a tuple of arrays for calls from Python into numba (one pointer to unbox).

    Made by :func:`new_tables`; :func:`set_tables` swaps in another tuple of the same types."""


structref.define_boxing(TablesType, Tables)


def _make_tables(tabs: Any) -> Any:  # pragma: no cover - replaced by the overload below in numba
    raise NotImplementedError


@overload(_make_tables)
def _make_tables_impl(tabs: Any) -> Any:
    ty = TablesType([("tabs", tabs)])

    def impl(tabs: Any) -> Any:  # pragma: no cover - numba
        h: Any = structref.new(ty)  # type: ignore[call-arg]
        h.tabs = tabs
        return h

    return impl


def tables_of(tables: Any) -> Any:  # pragma: no cover - replaced by the overload below in numba
    """The borrowed tuple of arrays of a :class:`Tables` handle or of a tuple (inside numba)."""
    raise NotImplementedError


@overload(tables_of)
def _tables_of_impl(tables: Any) -> Any:
    if isinstance(tables, TablesType):

        def of_handle(tables: Any) -> Any:  # pragma: no cover - numba
            return borrowed(tables.tabs)

        return of_handle
    if isinstance(tables, types.BaseTuple):

        def of_tuple(tables: Any) -> Any:  # pragma: no cover - numba
            return borrowed(tables)

        return of_tuple
    return None


@numba.njit(cache=True)
def new_tables(tabs: Any) -> Any:  # pragma: no cover - numba
    """A :class:`Tables` handle holding the tuple ``tabs``."""
    return _make_tables(tabs)


@numba.njit(cache=True)
def set_tables(handle, tabs) -> None:  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Point ``handle`` at a new tuple (of the same types); the old arrays are released."""
    handle.tabs = tabs
