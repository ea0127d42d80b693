"""Track analyzers (liveness; attributes would be another): see base.py."""
from .base import ANALYZERS, Analyzer, FaceBuffer, FaceSample

__all__ = ["ANALYZERS", "Analyzer", "FaceBuffer", "FaceSample"]
