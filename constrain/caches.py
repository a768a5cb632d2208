"""The registry of the caches derived from grammars, so that one call clears them all.

Each cache is bounded where it is defined (:func:`bounded_cache` is ``functools.lru_cache`` plus
registration; a weak-keyed cache registers its own ``clear``). :meth:`constrain.compiler.Compiler.clear`
(and :func:`constrain.compiler.clear_caches`) calls :func:`clear_all`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from functools import _lru_cache_wrapper

T = TypeVar("T")

_CLEARERS: list[Callable[[], None]] = []
_LOCK = threading.Lock()


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Have :func:`clear_all` call ``clear``; returns it (usable as a decorator)."""
    with _LOCK:
        _CLEARERS.append(clear)
    return clear


def bounded_cache(maxsize: int) -> Callable[[Callable[..., T]], _lru_cache_wrapper[T]]:
    """``functools.lru_cache(maxsize)``, registered with :func:`clear_all`."""

    def wrap(fn: Callable[..., T]) -> _lru_cache_wrapper[T]:
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        register(cached.cache_clear)
        return cached

    return wrap


def clear_all() -> None:
    """Clear every registered cache (compiled grammars are the :class:`~constrain.compiler.Compiler`'s)."""
    with _LOCK:
        clearers = list(_CLEARERS)
    for clear in clearers:
        clear()
