"""One typed, versioned message model per stream. A frame is named by (camera, seq); everything downstream
carries that key. Unknown versions are refused loudly (MessageVersionError), never guessed.

Binary fields (JPEG bytes, embeddings) travel base64-encoded inside the JSON body.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class MessageVersionError(ValueError):
    pass


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64", frozen=False)
    VERSION: ClassVar[int] = 1
    v: int = 1

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str):
        import json

        data = json.loads(raw)
        if data.get("v") != cls.VERSION:
            raise MessageVersionError(f"{cls.__name__}: unsupported schema version {data.get('v')!r} "
                                      f"(this build reads v{cls.VERSION})")
        return cls.model_validate_json(raw)


class FrameRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    camera: str
    seq: int = Field(ge=0)
    captured_at: float = Field(description="wall-clock capture time, unix seconds")
    pts: float | None = Field(None, description="stream timestamp, seconds from stream start")
    width: int
    height: int
    eos: bool = Field(False, description="end of a finite source: seq is one past the last frame, no pixels")
    # Optional with a default, so v1 stays v1: a writer that never sets it means "one epoch". A live camera
    # starts a new epoch at every (re)connect and after every gap; the matcher ends every open track of the
    # camera when the epoch changes, so no track spans an outage.
    epoch: int = Field(0, ge=0, description="stream epoch: bumped at each reconnect or gap of a live camera")

    @property
    def stream_time(self) -> float:
        """The frame's time for tracking and the re-embedding gate: pts, or the capture time without one.
        Live cameras publish a pts that is monotonic per camera across reconnects (pipeline/streamtime.StreamClock)."""
        return self.pts if self.pts is not None else self.captured_at


class FrameMsg(Message):
    """frames:{camera} - one sampled frame, JPEG-encoded.

    v2 (written by a grabber that gates on motion itself, motion.at = grabber; v1 is still read, and written by
    every other grabber, byte for byte as before): `still` = the grabber's motion gate saw nothing move and the
    camera was not hot, so the frame travels without pixels (jpeg empty) and the detector passes it on with no
    faces; `gated` = the grabber's gate already passed this frame, so the detector does not check it again.
    The seq is used either way, so the matcher sees every seq in order and ages its tracks as before."""

    VERSION: ClassVar[int] = 2
    VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    v: int = 1
    frame: FrameRef
    jpeg: bytes
    still: bool = False
    gated: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.v not in self.VERSIONS:
            raise ValueError(f"FrameMsg: unsupported schema version {self.v!r}")
        if self.v == 1 and (self.still or self.gated):
            raise ValueError("FrameMsg v1 has no still/gated fields (they are v2)")
        if self.still and self.jpeg:
            raise ValueError("a still frame carries no pixels")
        return self

    def encode(self) -> bytes:
        if self.v == 1:  # exactly the v1 body: older detectors refuse fields they do not know
            return self.model_dump_json(exclude={"still", "gated"}).encode()
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str):
        import json

        v = json.loads(raw).get("v")
        if v not in cls.VERSIONS:
            raise MessageVersionError(f"FrameMsg: unsupported schema version {v!r} (this build reads v1 and v2)")
        return cls.model_validate_json(raw)


class DetectedFace(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")
    index: int
    box: list[float] = Field(min_length=4, max_length=4)
    landmarks: list[float] = Field(min_length=10, max_length=10)
    score: float
    quality: float = 0.0
    thumb_jpeg: bytes | None = Field(None, description="face region with context, for snapshots")


class FacesMsg(Message):
    """faces - detector output for one frame (possibly zero faces), aligned crops for the embedder.

    v2: a face the detector's ReembedGate passed over has an empty crop (and no thumbnail); the embedder embeds
    only the faces with a crop. (v1 had a crop for every face.)"""

    VERSION: ClassVar[int] = 2
    v: int = 2
    frame: FrameRef
    faces: list[DetectedFace] = Field(default_factory=list)
    crops: list[bytes] = Field(default_factory=list, description="per face: raw 112x112x3 uint8 BGR, or empty = "
                                                                 "tracked without a new embedding")


class EmbeddedFace(DetectedFace):
    embedding: bytes = Field(description="float32 unit vector, little-endian")

    def vector(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype="<f4")


class EmbeddingsMsg(Message):
    """embeddings:{camera} - every frame of a camera, in any order; the matcher restores order by seq."""

    frame: FrameRef
    faces: list[EmbeddedFace] = Field(default_factory=list)


class CameraCommand(Message):
    """cameras:changes - runtime add/remove of cameras, applied by grabbers without restart."""

    op: Literal["add", "remove"]
    name: str
    url: str | None = None
    fps: float | None = None
