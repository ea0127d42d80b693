"""A live RTSP camera that misbehaves, under `facetrail up` (grabber, detector, embedder, matcher as real
subprocesses) with the real GStreamer RTSP server looping the Hamilton clip:

- an outage mid-track (server killed, back on the same port) ends the open tracks: no track spans the outage,
  even with tracking.max_age_s far longer than the outage (only the new stream epoch can end them);
- a freeze (server SIGSTOPped, TCP left open) gives one `stalled`, a reconnect, and no frame published under a
  time it was not captured at;
- kill -9 of each worker kind (detector, embedder, grabber, matcher) loses no frame and duplicates none, checked
  seq by seq up to the matcher (no seq skipped unless it was dropped at the source; no frame arrived too late;
  no event repeated).

Frames and faces go through a second, non-persistent Redis (redis.transient_url), as with the embedded
servers of a default `up`. One `up` serves the three tests (models load once); each test makes its own trouble
and checks its own window."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
import yaml

from pipeline.events.model import Event
from pipeline.messages import EmbeddingsMsg

from conftest import CLIP, RedisProc, RtspServer, free_port, gst_available, in_ci

CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
CAM = "door"
MAX_AGE_S = 30.0  # far longer than any outage here: only the epoch change may end a track across one
WATCHDOG_S = 2.0


class Collector(threading.Thread):
    """Tails embeddings:{cam} and the events stream into memory (the matcher trims applied entries)."""

    def __init__(self, r: redis.Redis, rt: redis.Redis):
        super().__init__(daemon=True)
        self.r, self.rt = r, rt  # events on the durable server, embeddings on the transient one
        self.frames: dict[str, EmbeddingsMsg] = {}  # entry id -> message
        self.events: dict[str, Event] = {}
        self.event_entries = 0  # entries in the events stream (== len(events) when no event is repeated)
        self.stop = threading.Event()
        self._last = {f"ft:embeddings:{CAM}": "0-0", "ft:events": "0-0"}

    def poll(self) -> None:
        emb = f"ft:embeddings:{CAM}"
        resp = (self.rt.xread({emb: self._last[emb]}, count=1000) or []) + \
            (self.r.xread({"ft:events": self._last["ft:events"]}, count=1000) or [])
        for stream, rows in resp:
            stream = stream.decode()
            for mid, f in rows:
                mid = mid.decode()
                self._last[stream] = mid
                if stream == "ft:events":
                    ev = Event.decode(f[b"m"])
                    self.event_entries += 1
                    self.events[ev.id] = ev
                else:
                    self.frames[mid] = EmbeddingsMsg.decode(f[b"m"])

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.poll()
            except redis.RedisError:
                pass

    def seqs(self) -> list[int]:
        return sorted(m.frame.seq for m in self.frames.values())

    def tracks(self) -> dict[str, dict]:
        """track id -> {first_seen, last_seen, ended, identities}."""
        out: dict[str, dict] = {}
        for ev in self.events.values():
            t = out.setdefault(ev.track_id, {"first": ev.first_seen, "last": ev.last_seen, "ended": False,
                                             "ids": set()})
            t["first"] = min(t["first"], ev.first_seen)
            t["last"] = max(t["last"], ev.last_seen)
            t["ended"] |= ev.type == "track.ended"
            if ev.type == "identity.matched":
                t["ids"].add(ev.identity)
        return out


class Live:
    def __init__(self, r, rtsp, up, col, rt):
        self.r, self.rtsp, self.up, self.col = r, rtsp, up, col
        self.rt = rt  # the transient server: frames, faces, gone sets

    def status(self) -> dict:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(f"ft:camera:{CAM}:status").items()}

    def wait(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.up.poll() is not None:
                raise AssertionError(f"`facetrail up` exited with {self.up.returncode}")
            v = cond()
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; camera status {self.status()}")

    def matcher_progress(self) -> int:
        return int(self.r.get(f"ft:progress:{CAM}") or -1)

    def metrics(self, stage: str) -> dict:
        tot: dict[str, float] = {}
        for k in self.r.scan_iter(f"ft:metrics:{stage}:*"):
            for f, v in self.r.hgetall(k).items():
                try:
                    tot[f.decode()] = tot.get(f.decode(), 0.0) + float(v)
                except ValueError:
                    pass
        return tot

    def started_track_after(self, t: float) -> bool:
        return any(ev.type == "track.started" and ev.first_seen > t for ev in list(self.col.events.values()))


@pytest.fixture(scope="module")
def live(tmp_path_factory, faces_dir, models_dir, redis_proc):
    if not gst_available():
        if in_ci():
            pytest.fail("CI: GStreamer RTSP server is missing (run .ci/system-deps.sh)")
        pytest.skip("GStreamer RTSP server is missing (run .ci/system-deps.sh)")
    redis.Redis.from_url(redis_proc.url).flushdb()
    tmp = tmp_path_factory.mktemp("live")
    transient = RedisProc(tmp_path_factory.mktemp("transient")).start()  # frames in flight: a second server
    rtsp = RtspServer(faces_dir / CLIP, free_port()).start()
    cfg = tmp / "live.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [{"name": CAM, "url": rtsp.url, "fps": 5}]}))
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
               FACETRAIL_REDIS_URL=redis_proc.url, FACETRAIL_REDIS__TRANSIENT_URL=transient.url,
               FACETRAIL_WORKERS__WATCHDOG_S=str(WATCHDOG_S),
               FACETRAIL_TRACKING__MAX_AGE_S=str(MAX_AGE_S), FACETRAIL_WORKERS__CV_THREADS="1")
    env.pop("FACETRAIL_CONFIG", None)
    log = open(tmp / "up.log", "w")
    up = subprocess.Popen(CLI + ["-c", str(cfg), "-v", "up", "--role", "grabber", "--role", "detector", "--role",
                                 "embedder", "--role", "matcher"], env=env, stdout=log, stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(redis_proc.url)
    col = Collector(r, redis.Redis.from_url(transient.url))
    col.start()
    lv = Live(r, rtsp, up, col, redis.Redis.from_url(transient.url))
    try:
        lv.wait(lambda: lv.status().get("state") == "live", 60, "the camera to go live")
        lv.wait(lambda: any(ev.type == "track.started" for ev in list(col.events.values())), 120,
                "a first track.started")
        yield lv
    finally:
        col.stop.set()
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        rtsp.kill()
        transient.stop()
        log.close()
        print((tmp / "up.log").read_text()[-6000:])


def test_outage_mid_track_ends_it_and_no_track_spans_the_outage(live):
    live.wait(lambda: any(not t["ended"] and t["last"] > time.time() - 1.5 for t in live.col.tracks().values()),
              60, "an open track with a face in the last 1.5 s")
    reconnects = int(live.status().get("reconnects") or 0)
    down_at = time.time()
    live.rtsp.kill()
    time.sleep(3.0)  # much shorter than tracking.max_age_s (30 s)
    live.rtsp.start()
    up_at = time.time()
    live.wait(lambda: int(live.status().get("reconnects") or 0) > reconnects, 60, "the reconnect")
    live.wait(lambda: live.started_track_after(up_at), 90, "a track started after the outage")
    tracks = live.col.tracks()
    before = {k: t for k, t in tracks.items() if t["first"] < down_at}
    assert before and all(t["ended"] for t in before.values()), "every track open at the outage ended"
    spanning = {k: t for k, t in tracks.items() if t["first"] < down_at and t["last"] > up_at}
    assert not spanning, f"tracks span the outage {down_at:.2f}..{up_at:.2f}: {spanning}"
    # frames after the reconnect are a new epoch, with a stream time later than every frame before it
    msgs = sorted(live.col.frames.values(), key=lambda m: m.frame.seq)
    pre = [m.frame for m in msgs if m.frame.captured_at < down_at]
    post = [m.frame for m in msgs if m.frame.captured_at > up_at]
    assert pre and post
    assert post[0].epoch > pre[-1].epoch
    assert post[0].stream_time > pre[-1].stream_time + 3.0 - 0.5, "stream time kept the outage's length"
    times = [m.frame.stream_time for m in msgs]
    assert all(b > a for a, b in zip(times, times[1:])), "stream time is monotonic across the reconnect"


def test_freeze_gives_one_stall_a_reconnect_and_no_stale_frames(live):
    live.wait(lambda: live.status().get("state") == "live", 60, "the camera live again")
    st = live.status()
    stalls, reconnects = int(st.get("stalls") or 0), int(st.get("reconnects") or 0)
    frozen_at = time.time()
    os.kill(live.rtsp.proc.pid, signal.SIGSTOP)
    try:
        live.wait(lambda: live.status().get("state") == "stalled", 30, "the camera to be marked stalled")
        time.sleep(6.0)
        assert live.status().get("state") == "stalled", "stays stalled while frozen (no flapping)"
    finally:
        os.kill(live.rtsp.proc.pid, signal.SIGCONT)
    resumed_at = time.time()
    live.wait(lambda: live.status().get("state") == "live" and int(live.status().get("reconnects") or 0)
              > reconnects, 60, "live again on a new connection")
    live.wait(lambda: any(m.frame.captured_at > resumed_at + 3 for m in list(live.col.frames.values())), 60,
              "frames after the freeze at embeddings")
    assert int(live.status().get("stalls") or 0) == stalls + 1, "one stall for one freeze"
    msgs = sorted(live.col.frames.values(), key=lambda m: m.frame.seq)
    # nothing was captured while the server was frozen (what it buffered must not appear under new times)
    during = [m.frame for m in msgs if frozen_at + 1.0 < m.frame.captured_at < resumed_at]
    assert not during, f"{len(during)} frame(s) published while the source was frozen"
    # within an epoch, stream time and capture time advance together: a burst of buffered frames published
    # at once would have stream times far apart and capture times bunched together
    for a, b in zip(msgs, msgs[1:]):
        fa, fb = a.frame, b.frame
        if fb.epoch == fa.epoch and fa.captured_at > frozen_at - 5:
            skew = (fb.stream_time - fa.stream_time) - (fb.captured_at - fa.captured_at)
            assert abs(skew) < 1.0, f"seq {fa.seq}->{fb.seq}: stream time and capture time differ by {skew:.2f}s"


def _kill_holding(live: Live, role: str, stream: str, group: str) -> int:
    """SIGKILL the `role` worker while it holds entries of `stream`; returns its pid."""
    def holding():
        for k in live.r.scan_iter(f"ft:hb:{role}:*"):
            hb = json.loads(live.r.get(k) or "{}")
            if not hb:
                continue
            for c in live.rt.xpending(stream, group).get("consumers") or []:
                if c["name"].decode() == hb["consumer"] and int(c["pending"]) > 0:
                    return hb
        return None

    hb = live.wait(holding, 60, f"a {role} holding entries")
    os.kill(hb["pid"], signal.SIGKILL)
    return hb["pid"]


def _kill_role(live: Live, role: str) -> int:
    hb = json.loads(live.r.get(next(iter(live.r.scan_iter(f"ft:hb:{role}:*")))))
    os.kill(hb["pid"], signal.SIGKILL)
    return hb["pid"]


def test_kill9_of_each_worker_kind_loses_no_frame_seq_by_seq(live):
    live.wait(lambda: live.status().get("state") == "live", 60, "the camera live")
    start = live.matcher_progress() + 1
    _kill_holding(live, "detector", f"ft:frames:{CAM}", "detectors")
    _kill_holding(live, "embedder", "ft:faces", "embedders")
    time.sleep(1.0)
    _kill_role(live, "matcher")  # the next matcher takes the lease after tracking.lease_ttl_s, from the checkpoint
    _kill_role(live, "grabber")  # the next grabber continues the camera's seqs (and its stream time)
    killed_at = time.time()
    # the killed workers' frames are redone (dead consumer: no heartbeat) and the matcher waits for them
    end = live.wait(lambda: max((m.frame.seq for m in list(live.col.frames.values())
                                 if m.frame.captured_at > killed_at + 10), default=None), 120,
                    "frames captured 10 s after the kills at embeddings")
    live.wait(lambda: live.matcher_progress() >= end, 120, "the matcher past those frames")
    live.col.poll()
    assert live.col.event_entries == len(live.col.events), "an event was published twice"
    gone = {int(x) for x in live.rt.zrange(f"ft:gone:{CAM}", 0, -1)}
    got: dict[int, int] = {}
    for m in live.col.frames.values():
        got[m.frame.seq] = got.get(m.frame.seq, 0) + 1
    for seq in range(start, end + 1):
        if seq in gone:
            assert seq not in got, f"seq {seq} was recorded as dropped at the source but reached embeddings"
            continue
        assert got.get(seq) == 1, f"seq {seq} reached embeddings {got.get(seq, 0)} time(s), not once"
    m = live.metrics("matcher")
    assert m.get("late", 0) == 0, "a frame reached the matcher after its seq had been skipped (lost)"
    assert live.metrics("detector").get("reclaimed", 0) >= 1 and live.metrics("embedder").get("reclaimed", 0) >= 1
