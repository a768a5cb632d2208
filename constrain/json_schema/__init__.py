"""JSON Schema to byte-level automata.

Stages, one module each:

* ``ecma_regex.py``: ECMA-262 ``pattern`` / ``patternProperties`` regexes to Python ``re`` syntax.
* ``formats.py``: ``format`` names to regexes over the decoded string.
* ``numbers.py``: numeric ranges and ``multipleOf`` as automata over JSON number text.
* ``compiler.py``: the schema walk; every subschema becomes a DFA over the compact serialisation, and the
  applicators (``allOf``, ``anyOf``, ``oneOf``, ``not``, ``if``) become intersections, unions and
  complements of those DFAs. A ``$ref`` cycle leaves *holes* in those DFAs.
* ``recursion.py``: DFAs with holes to a context-free grammar for the Earley engine in ``constrain.cfg``.
"""
