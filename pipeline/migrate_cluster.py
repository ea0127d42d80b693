"""Copy a single-node facetrail deployment's durable state onto a Redis Cluster, under the cluster's key names.

  python -m pipeline.migrate_cluster --from redis://old:6379/0 --to redis+cluster://n1:7000,n2:7000 [--prefix ft]
                                     [--dry-run]

Run it with the pipeline stopped (`facetrail up` down, or at least every grabber stopped and the queues drained:
frames, faces and embeddings in flight are not copied). What is copied, with DUMP/RESTORE (type, consumer groups
and TTL kept): the gallery (log, snapshot, identities), events and their indexes and snapshots, unknowns, API
keys, the camera registry and status, sink consumer groups, metrics — every `<prefix>:X` key becomes `{<prefix>}:X`
— and the per-camera matcher state, which moves into the camera's slot: `<p>:matcher:ckpt:C` -> `<p>:{C}:ckpt`,
`<p>:progress:C` -> `<p>:{C}:progress`, `<p>:camera:C:seq` -> `<p>:{C}:seq` (pipeline/keys.py). Not copied:
streams and markers in flight (`frames:*`, `faces`, `embeddings:*`, `done:*`, `gone:*`), leases and their fences
and mirrors, heartbeats and the indexes of heartbeats and streams (`idx:hb`, `idx:streams`). A key that already
exists on the cluster is left alone (the copy can be re-run).
This one-off tool SCANs the old server's keyspace; nothing in the running pipeline does."""
from __future__ import annotations

import argparse
import sys

import redis

SKIP_HEADS = ("frames", "faces", "embeddings", "done", "gone", "lease", "hb", "reembed")


def target_name(k: str, prefix: str) -> str | None:
    """The cluster name of single-node key `k`, or None when it is not migrated."""
    if not k.startswith(prefix + ":"):
        return None
    rest = k[len(prefix) + 1:]
    head = rest.split(":", 1)[0]
    if head in SKIP_HEADS:
        return None
    parts = rest.split(":")
    if head == "matcher" and len(parts) >= 3 and parts[1] == "ckpt":
        return f"{prefix}:{{{':'.join(parts[2:])}}}:ckpt"
    if head == "progress" and len(parts) >= 2:
        return f"{prefix}:{{{':'.join(parts[1:])}}}:progress"
    if head == "camera" and len(parts) >= 3 and parts[-1] == "seq":
        return f"{prefix}:{{{':'.join(parts[1:-1])}}}:seq"
    if head == "camera" and parts[-1] == "mirror":
        return None
    if head == "idx" and parts[1:] != ["metrics"]:  # the heartbeat and streams indexes name what is not copied
        return None
    return "{" + prefix + "}:" + rest


def migrate(src: redis.Redis, dst, prefix: str = "ft", dry_run: bool = False) -> dict:
    copied, skipped, existing = 0, 0, 0
    for raw in src.scan_iter(match=prefix + ":*", count=1000):
        k = raw.decode() if isinstance(raw, bytes) else raw
        new = target_name(k, prefix)
        if new is None:
            skipped += 1
            continue
        if dry_run:
            copied += 1
            continue
        blob = src.dump(k)
        if blob is None:  # expired meanwhile
            continue
        ttl = src.pttl(k)
        try:
            dst.restore(new, max(0, ttl) if ttl and ttl > 0 else 0, blob)
            copied += 1
        except redis.ResponseError as e:
            if "BUSYKEY" not in str(e):
                raise
            existing += 1
    return {"copied": copied, "skipped": skipped, "already_there": existing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="src", required=True, help="the single-node server's URL")
    ap.add_argument("--to", dest="dst", required=True, help="redis+cluster://host:port,... of the cluster")
    ap.add_argument("--prefix", default="ft", help="redis.key_prefix (the same on both sides)")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    from .config import load_settings
    from .backbone import connect

    src = redis.Redis.from_url(a.src)
    settings = load_settings([], env={"FACETRAIL_REDIS_URL": a.dst, "FACETRAIL_REDIS__CLUSTER": "true",
                                      "FACETRAIL_REDIS__KEY_PREFIX": a.prefix})
    dst = connect(settings)
    res = migrate(src, dst, a.prefix, a.dry_run)
    print(f"copied {res['copied']} key(s), skipped {res['skipped']} in-flight/lease key(s), "
          f"{res['already_there']} already on the cluster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
