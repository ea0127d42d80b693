"""CameraMatcher: the matcher's reorder-and-match path for one camera it owns (workers/matcher.py runs the loop).

Per batch: reorder by seq (ReorderBuffer) -> MatcherStage (pipeline/stages/match.py: tracker + identity voting) ->
one Lua commit that, only if the lease is still ours, writes the new events (each id once), the checkpoint (tracker
state + next seq), the progress key, and acks the applied input entries. A takeover loads the checkpoint, claims
the dead owner's pending entries and carries on.

Checkpoint JSON (`<p>:matcher:ckpt:{camera}`, `<p>:{camera}:ckpt` on a cluster): {"v", "next_seq", "floor",
"stage", "at"}. v2 (this version) holds each track's typed state (pipeline/tracking/state.py) under "state"; v1
held the same keys as a free dict under "data" and is still read, so a matcher restarting on a checkpoint an older
version wrote resumes from it."""
from __future__ import annotations

import json
import logging
import time

import redis

from pipeline.backbone import transient_client
from pipeline.cameras import CameraRegistry, Lease
from pipeline.config import Settings
from pipeline.events.store import EventStore
from pipeline.messages import EmbeddingsMsg
from pipeline.stages import MatcherStage, StageOutput
from pipeline.streams import StreamNames, all_gone, ensure_group
from pipeline.tracking import ReorderBuffer
from pipeline.unknowns import keys as ukeys

from .base import dead_letter

log = logging.getLogger("facetrail.matcher")

GROUP = "matchers"
CHECKPOINT_VERSION = 2
CHECKPOINT_READS = (1, 2)  # v1: track state as a free dict ("data"); v2: typed ("state")
TRIM_AFTER_S = 60.0
# The checkpoint (tracker state, ~3 KB per open track) and the input acks are committed at most this often (and
# at every end of stream / shutdown); events are committed with every batch. A takeover replays the unacked
# frames from the checkpoint: the stage is deterministic and event ids are too, so the replay repeats no event.
# Per batch, the checkpoint was 59 % of all bytes the durable Redis wrote (bench/soak_live.py).
CHECKPOINT_EVERY_S = 1.0  # applied input entries stay this long (readers such as `facetrail process` tail the stream)


def lease_key(settings: Settings, camera: str) -> str:
    return StreamNames.of(settings).matcher_lease(camera)


def checkpoint_key(settings: Settings, camera: str) -> str:
    return StreamNames.of(settings).checkpoint(camera)


def progress_key(settings: Settings, camera: str) -> str:
    """Last frame seq the matcher finished (EOS included); `facetrail process` waits on it."""
    return StreamNames.of(settings).progress(camera)


def _registered(r: redis.Redis, settings: Settings, camera: str):
    """The camera's config as the registry holds it (runtime edits win over the file), or None."""
    try:
        return CameraRegistry(r, settings).get(camera)
    except (redis.RedisError, ValueError):
        return None


