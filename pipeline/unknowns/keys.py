"""Redis keys of the unknown-visitor store and of the per-track face records (prefix = redis.key_prefix):

  <p>:trackfaces:<track_id>     string  TrackFaces JSON of an ended track (events retention)
  <p>:unk:ingest                stream  track ids of tracks that ended unknown, consumer group "clusterer"
  <p>:unk:lock                  string  held by the one process clustering at a time
  <p>:unk:ver                   counter bumped by every change (other processes rebuild their index)
  <p>:unk:means                 hash    track id -> unit mean embedding (float32 bytes): the index source
  <p>:unk:trackcl               hash    track id -> cluster id
  <p>:unk:tracks                zset    last_seen -> track id (retention)
  <p>:unk:clusters              zset    last_seen -> cluster id
  <p>:unk:cl:<cid>              hash    sum (float32 bytes), n, first_seen, last_seen, cameras, faces, ignored
  <p>:unk:cl:<cid>:tracks       set     member track ids
  <p>:unk:face:<face_id>        string  face crop JPEG (unknowns retention)
  <p>:neg:<identity_id>         hash    track id -> negative examples for that identity (float32 bytes, n x 128)
  <p>:neg:ver                   counter bumped when negatives change
"""
from __future__ import annotations

from ..backbone import key


def track_faces(settings, track_id: str) -> str:
    return key(settings, "trackfaces", track_id)


def unk(settings, *parts) -> str:
    return key(settings, "unk", *parts)


def negatives(settings, identity_id: str) -> str:
    return key(settings, "neg", identity_id)


def negatives_version(settings) -> str:
    return key(settings, "neg", "ver")
