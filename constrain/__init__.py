"""constrain: structured-generation constraints as token-level automata.

The data path, one module per stage::

    Grammar (grammar.py) --compile (compiler.py)--> CompiledGrammar --> GrammarMatcher (matcher.py)
         regex.py: regex -> byte DFA      token_index.py: vocabulary trie walks -> token masks
    TokenizerInfo (tokenizer_info.py): token id -> bytes, specials, EOS
    json_schema/: JSON Schema -> DFA (automata.py)    cfg/: Lark grammars -> Earley automaton
    generation.py: generate / generate_json, a speculative-decoding loop over a transformers model
    constrain.kernels: apply the int32 bitmask to logits (Triton / numba / torch)
"""

from __future__ import annotations

from .compiler import CompiledGrammar, compile
from .exceptions import (
    ConstrainError,
    GrammarError,
    InvalidInputError,
    MatcherUsageError,
    RegexSyntaxError,
    SchemaError,
    TokenizerError,
    UnsupportedFeatureError,
    UnsupportedRegexFeature,
    UnsupportedSchemaFeature,
)
from .generation import BudgetExhaustedError, GenerationResult, OutputValidationError, generate, generate_json
from .grammar import Grammar
from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace, get_bitmask_shape
from .matcher import GrammarMatcher
from .tokenizer_info import TokenizerInfo

__version__ = "0.1.0"

__all__ = [
    "BudgetExhaustedError",
    "CompiledGrammar",
    "ConstrainError",
    "GenerationResult",
    "Grammar",
    "GrammarError",
    "GrammarMatcher",
    "InvalidInputError",
    "MatcherUsageError",
    "OutputValidationError",
    "RegexSyntaxError",
    "SchemaError",
    "TokenizerError",
    "TokenizerInfo",
    "UnsupportedFeatureError",
    "UnsupportedRegexFeature",
    "UnsupportedSchemaFeature",
    "__version__",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "compile",
    "generate",
    "generate_json",
    "get_bitmask_shape",
]
