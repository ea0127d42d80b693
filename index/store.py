"""GalleryStore: the gallery's source of truth in Redis, and its change log.

Keys (P = `<prefix>:gallery`):
  P:ident:<id>        hash   id, name, metadata (JSON), created (ISO 8601 UTC)
  P:ident:<id>:tpls   set    template ids of the identity
  P:ident:<id>:src    hash   source key (image sha256:face:flip) -> template id (re-enrolling is a no-op)
  P:names             hash   name -> identity id
  P:tpl:<tid>         hash   id, identity, embedding (float32 bytes), sha256, quality, thumbnail (JPEG), created
  P:seq:tpl           int    template id counter (INCR)
  P:log               stream the change log: op=enroll|rename (identity, name, ...: everything needed to apply)
                             and op=remove (identity only)
  P:snap              hash   snapshot meta: log_id, gen, chunks, count, identities (JSON [id, name]; a removed
                             person's slot is blanked to ["", ""] so the owner indexes of the others stay valid)
  P:snap:<gen>:<i>    string snapshot chunk: int64 ids | int32 owner index | float32 vectors
  P:snap_floor        string the latest removal's log id: a snapshot of an older state (which still holds that
                             person) is refused
  P:forget            hash   identity id -> removal log id, while that removal is still being scrubbed
  P:log_floor         string log entries below this id were trimmed (after a snapshot)
  P:changes           int    changes since the last snapshot

Every mutation is one Lua script that writes the truth AND appends the log entry, so they cannot diverge.
Replicas (index.replica.GalleryReplica) start from the snapshot and replay the log after it.

Removing a person forgets them everywhere: besides their keys, their earlier enroll/rename entries are XDELed
from the log and the snapshot chunks holding their vectors are rewritten (`GalleryStore.forget_removed`). A
replica that applied them still gets the removal entry; one that starts later never sees them.

Here: the reads, the mutations, export/import. The change log and snapshots are GalleryStore's base class
(index/changelog.py), the Lua is index/lua.py, the records and name rules index/model.py (all importable from here).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid

import numpy as np
import redis

from pipeline.backbone import wait_for
from pipeline.config import Settings

from . import hooks
from .changelog import ChangeLog
from .lua import ENROLL, REMOVE, RENAME
from .model import DIM, GalleryError, Identity, NewTemplate, Template, _s, now_iso, valid_name

__all__ = ["DIM", "GalleryError", "GalleryStore", "Identity", "NewTemplate", "Template", "now_iso", "valid_name"]

log = logging.getLogger("facetrail.gallery")


class GalleryStore(ChangeLog):
    """Reads and writes the gallery's truth. Cheap to construct; safe to share between threads."""

    def __init__(self, r: redis.Redis, settings: Settings):
        super().__init__(r, settings)
        self._enroll = r.register_script(ENROLL)
        self._remove = r.register_script(REMOVE)
        self._rename = r.register_script(RENAME)

    # ---- reads ---------------------------------------------------------------------------------------
    def resolve(self, name_or_id: str) -> str | None:
        """Identity id for a name (or an id given as such)."""
        iid = self.r.hget(self.k("names"), name_or_id)
        if iid is not None:
            return _s(iid)
        if self.r.exists(self.k("ident", name_or_id)):
            return name_or_id
        return None

    def require(self, name_or_id: str) -> str:
        iid = self.resolve(name_or_id)
        if iid is None:
            raise GalleryError(f"no such person in the gallery: {name_or_id!r}")
        return iid

    def identity(self, iid: str) -> Identity | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k("ident", iid))
        pipe.scard(self.k("ident", iid, "tpls"))
        return self._ident(*pipe.execute())

    @staticmethod
    def _ident(h: dict, n: int) -> Identity | None:
        if not h:
            return None
        h = {_s(a): b for a, b in h.items()}
        try:
            meta = json.loads(_s(h.get("metadata")) or "{}")
        except ValueError:
            meta = {}
        return Identity(id=_s(h.get("id")), name=_s(h.get("name")), metadata=meta, created=_s(h.get("created")),
                        templates=int(n))

    def identities(self) -> list[Identity]:
        ids = [_s(v) for v in self.r.hvals(self.k("names"))]
        out = []
        for s in range(0, len(ids), 1000):  # one round trip per 1000 people
            pipe = self.r.pipeline(transaction=False)
            for iid in ids[s:s + 1000]:
                pipe.hgetall(self.k("ident", iid))
                pipe.scard(self.k("ident", iid, "tpls"))
            res = pipe.execute()
            out += [i for i in (self._ident(h, n) for h, n in zip(res[0::2], res[1::2])) if i is not None]
        return sorted(out, key=lambda i: (i.name.lower(), i.name))

    def template_ids(self, iid: str) -> list[int]:
        return sorted(int(t) for t in self.r.smembers(self.k("ident", iid, "tpls")))

    def templates(self, iid: str) -> list[Template]:
        tids = self.template_ids(iid)
        pipe = self.r.pipeline(transaction=False)
        for t in tids:
            pipe.hgetall(self.k("tpl", t))
        out = []
        for t, h in zip(tids, pipe.execute()):
            if not h:
                continue
            h = {_s(a): b for a, b in h.items()}
            out.append(Template(id=t, identity=_s(h.get("identity")),
                                embedding=np.frombuffer(h.get("embedding", b""), dtype=np.float32).copy(),
                                sha256=_s(h.get("sha256")), quality=float(_s(h.get("quality")) or 0.0),
                                thumbnail=h.get("thumbnail") or b"", created=_s(h.get("created"))))
        return out

    def thumbnail(self, template_id: int) -> bytes | None:
        v = self.r.hget(self.k("tpl", template_id), "thumbnail")
        return v or None

    # ---- mutations -----------------------------------------------------------------------------------
    def enroll(self, name: str, templates: list[NewTemplate], *, metadata: dict | None = None,
               identity_id: str | None = None, create: bool = True) -> tuple[str, list[int]]:
        """Add templates to NAME (created when new). Returns (identity id, new template ids); templates whose
        source key the identity already has are skipped, so enrolling the same image twice changes nothing."""
        name = valid_name(name)
        if not templates:
            raise GalleryError("nothing to enroll: no face templates")
        args: list = [self.P, identity_id or uuid.uuid4().hex[:16], name, json.dumps(metadata or {}, sort_keys=True),
                      now_iso(), "1" if create else "0", len(templates)]
        for t in templates:
            e = np.asarray(t.embedding, dtype=np.float32).reshape(-1)
            if e.shape[0] != DIM or not np.all(np.isfinite(e)):
                raise GalleryError(f"an embedding must be {DIM} finite floats, got shape {e.shape}")
            e = (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float32)
            source = t.source or "e:" + _emb_digest(e)
            args += [e.tobytes(), t.sha256, f"{float(t.quality):.4f}", t.thumbnail or b"", source]
        try:
            res = self._enroll(keys=[self.P], args=args)
        except redis.ResponseError as e:
            raise self._user_error(e, name) from None
        iid = _s(res[0])
        tids = [int(x) for x in _s(res[1]).split(",") if x]
        if tids:
            wait_for(self.r, self.settings, self.P)  # redis.wait_replicas: an enrollment survives a failover
            log.info("gallery enroll identity=%s name=%s templates=%s log_id=%s", iid, name, tids, _s(res[2]))
        return iid, tids

    def remove(self, name_or_id: str) -> tuple[str, str, list[int]]:
        """Delete a person: identity, all templates (vectors, thumbnails), and every copy of their vectors and
        names in the change log and the snapshot. Runs hooks.on_remove afterwards (even when scrubbing failed:
        the events purge must not depend on it). Returns (identity id, name, removed template ids)."""
        iid = self.require(name_or_id)
        try:
            name, tids, log_id = self._remove(keys=[self.P], args=[self.P, iid])
        except redis.ResponseError as e:
            raise self._user_error(e, name_or_id) from None
        name = _s(name)
        tids = [int(x) for x in _s(tids).split(",") if x]
        wait_for(self.r, self.settings, self.P)
        log.info("gallery remove identity=%s templates=%d log_id=%s", iid, len(tids), _s(log_id))
        try:
            self.forget_removed()
        finally:
            hooks.run_on_remove(self.r, self.settings, iid, name)
        return iid, name, tids

    def rename(self, old: str, new: str) -> str:
        new = valid_name(new)
        iid = self.require(old)
        try:
            self._rename(keys=[self.P], args=[self.P, iid, new])
        except redis.ResponseError as e:
            raise self._user_error(e, new) from None
        wait_for(self.r, self.settings, self.P)
        log.info("gallery rename identity=%s %s -> %s", iid, old, new)
        return iid

    def _user_error(self, e: redis.ResponseError, name: str) -> GalleryError:
        msg = str(e)
        if "NAME_TAKEN" in msg:
            return GalleryError(f"the name {name!r} belongs to another person already")
        if "NO_IDENTITY" in msg:
            return GalleryError(f"no such person in the gallery: {name!r}")
        if "ID_TAKEN" in msg:
            return GalleryError(f"identity id already in use by another person (enrolling {name!r})")
        return GalleryError(f"gallery update failed: {msg}")

    # ---- export / import -----------------------------------------------------------------------------
    def export(self) -> dict:
        out = []
        for ident in self.identities():
            tpls = self.templates(ident.id)
            out.append({"id": ident.id, "name": ident.name, "metadata": ident.metadata, "created": ident.created,
                        "templates": [{"embedding": base64.b64encode(t.embedding.astype(np.float32).tobytes())
                                       .decode(), "sha256": t.sha256, "quality": t.quality,
                                       "thumbnail": base64.b64encode(t.thumbnail).decode(), "created": t.created}
                                      for t in tpls]})
        return {"format": "facetrail-gallery", "version": 1, "dim": DIM, "exported": now_iso(), "identities": out}

    def import_(self, data: dict) -> list[tuple[str, int]]:
        """Merge an export: a known name gets the templates it lacks; a new name is created (keeping its id
        when free). Returns (name, templates added) per identity."""
        if not isinstance(data, dict) or data.get("format") != "facetrail-gallery":
            raise GalleryError("not a facetrail gallery export (missing \"format\": \"facetrail-gallery\")")
        if int(data.get("version", 0)) != 1 or int(data.get("dim", DIM)) != DIM:
            raise GalleryError(f"unsupported export version {data.get('version')} / dim {data.get('dim')}")
        # validate everything first: a bad file changes nothing
        plan = []
        for i, ident in enumerate(data.get("identities") or []):
            try:
                name = valid_name(ident["name"])
                tpls = []
                for t in ident.get("templates") or []:
                    emb = np.frombuffer(base64.b64decode(t["embedding"]), dtype=np.float32)
                    if emb.shape != (DIM,):
                        raise ValueError(f"embedding of {emb.shape[0]} floats")
                    sha = str(t.get("sha256", ""))
                    tpls.append(NewTemplate(embedding=emb, sha256=sha, quality=float(t.get("quality", 0.0)),
                                            thumbnail=base64.b64decode(t.get("thumbnail") or "")))
            except (KeyError, TypeError, ValueError) as e:
                raise GalleryError(f"identity #{i} in the export is malformed: {e}") from None
            plan.append((name, ident.get("id"), ident.get("metadata") or {}, tpls))
        done = []
        for name, iid, meta, tpls in plan:
            if not tpls:
                continue
            here = self.resolve(name) if name else None
            if here is None and iid and self.r.exists(self.k("ident", iid)):
                iid = None  # id in use by someone else here: take a new one
            _, added = self.enroll(name, tpls, metadata=meta, identity_id=iid)
            done.append((name, len(added)))
        return done


def _emb_digest(e: np.ndarray) -> str:
    """Dedupe key of a template: rounded so an exported-then-imported vector maps to the same key."""
    return hashlib.sha256(np.round(np.asarray(e, np.float64), 5).tobytes()).hexdigest()[:32]

