"""constrain: structured-generation constraints as token-level automata.

The data path (docs/architecture.md has a paragraph per package)::

    Grammar (grammar.py): regex | JSON Schema (json_schema/) | Lark (cfg/lark_frontend.py)
      --> byte automaton: a DFA (automata/) or the Earley configuration automaton (cfg/)
      --compile (compiler.py)--> CompiledGrammar: the grammar, the TokenizerInfo and a TokenAutomaton
          (masks/dfa_masks.py or cfg/token_masks.py, both over the vocabulary trie in masks/)
      --> GrammarMatcher (matcher.py): one per sequence, the same class for every grammar kind
      --> generation.py: generate / generate_json, a speculative-decoding loop over a transformers model
    constrain.kernels: apply the int32 bitmask to logits (Triton / numba / torch)

``import constrain`` does not import torch or transformers: the names that need them (``generate``,
``generate_json`` and their result and error types from generation.py, the bitmask helpers from
constrain.kernels) are loaded on first access (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .budget import CompileBudget, budget_scope
from .caches import set_cache_limits
from .compiler import CompiledGrammar, compile
from .exceptions import (
    CompileBudgetExceeded,
    ConstrainError,
    EmptyLanguageError,
    GrammarError,
    InputTooLargeError,
    InvalidInputError,
    MatcherUsageError,
    RegexSyntaxError,
    SchemaError,
    TokenizerError,
    UnsupportedFeatureError,
    UnsupportedRegexFeature,
    UnsupportedSchemaFeature,
)
from .grammar import Grammar
from .matcher import GrammarMatcher
from .tokenizer_info import TokenizerInfo

if TYPE_CHECKING:
    from .batch import generate_batch, generate_json_batch
    from .generation import (
        BudgetExhaustedError,
        GenerationResult,
        OutputValidationError,
        generate,
        generate_json,
    )
    from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace, get_bitmask_shape
    from .sampling.asap import ASAp, asap
    from .sampling.smc import SMCResult, smc

#: public name -> the submodule that defines it, imported on first access (it imports torch)
_LAZY = {
    "BudgetExhaustedError": ".generation",
    "GenerationResult": ".generation",
    "OutputValidationError": ".generation",
    "generate": ".generation",
    "generate_json": ".generation",
    "generate_batch": ".batch",
    "generate_json_batch": ".batch",
    "allocate_token_bitmask": ".kernels",
    "apply_token_bitmask_inplace": ".kernels",
    "get_bitmask_shape": ".kernels",
    "ASAp": ".sampling.asap",
    "asap": ".sampling.asap",
    "SMCResult": ".sampling.smc",
    "smc": ".sampling.smc",
}

__version__ = "0.1.0"

__all__ = [
    "ASAp",
    "BudgetExhaustedError",
    "CompileBudget",
    "CompileBudgetExceeded",
    "CompiledGrammar",
    "ConstrainError",
    "EmptyLanguageError",
    "GenerationResult",
    "Grammar",
    "GrammarError",
    "GrammarMatcher",
    "InputTooLargeError",
    "InvalidInputError",
    "MatcherUsageError",
    "OutputValidationError",
    "RegexSyntaxError",
    "SMCResult",
    "SchemaError",
    "TokenizerError",
    "TokenizerInfo",
    "UnsupportedFeatureError",
    "UnsupportedRegexFeature",
    "UnsupportedSchemaFeature",
    "__version__",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "asap",
    "budget_scope",
    "compile",
    "generate",
    "generate_batch",
    "generate_json",
    "generate_json_batch",
    "get_bitmask_shape",
    "set_cache_limits",
    "smc",
]


#: submodules that imported torch when this package imported them eagerly: still reachable as attributes
_LAZY_MODULES = frozenset({"drafters", "generation", "kernels", "models"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)
