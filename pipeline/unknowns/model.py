"""Typed records of the unknown-visitor store.

TrackFaces v1 is what a matcher keeps of every ended track (written in the same atomic commit as its
`track.ended` event): the quality-weighted mean embedding and the best few faces, each with its embedding and
the id of its crop. Unknown tracks are clustered from it; a "wrong person" correction reads it back."""
from __future__ import annotations

import base64
import json
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..messages import MessageVersionError


def pack_vector(v: np.ndarray) -> str:
    """float32 little-endian, base64: a 128-D embedding in 684 characters of JSON."""
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()


def unpack_vector(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)


class TrackFace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="snapshot id of the crop: camera:seq:face_index")
    k: float = Field(description="ranking key: quality-weighted face weight x size")
    q: float = Field(description="the detector's face quality (the enrollment gate reads it)")
    e: str = Field(description="embedding, pack_vector()")

    def vector(self) -> np.ndarray:
        return unpack_vector(self.e)


class TrackFaces(BaseModel):
    model_config = ConfigDict(extra="forbid")
    VERSION: ClassVar[int] = 1
    v: int = 1
    track_id: str
    camera: str
    first_seen: float
    last_seen: float
    frames: int = 0
    identity_id: str | None = None
    identity: str | None = None
    closest: float | None = None
    snapshot_id: str | None = None
    mean: str = Field(description="unit quality-weighted mean embedding of the track, pack_vector()")
    n: int = Field(0, description="faces averaged into the mean")
    faces: list[TrackFace] = Field(default_factory=list)

    def mean_vector(self) -> np.ndarray:
        return unpack_vector(self.mean)

    def encode(self) -> str:
        return self.model_dump_json()

    @classmethod
    def decode(cls, raw: bytes | str) -> "TrackFaces":
        data = json.loads(raw)
        if data.get("v") != cls.VERSION:
            raise MessageVersionError(f"TrackFaces: unsupported schema version {data.get('v')!r}")
        return cls.model_validate(data)
