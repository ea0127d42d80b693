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
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field

import numpy as np
import redis

from pipeline.backbone import key, wait_for
from pipeline.config import Settings

from . import hooks

log = logging.getLogger("facetrail.gallery")

DIM = 128
SNAP_CHUNK = 65_536  # templates per snapshot chunk (~34 MB at 128-D): far below Redis's 512 MB string limit
_ROW = 8 + 4 + 4 * DIM  # bytes per template in a snapshot chunk
FORGET_CHUNK = 500  # log entries scanned per atomic step when scrubbing a removed person from the log


class GalleryError(ValueError):
    """A gallery operation the user asked for cannot be done (unknown name, name taken, ...)."""


@dataclass
class NewTemplate:
    embedding: np.ndarray
    sha256: str = ""
    quality: float = 0.0
    thumbnail: bytes = b""
    source: str = ""  # dedupe key within the identity; default sha256:face:flip from the enroller


@dataclass
class Identity:
    id: str
    name: str
    metadata: dict = field(default_factory=dict)
    created: str = ""
    templates: int = 0


@dataclass
class Template:
    id: int
    identity: str
    embedding: np.ndarray
    sha256: str
    quality: float
    thumbnail: bytes
    created: str


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


# ---- Lua: each one writes the truth and appends to the log atomically ------------------------------------
_ENROLL = """
redis.replicate_commands()
local P, iid, name, meta, created, create = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = tonumber(ARGV[7])
local owner = redis.call('HGET', P .. ':names', name)
if owner then
  iid = owner
elseif redis.call('EXISTS', P .. ':ident:' .. iid) == 1 then
  return redis.error_reply('ID_TAKEN')
end
local ikey = P .. ':ident:' .. iid
if not owner then
  if create ~= '1' then return redis.error_reply('NO_IDENTITY') end
  redis.call('HSET', ikey, 'id', iid, 'name', name, 'metadata', meta, 'created', created)
  redis.call('HSET', P .. ':names', name, iid)
elseif meta ~= '' and meta ~= '{}' then
  local old = cjson.decode(redis.call('HGET', ikey, 'metadata') or '{}')
  for k, v in pairs(cjson.decode(meta)) do old[k] = v end
  redis.call('HSET', ikey, 'metadata', cjson.encode(old))
end
local added, embs = {}, {}
for i = 0, n - 1 do
  local b = 8 + i * 5
  local emb, sha, q, thumb, src = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if src == '' or redis.call('HEXISTS', ikey .. ':src', src) == 0 then
    local tid = redis.call('INCR', P .. ':seq:tpl')
    redis.call('HSET', P .. ':tpl:' .. tid, 'id', tid, 'identity', iid, 'embedding', emb, 'sha256', sha,
               'quality', q, 'thumbnail', thumb, 'created', created)
    redis.call('SADD', ikey .. ':tpls', tid)
    if src ~= '' then redis.call('HSET', ikey .. ':src', src, tid) end
    added[#added + 1] = tostring(tid)
    embs[#embs + 1] = emb
  end
end
if #added == 0 then return {iid, ''} end
local cur = redis.call('HGET', ikey, 'name')
local id = redis.call('XADD', P .. ':log', '*', 'op', 'enroll', 'identity', iid, 'name', cur,
                      'tids', table.concat(added, ','), 'emb', table.concat(embs))
redis.call('INCR', P .. ':changes')
return {iid, table.concat(added, ','), id}
"""

_REMOVE = """
redis.replicate_commands()
local P, iid = ARGV[1], ARGV[2]
local ikey = P .. ':ident:' .. iid
local name = redis.call('HGET', ikey, 'name')
if not name then return redis.error_reply('NO_IDENTITY') end
local tids = redis.call('SMEMBERS', ikey .. ':tpls')
for _, t in ipairs(tids) do redis.call('DEL', P .. ':tpl:' .. t) end
redis.call('DEL', ikey, ikey .. ':tpls', ikey .. ':src')
if redis.call('HGET', P .. ':names', name) == iid then redis.call('HDEL', P .. ':names', name) end
local id = redis.call('XADD', P .. ':log', '*', 'op', 'remove', 'identity', iid)
redis.call('SET', P .. ':snap_floor', id)
redis.call('HSET', P .. ':forget', iid, id)
redis.call('INCR', P .. ':changes')
return {name, table.concat(tids, ','), id}
"""

# XDEL one chunk of a removed person's log entries older than the removal; returns the last id read ('' at the end).
_FORGET_LOG = """
local P, iid, after, upto, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local rows = redis.call('XRANGE', P .. ':log', '(' .. after, '(' .. upto, 'COUNT', count)
for _, row in ipairs(rows) do
  local f = row[2]
  for i = 1, #f, 2 do
    if f[i] == 'identity' then
      if f[i + 1] == iid then redis.call('XDEL', P .. ':log', row[1]) end
      break
    end
  end
end
if #rows < count then return '' end
return rows[#rows][1]
"""

