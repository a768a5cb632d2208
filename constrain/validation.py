"""Up-front checks of what callers hand the public API, shared by every entry point.

Each check raises a :class:`~constrain.exceptions.ConstrainError` subclass that names what to fix (the
argument, the option, the file), so a bad input fails at the call that received it and never deep
inside the engine (see ``docs/errors.md``).
"""

from __future__ import annotations

import functools
import inspect
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from .exceptions import ArgumentError, InputTooLargeError, InvalidInputError

P = ParamSpec("P")
R = TypeVar("R")

#: The largest schema file :func:`constrain.json_schema.load_schema` reads (the largest schema of
#: JSONSchemaBench is under 2 MiB; a limit keeps a stray device or log file from filling memory).
MAX_SCHEMA_FILE_BYTES = 64 * 2**20
#: The largest ``tokenizer.json`` :meth:`constrain.TokenizerInfo.from_file` reads (Gemma 3's, with its
#: 262k-token vocabulary and merges, is about 33 MB).
MAX_TOKENIZER_FILE_BYTES = 512 * 2**20


def read_regular_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    limit: int,
    error: type[InvalidInputError] = InvalidInputError,
) -> bytes:
    """The bytes of ``path``, which must name a regular file (after symlinks) of at most ``limit`` bytes.

    Devices, FIFOs and folders are refused before anything is read (``/dev/zero`` would otherwise be
    read until memory runs out), and at most ``limit + 1`` bytes are ever read, so a file that grows
    while it is read is refused too.

    Raises:
        error: the path does not exist, is not a regular file, or cannot be read.
        InputTooLargeError: the file is larger than ``limit``.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte in the path
        raise error(f"cannot read {what} {os.fspath(path)!r}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {os.fspath(path)!r} is not a regular file (a folder, device or pipe)")
    if info.st_size > limit:
        raise InputTooLargeError(
            f"{what} {os.fspath(path)!r} has {info.st_size} bytes, over the limit of {limit}"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {os.fspath(path)!r}: {exc}") from None
    if len(data) > limit:
        raise InputTooLargeError(f"{what} {os.fspath(path)!r} grew past the limit of {limit} bytes")
    return data


def check_options(where: str, given: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse keyword arguments that ``where`` does not take, naming them (``**options`` would otherwise
    swallow a misspelt one without a word).

    Raises:
        InvalidInputError: some names in ``given`` are not in ``allowed``; the message lists them and
            the names that are accepted.
    """
    allowed = set(allowed)
    unknown = sorted(set(given) - allowed)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        takes = ", ".join(sorted(allowed)) or "none"
        raise InvalidInputError(f"{where} got unexpected keyword argument(s) {names}; accepted: {takes}")


def checked_arguments(func: Callable[P, R]) -> Callable[P, R]:
    """Make a call with an unknown keyword, a missing or an extra argument raise :class:`ArgumentError`
    (an :class:`InvalidInputError` and a ``TypeError``) naming it, instead of a bare ``TypeError``.

    Free on the success path: the signature is only bound again when the call raised ``TypeError``, to
    tell a wrong call from a ``TypeError`` raised inside (which passes through unchanged).
    """
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TypeError:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as bad_call:
                raise ArgumentError(f"{func.__qualname__}(): {bad_call}") from None
            raise

    return wrapper


def check_type(where: str, name: str, value: Any, types: type | tuple[type, ...], expected: str) -> None:
    """Refuse an argument of the wrong type, naming the argument (``bool`` is not an ``int`` here).

    Raises:
        InvalidInputError: ``value`` is not an instance of ``types``.
    """
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise InvalidInputError(
            f"{where}: {name} must be {expected}, got {type(value).__name__} {value!r:.80}"
        )


def check_choice(where: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    """Refuse a value outside ``choices``, naming the argument and the accepted values.

    Raises:
        InvalidInputError: ``value`` is not one of ``choices``.
    """
    options = tuple(choices)
    if not any(type(value) is type(c) and value == c for c in options):
        listed = ", ".join(repr(c) for c in options)
        raise InvalidInputError(f"{where}: {name} must be one of {listed}, got {value!r:.80}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
