"""constrain-tools: the conformance runners and benchmarks of a constrain source checkout.

Not part of the installed library (``pip install -e tools/`` from a checkout; ``scripts/setup.sh`` does it):

* :mod:`.harness` -- locating the shared data, per-item time limits, worker processes, progress, JSONL logs;
* :mod:`.suites` -- the JSON Schema Test Suite and MaskBench through the engine (``constrain suite ...``);
* :mod:`.jsonschemabench` -- JSONSchemaBench with a model, constrained vs unconstrained
  (``constrain bench jsonschemabench``);
* :mod:`.bench_common` -- what the ``bench/`` scripts share: the tokenizer view, one adapter per engine,
  teacher forcing with mask comparison, timing and tables.

The command line keeps ``constrain suite`` and ``constrain bench``: :mod:`constrain.cli` imports these
modules when they are installed.
"""

from __future__ import annotations

__version__ = "0.1.0"
