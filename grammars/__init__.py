"""Lark grammars shipped as package data (installed as ``constrain.grammars``)."""
