"""Reading a schema, and which draft it is written in.

:func:`load_schema` is the one loader every entry point uses (``Grammar.from_json_schema``,
``generate_json``, the HF adapter, the CLI), with one rule for paths versus JSON text:

* a dict (or any mapping) or a boolean is the schema itself;
* a pydantic model class gives its ``model_json_schema()``;
* bytes are JSON text in UTF-8;
* a ``str`` whose first non-space character is ``{`` or ``[``, or which is ``true``/``false``, is JSON
  text;
* any other ``str``, or an ``os.PathLike``, names a JSON file, which must be a regular file (not a
  device, pipe or folder) of at most :data:`~constrain.validation.MAX_SCHEMA_FILE_BYTES`.

:func:`detect_draft` reads the draft off ``$schema``. :func:`check_schema` checks a loaded schema
against its draft's metaschema, so that a malformed schema is refused with the keyword and JSON pointer
to fix before anything is compiled: ``jsonschema-rs`` decides (about 100x faster, and it spares a process
``jsonschema``'s import), and ``jsonschema`` writes the error of a schema it refuses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import referencing.jsonschema

from .. import validation
from ..exceptions import InputTooLargeError, SchemaError
from ..validation import read_regular_file

#: The drafts the compiler knows, by the names ``draft=`` takes, with their ``referencing`` specification.
DRAFTS: dict[str, Any] = {
    "2020-12": referencing.jsonschema.DRAFT202012,
    "2019-09": referencing.jsonschema.DRAFT201909,
    "7": referencing.jsonschema.DRAFT7,
    "6": referencing.jsonschema.DRAFT6,
    "4": referencing.jsonschema.DRAFT4,
}
#: The drafts in order of publication: keywords that a draft introduced test ``version >= n``.
DRAFT_VERSION = {"4": 4, "6": 6, "7": 7, "2019-09": 8, "2020-12": 9}
#: The drafts' metaschema URIs (as ``$schema`` names them, without the trailing ``#``).
METASCHEMAS = {
    "https://json-schema.org/draft/2020-12/schema": "2020-12",
    "https://json-schema.org/draft/2019-09/schema": "2019-09",
    "http://json-schema.org/draft-07/schema": "7",
    "http://json-schema.org/draft-06/schema": "6",
    "http://json-schema.org/draft-04/schema": "4",
}
#: Looser: a draft named anywhere in a ``$schema`` URI (``https://``, no trailing ``schema``, ...).
_DRAFT_MARKERS = {
    "draft-04": "4",
    "draft-06": "6",
    "draft-07": "7",
    "2019-09": "2019-09",
    "2020-12": "2020-12",
}


def detect_draft(schema: Any, default: str | None = None, *, by_marker: bool = False) -> str | None:
    """The draft a schema's ``$schema`` names, else ``default``.

    The compiler recognises the drafts' metaschema URIs exactly (:data:`METASCHEMAS`). With
    ``by_marker=True`` a URI that merely contains a draft's marker (``draft-07``, ``2019-09``) names
    it too, as validators that pick a draft by ``$schema`` do for hand-written URIs.
    """
    uri = schema.get("$schema") if isinstance(schema, Mapping) else None
    if not isinstance(uri, str):
        return default
    found = METASCHEMAS.get(uri.rstrip("#"))
    if found is None and by_marker:
        found = next((draft for marker, draft in _DRAFT_MARKERS.items() if marker in uri), None)
    return found if found is not None else default


def is_pydantic_model(obj: Any) -> bool:
    """True for a pydantic model class (anything with a callable ``model_json_schema``)."""
    return isinstance(obj, type) and callable(getattr(obj, "model_json_schema", None))


def load_schema(schema: Any) -> Any:
    """The schema as a Python object (a dict or a boolean), from any form the API accepts.

    Args:
        schema: a dict or mapping, a boolean, a pydantic model class, JSON text (``str`` or UTF-8
            ``bytes``), or the path of a JSON file (``str`` or ``os.PathLike``); see the module
            docstring for the rule that tells a path from JSON text.

    Raises:
        SchemaError: the text is not JSON, the file cannot be read or holds no JSON, a ``str`` is
            neither JSON text nor an existing file, or ``schema`` has a type no schema comes in.
    """
    if isinstance(schema, (dict, bool)):
        return schema
    if isinstance(schema, Mapping):
        return dict(schema)
    if is_pydantic_model(schema):
        try:
            return schema.model_json_schema()
        except Exception as e:  # noqa: BLE001 - pydantic's own error types: report them as ours
            raise SchemaError(f"pydantic could not make a JSON Schema of {schema.__name__}: {e}") from None
    if isinstance(schema, (bytes, bytearray)):
        try:
            text = bytes(schema).decode("utf-8")
        except UnicodeDecodeError as e:
            raise SchemaError(f"schema bytes are not UTF-8: {e}") from None
        return _parse(text, "schema text")
    if isinstance(schema, os.PathLike):
        return _read(os.fspath(schema))
    if isinstance(schema, str):
        stripped = schema.strip()
        if stripped.startswith(("{", "[")) or stripped in ("true", "false"):
            return _parse(schema, "schema text")
        path = os.path.expanduser(schema)
        if os.path.exists(path):  # _read refuses what is not a regular file (/dev/zero, a folder)
            return _read(path)
        raise SchemaError(
            f"schema {schema[:80]!r} is neither JSON text nor an existing file (no file of that name, "
            "and JSON text starts with '{' or '[' or is true/false)"
        )
    raise SchemaError(
        "a schema is a dict, a boolean, JSON text, a path or a pydantic model class, "
        f"got {type(schema).__name__}"
    )


def _read(path: str) -> Any:
    data = read_regular_file(
        path, what="schema file", limit=validation.MAX_SCHEMA_FILE_BYTES, error=SchemaError
    )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SchemaError(f"schema file {path!r} is not UTF-8: {e}") from None
    return _parse(text, f"schema file {path!r}")


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise InputTooLargeError(f"{what} nests too deep to read") from None


def _no_constant(name: str) -> Any:
    raise SchemaError(f"{name} is not JSON (JSON numbers are finite)")


# ------------------------------------------------------------------------------------------------
# The metaschema check

#: ``jsonschema``'s validator class of each draft (imported on first use).
_VALIDATOR_NAMES = {
    "2020-12": "Draft202012Validator",
    "2019-09": "Draft201909Validator",
    "7": "Draft7Validator",
    "6": "Draft6Validator",
    "4": "Draft4Validator",
}
_META_VALIDATORS: dict[str, Any] = {}
_FAST_META_VALIDATORS: dict[str, Any] = {}


def _fast_meta_validator(draft: str) -> Any:
    """The ``jsonschema_rs`` validator of ``draft``'s metaschema, or None where it is not installed."""
    got = _FAST_META_VALIDATORS.get(draft)
    if got is None:
        try:
            import jsonschema_rs
        except ImportError:  # no wheel for this platform: jsonschema alone decides
            return None
        from jsonschema_specifications import REGISTRY

        # No format validation, as in _meta_validator.
        got = jsonschema_rs.validator_for(REGISTRY.contents(_META_URIS[draft]), validate_formats=False)
        _FAST_META_VALIDATORS[draft] = got
    return got


