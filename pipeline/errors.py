"""Errors shared across layers. UserError is a problem the user can fix; the CLI prints it as one line and
exits 2. It lives here (not in pipeline.cli) so workers and the API can raise it without importing the CLI."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""
