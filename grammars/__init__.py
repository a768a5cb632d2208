"""Lark grammars shipped as package data (installed as ``constrain.grammars``).

``load("json")`` returns the text of ``json.lark``; ``names()`` lists what ships. Pass the text to
:meth:`constrain.Grammar.from_lark`, or use ``Grammar.from_lark(name="json")`` directly.
"""

from __future__ import annotations

from importlib import resources

from constrain.exceptions import InvalidInputError


def names() -> list[str]:
    """The names of the shipped grammars, sorted (``"json"``, ``"sqlite_select"``, ...)."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".lark")] for p in root.iterdir() if p.name.endswith(".lark"))


def load(name: str) -> str:
    """The text of the shipped grammar ``name`` (without the ``.lark`` suffix)."""
    if name not in names():
        raise InvalidInputError(f"no shipped grammar named {name!r}; available: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.lark").read_text(encoding="utf-8")
