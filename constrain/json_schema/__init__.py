"""JSON Schema to byte-level automata.

Stages, one module each, in the order a schema meets them:

* ``loading.py``: the schema from a dict, JSON text, bytes, a file or a pydantic model
  (:func:`load_schema`), and its draft (:func:`detect_draft`).
* ``options.py``: the compile options, one frozen dataclass (:class:`SchemaOptions`).
* ``references.py``: nodes and reference resolution (``$ref``, ``$defs``, ``$id``, ``$anchor``,
  ``$dynamicRef``) through ``referencing``.
* ``locations.py``: the subschemas that apply at one place in an instance.
* ``key_order.py``: the canonical key order, for compiling objects and for :func:`serialize_instance`.
* ``compiler.py``: the compilation's state and the dispatch of each subschema to the stages below.
* ``values.py`` (``type``, ``enum``, ``const``, any value), ``numbers.py`` (``minimum``... and
  ``multipleOf``), ``strings.py`` (``minLength``, ``maxLength``, ``pattern``, ``format``; with
  ``formats.py`` and ``ecma_regex.py``), ``arrays.py`` (``items``, ``prefixItems``, ``contains``...),
  ``objects.py`` (``properties``, ``required``, ``additionalProperties``, dependencies...): the
  per-type languages.
* ``applicators.py``: ``$ref``, ``allOf``, ``anyOf``, ``oneOf``, ``not``, ``if``/``then``/``else`` as
  set operations.
* ``unique_items.py`` and ``unevaluated.py``: ``uniqueItems``, ``unevaluatedProperties`` and
  ``unevaluatedItems``, beyond what a keyword alone decides.
* ``holes.py``: recursion as holes in DFAs; ``recursion.py``: DFAs with holes run with a stack
  (``constrain.masks.pushdown``) where the next byte decides, else a context-free grammar for the
  Earley engine in ``constrain.cfg``.
"""

from .compiler import has_ref_cycle, schema_to_dfa, schema_to_language, serialize_instance
from .loading import detect_draft, is_pydantic_model, load_schema
from .options import SchemaOptions
from .recursion import RecursiveLanguage

__all__ = [
    "RecursiveLanguage",
    "SchemaOptions",
    "detect_draft",
    "has_ref_cycle",
    "is_pydantic_model",
    "load_schema",
    "schema_to_dfa",
    "schema_to_language",
    "serialize_instance",
]
