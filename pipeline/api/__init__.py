"""REST API (FastAPI): `create_app(settings)`; run with `facetrail api` or as the `api` role of `facetrail up`."""
from .app import create_app

__all__ = ["create_app"]
