"""Every stage of the pipeline, as plain classes with batch methods and no Redis (ARCHITECTURE "Stages vs
workers"): DetectStage (frames -> FacesMsg), EmbedStage (FacesMsg -> EmbeddingsMsg), MatcherStage (one camera's
ordered EmbeddingsMsg -> events). The workers in workers/ are loops around them (read a stream, call the stage,
write, ack); `identify` on a still (pipeline/identify.py) runs DetectStage and EmbedStage in-process."""
from .detect import DetectStage, face_thumb
from .embed import EmbedStage
from .match import MatcherStage, StageOutput

__all__ = ["DetectStage", "EmbedStage", "MatcherStage", "StageOutput", "face_thumb"]
