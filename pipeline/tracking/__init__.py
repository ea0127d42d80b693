"""Matcher stage pieces (plain classes, no Redis): reorder buffer, face tracker, per-track identity voting,
and MatcherStage which turns ordered frames into events."""
from .identity import Candidate, IdentityVoter, decide_open_set
from .reorder import ReorderBuffer
from .stage import MatcherStage, StageOutput
from .tracker import Detection, FaceTracker, Track

__all__ = ["Candidate", "IdentityVoter", "decide_open_set", "ReorderBuffer", "MatcherStage", "StageOutput",
           "Detection", "FaceTracker", "Track"]