_META_URIS = {
    "2020-12": "https://json-schema.org/draft/2020-12/schema",
    "2019-09": "https://json-schema.org/draft/2019-09/schema",
    "7": "http://json-schema.org/draft-07/schema#",
    "6": "http://json-schema.org/draft-06/schema#",
    "4": "http://json-schema.org/draft-04/schema#",
}


def _meta_validator(draft: str) -> Any:
    got = _META_VALIDATORS.get(draft)
    if got is None:
        import jsonschema

        cls = getattr(jsonschema, _VALIDATOR_NAMES[draft])
        # No format checker: the metaschema's "format": "regex" would read ECMA patterns as Python's.
        got = _META_VALIDATORS[draft] = cls(cls.META_SCHEMA)
    return got


def as_json_value(value: Any, what: str = "schema") -> Any:
    """``value`` as plain JSON data (dicts with string keys, lists, str, finite numbers, booleans, None),
    copied through ``json`` so that tuples become lists and nothing else slips in.

    Raises:
        SchemaError: a key that is not a string, a value JSON has no form for (a set, bytes, an object),
            or a NaN or infinity; the message has the JSON pointer.
        InputTooLargeError: the value nests too deep to walk.
    """
    try:
        _check_json(value, "", what)
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except RecursionError:
        raise InputTooLargeError(f"the {what} nests too deep to read") from None