# Switch the snapshot (still generation ARGV[2]) to generation ARGV[3], whose rewritten chunks exist already: the
# untouched chunks are renamed over, the replaced ones deleted. 0 when the snapshot changed meanwhile.
_SCRUB_SNAP = """
local P, gen, new, chunks = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HGET', P .. ':snap', 'gen') ~= gen then return 0 end
for c = 0, chunks - 1 do
  local old, nk = P .. ':snap:' .. gen .. ':' .. c, P .. ':snap:' .. new .. ':' .. c
  if redis.call('EXISTS', nk) == 1 then redis.call('DEL', old) else redis.call('RENAME', old, nk) end
end
redis.call('HSET', P .. ':snap', 'gen', new, 'count', ARGV[5], 'identities', ARGV[6])
return 1
"""

_RENAME = """
redis.replicate_commands()
local P, iid, new = ARGV[1], ARGV[2], ARGV[3]
local ikey = P .. ':ident:' .. iid
local old = redis.call('HGET', ikey, 'name')
if not old then return redis.error_reply('NO_IDENTITY') end
local other = redis.call('HGET', P .. ':names', new)
if other and other ~= iid then return redis.error_reply('NAME_TAKEN ' .. other) end
if old == new then return {old, ''} end
redis.call('HSET', ikey, 'name', new)
redis.call('HDEL', P .. ':names', old)
redis.call('HSET', P .. ':names', new, iid)
local id = redis.call('XADD', P .. ':log', '*', 'op', 'rename', 'identity', iid, 'name', new, 'old', old)
redis.call('INCR', P .. ':changes')
return {old, id}
"""

# Replace the snapshot only with a newer one; returns the old generation to delete (or the new one if stale).
_PUT_SNAP = """
local P, logid, gen = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', P .. ':snap', 'log_id')
local floor = redis.call('GET', P .. ':snap_floor')
local function parse(s) local a, b = string.match(s, '(%d+)-(%d+)'); return tonumber(a), tonumber(b) end
local a2, b2 = parse(logid)
if cur then
  local a1, b1 = parse(cur)
  if a2 < a1 or (a2 == a1 and b2 <= b1) then return {0, gen} end
end
if floor then
  local a1, b1 = parse(floor)
  if a2 < a1 or (a2 == a1 and b2 < b1) then return {0, gen} end
end
local old = redis.call('HGET', P .. ':snap', 'gen') or ''
redis.call('HSET', P .. ':snap', 'log_id', logid, 'gen', gen, 'chunks', ARGV[4], 'count', ARGV[5],
           'identities', ARGV[6], 'dim', ARGV[7], 'created', ARGV[8])
redis.call('SET', P .. ':changes', 0)
return {1, old}
"""


def valid_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise GalleryError("a name cannot be empty")
    if len(name) > 200 or any(c in name for c in "\n\r\t\0"):
        raise GalleryError(f"invalid name {name[:40]!r}: at most 200 characters, no control characters")
    return name


class GalleryStore:
    """Reads and writes the gallery's truth. Cheap to construct; safe to share between threads."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.P = key(settings, "gallery")
        self._enroll = r.register_script(_ENROLL)
        self._remove = r.register_script(_REMOVE)
        self._rename = r.register_script(_RENAME)
        self._put_snap = r.register_script(_PUT_SNAP)
        self._forget_log = r.register_script(_FORGET_LOG)
        self._scrub_snap = r.register_script(_SCRUB_SNAP)

    # ---- keys ----------------------------------------------------------------------------------------
    def k(self, *parts) -> str:
        return ":".join([self.P, *map(str, parts)])

    @property
    def log_key(self) -> str:
        return self.k("log")

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

    # ---- log and snapshots ---------------------------------------------------------------------------
    def log_floor(self) -> str:
        return _s(self.r.get(self.k("log_floor"))) or "0-0"

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
        ok, old = self._put_snap(keys=[self.P],
                                 args=[self.P, log_id, gen, chunks, n, json.dumps(identities), DIM, now_iso()])
        old = _s(old)
        if old:
            self._drop_snapshot_chunks(old)
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
            self._drop_snapshot_chunks(new)  # replaced meanwhile: look at the new one
        raise GalleryError("the gallery snapshot kept changing while a removal was scrubbed from it; run "
                           "`facetrail gallery snapshot` to replace it")

    def _pipe(self, fill) -> list:
        pipe = self.r.pipeline(transaction=False)
        fill(pipe)
        return pipe.execute()

    def _drop_snapshot_chunks(self, gen: str) -> None:
        keys = [k for k in self.r.scan_iter(match=self.k("snap", gen, "*"), count=1000)]
        if keys:
            self.r.delete(*keys)

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


def _emb_digest(e: np.ndarray) -> str:
    """Dedupe key of a template: rounded so an exported-then-imported vector maps to the same key."""
    return hashlib.sha256(np.round(np.asarray(e, np.float64), 5).tobytes()).hexdigest()[:32]
