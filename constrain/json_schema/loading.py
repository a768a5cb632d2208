"""Reading a schema, and which draft it is written in.

:func:`load_schema` is the one loader every entry point uses (``Grammar.from_json_schema``,
``generate_json``, the HF adapter, the CLI), with one rule for paths versus JSON text:

* a dict (or any mapping) or a boolean is the schema itself;
* a pydantic model class gives its ``model_json_schema()``;
* bytes are JSON text in UTF-8;
* a ``str`` whose first non-space character is ``{`` or ``[``, or which is ``true``/``false``, is JSON
  text;
* any other ``str``, or an ``os.PathLike``, names a JSON file, which must exist.

:func:`detect_draft` reads the draft off ``$schema``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import referencing.jsonschema

from ..exceptions import SchemaError

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
        return schema.model_json_schema()
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
        if os.path.isfile(path):
            return _read(path)
        raise SchemaError(
            f"schema {schema[:80]!r} is neither JSON text nor an existing file (no file of that name, "
            "and JSON text starts with '{' or '[' or is true/false)"
        )
    raise SchemaError(
        "a schema is a dict, a boolean, JSON text, a path or a pydantic model class, "
        f"got {type(schema).__name__}"
    )


def _read(path: str | bytes) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"cannot read schema file {path!r}: {e}") from None
    return _parse(text, f"schema file {path!r}")


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
