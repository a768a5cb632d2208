"""The registry of the caches derived from grammars: bounded in entries and in bytes, one call clears them.

Every cache of grammar-derived data is an :class:`LRUCache`: least recently used out first once it holds
more than ``max_entries`` entries or more than ``max_bytes`` bytes by :func:`estimate_nbytes`. The
compiled-grammar cache is the :class:`~constrain.compiler.Compiler`'s; the derived caches (regex DFAs,
schema and Lark automata) are functions decorated with :func:`bounded_cache`; a cache of another shape
(weak-keyed, a few entries) registers its own ``clear`` with :func:`register`. :func:`clear_all` (and
:func:`constrain.compiler.clear_caches`) empties them all.

Sizes are estimates: the bytes of every numpy array an entry reaches (each buffer once) plus
``sys.getsizeof`` of the Python containers on the way; the tokenizer's data (``TokenizerInfo``, the
vocabulary trie), shared by every grammar, is not counted. An automaton reachable from two caches
(a schema's DFA is in the schema cache and inside its compiled grammar) counts in both, so the bounds
over-count rather than under-count. Entries that grow after they are stored (token masks are filled on
first use) are measured again when they are hit, and every entry at most once a second when a new one
comes in.

Limits: :data:`DEFAULT_MAX_BYTES` (per cache name), or ``CONSTRAIN_CACHE_MAX_BYTES`` in the environment
(``512M`` for the compiled-grammar cache, or ``compiled=1G,json_schema_automaton=256M``; sizes in bytes
with an optional K, M, G suffix), or :func:`set_cache_limits` at run time.

A cache builds each key once even when threads ask for it at the same time (single flight): the first
builds, the others wait and get the same object, or the same exception.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .exceptions import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "CacheStats",
    "LRUCache",
    "bounded_cache",
    "cache_stats",
    "clear_all",
    "estimate_nbytes",
    "get_cache",
    "register",
    "release_memory",
    "set_cache_limits",
]

T = TypeVar("T")
V = TypeVar("V")

MiB = 1 << 20
DEFAULT_MAX_BYTES: dict[str, int] = {
    "compiled": 512 * MiB,  # compiled grammars: automata plus their token masks (16 KB a row at 128k)
    "json_schema_automaton": 128 * MiB,  # a schema's DFA or Earley automaton (shared with "compiled")
    "lark_automaton": 64 * MiB,
    "regex_to_dfa": 32 * MiB,
    "regex_dfa": 32 * MiB,
}
"""The byte bound of each named cache; a cache without an entry here gets :data:`FALLBACK_MAX_BYTES`."""
FALLBACK_MAX_BYTES = 64 * MiB
ENV_VAR = "CONSTRAIN_CACHE_MAX_BYTES"
REMEASURE_S = 1.0
"""An entry is measured again on a hit, or when another comes in, at most this often (seconds)."""
SWEEP_BUDGET_S = 0.002
"""A sweep (after a build) measures stale entries, stalest first, until this much time is spent (at
least one): measuring all of them took 146 ms with 113 compiled schemas and their masks cached, in the
build's caller's time to first mask once a second. Sizes then trail their growth by more sweeps."""

_CLEARERS: list[Callable[[], None]] = []
_CONSTANT_CLEARERS: list[Callable[[], None]] = []  # data that depends on no grammar (see register)
_CACHES: dict[str, LRUCache[Any]] = {}
_LOCK = threading.Lock()


def register(clear: Callable[[], None], *, constant: bool = False) -> Callable[[], None]:
    """Have :func:`clear_all` call ``clear``; returns it (usable as a decorator).

    ``constant``: the cache holds data that depends on no grammar (a tokenizer's key tables, the
    any-value automata), which every next compile would rebuild the same; ``clear_all(keep_constants=True)``
    keeps it."""
    with _LOCK:
        (_CONSTANT_CLEARERS if constant else _CLEARERS).append(clear)
    return clear


def clear_all(*, keep_constants: bool = False) -> None:
    """Clear every registered cache (compiled grammars are the :class:`~constrain.compiler.Compiler`'s);
    with ``keep_constants``, not those registered as ``constant``."""
    with _LOCK:
        clearers = list(_CLEARERS) + ([] if keep_constants else list(_CONSTANT_CLEARERS))
    for clear in clearers:
        clear()


def release_memory() -> bool:
    """Hand freed heap pages back to the operating system (glibc ``malloc_trim``); True if it ran.

    Freed mask rows and tables stay in the allocator's heap, so RSS does not drop after
    :func:`clear_all` by itself (bench/bench_soak.py: 812 MiB before, 812 after clearing, 286 after a
    trim). Called by :meth:`constrain.compiler.Compiler.clear`; a no-op where there is no glibc."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - glibc only: fail here, not later
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC is False:
        return False
    _LIBC.malloc_trim(0)
    return True


_LIBC: Any = None


# ---- sizes ------------------------------------------------------------------------------------------

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event)
_OPAQUE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
    weakref.ref,
    *_LOCK_TYPES,
)
_SCALARS = frozenset({int, float, bool, type(None)})
_SHARED: list[type] = []  # classes never counted (the tokenizer's data), see shared_type


