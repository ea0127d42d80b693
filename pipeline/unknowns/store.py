"""The unknown-visitor store in Redis: clustering of queued unknown tracks (its base class Clusterer,
pipeline/unknowns/clusterer.py), and here the reads and the user's actions on clusters (name, merge, ignore,
remove, "wrong person") and retention. Keys: pipeline/unknowns/keys.py."""
from __future__ import annotations

import json
import logging
import time

import numpy as np

from ..events.model import Event
from . import keys as K
from .clusterer import Clusterer, _s
from .errors import NotFound, UnknownsError
from .model import TrackFace, TrackFaces

__all__ = ["NotFound", "UnknownStore", "UnknownsError"]

log = logging.getLogger("facetrail.unknowns")


class UnknownStore(Clusterer):
    """The unknown visitors: Clusterer's clustering, plus the reads and the user's actions on clusters."""

    # ---- reading ------------------------------------------------------------------------------------
    def _cluster_row(self, cid: str, h: dict) -> dict:
        faces = json.loads(h.get("faces") or "[]")
        return {"id": cid, "tracks": int(h.get("n") or 0), "cameras": json.loads(h.get("cameras") or "[]"),
                "first_seen": float(h.get("first_seen") or 0), "last_seen": float(h.get("last_seen") or 0),
                "snapshot_id": faces[0]["id"] if faces else None, "suggestion": None, "suggestion_score": None,
                "ignored": h.get("ignored") == "1",
                "faces": [{"id": f["id"], "quality": f["q"], "track_id": f["track_id"]} for f in faces]}

    def clusters(self, *, camera: str | None = None, since: float | None = None, include_ignored: bool = False,
                 limit: int = 100) -> list[dict]:
        """Clusters, most recently seen first."""
        lo = "-inf" if since is None else repr(float(since))
        out: list[dict] = []
        offset, chunk = 0, max(limit * 2, 200)
        while len(out) < limit:
            ids = [_s(m) for m in self.r.zrevrangebyscore(self.k("clusters"), "+inf", lo, start=offset, num=chunk)]
            offset += len(ids)
            if not ids:
                break
            pipe = self.r.pipeline(transaction=False)
            for cid in ids:
                pipe.hgetall(self.k("cl", cid))
            for cid, h in zip(ids, pipe.execute()):
                h = {_s(a): _s(b) for a, b in h.items()}
                if not h:
                    continue
                row = self._cluster_row(cid, h)
                if row["ignored"] and not include_ignored:
                    continue
                if camera and camera not in row["cameras"]:
                    continue
                out.append(row)
                if len(out) >= limit:
                    break
            if len(ids) < chunk:
                break
        return out

    def cluster(self, cid: str) -> dict:
        h = {_s(a): _s(b) for a, b in self.r.hgetall(self.k("cl", cid)).items()}
        if not h:
            raise NotFound(f"no unknown cluster {cid!r}")
        row = self._cluster_row(cid, h)
        tracks = []
        for tid in sorted(_s(t) for t in self.r.smembers(self.k("cl", cid, "tracks"))):
            rec = self._record(tid)
            ids = sorted(_s(e) for e in self.r.smembers(self.events.k("evidx", "track", tid)))
            tracks.append({"track_id": tid, "camera": rec.camera if rec else None,
                           "first_seen": rec.first_seen if rec else None,
                           "last_seen": rec.last_seen if rec else None, "event_ids": ids})
        row["track_list"] = sorted(tracks, key=lambda t: t["first_seen"] or 0)
        return row

    def centroids(self, cids: list[str]) -> dict[str, np.ndarray]:
        """Each cluster's centroid (normalised sum of its tracks' means), read from Redis."""
        out = {}
        for cid in cids:
            tids = list(self.r.smembers(self.k("cl", cid, "tracks")))
            vecs = [np.frombuffer(b, dtype="<f4") for b in (self.r.hmget(self.k("means"), tids) if tids else [])
                    if b]
            if vecs:
                s = np.sum(vecs, axis=0).astype(np.float32)
                out[cid] = s / max(float(np.linalg.norm(s)), 1e-12)
        return out

    def suggest(self, rows: list[dict], search) -> list[dict]:
        """Fill suggestion / suggestion_score: the enrolled person closest to each cluster's centroid, when at
        least unknowns.suggest_min close. `search(vectors) -> [[Match, ...], ...]` is the gallery search."""
        live = [r for r in rows if not r["ignored"]]
        cents = self.centroids([r["id"] for r in live])
        have = [r for r in live if r["id"] in cents]
        if not have:
            return rows
        found = search(np.stack([cents[r["id"]] for r in have]).astype(np.float32))
        for r, cands in zip(have, found):
            cands = sorted(cands, key=lambda c: -c.score)
            if cands and cands[0].score >= self.cfg.suggest_min:
                r["suggestion"], r["suggestion_score"] = cands[0].name, round(float(cands[0].score), 4)
        return rows

    def face_jpeg(self, face_id: str) -> bytes | None:
        return self.r.get(self.k("face", face_id))

    # ---- actions ------------------------------------------------------------------------------------
    def _require(self, cid: str) -> dict:
        h = {_s(a): _s(b) for a, b in self.r.hgetall(self.k("cl", cid)).items()}
        if not h:
            raise NotFound(f"no unknown cluster {cid!r}")
        return h

    def _drop(self, cid: str, *, faces: bool) -> tuple[list[str], int]:
        """Delete a cluster and its tracks' unknown-store entries (and their face crops when `faces`).
        Returns (track ids, face crops deleted)."""
        tids = sorted(_s(t) for t in self.r.smembers(self.k("cl", cid, "tracks")))
        h = {_s(a): _s(b) for a, b in self.r.hgetall(self.k("cl", cid)).items()}
        fids = {f["id"] for f in json.loads(h.get("faces") or "[]")}
        for tid in tids:
            rec = self._record(tid)
            if rec is not None:
                fids.update(f.id for f in rec.faces)
        pipe = self.r.pipeline(transaction=True)
        if tids:
            pipe.hdel(self.k("means"), *tids)
            pipe.hdel(self.k("trackcl"), *tids)
            pipe.zrem(self.k("tracks"), *tids)
        if faces and fids:
            pipe.delete(*[self.k("face", f) for f in fids])
        pipe.delete(self.k("cl", cid), self.k("cl", cid, "tracks"))
        pipe.zrem(self.k("clusters"), cid)
        pipe.incr(self.k("ver"))
        pipe.execute()
        return tids, len(fids) if faces else 0

    def ignore(self, cid: str, ignored: bool = True) -> dict:
        with self._locked():
            self._require(cid)
            self.r.hset(self.k("cl", cid), "ignored", "1" if ignored else "0")
            self._bump()
        log.info("unknowns: cluster %s ignored=%s", cid, ignored)
        return {"id": cid, "ignored": ignored}

    def remove(self, cid: str) -> dict:
        """Forget a cluster: its crops, embeddings and track records (privacy). Its tracks' events stay,
        without snapshots."""
        with self._locked():
            self._require(cid)
            tids, nfaces = self._drop(cid, faces=True)
            pipe = self.r.pipeline(transaction=False)
            for tid in tids:
                pipe.delete(K.track_faces(self.settings, tid))
                for eid in self.r.smembers(self.events.k("evidx", "track", tid)):
                    snap = self.r.hget(self.events.event_key(_s(eid)), "snap")
                    if snap:
                        pipe.delete(self.events.snapshot_key(_s(snap)))
            pipe.execute()
            self._index = None
        log.info("unknowns: cluster %s removed (%d tracks, %d face crops)", cid, len(tids), nfaces)
        return {"id": cid, "removed": True, "faces": nfaces}

    def merge(self, ids: list[str]) -> dict:
        """Move every track of ids[1:] into ids[0]."""
        if len(ids) < 2 or len(set(ids)) != len(ids):
            raise UnknownsError("merge needs two or more different cluster ids")
        keep = ids[0]
        with self._locked():
            hs = [self._require(c) for c in ids]
            faces, cams = [], set()
            n, first, last = 0, float("inf"), 0.0
            for h in hs:
                faces += json.loads(h.get("faces") or "[]")
                cams |= set(json.loads(h.get("cameras") or "[]"))
                n += int(h.get("n") or 0)
                first, last = min(first, float(h["first_seen"])), max(last, float(h["last_seen"]))
            faces.sort(key=lambda f: -f["k"])
            pipe = self.r.pipeline(transaction=True)
            for other in ids[1:]:
                tids = list(self.r.smembers(self.k("cl", other, "tracks")))
                if tids:
                    pipe.sadd(self.k("cl", keep, "tracks"), *tids)
                    pipe.hset(self.k("trackcl"), mapping={t: keep for t in tids})
                pipe.delete(self.k("cl", other), self.k("cl", other, "tracks"))
                pipe.zrem(self.k("clusters"), other)
            pipe.hset(self.k("cl", keep), mapping={"n": n, "first_seen": repr(first), "last_seen": repr(last),
                                                   "cameras": json.dumps(sorted(cams)),
                                                   "faces": json.dumps(faces[:self.cfg.faces_per_cluster])})
            pipe.zadd(self.k("clusters"), {keep: last})
            pipe.incr(self.k("ver"))
            pipe.execute()
            self._index = None
        log.info("unknowns: merged %s into %s", ids[1:], keep)
        return self.cluster(keep)

    def name(self, cid: str, name: str) -> dict:
        """Enroll NAME from the cluster's best faces (the enrollment quality gate applies), file every track of
        the cluster under that identity (their events are relabelled, and each gets a `track.named` event),
        then drop the cluster. Future visits are matched by the gallery."""
        from index.store import GalleryStore, NewTemplate

        gate = self.settings.thresholds.min_enroll_quality
        with self._locked():
            self._require(cid)
            tids = sorted(_s(t) for t in self.r.smembers(self.k("cl", cid, "tracks")))
            recs = [r for r in (self._record(t) for t in tids) if r is not None]
            faces: list[tuple[TrackFace, TrackFaces]] = sorted(
                ((f, r) for r in recs for f in r.faces), key=lambda fr: -fr[0].k)
            ok = [(f, r) for f, r in faces if f.q >= gate][:self.cfg.name_templates]
            refused = [{"face": f.id, "reason": f"face quality {f.q:.2f} is below min_enroll_quality {gate:.2f}"}
                       for f, _ in faces if f.q < gate]
            if not ok:
                raise UnknownsError(f"cluster {cid}: none of its {len(faces)} faces passes the enrollment quality "
                                    f"gate (min_enroll_quality {gate:.2f}); nothing enrolled")
            thumbs = self.r.mget([self.k("face", f.id) for f, _ in ok])
            gallery = GalleryStore(self.r, self.settings)
            created = gallery.resolve(name) is None
            iid, tpl_ids = gallery.enroll(name, [NewTemplate(embedding=f.vector(), quality=f.q,
                                                             thumbnail=t or b"", source=f"unk:{f.id}")
                                                 for (f, _), t in zip(ok, thumbs)])
            ident = gallery.identity(iid)
            name = ident.name if ident is not None else name
            named = 0
            for rec in recs:
                self.events.relabel_track(rec.track_id, iid, name)
                self._named_event(rec, iid, name, key=iid)
                rec.identity_id, rec.identity = iid, name
                self.r.set(K.track_faces(self.settings, rec.track_id), rec.encode(), keepttl=True)
                named += 1
            self._drop(cid, faces=True)
            self._index = None
        log.info("unknowns: cluster %s named %s (identity %s, %d templates, %d tracks)", cid, name, iid,
                 len(tpl_ids), named)
        return {"cluster": cid, "name": name, "identity_id": iid, "created": created,
                "templates_added": len(tpl_ids), "refused": refused[:20], "tracks_named": named}

    def _named_event(self, rec: TrackFaces, iid: str | None, name: str | None, *, key: str) -> Event:
        ev = Event.make("track.named", rec.camera, rec.track_id, key, identity=name, score=None,
                        first_seen=rec.first_seen, last_seen=rec.last_seen, frames=rec.frames, seq=0,
                        snapshot_id=rec.snapshot_id, created_at=round(time.time(), 3))
        ev.identity_id = iid
        self.events.commit([ev])
        return ev

    def wrong(self, event_id: str) -> dict:
        """"This track is not X": the track's events become unknown, its faces become negative examples for X
        (NegativeFilter), and the track joins the unknown clusters."""
        ev = self.events.get(event_id)
        if ev is None:
            raise NotFound(f"no event {event_id!r} (unknown, expired or purged)")
        if not ev.identity_id:
            raise UnknownsError(f"event {event_id} names nobody: there is no match to reject")
        x, xname = ev.identity_id, ev.identity
        rec = self._record(ev.track_id)
        self.events.relabel_track(ev.track_id, None, None)
        if rec is None:
            rec = TrackFaces(track_id=ev.track_id, camera=ev.camera, first_seen=ev.first_seen,
                             last_seen=ev.last_seen, frames=ev.frames, snapshot_id=ev.snapshot_id, mean="")
        self._named_event(rec, None, None, key=f"wrong:{x}")
        cid = None
        if rec.mean:
            negs = np.stack([rec.mean_vector()] + [f.vector() for f in rec.faces]).astype("<f4")
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(K.negatives(self.settings, x), ev.track_id, negs.tobytes())
            pipe.sadd(K.negatives(self.settings, "index"), x)
            pipe.incr(K.negatives_version(self.settings))
            pipe.execute()
            rec.identity_id, rec.identity = None, None
            self.r.set(K.track_faces(self.settings, rec.track_id), rec.encode(), keepttl=True)
            if self.settings.unknowns.enabled:
                with self._locked():
                    cid = self._ingest(rec.track_id, rec)
        log.info("feedback: track %s is not %s (%s); negatives kept=%s cluster=%s", ev.track_id, xname, x,
                 bool(rec.mean), cid)
        return {"event_id": event_id, "track_id": ev.track_id, "identity": xname, "cluster": cid}

    # ---- retention ----------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Forget unknown tracks last seen more than unknowns.retention_days ago (clusters left empty go)."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        old = [_s(t) for t in self.r.zrangebyscore(self.k("tracks"), "-inf", f"({cutoff!r}", start=0, num=5000)]
        if not old:
            return 0
        with self._locked():
            for tid in old:
                cid = _s(self.r.hget(self.k("trackcl"), tid)) or None
                rec = self._record(tid)
                pipe = self.r.pipeline(transaction=True)
                pipe.hdel(self.k("means"), tid)
                pipe.hdel(self.k("trackcl"), tid)
                pipe.zrem(self.k("tracks"), tid)
                if rec is not None:
                    pipe.delete(*[self.k("face", f.id) for f in rec.faces] or [self.k("face", "-")])
                if cid:
                    pipe.srem(self.k("cl", cid, "tracks"), tid)
                    pipe.hincrby(self.k("cl", cid), "n", -1)
                pipe.execute()
                if cid and not self.r.scard(self.k("cl", cid, "tracks")):
                    self.r.delete(self.k("cl", cid))
                    self.r.zrem(self.k("clusters"), cid)
                elif cid:
                    h = self.r.hget(self.k("cl", cid), "faces")
                    faces = [f for f in json.loads(_s(h) or "[]") if f["track_id"] != tid]
                    self.r.hset(self.k("cl", cid), "faces", json.dumps(faces))
            self._bump()
            self._index = None
        log.info("unknowns retention: forgot %d tracks older than %.1f days", len(old), self.cfg.retention_days)
        return len(old)
