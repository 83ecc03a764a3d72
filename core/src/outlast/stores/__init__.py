"""Stores that ship with core: ``memory://`` and ``sqlite:///path``."""