def shared_type(cls: type[T]) -> type[T]:
    """Mark ``cls`` as shared data that :func:`estimate_nbytes` does not count (usable as a decorator)."""
    _SHARED.append(cls)
    return cls


_FOREIGN: dict[type, bool] = {}


def _foreign(cls: type) -> bool:
    """Whether instances of ``cls`` are numba objects (a structref proxy's arrays are held from Python)."""
    got = _FOREIGN.get(cls)
    if got is None:
        got = _FOREIGN[cls] = any(c.__module__.startswith("numba") for c in cls.__mro__)
    return got


def estimate_nbytes(obj: Any, exclude: Iterable[type] = ()) -> int:
    """About how many bytes ``obj`` keeps alive: every numpy buffer it reaches (a view counts its base,
    once) plus ``sys.getsizeof`` of the containers and objects on the way (``__dict__`` and
    ``__slots__`` followed). Not counted: small ints and floats, functions and bound methods, modules,
    classes, locks, numba objects (their arrays are also held from Python), instances of ``exclude`` and
    of the classes marked :func:`shared_type`. Iterative: deep structures are fine."""
    skip = (*_OPAQUE, *_SHARED, *exclude)
    seen: set[int] = set()
    buffers: set[int] = set()
    total = 0
    stack = [obj]
    ndarray = np.ndarray

    def array(a: np.ndarray) -> None:
        nonlocal total
        base: Any = a
        while isinstance(base.base, ndarray):
            base = base.base
        if id(base) not in buffers:
            buffers.add(id(base))
            total += base.nbytes if base.base is None else a.nbytes

    def push(items: Iterable[Any]) -> None:
        # A container's plain arrays, strings and numbers are dealt with here, not pushed and popped:
        # the mask caches are dicts of thousands of rows, counts and byte strings.
        nonlocal total
        for x in items:
            kind = type(x)
            if kind is ndarray:
                array(x)
            elif kind is bytes or kind is str:
                i = id(x)
                if i not in seen:
                    seen.add(i)
                    total += sys.getsizeof(x)
            elif kind not in _SCALARS:
                stack.append(x)

    while stack:
        o = stack.pop()
        if o is None or isinstance(o, (bool, int, float)):
            continue
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        if isinstance(o, ndarray):
            array(o)
            continue
        if isinstance(o, (str, bytes, bytearray)):
            total += sys.getsizeof(o)
            continue
        if isinstance(o, skip) or _foreign(type(o)):
            continue
        if isinstance(o, memoryview):
            total += sys.getsizeof(o) + (o.nbytes if not isinstance(o.obj, ndarray) else 0)
            if isinstance(o.obj, ndarray):
                stack.append(o.obj)
            continue
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            push(o)
            push(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            push(o)
        else:
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if name not in ("__dict__", "__weakref__"):
                        stack.append(getattr(o, name, None))
    return total


def parse_size(text: str) -> int:
    """``"512M"`` -> bytes (suffixes K, M, G, T, powers of 1024; a plain number is bytes).

    Raises:
        InvalidInputError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text, re.IGNORECASE)
    if m is None:
        raise InvalidInputError(f"not a size in bytes: {text!r} (write e.g. 536870912, 512M or 2G)")
    scale = 1 << (10 * " kmgt".index(m.group(2).lower() or " "))
    return int(float(m.group(1)) * scale)


def _env_limits() -> dict[str, int]:
    """The byte bounds set by ``CONSTRAIN_CACHE_MAX_BYTES`` (a size for "compiled", or name=size pairs)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return {}
    try:
        if "=" not in raw:
            return {"compiled": parse_size(raw)}
        out = {}
        for part in raw.split(","):
            name, _, size = part.partition("=")
            out[name.strip()] = parse_size(size)
        return out
    except InvalidInputError as e:
        raise InvalidInputError(f"${ENV_VAR}: {e}") from None


def default_max_bytes(name: str) -> int:
    """The byte bound a cache called ``name`` starts with (environment first, then the defaults)."""
    env = _env_limits()
    if name in env:
        return env[name]
    return DEFAULT_MAX_BYTES.get(name, FALLBACK_MAX_BYTES)


# ---- the cache --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of one cache: its bounds, what it holds, and what happened to it."""

    name: str
    entries: int
    nbytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    waits: int  # lookups that waited for another thread building the same key


class _Flight:
    """One build in progress: the others wait on ``done``."""

    __slots__ = ("done", "error", "owner", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.owner = threading.get_ident()
        self.value: Any = None
        self.error: BaseException | None = None


class _Entry:
    __slots__ = ("measured", "size", "value")

    def __init__(self, value: Any, size: int) -> None:
        self.value = value
        self.size = size
        self.measured = time.monotonic()


class LRUCache(Generic[V]):
    """A thread-safe LRU cache bounded by entries and by estimated bytes, with single-flight builds.

    ``max_entries=0`` or ``max_bytes=0`` stores nothing (builds are still single-flight). The entry
    stored last is kept even when it alone is over ``max_bytes`` (its caller holds it anyway, so dropping
    it would free nothing). ``sizeof`` measures an entry (default :func:`estimate_nbytes`).
    Registered under ``name`` (see :func:`get_cache`, :func:`cache_stats`, :func:`clear_all`).
    """

    def __init__(
        self,
        name: str,
        *,
        max_entries: int = 128,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] = estimate_nbytes,
        register_as: str | None = None,
    ) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._sizeof = sizeof
        self._nbytes = 0
        self._last_sweep = 0.0
        self._last_hit_measure = 0.0
        self.hits = self.misses = self.evictions = self.waits = 0
        self.max_entries = 0
        self.max_bytes = 0
        self.set_limits(max_entries, default_max_bytes(name) if max_bytes is None else max_bytes)
        if register_as is not None:
            with _LOCK:
                _CACHES[register_as] = self
                _CLEARERS.append(self.clear)

    def set_limits(self, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        """Change the bounds (``None`` keeps one); evicts at once if the cache is now over them.

        Raises:
            InvalidInputError: a bound is negative or not an int.
        """
        for what, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidInputError(f"cache {self.name!r}: {what} must be an int >= 0, got {value!r}")
        with self._lock:
            if max_entries is not None:
                self.max_entries = max_entries
            if max_bytes is not None:
                self.max_bytes = max_bytes
            self._evict(keep=None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    @property
    def nbytes(self) -> int:
        """The estimated bytes of the entries, as last measured."""
        return self._nbytes

    def stats(self, refresh: bool = False) -> CacheStats:
        """Bounds, size and counters; ``refresh`` measures every entry again first."""
        if refresh:
            self._remeasure(list(self._data.items()))
        return CacheStats(
            self.name,
            len(self._data),
            self._nbytes,
            self.max_entries,
            self.max_bytes,
            self.hits,
            self.misses,
            self.evictions,
            self.waits,
        )

    def get(self, key: Hashable) -> V | None:
        """The value cached under ``key`` (counts as a use), or None."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            self._data.move_to_end(key)
            self.hits += 1
        self._maybe_remeasure(key, entry)
        value: V = entry.value
        return value

    def put(self, key: Hashable, value: V) -> V:
        """Store ``value`` unless ``key`` is already there; returns the value kept."""
        size = self._sizeof(value)
        with self._lock:
            kept: V = self._store(key, value, size)
        return kept

    def swap(self, key: Hashable, value: V) -> None:
        """Replace the value under ``key`` by one of the same size (an equal object rebound), if cached."""
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                entry.value = value

    def get_or_build(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value under ``key``, built by ``build()`` on a miss; one build per key at a time.

        Threads that ask for a key being built wait for that build and get its value or its exception.
        A build that asks for its own key again (recursion) builds it once more itself, uncached.
        """
        leader = False
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
                self.hits += 1
            else:
                found = self._flights.get(key)
                if found is None:
                    flight = self._flights[key] = _Flight()
                    leader = True
                    self.misses += 1
                elif found.owner == threading.get_ident():
                    return build()  # re-entrant: waiting on ourselves would never end
                else:
                    flight = found
                    self.waits += 1
        if entry is not None:
            self._maybe_remeasure(key, entry)
            hit: V = entry.value
            return hit
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            shared: V = flight.value
            return shared
        try:
            value = build()
            size = self._sizeof(value) if self.max_entries and self.max_bytes else 0
        except BaseException as e:
            flight.error = e
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
            raise
        with self._lock:
            value = self._store(key, value, size)
            self._flights.pop(key, None)
        flight.value = value
        flight.done.set()
        self._sweep()
        return value

    def clear(self) -> None:
        """Drop every entry (builds in flight finish and are stored)."""
        with self._lock:
            self._data.clear()
            self._nbytes = 0

    # ---- internals ----------------------------------------------------------------------------------
    def _store(self, key: Hashable, value: Any, size: int) -> Any:
        """Insert under the lock (setdefault semantics), then evict down to the bounds."""
        if not self.max_entries or not self.max_bytes:
            return value
        old = self._data.get(key)
        if old is not None:
            self._data.move_to_end(key)
            return old.value
        self._data[key] = _Entry(value, size)
        self._nbytes += size
        self._evict(keep=key)
        return value

    def _evict(self, keep: Hashable | None) -> None:
        data = self._data
        while data and (len(data) > self.max_entries or self._nbytes > self.max_bytes):
            oldest = next(iter(data))
            if oldest == keep and len(data) == 1 and self.max_entries and self.max_bytes:
                break  # the newest entry stays, even alone over the byte bound
            entry = data.pop(oldest)
            self._nbytes -= entry.size
            self.evictions += 1

    def _maybe_remeasure(self, key: Hashable, entry: _Entry) -> None:
        """On a hit: measure the entry again if stale, at most one hit's entry per :data:`REMEASURE_S`
        for the whole cache (each hot entry once a second put about 0.6 ms per hot schema and second
        into the hits, with masks of 113 schemas cached)."""
        now = time.monotonic()
        if now - entry.measured >= REMEASURE_S and now - self._last_hit_measure >= REMEASURE_S:
            self._last_hit_measure = now
            self._remeasure([(key, entry)])

    def _sweep(self) -> None:
        """Measure again the entries not measured for :data:`REMEASURE_S`, stalest first, within
        :data:`SWEEP_BUDGET_S` (at most once per :data:`REMEASURE_S`)."""
        now = time.monotonic()
        if now - self._last_sweep < REMEASURE_S:
            return
        self._last_sweep = now
        stale = [(k, e) for k, e in list(self._data.items()) if now - e.measured >= REMEASURE_S]
        stale.sort(key=lambda item: item[1].measured)
        for item in stale:
            self._remeasure([item])
            if time.monotonic() - now >= SWEEP_BUDGET_S:
                break

    def _remeasure(self, items: list[tuple[Hashable, _Entry]]) -> None:
        sizes = [(k, e, self._sizeof(e.value)) for k, e in items]  # outside the lock: may take ms
        with self._lock:
            for key, entry, size in sizes:
                if self._data.get(key) is entry:
                    self._nbytes += size - entry.size
                entry.size = size
                entry.measured = time.monotonic()
            # The most recent entry stays, as when it was stored: evicting it alone over the bound frees
            # nothing its caller is not holding, and the next ask would build it again.
            self._evict(keep=next(reversed(self._data), None))


# ---- the registry -----------------------------------------------------------------------------------


def get_cache(name: str) -> LRUCache[Any]:
    """The registered cache called ``name`` (``"compiled"`` is the default compiler's).

    Raises:
        InvalidInputError: no cache has that name (the message lists them).
    """
    with _LOCK:
        cache = _CACHES.get(name)
        names = sorted(_CACHES)
    if cache is None:
        raise InvalidInputError(f"no cache named {name!r}; the caches are: {', '.join(names)}")
    return cache


def cache_stats(refresh: bool = False) -> dict[str, CacheStats]:
    """Every registered cache's :class:`CacheStats` by name; ``refresh`` measures entries again."""
    with _LOCK:
        caches = dict(_CACHES)
    return {name: c.stats(refresh) for name, c in sorted(caches.items())}


def set_cache_limits(
    max_bytes: int | str | None = None, max_entries: int | None = None, **per_cache: int | str
) -> None:
    """Bound the caches at run time (``constrain.set_cache_limits``).

    ``max_bytes`` / ``max_entries`` bound the compiled-grammar cache (the default compiler's); a
    keyword named after a cache bounds that one in bytes (``json_schema_automaton="256M"``, see
    :data:`DEFAULT_MAX_BYTES` and :func:`cache_stats` for the names). Sizes are bytes or strings such
    as ``"512M"``. Lowering a bound evicts at once.

    Raises:
        InvalidInputError: an unknown cache name, or a bound that is not a size.
    """
    from .compiler import default_compiler

    def size(value: int | str) -> int:
        return parse_size(value) if isinstance(value, str) else value

    default_compiler()  # registers "compiled"
    targets = {name: get_cache(name) for name in per_cache}  # unknown names raise before any change
    if max_bytes is not None or max_entries is not None:
        get_cache("compiled").set_limits(max_entries, None if max_bytes is None else size(max_bytes))
    for name, value in per_cache.items():
        targets[name].set_limits(None, size(value))


def _call_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    return args if not kwargs else (args, tuple(sorted(kwargs.items())))


class _CachedFunction(Generic[T]):
    """A function with an :class:`LRUCache` in front (what :func:`bounded_cache` returns)."""

    def __init__(self, fn: Callable[..., T], cache: LRUCache[T]) -> None:
        self.__wrapped__ = fn
        self.cache = cache
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.cache.get_or_build(_call_key(args, kwargs), lambda: self.__wrapped__(*args, **kwargs))

    def cache_clear(self) -> None:
        """Drop every entry (as ``functools.lru_cache``'s)."""
        self.cache.clear()

    def cache_info(self) -> CacheStats:
        """The cache's :class:`CacheStats`."""
        return self.cache.stats()


def bounded_cache(
    maxsize: int, name: str | None = None, max_bytes: int | None = None
) -> Callable[[Callable[..., T]], _CachedFunction[T]]:
    """Cache a function in an :class:`LRUCache` of ``maxsize`` entries and ``max_bytes`` bytes (default:
    the bound for ``name`` in :data:`DEFAULT_MAX_BYTES` or the environment), registered under ``name``
    (default: the function's name). Arguments must be hashable; calls are single-flight per arguments."""

    def wrap(fn: Callable[..., T]) -> _CachedFunction[T]:
        label = name or fn.__name__.lstrip("_")
        return _CachedFunction(
            fn, LRUCache(label, max_entries=maxsize, max_bytes=max_bytes, register_as=label)
        )

    return wrap
