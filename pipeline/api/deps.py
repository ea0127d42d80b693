"""Small helpers routes share: the app state, running blocking work off the event loop."""
from __future__ import annotations

from fastapi import Request

from .state import ApiState


def state(request: Request) -> ApiState:
    return request.app.state.ft
