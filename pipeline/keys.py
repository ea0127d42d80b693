"""Every Redis key facetrail uses is named here (or built with `key()` from here), so one place decides which
keys share a Redis Cluster hash slot.

Two layouts, one code path:

* **Single Redis** (embedded, `redis://`, `unix://`): the historical names, unchanged (`ft:frames:<camera>`,
  `ft:faces`, `ft:event:<id>`, ...). A running single-node deployment keeps its data as it is.
* **Redis Cluster** (`redis.cluster: true` or a `redis+cluster://` url): keys carry hash tags.
  - the data plane is spread over the cluster by camera: `ft:{<camera>}:frames`, `ft:{<camera>}:embeddings`,
    `ft:{<camera>}:gone`, `ft:{<camera>}:seq`, the grabber lease mirror `ft:{<camera>}:lease:grabber`, and the
    embedder's done-markers `ft:{<camera>}:done:embed:<seq>` (in the slot of the output they guard);
  - `faces` is sharded into `workers.faces_shards` streams `ft:{ft.faces.<i>}:faces` by a stable hash of the
    camera (crc32, not Python's salted hash()); a detector's done-marker lives in the slot of its shard;
  - the control plane (events and their indexes, matcher leases and checkpoints, gallery log and snapshots,
    unknowns, API keys, camera registry, metrics, heartbeats) is `{ft}:...`: one slot, so every Lua script that
    commits several of them together (the matcher's commit: events + checkpoint + progress; the gallery log +
    index) stays atomic exactly as on one node.

Nothing here needs a KEYS or SCAN over the whole keyspace to find a key: what used to be found by a scan has an
index kept in Redis (`index_key`, on the control plane's tag): the live heartbeats (a sorted set of role:consumer
scored by expiry), the metric hashes (a set of stage:consumer), the cameras with an embeddings stream (a set, on
the server of those streams); a gallery snapshot's chunks are named by its meta (gen, chunks).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
DEFAULT_CLUSTER_FACES_SHARDS = 8


def is_cluster(settings) -> bool:
    r = settings.redis
    return bool(r.cluster) or (r.url or "").startswith(CLUSTER_SCHEMES)


def faces_shards(settings) -> int:
    n = int(getattr(settings.workers, "faces_shards", 0) or 0)
    if n > 0:
        return n
    return DEFAULT_CLUSTER_FACES_SHARDS if is_cluster(settings) else 1


def key(settings, *parts: object) -> str:
    """A control-plane key. On a cluster the prefix is the hash tag (`{ft}:a:b`), so all of them share a slot."""
    prefix = settings.redis.key_prefix
    if is_cluster(settings):
        prefix = "{" + prefix + "}"
    return ":".join([prefix, *map(str, parts)])


def index_key(settings, name: str) -> str:
    """An index that replaces a keyspace scan: `<p>:idx:<name>` (`{<p>}:idx:<name>` on a cluster).
    hb: sorted set role:consumer -> expiry (unix s) of the heartbeat; metrics: set of stage:consumer with a metrics
    hash; streams: set of cameras with an embeddings stream (kept on the transient server, beside the streams)."""
    return key(settings, "idx", name)


def hash_tag(k: str) -> str:
    """The part of `k` Redis Cluster hashes (the first non-empty {...}, else the whole key)."""
    i = k.find("{")
    if i >= 0:
        j = k.find("}", i + 1)
        if j > i + 1:
            return k[i + 1:j]
    return k


@dataclass(frozen=True)
class StreamNames:
    """Data-plane names (frames, faces, embeddings, markers, gone sets) and the events stream."""

    prefix: str = "ft"
    cluster: bool = False
    shards: int = 1

    @classmethod
    def of(cls, settings) -> "StreamNames":
        return cls(settings.redis.key_prefix, is_cluster(settings), faces_shards(settings))

    def _cam(self, camera: str) -> str:
        return f"{self.prefix}:{{{camera}}}"

    def frames(self, camera: str) -> str:
        return f"{self._cam(camera)}:frames" if self.cluster else f"{self.prefix}:frames:{camera}"

    @property
    def faces(self) -> str:
        """The first faces shard (the only one on a single node with the default faces_shards)."""
        return self.faces_shard(0)

    def faces_shard(self, i: int) -> str:
        if not self.cluster and self.shards <= 1:
            return f"{self.prefix}:faces"
        return f"{self.prefix}:{{{self.prefix}.faces.{i}}}:faces"

    def faces_for(self, camera: str) -> str:
        """The faces shard a camera's frames go to (stable across processes and restarts)."""
        return self.faces_shard(zlib.crc32(camera.encode()) % max(1, self.shards))

    @property
    def all_faces(self) -> list[str]:
        return [self.faces_shard(i) for i in range(max(1, self.shards))]

    def embeddings(self, camera: str) -> str:
        return f"{self._cam(camera)}:embeddings" if self.cluster else f"{self.prefix}:embeddings:{camera}"

    @property
    def events(self) -> str:
        return f"{{{self.prefix}}}:events" if self.cluster else f"{self.prefix}:events"

    def done(self, stage: str, key: str, near: str | None = None) -> str:
        """Idempotency marker of one input. On a cluster it sits in the slot of `near` (the output stream it
        guards), so the marker and the outputs are written together atomically."""
        if self.cluster and near:
            return f"{self.prefix}:{{{hash_tag(near)}}}:done:{stage}:{key}"
        return f"{self.prefix}:done:{stage}:{key}"

    def counter(self, name: str) -> str:
        return f"{{{self.prefix}}}:metrics:{name}" if self.cluster else f"{self.prefix}:metrics:{name}"

    def gone(self, camera: str) -> str:
        """Sorted set of a camera's seqs that will never reach the matcher (dropped at the source before any
        detector took them, or dead-lettered). The matcher skips a missing seq at once only when it is here;
        any other missing seq is still in flight (e.g. held by a worker killed with -9 until it is reclaimed)
        and is waited for."""
        return f"{self._cam(camera)}:gone" if self.cluster else f"{self.prefix}:gone:{camera}"

    def seq(self, camera: str) -> str:
        """The camera's next frame seq (written by the frame push, on the frames' server)."""
        return f"{self._cam(camera)}:seq" if self.cluster else f"{self.prefix}:camera:{camera}:seq"

    # the matcher's per-camera state: in the camera's slot on a cluster (beside embeddings:{camera}, so the
    # checkpoint, the progress, the acks and the event outbox are one atomic, fenced write there)
    def matcher_lease(self, camera: str) -> str:
        return f"{self._cam(camera)}:lease:matcher" if self.cluster else f"{self.prefix}:lease:matcher:{camera}"

    def checkpoint(self, camera: str) -> str:
        return f"{self._cam(camera)}:ckpt" if self.cluster else f"{self.prefix}:matcher:ckpt:{camera}"

    def progress(self, camera: str) -> str:
        return f"{self._cam(camera)}:progress" if self.cluster else f"{self.prefix}:progress:{camera}"

    def outbox(self, camera: str) -> str:
        """Cluster only: committed events not yet relayed to the events stream (EventStore.commit_outbox)."""
        return f"{self._cam(camera)}:outbox" if self.cluster else f"{self.prefix}:outbox:{camera}"

    def lease_mirror(self, camera: str, lease_key: str) -> str:
        """Copy of the grabber lease token beside the frames stream (fences the frame push)."""
        return f"{self._cam(camera)}:lease:grabber" if self.cluster else lease_key + ":mirror"
