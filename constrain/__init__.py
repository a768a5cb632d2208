"""constrain: structured-generation constraints as token-level automata.

The data path, one module per stage::

    Grammar (grammar.py) --compile (compiler.py)--> CompiledGrammar --> GrammarMatcher (matcher.py)
         regex.py: regex -> byte DFA      token_index.py: vocabulary trie walks -> token masks
    TokenizerInfo (tokenizer_info.py): token id -> bytes, specials, EOS
    constrain.kernels: apply the int32 bitmask to logits (Triton / numba / torch)
"""

from __future__ import annotations

from .compiler import CompiledGrammar, compile
from .exceptions import (
    ConstrainError,
    InvalidInputError,
    MatcherUsageError,
    RegexSyntaxError,
    TokenizerError,
    UnsupportedFeatureError,
    UnsupportedRegexFeature,
)
from .grammar import Grammar
from .kernels import allocate_token_bitmask, apply_token_bitmask_inplace, get_bitmask_shape
from .matcher import GrammarMatcher
from .tokenizer_info import TokenizerInfo

__version__ = "0.1.0"

__all__ = [
    "CompiledGrammar",
    "ConstrainError",
    "Grammar",
    "GrammarMatcher",
    "InvalidInputError",
    "MatcherUsageError",
    "RegexSyntaxError",
    "TokenizerError",
    "TokenizerInfo",
    "UnsupportedFeatureError",
    "UnsupportedRegexFeature",
    "__version__",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "compile",
    "get_bitmask_shape",
]
