"""Integrations with model runtimes (installed as ``constrain.adapters``)."""
