"""The JSON Schema vocabulary as the compiler groups it: which keywords only annotate, which hold
subschemas, which a subschema's own language (its type) reads."""

from __future__ import annotations

#: Keywords that only annotate: never constraints.
ANNOTATIONS = frozenset({
    "$schema", "$id", "id", "$comment", "$defs", "definitions", "$anchor", "$dynamicAnchor",
    "$recursiveAnchor", "$vocabulary", "title", "description", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "contentSchema",
})  # fmt: skip

#: Keywords whose value is one subschema.
SINGLE_SUBSCHEMA = (
    "additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if", "then",
    "else", "unevaluatedProperties", "unevaluatedItems",
)  # fmt: skip
#: Keywords whose value is an array of subschemas (``items`` before 2020-12).
LIST_SUBSCHEMAS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
#: Keywords whose value maps names to subschemas.
MAP_SUBSCHEMAS = ("properties", "patternProperties", "dependentSchemas", "dependencies")

#: Keywords that shape an object's keys or an array's items: where none applies, a location's
#: skeleton is just "any value".
STRUCTURAL = frozenset({
    "properties", "required", "dependentRequired", "dependentSchemas", "dependencies", "patternProperties",
    "additionalProperties", "items", "prefixItems", "additionalItems", "contains",
})  # fmt: skip

#: Keywords read by a subschema's own language (its ``type`` and the per-type keywords).
OWN_KEYWORDS = frozenset({
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "format", "items", "prefixItems", "additionalItems", "minItems",
    "maxItems", "contains", "properties", "patternProperties", "additionalProperties", "required",
    "propertyNames", "minProperties", "maxProperties",
})  # fmt: skip

#: Keywords that keep a ``type`` from being a *bare* type (one that only cuts first bytes).
NOT_BESIDE_BARE_TYPE = OWN_KEYWORDS - {"type"} | {
    "not", "if", "then", "else", "dependentSchemas", "dependencies", "dependentRequired", "uniqueItems",
    "unevaluatedProperties", "unevaluatedItems", "$recursiveRef",
}  # fmt: skip

#: Keywords named when an automaton size limit is hit while combining a subschema's parts.
SIZE_KEYWORDS = (
    "properties", "patternProperties", "additionalProperties", "items", "prefixItems", "allOf", "anyOf",
    "oneOf", "not", "if", "$ref", "enum",
)  # fmt: skip
