"""The gallery's change log and its snapshots (keys: index/store.py): what replicas (index.replica) start from
and replay. A snapshot is stored in chunks and switched in atomically; the log is trimmed up to it. A removed
person is scrubbed from both (`ChangeLog.forget_removed`)."""
from __future__ import annotations

import json
import logging
import uuid

import numpy as np
import redis

from pipeline.backbone import key
from pipeline.config import Settings

from .lua import FORGET_LOG, PUT_SNAP, SCRUB_SNAP
from .model import DIM, GalleryError, _s, now_iso

log = logging.getLogger("facetrail.gallery")

SNAP_CHUNK = 65_536  # templates per snapshot chunk (~34 MB at 128-D): far below Redis's 512 MB string limit
_ROW = 8 + 4 + 4 * DIM  # bytes per template in a snapshot chunk
FORGET_CHUNK = 500  # log entries scanned per atomic step when scrubbing a removed person from the log


class ChangeLog:
    """The log and snapshot half of GalleryStore (which adds the reads and mutations)."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.P = key(settings, "gallery")
        self._put_snap = r.register_script(PUT_SNAP)
        self._forget_log = r.register_script(FORGET_LOG)
        self._scrub_snap = r.register_script(SCRUB_SNAP)

    # ---- keys ----------------------------------------------------------------------------------------
    def k(self, *parts) -> str:
        return ":".join([self.P, *map(str, parts)])

    @property
    def log_key(self) -> str:
        return self.k("log")

    # ---- log and snapshots ---------------------------------------------------------------------------
    def forget_removed(self) -> None:
        """Scrub every removal still marked in P:forget (normally the one just made; also any a crashed process
        left): XDEL the person's log entries before the removal, in chunks (each one atomic, so a concurrent
        enroll is never lost), then rewrite the snapshot without them, then drop the mark."""
        for iid, upto in self.r.hgetall(self.k("forget")).items():
            iid, upto = _s(iid), _s(upto)
            after = "0-0"
            while after:
                after = _s(self._forget_log(keys=[self.P], args=[self.P, iid, after, upto, FORGET_CHUNK]))
            self._scrub_snapshot(iid, upto)
            self.r.hdel(self.k("forget"), iid)

    def changes_since_snapshot(self) -> int:
        return int(self.r.get(self.k("changes")) or 0)

    def put_snapshot(self, log_id: str, ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray,
                     identities: list[tuple[str, str]], *, trim: bool = True) -> bool:
        """Store a snapshot of the state as of log entry `log_id` (chunks first, then an atomic switch of the
        meta; a snapshot older than the current one is dropped, and so is one of a state before the latest
        removal, which still holds that person). Then trims the log up to it."""
        gen = uuid.uuid4().hex[:12]
        ids = np.asarray(ids, np.int64)
        owners = np.asarray(owners, np.int32)
        vectors = np.ascontiguousarray(vectors, np.float32)
        n = len(ids)
        chunks = max(1, -(-n // SNAP_CHUNK))
        pipe = self.r.pipeline(transaction=False)
        for c in range(chunks):
            sl = slice(c * SNAP_CHUNK, (c + 1) * SNAP_CHUNK)
            pipe.set(self.k("snap", gen, c), _pack(ids[sl], owners[sl], vectors[sl]))
        pipe.execute()
        ok, old, old_chunks = self._put_snap(keys=[self.P], args=[self.P, log_id, gen, chunks, n,
                                                                   json.dumps(identities), DIM, now_iso()])
        old = _s(old)
        if old:
            self._drop_snapshot_chunks(old, int(old_chunks))
        if not ok:
            return False
        if trim and log_id != "0-0":
            pipe = self.r.pipeline(transaction=False)
            pipe.set(self.k("log_floor"), log_id)
            pipe.xtrim(self.log_key, minid=log_id, approximate=False)
            pipe.execute()
        log.info("gallery snapshot log_id=%s templates=%d identities=%d chunks=%d", log_id, n, len(identities),
                 chunks)
        self.forget_removed()  # a removal a crashed process left half-scrubbed
        return True

    def _scrub_snapshot(self, iid: str, upto: str) -> None:
        """Take a removed person out of a snapshot older than their removal: only the chunks holding their rows
        are downloaded and rewritten (the rest are renamed server-side), and their `identities` slot is blanked
        so the owner indexes in the other chunks stay valid. log_id stays: the log after it still applies."""
        for _ in range(5):
            meta = {_s(a): _s(b) for a, b in self.r.hgetall(self.k("snap")).items()}
            if not meta or _sid(meta["log_id"]) >= _sid(upto):
                return  # a snapshot written after the removal cannot hold them (see P:snap_floor)
            idents = json.loads(meta["identities"])
            o = next((i for i, x in enumerate(idents) if x[0] == iid), None)
            if o is None:
                return
            gen, chunks, new = meta["gen"], int(meta["chunks"]), uuid.uuid4().hex[:12]
            rows = [n // _ROW for n in self._pipe(lambda p: [p.strlen(self.k("snap", gen, c)) for c in range(chunks)])]
            full = [c for c in range(chunks) if rows[c]]
            owner_parts = self._pipe(lambda p: [p.getrange(self.k("snap", gen, c), 8 * rows[c], 12 * rows[c] - 1)
                                                for c in full])  # just the owner indexes: 4 bytes a template
            hit = [c for c, b in zip(full, owner_parts) if o in np.frombuffer(b, np.int32)]
            removed = 0
            for c in hit:
                ids, owners, vecs = _unpack(self.r.get(self.k("snap", gen, c)) or b"")
                keep = owners != o
                removed += int((~keep).sum())
                self.r.set(self.k("snap", new, c), _pack(ids[keep], owners[keep], vecs[keep]))
            idents[o] = ["", ""]
            if self._scrub_snap(keys=[self.P],
                                args=[self.P, gen, new, chunks, int(meta["count"]) - removed, json.dumps(idents)]):
                log.info("gallery snapshot log_id=%s: %d template(s) of a removed person scrubbed from %d chunk(s)",
                         meta["log_id"], removed, len(hit))
                return
            self._drop_snapshot_chunks(new, chunks)  # replaced meanwhile: look at the new one
        raise GalleryError("the gallery snapshot kept changing while a removal was scrubbed from it; run "
                           "`facetrail gallery snapshot` to replace it")

    def _pipe(self, fill) -> list:
        pipe = self.r.pipeline(transaction=False)
        fill(pipe)
        return pipe.execute()

    def _drop_snapshot_chunks(self, gen: str, chunks: int) -> None:
        """Delete a snapshot generation's chunks by name (`snap:<gen>:0..chunks-1`, the count its meta recorded)."""
        for lo in range(0, chunks, 256):
            self.r.delete(*(self.k("snap", gen, c) for c in range(lo, min(chunks, lo + 256))))

    def get_snapshot(self):
        """(log_id, ids, owners, vectors, identities) or None when there is no snapshot."""
        for _ in range(5):
            meta = self.r.hgetall(self.k("snap"))
            if not meta:
                return None
            meta = {_s(a): _s(b) for a, b in meta.items()}
            gen, chunks = meta["gen"], int(meta["chunks"])
            pipe = self.r.pipeline(transaction=False)
            for c in range(chunks):
                pipe.get(self.k("snap", gen, c))
            blobs = pipe.execute()
            if any(b is None for b in blobs):
                continue  # replaced while we read it: read the new one
            ids, owners, vecs = zip(*map(_unpack, blobs))
            idents = [tuple(x) for x in json.loads(meta["identities"])]
            return (meta["log_id"], np.concatenate(ids), np.concatenate(owners), np.concatenate(vecs), idents)
        raise GalleryError("the gallery snapshot kept changing while being read; try again")


def _sid(s: str) -> tuple[int, int]:
    """A stream id as a comparable (ms, seq)."""
    a, _, b = s.partition("-")
    return int(a or 0), int(b or 0)


def _pack(ids, owners, vectors) -> bytes:
    """One snapshot chunk: int64 ids | int32 owner indexes | float32 vectors."""
    return (np.asarray(ids, np.int64).tobytes() + np.asarray(owners, np.int32).tobytes()
            + np.ascontiguousarray(vectors, np.float32).tobytes())


def _unpack(b: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = len(b) // _ROW
    return (np.frombuffer(b, np.int64, m, 0), np.frombuffer(b, np.int32, m, 8 * m),
            np.frombuffer(b, np.float32, m * DIM, 12 * m).reshape(m, DIM))

