"""Named drafter compositions, for benchmarks and the command line: ``make_drafter("forced+ngram")``.

A name is ``none`` or drafters joined by ``+``, tried in that order each round (a
:class:`~constrain.drafters.ComposedDrafter` where there are several):

``forced``      the grammar's forced tokens (:class:`~constrain.drafters.GrammarForcedDrafter`);
``ngram``       prompt lookup (:class:`~constrain.drafters.PromptLookupDrafter`);
``draft-model`` the first ``draft_layers`` layers of the target (early exit, weights shared), or
                ``draft_model`` when given (:class:`~constrain.speculation_models.DraftModelDrafter`);
``layer-skip``  a subset of the target's layers (``skip_layers``; see
                :func:`~constrain.speculation_models.calibrate_layer_skip`).

Each call builds fresh drafters: they hold per-sequence state (an n-gram index, a draft KV cache,
acceptance estimates), so use one per generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .drafters import ComposedDrafter, Drafter, GrammarForcedDrafter, PromptLookupDrafter
from .exceptions import InvalidInputError

__all__ = ["DRAFTER_NAMES", "DRAFTER_PARTS", "make_drafter"]

DRAFTER_PARTS = ("forced", "ngram", "draft-model", "layer-skip")
#: The compositions the speculative bench runs by default (``none`` is the non-speculative loop).
DRAFTER_NAMES = ("none", "forced", "ngram", "forced+ngram", "forced+draft-model", "forced+layer-skip")
#: Early-exit depth of the ``draft-model`` part when no draft model is given.
DEFAULT_DRAFT_LAYERS = 8
#: The ``layer-skip`` subset of SmolLM2-135M (30 layers) chosen by calibrate_layer_skip on JSONSchemaBench
#: outputs: the first 10 and last 10 layers agreed most with the target (29% of masked argmaxes; early
#: exits at 8-20 layers agreed 3-11%), see bench/README.md.
DEFAULT_SKIP_LAYERS: tuple[int, ...] = tuple(range(10)) + tuple(range(20, 30))


def make_drafter(
    name: str,
    model: Any = None,
    *,
    draft_model: Any = None,
    draft_layers: int = DEFAULT_DRAFT_LAYERS,
    skip_layers: Sequence[int] | None = None,
    temperature: float = 0.0,
    top_p: float | None = None,
) -> Drafter | None:
    """The drafter a name describes (``None`` for ``"none"``); ``model`` is the target (needed by
    ``draft-model`` without ``draft_model``, and by ``layer-skip``). ``temperature``/``top_p``: the
    model drafters sample with them (0: greedy drafts).

    Raises:
        InvalidInputError: an unknown part, or a model part without the model it needs.
    """
    name = name.strip().lower()
    if name in ("none", ""):
        return None
    parts: list[Drafter] = []
    for part in name.split("+"):
        if part == "forced":
            parts.append(GrammarForcedDrafter())
        elif part == "ngram":
            parts.append(PromptLookupDrafter())
        elif part in ("draft-model", "layer-skip"):
            from .speculation_models import DraftModelDrafter, LayerSkipDrafter, truncated_model

            if part == "draft-model" and draft_model is not None:
                parts.append(DraftModelDrafter(draft_model, temperature=temperature, top_p=top_p))
                continue
            if model is None:
                raise InvalidInputError(f"the {part!r} drafter needs the target model (model=...)")
            if part == "draft-model":
                parts.append(
                    DraftModelDrafter(
                        truncated_model(model, draft_layers), temperature=temperature, top_p=top_p
                    )
                )
            else:
                layers = skip_layers if skip_layers is not None else DEFAULT_SKIP_LAYERS
                parts.append(LayerSkipDrafter(model, layers, temperature=temperature, top_p=top_p))
        else:
            raise InvalidInputError(
                f"unknown drafter {part!r} in {name!r}; use 'none' or parts of {', '.join(DRAFTER_PARTS)} "
                "joined by '+'"
            )
    if len(parts) == 1:
        return parts[0]
    return ComposedDrafter(tuple(parts))
