"""Four small recursive JSON Schemas (a tree, a linked list, any JSON value, a comment thread with
mutual recursion), shared by the recursive-schema tests and ``bench/bench_recursive_schemas.py``."""

from __future__ import annotations

from typing import Any

TREE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 3},
    },
    "required": ["name"],
    "additionalProperties": False,
}

LINKED_LIST: dict[str, Any] = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "next": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/node"}]},
            },
            "required": ["value", "next"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

ANY_JSON: dict[str, Any] = {
    "$defs": {
        "json": {
            "anyOf": [
                {"type": ["null", "boolean", "number", "string"]},
                {"type": "array", "items": {"$ref": "#/$defs/json"}},
                {"type": "object", "additionalProperties": {"$ref": "#/$defs/json"}},
            ]
        }
    },
    "$ref": "#/$defs/json",
}

COMMENTS: dict[str, Any] = {  # a thread of comments, each with replies (mutual recursion through $defs)
    "type": "object",
    "properties": {"thread": {"$ref": "#/$defs/comment"}},
    "required": ["thread"],
    "$defs": {
        "comment": {
            "type": "object",
            "properties": {
                "author": {"type": "string", "enum": ["ann", "bob"]},
                "score": {"type": "integer", "minimum": 0, "maximum": 9},
                "replies": {"$ref": "#/$defs/replies"},
            },
            "required": ["author"],
        },
        "replies": {"type": "array", "items": {"$ref": "#/$defs/comment"}},
    },
}
