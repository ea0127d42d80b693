"""Event v1: one per track start, per (track, identity) match, and per track end; `track.named` when a person
names or corrects a track afterwards (an unknown cluster named, or "wrong person": identity null).

v2 (additive): `track.ended` may carry the track analyzers' results (`liveness`) and a `status`
("spoof_suspected": the camera requires liveness and the track failed it, so it names nobody). An event without
them is still written as v1 (byte for byte as before), so readers of v1 keep working; this build reads both.

Ids are deterministic: sha1(camera, track_id, type, identity_id) — a replayed decision (redelivery,
failover) computes the same id, and the store writes each id once. Track ids are deterministic too:
`<camera>:<first_seq>:<face_index>` (the frame and face that started the track)."""
from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from ..analyzers.liveness import Liveness
from ..messages import MessageVersionError

LIVENESS_FILTERS: tuple[str, ...] = ("live", "spoof", "undetermined", "spoof_suspected")


def liveness_matches(ev: "Event", want: str | None) -> bool:
    """`--liveness` / `?liveness=`: a verdict (live, spoof, undetermined: track.ended events that carry it), or
    spoof_suspected (the tracks the per-camera gate refused to name)."""
    if not want:
        return True
    if want == "spoof_suspected":
        return ev.status == "spoof_suspected"
    return ev.liveness is not None and ev.liveness.verdict == want


EventType = Literal["track.started", "identity.matched", "track.ended", "track.named"]
EVENT_TYPES: tuple[str, ...] = ("track.started", "identity.matched", "track.ended", "track.named")


def event_id(camera: str, track_id: str, type_: str, identity_id: str | None) -> str:
    raw = "\x1f".join([camera, track_id, type_, identity_id or ""])
    return hashlib.sha1(raw.encode()).hexdigest()[:24]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    VERSION: ClassVar[int] = 2
    READS: ClassVar[tuple[int, ...]] = (1, 2)
    V2_FIELDS: ClassVar[tuple[str, ...]] = ("liveness", "status")
    v: int = 1
    id: str
    type: EventType
    camera: str
    track_id: str
    identity: str | None = Field(None, description="gallery name; null while/if the track is unknown")
    identity_id: str | None = None
    score: float | None = Field(None, description="best cosine of the decided identity; for unknown tracks the "
                                                   "closest gallery similarity seen (below the decision rule)")
    first_seen: float = Field(description="capture time of the track's first face, unix seconds")
    last_seen: float = Field(description="capture time of the track's latest face at this event, unix seconds")
    frames: int = Field(0, description="frames with a face of this track so far")
    seq: int = Field(description="frame seq whose processing produced this event")
    snapshot_id: str | None = None
    votes: dict[str, float] = Field(default_factory=dict, description="quality-weighted votes per identity name")
    created_at: float = 0.0
    # v2: track analyzers (track.ended only)
    liveness: Liveness | None = Field(None, description="track.ended: does the face move like a head (live) or a "
                                                         "flat print/screen (spoof); see README Liveness")
    status: Literal["spoof_suspected"] | None = Field(None, description="track.ended: spoof_suspected = the camera "
                                                                       "requires liveness and the track failed it")

    @classmethod
    def make(cls, type_: str, camera: str, track_id: str, identity_id: str | None, **kw) -> "Event":
        return cls(id=event_id(camera, track_id, type_, identity_id), type=type_, camera=camera,
                   track_id=track_id, identity_id=identity_id, **kw)

    @property
    def ts(self) -> float:
        """The time the store indexes an event by."""
        return self.last_seen

    @model_serializer(mode="wrap")
    def _versioned(self, handler):
        """An event without analyzer results is a v1 event, field for field (every dump: store, stream, sinks,
        CLI, API); with them it is v2."""
        data = handler(self)
        if isinstance(data, dict):
            v2 = any(getattr(self, f) is not None for f in self.V2_FIELDS)
            if not v2:
                for f in self.V2_FIELDS:
                    data.pop(f, None)
            data["v"] = 2 if v2 else 1
        return data

    def encode(self) -> str:
        return self.model_dump_json()

    @classmethod
    def decode(cls, raw: bytes | str) -> "Event":
        data = json.loads(raw)
        if data.get("v") not in cls.READS:
            raise MessageVersionError(f"Event: unsupported schema version {data.get('v')!r} "
                                      f"(this build reads v{', v'.join(map(str, cls.READS))})")
        return cls.model_validate(data)

    def public(self) -> dict:
        """The stable JSON shape (CLI --json, sinks); v2 events add `liveness` and `status`."""
        return self.model_dump(mode="json")
