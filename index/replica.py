"""GalleryReplica: one process's in-memory copy of the gallery, kept current from the Redis change log.

    replica = GalleryReplica(r, settings).start()          # snapshot + replay of the log after it
    matches = replica.search(vectors)                       # (N,128) float32 -> list[list[Match]], best first
    name, score, runner_up, runner_up_score = decide(matches[0], threshold, margin)

Freshness: without a background thread, every search first calls sync() (one XREAD of the log's tail: a few
hundred microseconds when nothing changed). With `start_background()` a thread blocks on XREAD and applies
changes as they arrive, and searches do not touch Redis. Either way a change made anywhere is visible well
within a second. A replica that fell behind a log trim (after a snapshot) reloads the snapshot.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import redis

from pipeline.config import Settings

from .faiss_index import GalleryIndex, IndexParams
from .changelog import _sid
from .model import DIM, _s
from .store import GalleryStore

log = logging.getLogger("facetrail.gallery")


@dataclass(frozen=True)
class Match:
    identity_id: str
    name: str
    score: float


@dataclass(frozen=True)
class Decision:
    """Open-set decision for one face. Unpacks as (name, score, runner_up, runner_up_score)."""

    name: str | None
    score: float
    runner_up: str | None
    runner_up_score: float
    identity_id: str | None = None
    runner_up_id: str | None = None

    def __iter__(self):
        return iter((self.name, self.score, self.runner_up, self.runner_up_score))


def decide(matches: list[Match], threshold: float, margin: float) -> Decision:
    """THE open-set rule, shared by identify, the matcher and the API.

    matches: one face's search result (identities, best first). The best identity is accepted when its score
    >= threshold AND it beats the runner-up identity by >= margin; otherwise the face is nobody we know
    (name None). score is always the best identity's score (0.0 with an empty gallery); runner_up is the
    second-best identity whatever the outcome (None when there is none, with runner_up_score 0.0).
    """
    if not matches:
        return Decision(None, 0.0, None, 0.0)
    best = matches[0]
    second = matches[1] if len(matches) > 1 else None
    ru_score = second.score if second else 0.0
    ok = best.score >= threshold and (second is None or best.score - second.score >= margin)
    return Decision(best.name if ok else None, float(best.score), second.name if second else None, float(ru_score),
                    best.identity_id if ok else None, second.identity_id if second else None)


def index_params(settings: Settings) -> IndexParams:
    g = settings.gallery
    return IndexParams(dim=DIM, ann_above=g.ann_above, ann=g.ann, pq_k_factor=g.pq_k_factor, hnsw_m=g.hnsw_m,
                       hnsw_ef_construction=g.hnsw_ef_construction, hnsw_ef_search=g.hnsw_ef_search)


class GalleryReplica:
    def __init__(self, r: redis.Redis, settings: Settings, *, params: IndexParams | None = None):
        self.r = r
        self.settings = settings
        self.store = GalleryStore(r, settings)
        self.index = GalleryIndex(params or index_params(settings))
        self.names: dict[str, str] = {}  # identity id -> current name
        self.last_id = "0-0"
        self.applied = 0
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        from pipeline.unknowns.negatives import NegativeFilter

        self.negatives = NegativeFilter(r, settings)  # "wrong person" corrections, applied by identify()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "GalleryReplica":
        """Load the snapshot, then replay the log after it."""
        with self._lock:
            self._load_snapshot()
            self.sync()
            self._started = True
        return self

    def _load_snapshot(self) -> None:
        snap = self.store.get_snapshot()
        self.index = GalleryIndex(self.index.params)
        self.names = {}
        self.last_id = "0-0"
        if snap is None:
            return
        log_id, ids, owners, vecs, idents = snap
        self.names = {iid: name for iid, name in idents if iid}  # "": the blanked slot of a removed person
        if len(ids):
            self.index.add(ids, vecs, [idents[o][0] for o in owners.tolist()])
        self.last_id = log_id
        log.info("gallery replica loaded snapshot log_id=%s templates=%d identities=%d", log_id, len(ids),
                 len(idents))

    def start_background(self, block_ms: int = 500) -> "GalleryReplica":
        """Apply changes from a thread blocked on XREAD; searches then never wait on Redis."""
        if not self._started:
            self.start()
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(block_ms,), name="gallery-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, block_ms: int) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.sync(block_ms=block_ms)
                backoff = 0.1
            except (redis.RedisError, OSError) as e:
                log.warning("gallery replica sync failed (%s); retrying in %.1fs", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    @property
    def background(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- catching up ---------------------------------------------------------------------------------
    def sync(self, block_ms: int | None = None, batch: int = 1000) -> int:
        """Apply every log entry after last_id; returns how many were applied. block_ms: wait for the first."""
        total = 0
        while True:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.store.k("log_floor"))
            pipe.xread({self.store.log_key: self.last_id}, count=batch,
                       block=block_ms if (block_ms and total == 0) else None)
            floor, res = pipe.execute()
            with self._lock:
                if floor and _sid(_s(floor)) > _sid(self.last_id):
                    log.info("gallery replica at %s is behind the trimmed log (%s): reloading the snapshot",
                             self.last_id, _s(floor))
                    self._load_snapshot()
                    continue
                entries = res[0][1] if res else []
                for eid, fields in entries:
                    eid = _s(eid)
                    if _sid(eid) <= _sid(self.last_id):
                        continue  # a concurrent sync() applied it already: never apply out of order
                    self._apply(eid, {_s(k): v for k, v in fields.items()})
                total += len(entries)
            if len(entries) < batch:
                return total

    def _apply(self, eid: str, f: dict) -> None:
        op, iid = _s(f.get("op")), _s(f.get("identity"))
        if op == "enroll":
            tids = [int(x) for x in _s(f.get("tids")).split(",") if x]
            vecs = np.frombuffer(f.get("emb") or b"", dtype=np.float32).reshape(-1, DIM)
            if len(tids) != len(vecs):
                log.error("gallery log entry %s is malformed (%d ids, %d vectors); skipped", eid, len(tids),
                          len(vecs))
            elif tids:
                self.index.add(tids, vecs, iid)
            self.names[iid] = _s(f.get("name"))
        elif op == "remove":
            self.index.remove_identity(iid)
            self.names.pop(iid, None)
        elif op == "rename":
            if iid in self.names:
                self.names[iid] = _s(f.get("name"))
        else:
            log.warning("gallery log entry %s has unknown op %r; skipped", eid, op)
        self.last_id = eid
        self.applied += 1

    # ---- queries -------------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int | None = None) -> list[list[Match]]:
        """Top-k identities per query vector (best template per identity), best first."""
        if not self._started:
            self.start()
        elif not self.background:
            self.sync()
        k = k or self.settings.gallery.top_k
        with self._lock:
            res = self.index.search(np.asarray(vectors, dtype=np.float32).reshape(-1, DIM), k)
            return [[Match(iid, self.names.get(iid, iid), s) for iid, s in row] for row in res]

    def identify(self, vectors: np.ndarray) -> list[Decision]:
        """search + decide with the thresholds in settings (read every call: they may be recalibrated)."""
        t = self.settings.thresholds
        found = self.negatives.apply(vectors, self.search(vectors))
        return [decide(m, t.match, t.margin) for m in found]

    def __len__(self) -> int:
        return len(self.index)

    # ---- snapshots -----------------------------------------------------------------------------------
    def snapshot(self) -> bool:
        """Write this replica's state (as of last_id) as the gallery snapshot, then trim the log before it."""
        with self._lock:
            if not self._started:
                self.start()
            self.sync()
            if self.last_id == "0-0":
                return False
            ids, owner_ids, vecs = self.index.dump()
            idents = sorted(self.names.items())
            pos = {iid: i for i, (iid, _) in enumerate(idents)}
            owners = np.array([pos[o] for o in owner_ids], dtype=np.int32)
            last = self.last_id
        return self.store.put_snapshot(last, ids, owners, vecs, idents)

    def maybe_snapshot(self) -> bool:
        """Snapshot once settings.gallery.snapshot_every changes have piled up since the last one."""
        if self.store.changes_since_snapshot() >= self.settings.gallery.snapshot_every:
            return self.snapshot()
        return False


def wait_for(predicate, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Poll predicate() until true or timeout (a helper for tests and tools)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())
