"""Soak a live camera under `facetrail up`: disk written, memory, events per visit, and no visit glued across an
outage, with the real GStreamer RTSP server looping the Hamilton clip and bounced every few minutes.

    .venv/bin/python bench/soak_live.py [--minutes 30] [--fps 5] [--bounce-s 180] [--outage-s 20] [--json OUT]

Runs `up` (grabber, detector, embedder, matcher) on a fresh data dir with the default embedded Redis servers
(durable with AOF; frames and faces on the non-persistent transient one), Miranda and Lacamoire enrolled from
their photos. Measured:
- disk: bytes each redis-server wrote (/proc/PID/io write_bytes) and the durable dir's size, per camera-hour;
- memory: RSS of every process of the `up` tree at the end (and the peak seen by 10 s sampling);
- events: tracks, events per track ("per visit"), identity.matched per name, and the checks that matter:
  tracks spanning a bounce (must be 0) and tracks named by two identities (a false match on one of them).
Needs /usr/bin/python3 with GStreamer's RTSP server (.ci/system-deps.sh) and ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import CLIP, RtspServer, free_port  # noqa: E402
from pipeline.events.model import Event  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")
CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def _server_pid(sock: Path) -> int | None:
    try:
        return int(redis.Redis(unix_socket_path=str(sock)).info("server")["process_id"])
    except (redis.RedisError, OSError):
        return None


def _write_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        return psutil.Process(pid).io_counters().write_bytes
    except (psutil.Error, AttributeError):
        return 0


def _tree_rss(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return out
    for p in procs:
        try:
            cmd = " ".join(p.cmdline())
            name = "redis-server" if "redis-server" in cmd else (cmd.split(" worker ")[-1].split()[0]
                                                                  if " worker " in cmd else "supervisor")
            if "redis-server" in cmd:
                name += " (transient)" if "redis-transient" in cmd else " (durable)"
            out[f"{name} pid {p.pid}"] = p.memory_info().rss
        except psutil.Error:
            continue
    return out


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=5.0, help="the camera's analysis fps")
    ap.add_argument("--bounce-s", type=float, default=180.0, help="kill the RTSP server every this many seconds")
    ap.add_argument("--outage-s", type=float, default=20.0, help="... for this long")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--single-redis", action="store_true",
                    help="for comparison: frames and faces through the durable (AOF) server too, as before")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ft-soak-"))
    data = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(FACETRAIL_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    if args.single_redis:
        env["FACETRAIL_REDIS__TRANSIENT_URL"] = f"unix://{data / 'redis' / 'redis.sock'}"
    for name in PEOPLE:
        subprocess.run(CLI + ["gallery", "enroll", name, str(SHARED / "face_recognition" / f"{name}.png")], env=env,
                       check=True, capture_output=True, timeout=300)
    cfg = tmp / "soak.yaml"
    rtsp = RtspServer(SHARED / CLIP, free_port()).start()
    cfg.write_text(json.dumps({"cameras": [{"name": "stage", "url": rtsp.url, "fps": args.fps}]}))
    log = open(tmp / "up.log", "w")
    up = subprocess.Popen(CLI + ["-c", str(cfg), "-v", "up", "--role", "grabber", "--role", "detector", "--role",
                                 "embedder", "--role", "matcher"], env=env, stdout=log, stderr=subprocess.STDOUT)
    durable_sock, transient_sock = data / "redis" / "redis.sock", data / "redis-transient" / "redis.sock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (_server_pid(durable_sock)
                                               and (args.single_redis or _server_pid(transient_sock))):
        time.sleep(0.5)
    pids = {"durable": _server_pid(durable_sock), "transient": _server_pid(transient_sock)}
    w0 = {k: _write_bytes(p) for k, p in pids.items()}
    r = redis.Redis(unix_socket_path=str(durable_sock))
    t0 = time.time()
    end = t0 + args.minutes * 60
    outages: list[tuple[float, float]] = []
    peak: dict[str, int] = {}
    next_bounce = t0 + args.bounce_s
    next_sample = 0.0
    try:
        while time.time() < end:
            if up.poll() is not None:
                raise SystemExit(f"`facetrail up` exited with {up.returncode}; see {tmp / 'up.log'}")
            now = time.time()
            if now >= next_bounce and now + args.outage_s < end:
                rtsp.kill()
                time.sleep(args.outage_s)
                rtsp.start()
                outages.append((now, time.time()))
                next_bounce = time.time() + args.bounce_s
            if now >= next_sample:
                next_sample = now + 10
                for k, v in _tree_rss(up.pid).items():
                    peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.5)
        hours = (time.time() - t0) / 3600
        w1 = {k: _write_bytes(p) for k, p in pids.items()}
        rss = _tree_rss(up.pid)
        events = [Event.decode(f[b"m"]) for _, f in r.xrange("ft:events")]
        status = {k.decode(): v.decode() for k, v in r.hgetall("ft:camera:stage:status").items()}
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        rtsp.kill()
        log.close()

    tracks: dict[str, dict] = {}
    for ev in events:
        t = tracks.setdefault(ev.track_id, {"first": ev.first_seen, "last": ev.last_seen, "names": set(), "n": 0})
        t["first"], t["last"] = min(t["first"], ev.first_seen), max(t["last"], ev.last_seen)
        t["n"] += 1
        if ev.type == "identity.matched":
            t["names"].add(ev.identity)
    spanning = [k for k, t in tracks.items() if any(t["first"] < a and t["last"] > b for a, b in outages)]
    two_names = [k for k, t in tracks.items() if len(t["names"]) > 1]
    matched: dict[str, int] = {}
    for ev in events:
        if ev.type == "identity.matched":
            matched[ev.identity] = matched.get(ev.identity, 0) + 1
    wrote = {k: w1[k] - w0[k] for k in w0}
    res = {
        "minutes": round(hours * 60, 2), "fps": args.fps, "single_redis": args.single_redis,
        "bounces": len(outages), "outage_s": args.outage_s,
        "frames": int(status.get("frames") or 0), "reconnects": int(status.get("reconnects") or 0),
        "stalls": int(status.get("stalls") or 0), "drops": int(status.get("drops") or 0),
        "disk_written_bytes": wrote,
        "disk_written_mb_per_camera_hour": {k: round(v / 1e6 / hours, 2) for k, v in wrote.items()},
        "durable_dir_bytes": _du(data / "redis"),
        "rss_mb_end": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "rss_mb_peak": {k: round(v / 2**20, 1) for k, v in peak.items()},
        "tracks": len(tracks), "events": len(events),
        "events_per_track": round(len(events) / len(tracks), 2) if tracks else 0.0,
        "identity_matched": matched, "tracks_spanning_an_outage": len(spanning),
        "tracks_named_twice": len(two_names), "cpus": os.cpu_count(), "load_avg_end": os.getloadavg(),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}", file=sys.stderr)
    return 0 if not spanning and not two_names else 1


if __name__ == "__main__":
    raise SystemExit(main())
