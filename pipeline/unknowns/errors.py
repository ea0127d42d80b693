"""The errors of the unknown-visitor store's user actions (importable from pipeline.unknowns.store too)."""
from __future__ import annotations


class UnknownsError(ValueError):
    """A user action on the unknowns that cannot be done; the message says why."""


class NotFound(UnknownsError):
    pass
