"""`facetrail up`, `facetrail worker ROLE`, `facetrail process VIDEO|URL`, `facetrail camera add|remove|list`."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .common import print_json, settings_from

log = logging.getLogger("facetrail.cli")


def register(sub) -> None:
    from workers import ROLES

    up = sub.add_parser("up", help="run every pipeline role under one supervisor (single machine)")
    up.add_argument("--role", action="append", choices=ROLES, help="run only these roles (repeatable)")
    up.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="run one pipeline role (scale out: start more of these anywhere)")
    w.add_argument("role", choices=ROLES)
    w.add_argument("--consumer", help="consumer name (default: ROLE-HOST-PID)")
    w.set_defaults(func=cmd_worker)

    p = sub.add_parser("process", help="push one video file or stream URL through the pipeline and wait for it")
    p.add_argument("source", metavar="VIDEO|URL")
    p.add_argument("--camera", help="camera name (default: the file's stem)")
    p.add_argument("--fps", type=float, help="sample this many frames per second of video (default: every frame)")
    p.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: never)")
    p.add_argument("--no-matcher", action="store_true",
                   help="stop at embeddings: neither start nor wait for a matcher")
    p.add_argument("--keep-camera", action="store_true", help="leave the camera registered afterwards")
    p.add_argument("--json", action="store_true", help="print a summary object")
    p.set_defaults(func=cmd_process)

    c = sub.add_parser("camera", help="add, remove and list cameras at runtime (no restart needed)")
    cs = c.add_subparsers(dest="camera_cmd", metavar="SUBCOMMAND")
    cs.required = True
    a = cs.add_parser("add", help="register a camera (replaces one with the same name)")
    a.add_argument("name")
    a.add_argument("url", help="rtsp://..., http(s)://... (MJPEG/HLS), a file path, or a webcam index like 0")
    a.add_argument("--fps", type=float, help="analysis fps (default: every frame)")
    a.add_argument("--disabled", action="store_true")
    a.set_defaults(func=cmd_camera_add)
    rm = cs.add_parser("remove", help="unregister a camera; its grabber stops within a second")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_camera_remove)
    ls = cs.add_parser("list", help="cameras with their live status")
    ls.add_argument("--json", action="store_true", help="one JSON object per camera")
    ls.set_defaults(func=cmd_camera_list)


def _user_error(msg: str):
    from . import UserError

    return UserError(msg)


def cmd_up(args) -> int:
    from workers.supervisor import Supervisor

    settings = settings_from(args)
    return Supervisor(settings, config_files=args.config, roles=args.role, verbose=args.verbose).run()


def cmd_worker(args) -> int:
    from workers import load_role
    from workers.base import default_consumer

    settings = settings_from(args)
    mod = load_role(args.role)
    stop = threading.Event()

    def _sig(signum, _frame):
        log.info("worker %s: signal %d, finishing the current batch", args.role, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    consumer = args.consumer or default_consumer(args.role)
    mod.run(settings, consumer=consumer, stop=stop)
    return 0


# ---- camera ----------------------------------------------------------------------------------------------------
def _registry(args):
    from ..backbone import connect
    from ..cameras import CameraRegistry

    settings = settings_from(args)
    return CameraRegistry(connect(settings), settings)


def cmd_camera_add(args) -> int:
    from ..cameras import CameraError, camera_from_args

    try:
        cam = camera_from_args(args.name, args.url, args.fps)
    except CameraError as e:
        raise _user_error(str(e)) from None
    cam.enabled = not args.disabled
    reg = _registry(args)
    old = reg.get(cam.name)
    if old is not None and old.fps is not None and cam.fps is None:
        # replacing a camera replaces all of it: say so rather than silently dropping its analysis fps
        print(f"note: camera {cam.name} had fps {old.fps:g}; it now analyses every frame (pass --fps to keep a rate)",
              file=sys.stderr)
    reg.add(cam)
    return 0


def cmd_camera_remove(args) -> int:
    if not _registry(args).remove(args.name):
        raise _user_error(f"no camera named {args.name!r} (see `facetrail camera list`)")
    return 0


def cmd_camera_list(args) -> int:
    from ..cameras import redact_url

    reg = _registry(args)
    for cam in reg.list():
        st = reg.status(cam.name)
        row = {"name": cam.name, "url": redact_url(cam.url), "fps": cam.fps, "enabled": cam.enabled,
               "external": cam.external, "state": st.get("state", "idle"), "last_frame_at": st.get("last_frame_at"),
               "frames": st.get("frames", 0), "drops": st.get("drops", 0), "error": st.get("error") or None}
        if args.json:
            print_json(row)
        else:
            print(f"{row['name']:<20} {row['state']:<10} fps={row['fps'] or 'all'!s:<5} drops={row['drops']:<5} "
                  f"{row['url']}" + (f"  ({row['error']})" if row["error"] else ""))
    return 0


# ---- process ---------------------------------------------------------------------------------------------------
def progress_key(settings, camera: str) -> str:
    """<prefix>:progress:{camera} = the last seq the matcher has handled (it sets it; `process` waits on it)."""
    from ..keys import StreamNames

    return StreamNames.of(settings).progress(camera)


class _EmbeddingsWatcher(threading.Thread):
    """Reads embeddings:{camera} from a start id, counting frames/faces, until the EOS with eos_seq arrives."""

    def __init__(self, r, stream: str, start_id: str):
        super().__init__(daemon=True, name="process-watch")
        self.r, self.stream, self.last_id = r, stream, start_id
        self.eos_seq: int | None = None
        self.eos_seen: set[int] = set()
        self.seen: set[int] = set()
        self.duplicates = 0
        self.faces = 0
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from ..messages import EmbeddingsMsg

        try:
            while not self.stop.is_set() and not self.done.is_set():
                resp = self.r.xread({self.stream: self.last_id}, count=500, block=200)
                now = time.time()
                for _s, entries in resp or []:
                    for msg_id, fields in entries:
                        self.last_id = msg_id
                        m = EmbeddingsMsg.decode(fields[b"m"])
                        if m.frame.eos:
                            self.eos_seen.add(m.frame.seq)
                            if self.eos_seq is not None and m.frame.seq == self.eos_seq:
                                self.done.set()
                            continue
                        if m.frame.seq in self.seen:
                            self.duplicates += 1
                        self.seen.add(m.frame.seq)
                        self.faces += len(m.faces)
                        self.latencies.append(now - m.frame.captured_at)
        except BaseException as e:  # reported by the main thread
            self.error = e
            self.done.set()


def _workers_running(r, settings) -> dict[str, bool]:
    from ..metrics import alive_workers

    roles = {w.get("role") for w in alive_workers(r, settings)}
    return {role: role in roles for role in ("detector", "embedder", "matcher")}


def cmd_process(args) -> int:
    from ..backbone import child_env, connect, redis_url, transient_client
    from ..cameras import CameraRegistry, Lease, grabber_lease_key, is_file_source, redact_url
    from ..config import CameraConfig
    from ..streams import StreamNames
    from workers.grabber import LEASE_TTL_MS, SourceError, push_file
    from workers.base import deadletter_key
    from workers.supervisor import start_children, stop_children

    settings = settings_from(args)
    src = args.source
    local = is_file_source(src)
    if local:
        path = Path(src[7:] if src.startswith("file://") else src)
        if not path.is_file():
            raise _user_error(f"{src}: no such file")
        src = str(path.resolve())
    if args.fps is not None and args.fps <= 0:
        raise _user_error("--fps must be > 0")
    name = args.camera or (Path(src).stem if local else None)
    if not name:
        raise _user_error("--camera NAME is required for a stream URL")
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in name)[:64].lstrip("_.-") or "video"
    try:
        cam = CameraConfig(name=name, url=src, fps=args.fps, external=True)
    except ValueError as e:
        raise _user_error(f"camera {name!r}: {e}") from None

    if local:  # fail fast, before any worker is started
        from workers.grabber import open_capture
        try:
            cap = open_capture(src, settings, read_timeout_s=10)
        except SourceError as e:
            raise _user_error(f"{e}: not a readable video") from None
        ok = cap.read()[0]
        cap.release()
        if not ok:
            raise _user_error(f"{src}: no decodable video frames")

    redis_url(settings)  # embedded: this process owns it for the run
    r = connect(settings)
    names = StreamNames.of(settings)
    reg = CameraRegistry(r, settings)
    lease = Lease(r, grabber_lease_key(settings, name), f"process-{os.getpid()}", LEASE_TTL_MS)
    if not lease.acquire():
        raise _user_error(f"camera {name!r} is being read by {lease.holder()}; pick another --camera name")

    t0 = time.monotonic()
    running = _workers_running(r, settings)
    need = [role for role in ("detector", "embedder") if not running[role]]
    use_matcher = not args.no_matcher
    if use_matcher and not running["matcher"]:
        need.append("matcher")
    env = dict(os.environ, **child_env(settings))
    procs = start_children(need, settings, env, args.config, args.verbose) if need else []
    if need:
        log.info("no running %s: started an embedded pipeline for this run", "/".join(need))
    wait_matcher = use_matcher and (running["matcher"] or "matcher" in need)

    stop = threading.Event()
    renew_fail = threading.Event()

    def _renew():
        while not stop.wait(LEASE_TTL_MS / 3000):
            if not lease.renew():
                renew_fail.set()
                stop.set()

    renewer = threading.Thread(target=_renew, daemon=True, name="process-lease")
    dl_start = _last_id(r, deadletter_key(settings))
    rt = transient_client(settings, connect(settings))  # embeddings:{camera} live on the transient server
    watcher = _EmbeddingsWatcher(rt, names.embeddings(name), _last_id(rt, names.embeddings(name)))
    previous = reg.get(name)  # a configured camera borrowed by name is put back afterwards
    try:
        reg.add(cam)
        reg.set_status(name, "live", error="", owner=f"process-{os.getpid()}", live_at=time.time())
        renewer.start()
        watcher.start()
        if local:
            res = push_file(r, settings, name, src, fps=args.fps, stop=stop, token=lease.token or "")
        else:
            res = _push_stream(r, settings, name, src, args.fps, stop, lease.token or "")
        watcher.eos_seq = res.eos_seq
        reg.set_status(name, "ended", frames=res.frames, eos_seq=res.eos_seq)
        log.info("camera %s: %d frame(s) pushed (seq %d..%d); waiting for the pipeline", name, res.frames,
                 res.first_seq, res.eos_seq - 1)
        deadline = t0 + args.timeout if args.timeout else None
        wanted = set(range(res.first_seq, res.eos_seq))
        # With several workers the EOS can overtake the last frames: done = EOS + every seq (or dead-lettered).
        while True:
            if watcher.error:
                raise watcher.error
            if res.eos_seq in watcher.eos_seen:
                pending = wanted - watcher.seen
                if not pending:
                    break
                failed = _dead_lettered(r, deadletter_key(settings), dl_start, name)
                if pending <= failed:
                    log.error("camera %s: %d frame(s) could not be processed (see %s)", name, len(pending),
                              deadletter_key(settings))
                    break
            _check(procs, deadline, "embeddings")
            time.sleep(0.1)
        matched = None
        if wait_matcher:
            pk = progress_key(settings, name)
            while int(r.get(pk) or -1) < res.eos_seq:
                _check(procs, deadline, "the matcher")
                time.sleep(0.1)
            matched = True
    except (SourceError, InterruptedError) as e:
        if renew_fail.is_set():
            raise _user_error(f"camera {name!r}: lost the camera lease to another process") from None
        raise _user_error(str(e)) from None
    finally:
        stop.set()
        watcher.stop.set()
        if previous is not None and not args.keep_camera:
            reg.add(previous)
        elif not args.keep_camera:
            reg.remove(name)
        lease.release()
        if procs:
            stop_children(procs)
    elapsed = time.monotonic() - t0
    missing = sorted(wanted - watcher.seen)
    lat = sorted(watcher.latencies)
    summary = {"camera": name, "source": redact_url(src), "frames": res.frames, "frames_read": res.read,
               "first_seq": res.first_seq, "eos_seq": res.eos_seq, "embedded_frames": len(wanted & watcher.seen),
               "missing": len(missing), "duplicates": watcher.duplicates, "faces": watcher.faces,
               "seconds": round(elapsed, 3),
               "fps": round(res.frames / elapsed, 2) if elapsed > 0 else None,
               "latency_p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
               "matcher_done": matched, "embedded_pipeline": need}
    if args.json:
        print_json(summary)
    else:
        print(f"{name}: {res.frames} frame(s), {watcher.faces} face(s) in {elapsed:.1f}s "
              f"({summary['fps']} fps)" + (f"; {len(missing)} frame(s) missing" if missing else ""))
    return 0


def _dead_lettered(r, stream: str, start_id: str, camera: str) -> set[int]:
    """seqs of `camera` dead-lettered after start_id."""
    out = set()
    for _id, f in r.xrange(stream, min=f"({start_id}" if start_id != "0-0" else "-"):
        if f.get(b"camera", b"").decode() == camera and f.get(b"seq"):
            out.add(int(f[b"seq"]))
    return out


def _last_id(r, stream: str) -> str:
    last = r.xrevrange(stream, count=1)
    if not last:
        return "0-0"
    mid = last[0][0]
    return mid.decode() if isinstance(mid, bytes) else mid


def _check(procs, deadline, what: str) -> None:
    for p in procs:
        if p.poll() is not None:
            raise _user_error(f"an embedded worker (pid {p.pid}) exited with code {p.returncode} "
                              f"while waiting for {what}")
    if deadline is not None and time.monotonic() > deadline:
        raise _user_error(f"timed out waiting for {what}")


def _push_stream(r, settings, name, url, fps, stop, token):
    """A live URL for `process`: read until the stream ends (or Ctrl-C), sampled to --fps, then EOS."""
    import cv2

    from workers.grabber import FileResult, FramePublisher, SourceError, open_capture

    cap = open_capture(url, settings)
    pub = FramePublisher(r, settings, name, token=token)
    res = FileResult(camera=name, first_seq=pub.seq)
    period = 1.0 / fps if fps else 0.0
    next_emit = 0.0
    try:
        while not stop.is_set():
            if not cap.grab():
                break
            res.read += 1
            now = time.monotonic()
            if period:
                if now + 0.2 * period < next_emit:
                    continue
                next_emit = next_emit + period if next_emit and now - next_emit < period else now + period
            ok, img = cap.retrieve()
            if ok:
                pub.publish(img, captured_at=time.time(), pts=cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, mode="wait",
                            stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        cap.release()
    if res.read == 0:
        raise SourceError(f"{url}: no frames")
    res.frames = pub.frames
    res.eos_seq = pub.publish_eos()
    return res