class CameraMatcher:
    """One owned camera's reorder-and-match path: lease, reorder buffer, MatcherStage; `feed` + `flush` apply and
    commit (events, checkpoint, acks in one fenced commit)."""

    def __init__(self, r: redis.Redis, settings: Settings, camera: str, consumer: str, search, store: EventStore):
        self.r = r  # durable: lease, checkpoint, events, snapshots
        self.rs = transient_client(settings, r)  # the embeddings stream (in flight, not persisted)
        self.settings = settings
        self.camera = camera
        self.consumer = consumer
        self.store = store
        self.resume_seq: int | None = None  # the checkpoint's next seq at takeover: older seqs were applied
        self.names = StreamNames.of(settings)
        self.stream = self.names.embeddings(camera)
        self.lease = Lease(r, lease_key(settings, camera), consumer, int(settings.tracking.lease_ttl_s * 1000))
        self.stage = MatcherStage.from_settings(camera, search, settings, name_of=getattr(search, "name_of", None),
                                                camera_config=_registered(r, settings, camera))
        # a missing seq is skipped after reorder_timeout_ms only when it is known gone (dropped at the source,
        # dead-lettered); one still in flight (held by a killed worker until reclaimed) is waited for, up to
        # twice the reclaim time
        timeout_s = settings.tracking.reorder_timeout_ms / 1000.0
        self.buffer: ReorderBuffer = ReorderBuffer(
            None, timeout_s, name=camera,
            can_skip=lambda lo, hi: all_gone(self.rs, self.names, camera, lo, hi),
            max_wait_s=timeout_s + 2 * settings.workers.reclaim_idle_ms / 1000.0 + 3 * settings.workers.heartbeat_s)
        self.late = 0  # frames that came after their seq was skipped (acked without being applied)
        self.ckpt_every_s = min(CHECKPOINT_EVERY_S, settings.tracking.lease_ttl_s / 4)  # < orphan-reclaim idle
        self.last_ckpt = time.monotonic()
        self.pending_seq: int | None = None  # last seq applied but not yet checkpointed
        self.reported = (0, 0)  # (buffer.skipped, late) already added to the matcher's metrics
        self.to_ack: list[str] = []
        self.last_renew = 0.0
        self.last_trim = self.last_frame = self.last_reclaim = time.monotonic()
        self.frames = 0
        self.events = 0
        self.unknowns = 0  # unknown tracks queued for clustering

    # ---- ownership ------------------------------------------------------------------------------------
    def acquire(self) -> bool:
        if not self.lease.acquire():
            return False
        self.last_renew = time.monotonic()
        try:
            if self.names.cluster:  # events the last owner committed but did not relay yet go first
                self.events += self.store.relay_outbox(self.names.outbox(self.camera))
            self._load_checkpoint()
            self.resume_seq = self.buffer.next_seq
            ensure_group(self.rs, self.stream, GROUP)
            self._claim_pending()
        except Exception:
            self.lease.release()
            raise
        log.info("camera=%s matcher=%s: lease acquired (fence %d), resuming at seq %s", self.camera,
                 self.consumer, self.lease.fence, self.buffer.next_seq)
        return True

    def renew(self) -> bool:
        now = time.monotonic()
        if now - self.last_renew < self.settings.tracking.lease_ttl_s / 3:
            return True
        self.last_renew = now
        return self.lease.renew()

    def release(self) -> None:
        self.lease.release()

    def trim(self, keep_s: float = TRIM_AFTER_S) -> int:
        """Drop entries that were applied (acked) more than keep_s ago; never one still pending or unread."""
        def sid(x) -> tuple[int, int]:
            x = x.decode() if isinstance(x, bytes) else str(x)
            a, _, b = x.partition("-")
            return int(a), int(b or 0)

        floor = (int((time.time() - keep_s) * 1000), 0)
        try:
            groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                      for g in self.rs.xinfo_groups(self.stream)}
        except redis.ResponseError:
            return 0
        g = groups.get(GROUP)
        if g is None:
            return 0
        last = sid(g["last-delivered-id"])
        floor = min(floor, (last[0], last[1] + 1))
        pend = self.rs.xpending(self.stream, GROUP)
        if pend["pending"]:
            floor = min(floor, sid(pend["min"]))
        if floor <= (0, 0):
            return 0
        return int(self.rs.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))

    def _load_checkpoint(self) -> None:
        raw = self.r.get(checkpoint_key(self.settings, self.camera))
        if not raw:
            return
        ck = json.loads(raw)
        if ck.get("v") not in CHECKPOINT_READS:
            log.error("camera=%s: checkpoint version %r unknown; starting fresh", self.camera, ck.get("v"))
            return
        self.stage.load_state(ck["stage"])
        self.buffer.next_seq = ck["next_seq"]
        self.buffer.floor = ck.get("floor", 0)

    def _claim_pending(self) -> None:
        """Everything pending in the group is ours now (we hold the lease): take it and feed it."""
        start = "0-0"
        while True:
            try:
                res = self.rs.xautoclaim(self.stream, GROUP, self.consumer, min_idle_time=0, start_id=start,
                                        count=500)
            except redis.ResponseError as e:
                if "NOGROUP" in str(e):
                    return
                raise
            start = res[0].decode() if isinstance(res[0], bytes) else res[0]
            if start in ("0-0", "0"):
                break
        last = "0"
        while True:
            resp = self.rs.xreadgroup(GROUP, self.consumer, {self.stream: last}, count=500)
            rows = resp[0][1] if resp else []
            if not rows:
                break
            for mid, fields in rows:
                mid = mid.decode() if isinstance(mid, bytes) else mid
                self.feed(mid, (fields or {}).get(b"m"))
                last = mid

    # ---- frames ---------------------------------------------------------------------------------------
    def feed(self, msg_id: str, payload: bytes | None) -> None:
        self.last_frame = time.monotonic()
        if payload is None:  # deleted under us: nothing to apply
            self.to_ack.append(msg_id)
            return
        try:
            msg = EmbeddingsMsg.decode(payload)
        except ValueError as e:
            dead_letter(self.r, self.settings, "matcher", self.stream, msg_id, f"{type(e).__name__}: {e}", payload)
            self.to_ack.append(msg_id)
            return
        if msg.frame.camera != self.camera:
            log.error("camera=%s stream=%s id=%s: message is for camera %r; dropped", self.camera, self.stream,
                      msg_id, msg.frame.camera)
            self.to_ack.append(msg_id)
            return
        held = self.buffer.get(msg.frame.seq)
        if held is not None and held[0] == msg_id:
            return  # the entry we already hold, delivered again (reclaimed): nothing to do
        if not self.buffer.push(msg.frame.seq, (msg_id, msg)):
            if self.buffer.next_seq is not None and msg.frame.seq >= max(self.buffer.floor, self.resume_seq or 0):
                self.late += 1  # (below resume_seq: applied before the takeover, acked now)
            log.info("camera=%s seq=%d id=%s: late or duplicate frame (next seq %s); acked without applying",
                     self.camera, msg.frame.seq, msg_id, self.buffer.next_seq)
            self.to_ack.append(msg_id)

    def reclaim_orphans(self) -> int:
        """Entries delivered to another consumer that went silent (a matcher that lost this camera but read
        on for a moment before noticing): take them over and feed them. Returns how many."""
        start, n = "0-0", 0
        idle = int(self.settings.tracking.lease_ttl_s * 1000)
        while True:
            res = self.rs.xautoclaim(self.stream, GROUP, self.consumer, min_idle_time=idle, start_id=start,
                                    count=200)
            for mid, fields in res[1]:
                if fields:
                    self.feed(mid.decode() if isinstance(mid, bytes) else mid, fields.get(b"m"))
                    n += 1
            start = res[0].decode() if isinstance(res[0], bytes) else res[0]
            if start in ("0-0", "0"):
                return n

    def close(self) -> int:
        """End the open tracks of a camera that went away (track.ended events), commit. Returns events."""
        self.flush(force=True)  # checkpoint and ack what was applied first
        out = self.stage.end_all()
        if not out.events:
            return 0
        return self._commit(out, [], None)

    def flush(self, force: bool = False) -> int:
        """Apply every frame that is ready and commit its events; checkpoint and ack when due (or `force`).
        Returns frames applied."""
        ready = self.buffer.pop_ready()
        if not ready and not self.to_ack:
            return 0
        now = time.monotonic()
        due = force or now - self.last_ckpt >= self.ckpt_every_s
        if not ready and not due:
            return 0
        out = StageOutput()
        acks = list(self.to_ack)
        last_seq = None
        for seq, (mid, msg) in ready:
            try:
                out.extend(self.stage.update(msg))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as e:  # noqa: BLE001 - a frame the stage cannot apply: keep it, skip it, go on
                log.exception("camera=%s seq=%d id=%s: matcher stage failed", self.camera, seq, mid)
                dead_letter(self.r, self.settings, "matcher", self.stream, mid, f"{type(e).__name__}: {e}",
                            msg.encode())
            acks.append(mid)
            last_seq = seq
            if msg.frame.eos:
                self.buffer.restart(seq + 1)
                due = True  # `facetrail process` waits for the EOS in the progress key
                log.info("camera=%s: end of stream at seq %d", self.camera, seq)
        if last_seq is not None:
            self.pending_seq = last_seq
        if due:
            self._commit(out, acks, self.pending_seq)
            self.last_ckpt, self.pending_seq = now, None
        else:
            self._commit_events(out)
            self.to_ack = acks
        self.frames += len(ready)
        return len(ready)

    def _put_snapshots(self, out: StageOutput) -> None:
        if out.snapshots or out.crops:
            pipe = self.r.pipeline(transaction=False)
            for sid, jpeg in {**out.crops, **out.snapshots}.items():
                self.store.put_snapshot(sid, jpeg, pipe=pipe)
            pipe.execute()

    def _track_writes(self, out: StageOutput) -> tuple[list, list]:
        """Ended tracks' face records (kept with the events' retention) and the unknown ones' clustering queue
        entries: written in the same commit as their track.ended events. A replay after a takeover writes the
        same records again; clustering skips a track it already has."""
        sets, xadds = [], []
        for rec in out.tracks:
            sets.append((ukeys.track_faces(self.settings, rec.track_id), rec.encode(), self.store.retention_s))
            if rec.identity_id is None and self.settings.unknowns.enabled:
                xadds.append((ukeys.unk(self.settings, "ingest"), "t", rec.track_id))
        self.unknowns += len(xadds)
        return sets, xadds

    def _commit_events(self, out: StageOutput) -> int:
        """Events (each id once) and snapshots, under the lease; no checkpoint, no ack (see CHECKPOINT_EVERY_S)."""
        self._put_snapshots(out)
        if not out.events:
            return 0
        sets, xadds = self._track_writes(out)
        if self.names.cluster:
            n = self.store.commit_outbox(self.names.outbox(self.camera), out.events,
                                         fence=(self.lease.key, self.lease.token or ""), sets=sets, xadds=xadds)
        else:
            n = self.store.commit(out.events, fence=(self.lease.key, self.lease.token or ""), sets=sets,
                                  xadds=xadds)
        self.events += n
        return n

    def _commit(self, out: StageOutput, acks: list[str], last_seq: int | None) -> int:
        self._put_snapshots(out)
        ck = {"v": CHECKPOINT_VERSION, "next_seq": self.buffer.next_seq, "floor": self.buffer.floor,
              "stage": self.stage.to_state(), "at": round(time.time(), 3)}
        sets = [(checkpoint_key(self.settings, self.camera), json.dumps(ck, separators=(",", ":")))]
        if last_seq is not None:
            sets.append((progress_key(self.settings, self.camera), str(last_seq)))
        same = self.rs is self.r  # one server: events, checkpoint and acks in one Lua call
        tsets, xadds = self._track_writes(out)
        if self.names.cluster:  # checkpoint + acks + outbox in the camera's slot, then the events relayed
            n = self.store.commit_outbox(self.names.outbox(self.camera), out.events,
                                         fence=(self.lease.key, self.lease.token or ""), camera_sets=sets,
                                         sets=tsets, ack=(self.stream, GROUP, acks) if acks else None, xadds=xadds)
            acks = []
        else:
            n = self.store.commit(out.events, fence=(self.lease.key, self.lease.token or ""), sets=sets + tsets,
                                  ack=(self.stream, GROUP, acks) if acks and same else None, xadds=xadds)
        if acks and not same:
            # embeddings on the transient server: ack after the durable commit. A crash in between leaves them
            # pending; the next owner finds their seqs below the checkpoint's next seq and acks them unapplied.
            self.rs.xack(self.stream, GROUP, *acks)
        self.to_ack = []
        self.events += n
        for ev in out.events:
            log.debug("camera=%s event %s %s track=%s identity=%s", self.camera, ev.type, ev.id, ev.track_id,
                      ev.identity)
        return n