def _check_json(value: Any, ptr: str, what: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{value!r} in the {what} is not a JSON number", ptr)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SchemaError(f"the {what} has a key {key!r} that is not a string", ptr)
            _check_json(item, f"{ptr}/{_escape(key)}", what)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{ptr}/{i}", what)
        return
    raise SchemaError(f"the {what} holds a {type(value).__name__}, which is not JSON", ptr)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def check_schema(doc: Any, draft: str) -> None:
    """Check ``doc`` against the metaschema of its draft (``$schema``, else ``draft``).

    The first error ``jsonschema`` finds (by its relevance order) becomes a :class:`SchemaError`
    whose ``pointer`` is the JSON pointer of the offending value in the schema (``/required/0``) and
    whose ``keyword`` is the schema keyword to fix (``required``).

    Raises:
        SchemaError: the schema does not validate against the metaschema, or ``draft`` is unknown.
        InputTooLargeError: the schema nests too deep to check.
    """
    chosen = detect_draft(doc, draft)
    if chosen not in _VALIDATOR_NAMES:
        raise SchemaError(f"draft must be one of {', '.join(DRAFTS)}, got {chosen!r}")
    fast = _fast_meta_validator(chosen)
    if fast is not None:
        try:
            if fast.is_valid(doc):
                return
        except Exception:  # noqa: BLE001 - a value it cannot convert: jsonschema decides below
            pass
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(_meta_validator(chosen).iter_errors(doc))
    except RecursionError:
        raise InputTooLargeError("the schema nests too deep to check against its metaschema") from None
    if error is None:
        return
    path = list(error.absolute_path)
    pointer = "".join(f"/{_escape(str(p))}" for p in path)
    keyword = _keyword_on_path(path)
    detail = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise SchemaError(
        f"the schema is not valid against the draft {chosen} metaschema: {detail} "
        f"(metaschema keyword {error.validator!r})",
        pointer,
        keyword,
    )


#: Keywords whose value maps names to subschemas, or holds a list of them (what a pointer walks through).
_NAMED_SUBSCHEMAS = frozenset(
    {"properties", "patternProperties", "dependentSchemas", "dependencies", "$defs", "definitions"}
)
_LISTED_SUBSCHEMAS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})


def _keyword_on_path(path: list[Any]) -> str:
    """The last schema keyword on a path into a schema (``required`` for ``/required/0``, ``properties``
    for ``/properties/a``, ``type`` for ``/properties/a/type``)."""
    keyword = ""
    i = 0
    while i < len(path):
        keyword = str(path[i])
        i += 1
        member = keyword in _NAMED_SUBSCHEMAS or (keyword in _LISTED_SUBSCHEMAS and i < len(path))
        if member and i < len(path) and (keyword in _NAMED_SUBSCHEMAS or isinstance(path[i], int)):
            i += 1  # the member's name or index: a subschema follows
            continue
        if keyword not in _SINGLE_SUBSCHEMA:
            break
    return keyword


_SINGLE_SUBSCHEMA = frozenset(
    {
        "additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if",
        "then", "else", "unevaluatedProperties", "unevaluatedItems",
    }
)  # fmt: skip
