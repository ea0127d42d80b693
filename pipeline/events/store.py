"""Event store in Redis: one hash per event, sorted-set indexes by time (global, per camera, per identity id,
per identity name, unknown tracks), snapshots as small JPEG strings, retention by age, purge by identity.

Keys (prefix = redis.key_prefix):
  <p>:event:<id>                 hash  j=<event JSON>, camera, type, identity_id, name, track, snap, ts
  <p>:evidx:all                  zset  ts -> id            (ts = the event's last_seen)
  <p>:evidx:camera:<camera>      zset
  <p>:evidx:identity:<id>        zset
  <p>:evidx:name:<lower name>    zset
  <p>:evidx:unknown              zset  track.ended events of tracks that stayed unknown
  <p>:evidx:track:<track_id>     set   every event id of a track (purge takes the whole track)
  <p>:evdone:<id>                the write-once marker (a replayed event is never written twice)
  <p>:snap:<snapshot_id>         JPEG bytes; short TTL until an event references it, then the retention TTL
  <p>:events                     the events stream (StreamNames.events) every committed event is appended to:
                                 the sinks' feed; purge_identity XDELs the person's entries, sweep trims by age

`commit_script` writes events, checkpoint, progress and the input ack in one Lua call, guarded by the
matcher's lease (fencing): a matcher that lost its camera cannot write anything any more."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import redis

from index import hooks

from ..backbone import wait_for
from ..config import Settings
from ..unknowns import keys as ukeys
from .lua import COMMIT, OUTBOX, PURGE_STREAM
from .model import Event
from .query import EventFilter, EventReader, Page

__all__ = ["EventFilter", "EventStore", "FencedError", "Page", "index_score", "purge_identity",
           "register_gallery_hook"]

log = logging.getLogger("facetrail.events.store")

SNAPSHOT_PENDING_TTL_S = 3600
DONE_MARKER_MIN_TTL_S = 7 * 86400
STREAM_SCAN_CHUNK = 500  # events-stream entries scanned per atomic step of a purge


_TYPE_RANK = {"track.started": 0, "identity.matched": 1, "track.ended": 2, "track.named": 3}


def index_score(ev: Event) -> float:
    """Index time: last_seen, nudged by a microsecond per lifecycle step so events of one frame list in
    lifecycle order (started, matched, ended) instead of by id."""
    return float(ev.ts) + 1e-6 * _TYPE_RANK.get(ev.type, 0)


class FencedError(RuntimeError):
    """The lease this write was fenced by is no longer ours."""


class EventStore(EventReader):
    """The event store: EventReader's keys and queries, plus the writes (commit, outbox relay), corrections,
    retention and purge."""

    def __init__(self, r: redis.Redis, settings: Settings):
        super().__init__(r, settings)
        self._commit = r.register_script(COMMIT)
        self._purge_stream = r.register_script(PURGE_STREAM)
        self._outbox = r.register_script(OUTBOX)

    # ---- keys -----------------------------------------------------------------------------------------
    @property
    def retention_s(self) -> int:
        return max(1, int(self.settings.events.retention_days * 86400))

    def _zsets(self, ev: Event) -> list[str]:
        zs = [self.k("evidx", "all"), self.k("evidx", "camera", ev.camera)]
        if ev.identity_id:
            zs.append(self.k("evidx", "identity", ev.identity_id))
        if ev.identity:
            zs.append(self.k("evidx", "name", ev.identity.lower()))
        if ev.type == "track.ended" and not ev.identity_id:
            zs.append(self.k("evidx", "unknown"))
        return zs

    # ---- writing --------------------------------------------------------------------------------------
    def put_snapshot(self, snapshot_id: str, jpeg: bytes, pipe=None) -> None:
        """A candidate snapshot; it lives an hour unless a committed event references it."""
        (pipe or self.r).set(self.snapshot_key(snapshot_id), jpeg, ex=SNAPSHOT_PENDING_TTL_S, nx=True)

    def commit_op(self, events: list[Event], *, fence: tuple[str, str] | None = None,
                  sets: Sequence[tuple] = (), ack: tuple[str, str, list[str]] | None = None,
                  delete_acked: bool = False, xadds: Sequence[tuple[str, str, str]] = ()) -> dict:
        evs = []
        for ev in events:
            raw = ev.encode()
            evs.append({"id": ev.id, "key": self.event_key(ev.id), "done": self.k("evdone", ev.id), "json": raw,
                        "camera": ev.camera, "type": ev.type, "identity_id": ev.identity_id or "",
                        "name": ev.identity or "", "track": ev.track_id, "snap": ev.snapshot_id or "",
                        "snap_key": self.snapshot_key(ev.snapshot_id) if ev.snapshot_id else "",
                        "ts": repr(index_score(ev)), "zsets": self._zsets(ev),
                        "track_key": self.k("evidx", "track", ev.track_id)})
        return {"fence": list(fence) if fence else None, "events": evs,
                "done_ttl": max(DONE_MARKER_MIN_TTL_S, self.retention_s), "retention_s": self.retention_s,
                "stream": self.names.events, "maxlen": self.settings.sinks.events_maxlen,
                "channel": self.names.events if self.settings.sinks.pubsub else "",
                "sets": [list(kv) for kv in sets], "xadds": [list(x) for x in xadds],
                "ack": ({"stream": ack[0], "group": ack[1], "ids": list(ack[2]), "delete": delete_acked}
                        if ack else None)}

    def commit(self, events: list[Event], *, fence: tuple[str, str] | None = None,
               sets: Sequence[tuple] = (), ack: tuple[str, str, list[str]] | None = None,
               delete_acked: bool = False, xadds: Sequence[tuple[str, str, str]] = ()) -> int:
        """Write events (each id once), then `sets` ((key, value) or (key, value, ttl_s)), then `xadds`
        ((stream, field, value)), then ack (and XDEL with delete_acked), atomically.
        Returns how many events were new; raises FencedError when `fence` = (lease key, our value) no longer
        holds (then nothing at all was written)."""
        op = self.commit_op(events, fence=fence, sets=sets, ack=ack, delete_acked=delete_acked, xadds=xadds)
        # KEYS names the events stream only to route the call on a Redis Cluster (all keys of the op share the
        # control plane's slot there: pipeline/keys.py); the script reads its keys from the op
        n = int(self._commit(keys=[self.names.events], args=[json.dumps(op)]))
        if n < 0:
            raise FencedError(f"lease {fence[0] if fence else ''} lost; nothing written")
        if n > 0:
            wait_for(self.r, self.settings, self.names.events)
        return n

    # ---- Redis Cluster: commit through the camera's outbox -----------------------------------------------------
    def commit_outbox(self, outbox: str, events: list[Event], *, fence: tuple[str, str] | None = None,
                      camera_sets: Sequence[tuple] = (), sets: Sequence[tuple] = (),
                      ack: tuple[str, str, list[str]] | None = None, delete_acked: bool = False,
                      xadds: Sequence[tuple[str, str, str]] = ()) -> int:
        """The matcher's commit on a Redis Cluster, where the camera's state (lease, checkpoint, progress, input
        stream) and the events (control plane) are in different slots. Step 1, atomic and fenced in the camera's
        slot: camera_sets (checkpoint, progress), the acks, and the events' write op appended to `outbox`.
        Step 2, relay_outbox: every outbox op is written to the events slot (each event id once: the done-marker),
        WAITed for, then XDELed from the outbox. A crash between the steps leaves the op in the outbox; the next
        owner of the camera relays it before anything else, and a relay repeated writes nothing twice.
        Returns how many events were new; FencedError as commit()."""
        entry = ""
        if events or sets or xadds:
            entry = json.dumps(self.commit_op(events, sets=sets, xadds=xadds))
        op = {"fence": list(fence) if fence else None, "sets": [list(kv) for kv in camera_sets],
              "ack": ({"stream": ack[0], "group": ack[1], "ids": list(ack[2]), "delete": delete_acked}
                      if ack else None), "entry": entry}
        res = self._outbox(keys=[outbox], args=[json.dumps(op)])
        if isinstance(res, int) and res < 0:
            raise FencedError(f"lease {fence[0] if fence else ''} lost; nothing written")
        if not entry:
            return 0
        # Relay the op held in memory, not the outbox's copy: if the camera's primary dies before its replica got
        # step 1, the promoted replica has no outbox entry (and no acks: those entries come back and are acked as
        # already applied), so relaying only from the outbox would lose these events for good.
        n = int(self._commit(keys=[self.names.events], args=[entry]))
        wait_for(self.r, self.settings, self.names.events)
        if res:
            self.r.xdel(outbox, res)
        return n + self.relay_outbox(outbox)  # leftovers of an earlier crash between the steps

    def relay_outbox(self, outbox: str, count: int = 100) -> int:
        """Move every op left in `outbox` into the events slot, oldest first (see commit_outbox). Returns the
        number of events that were new."""
        n = 0
        while True:
            rows = self.r.xrange(outbox, "-", "+", count=count)
            if not rows:
                return n
            for mid, f in rows:
                raw = f.get(b"op", f.get("op"))
                if raw:
                    n += int(self._commit(keys=[self.names.events], args=[raw]))
            wait_for(self.r, self.settings, self.names.events)
            self.r.xdel(outbox, *[mid for mid, _ in rows])
            if len(rows) < count:
                return n

    def add(self, events: list[Event]) -> int:
        return self.commit(events)

    # ---- corrections ----------------------------------------------------------------------------------
    def relabel_track(self, track_id: str, identity_id: str | None, name: str | None) -> int:
        """File a track's stored events under another identity (None = unknown), indexes included: a cluster
        that was named, or a match a person rejected. The rejected identity's `identity.matched` events are
        withdrawn (their snapshot stays with the track). The events stream keeps what was sent; the caller
        sends a `track.named` event. Returns the events changed."""
        ids = sorted(_str(m) for m in self.r.smembers(self.k("evidx", "track", track_id)))
        n = 0
        for eid in ids:
            h = {_str(a): b for a, b in self.r.hgetall(self.event_key(eid)).items()}
            if not h.get("j"):
                continue
            ev = Event.decode(h["j"])
            if ev.type == "track.named":
                continue
            ts = float(_str(h.get("ts")) or index_score(ev))
            pipe = self.r.pipeline(transaction=True)
            if ev.identity_id:
                pipe.zrem(self.k("evidx", "identity", ev.identity_id), eid)
            if ev.identity:
                pipe.zrem(self.k("evidx", "name", ev.identity.lower()), eid)
            if ev.type == "identity.matched" and identity_id != ev.identity_id:
                for z in (self.k("evidx", "all"), self.k("evidx", "camera", ev.camera)):
                    pipe.zrem(z, eid)
                pipe.srem(self.k("evidx", "track", track_id), eid)
                pipe.delete(self.event_key(eid))
                pipe.execute()
                n += 1
                continue
            ev.identity_id, ev.identity = identity_id, name
            pipe.hset(self.event_key(eid), mapping={"j": ev.encode(), "identity_id": identity_id or "",
                                                    "name": name or ""})
            for z in self._zsets(ev):
                pipe.zadd(z, {eid: ts})
            if identity_id:
                pipe.zrem(self.k("evidx", "unknown"), eid)
            pipe.execute()
            n += 1
        return n

    # ---- deleting -------------------------------------------------------------------------------------
    def _delete_ids(self, ids: list[str]) -> int:
        if not ids:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for eid in ids:
            pipe.hgetall(self.event_key(eid))
        rows = pipe.execute()
        pipe = self.r.pipeline(transaction=True)
        n = 0
        for eid, h in zip(ids, rows):
            h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in (h or {}).items() if k not in (b"j", "j")}
            pipe.zrem(self.k("evidx", "all"), eid)
            pipe.zrem(self.k("evidx", "unknown"), eid)
            if h.get("camera"):
                pipe.zrem(self.k("evidx", "camera", h["camera"]), eid)
            if h.get("identity_id"):
                pipe.zrem(self.k("evidx", "identity", h["identity_id"]), eid)
            if h.get("name"):
                pipe.zrem(self.k("evidx", "name", h["name"].lower()), eid)
            if h.get("track"):
                pipe.srem(self.k("evidx", "track", h["track"]), eid)
            if h.get("snap"):
                pipe.delete(self.snapshot_key(h["snap"]))
            pipe.delete(self.event_key(eid))
            n += 1 if h else 0
        pipe.execute()
        return n

    def sweep(self, now: float | None = None, batch: int = 500) -> int:
        """Delete events (and their snapshots) older than events.retention_days. Returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        total = 0
        while True:
            ids = [m.decode() if isinstance(m, bytes) else m
                   for m in self.r.zrangebyscore(self.k("evidx", "all"), "-inf", f"({cutoff!r}", start=0, num=batch)]
            if not ids:
                break
            total += self._delete_ids(ids)
            self.r.zrem(self.k("evidx", "all"), *ids)
        # the stream's copies too (its ids are commit times in ms): a sink that lags by the retention loses them
        self.r.xtrim(self.names.events, minid=f"{int(cutoff * 1000)}-0", approximate=False)
        if total:
            log.info("retention: deleted %d events older than %.1f days", total, self.settings.events.retention_days)
        return total

    def purge_identity(self, identity_id: str | None, name: str | None = None) -> int:
        """Remove every event of every track that was named this identity, with their snapshots, and their
        entries in the events stream (including those whose stored copy already expired)."""
        ids: set[str] = set()
        if identity_id:
            ids.update(_str(m) for m in self.r.zrange(self.k("evidx", "identity", identity_id), 0, -1))
        by_name = [_str(m) for m in self.r.zrange(self.k("evidx", "name", name.lower()), 0, -1)] if name else []
        tracks = set()
        for eid in sorted(ids) + by_name:
            t, owner = (_str(v) if v is not None else None
                        for v in self.r.hmget(self.event_key(eid), "track", "identity_id"))
            # the name index is case-folded and outlives renames: an event in it that names another
            # identity ("Ann" vs "ann") belongs to someone else
            if eid not in ids and owner and owner != identity_id:
                continue
            ids.add(eid)
            if t:
                tracks.add(t)
        for t in tracks:
            ids.update(m.decode() if isinstance(m, bytes) else m for m in self.r.smembers(self.k("evidx", "track", t)))
        n = self._delete_ids(sorted(ids))
        self._purge_track_faces(tracks)
        if identity_id:
            self.r.delete(self.k("evidx", "identity", identity_id), ukeys.negatives(self.settings, identity_id))
            self.r.srem(ukeys.negatives(self.settings, "index"), identity_id)
            self.r.incr(ukeys.negatives_version(self.settings))
        mine = [eid for eid in by_name if eid in ids]  # also index entries whose event already expired
        if mine and name:  # (mine is empty without a name)
            self.r.zrem(self.k("evidx", "name", name.lower()), *mine)
        gone = self._purge_events_stream(identity_id, ids, tracks)
        log.info("purged %d events of identity id=%s (%d tracks, %d stream entries)", n, identity_id, len(tracks),
                 gone)
        return n

    def _purge_track_faces(self, tracks: set[str]) -> None:
        """The purged tracks' face records (embeddings) and every crop they name."""
        for t in tracks:
            raw = self.r.get(ukeys.track_faces(self.settings, t))
            if raw:
                try:
                    faces = [f["id"] for f in json.loads(raw).get("faces", [])]
                except (ValueError, AttributeError):
                    faces = []
                dels = [self.snapshot_key(f) for f in faces] + [ukeys.unk(self.settings, "face", f) for f in faces]
                if dels:
                    self.r.delete(*dels)
            self.r.delete(ukeys.track_faces(self.settings, t))

    def _purge_events_stream(self, identity_id: str | None, ids: set[str], tracks: set[str]) -> int:
        """XDEL the stream entries of these events, tracks or identity, scanning the stream (at most
        sinks.events_maxlen entries) in chunks, each one atomic and short. A sink's consumer group may still
        list a deleted entry as pending: it reads it back empty and acks it (SinkDispatcher)."""
        who = json.dumps({"identity_id": identity_id or "", "ids": sorted(ids), "tracks": sorted(tracks)})
        after, total = "0-0", 0
        while after:
            after, n = self._purge_stream(keys=[self.names.events], args=[after, STREAM_SCAN_CHUNK, who])
            after, total = after.decode() if isinstance(after, bytes) else after, total + int(n)
        return total


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def purge_identity(r: redis.Redis, settings: Settings, identity_id: str | None, name: str | None = None) -> int:
    """Gallery remove hook: a person removed from the gallery loses their events and snapshots too."""
    return EventStore(r, settings).purge_identity(identity_id, name)


def register_gallery_hook() -> None:
    """Register purge_identity on index.hooks.on_remove (once)."""
    if purge_identity not in hooks.on_remove:
        hooks.on_remove.append(purge_identity)
