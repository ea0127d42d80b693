"""The typed identity state of one track: what IdentityVoter (identity.py) and MatcherStage (pipeline/stages/
match.py) keep per track, checkpointed with the tracker (`Track.to_state`).

Checkpoint JSON: `TrackState.to_dict()` writes every field under the track's "state" key (matcher checkpoint v2).
Checkpoint v1 kept the same keys as a free dict under "data", with a key missing until first set;
`TrackState.from_dict` reads both (a missing key takes its default, which is what the old code's `.get` read)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Vote:
    """An identity's votes in a track: the accepted faces' summed weight, their count and best cosine."""

    name: str
    w: float = 0.0
    n: int = 0
    best: float = 0.0


@dataclass
class Named:
    """An identity a track mean was accepted for (`mean`), or that named the track by its mean (`named`)."""

    id: str
    name: str
    score: float


@dataclass
class Snap:
    """The track's snapshot: its id (camera:seq:face_index) and ranking key."""

    id: str
    q: float


@dataclass
class BestFace:
    """One of the track's best embedded faces (unknowns.model.TrackFace's fields)."""

    id: str
    k: float
    q: float
    e: str  # embedding, unknowns.model.pack_vector()


@dataclass
class TrackState:
    first_cap: float | None = None   # captured_at of the first / last face
    last_cap: float | None = None
    frames: int = 0                  # faces seen
    started: bool = False            # track.started emitted
    live_ok: bool = False            # judged live by the analyzers (the gate let the name through)
    votes: dict[str, Vote] = field(default_factory=dict)  # identity id -> its face votes
    closest: float = 0.0             # best top-1 cosine seen, decided or not
    identity_id: str | None = None   # the name now (None: unknown)
    by: str | None = None            # what named it: "faces" (votes) or "track" (the track mean)
    named: Named | None = None       # the track-mean decision that named it (by == "track")
    mean: Named | None = None        # the latest accepted track-mean search result
    mean_at: int | None = None       # `en` when the mean was last searched
    emitted: list[str] = field(default_factory=list)  # identity ids announced (identity.matched)
    esum: list[float] | None = None  # quality-weighted sum of the embedded faces
    en: int = 0                      # faces in esum
    top1: dict[str, int] = field(default_factory=dict)  # identity id -> faces it was the top-1 of
    snap: Snap | None = None
    best: list[BestFace] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrackState":
        """Both checkpoint versions: v2's full dict, or v1's free dict (keys missing until first set)."""
        def named(x: dict | None) -> Named | None:
            return Named(x["id"], x["name"], x["score"]) if x else None

        return cls(first_cap=d.get("first_cap"), last_cap=d.get("last_cap"), frames=d.get("frames", 0),
                   started=bool(d.get("started", False)), live_ok=bool(d.get("live_ok", False)),
                   votes={k: Vote(**v) for k, v in (d.get("votes") or {}).items()},
                   closest=d.get("closest", 0.0), identity_id=d.get("identity_id"), by=d.get("by"),
                   named=named(d.get("named")), mean=named(d.get("mean")), mean_at=d.get("mean_at"),
                   emitted=list(d.get("emitted") or []), esum=d.get("esum"), en=d.get("en", 0),
                   top1=dict(d.get("top1") or {}), snap=Snap(**d["snap"]) if d.get("snap") else None,
                   best=[BestFace(**f) for f in d.get("best") or []])
