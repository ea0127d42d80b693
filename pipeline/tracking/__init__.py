"""Matcher stage pieces (plain classes, no Redis): reorder buffer, face tracker, per-track identity voting and
its typed state. MatcherStage (pipeline/stages/match.py) puts them together."""
from .identity import Candidate, IdentityVoter, decide_open_set
from .reorder import ReorderBuffer
from .state import TrackState
from .tracker import Detection, FaceTracker, Track

__all__ = ["Candidate", "IdentityVoter", "decide_open_set", "ReorderBuffer", "Detection", "FaceTracker", "Track",
           "TrackState"]
