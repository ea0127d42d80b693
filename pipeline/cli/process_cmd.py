"""`facetrail process VIDEO|URL`: push one video file or stream URL through the pipeline and wait for it (the
parser is in pipeline_cmd.register). Starts an embedded detector/embedder/matcher for the run where none is
running, holds the camera's grabber lease while it pushes, and waits until every frame came out as embeddings
(or was dead-lettered) and, unless --no-matcher, until the matcher has handled the EOS."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..errors import UserError
from .common import print_json, settings_from

log = logging.getLogger("facetrail.cli")


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
    from ..backbone import connect, redis_url
    from ..cameras import Lease, grabber_lease_key
    from ..publisher import LEASE_TTL_MS

    settings = settings_from(args)
    cam, local = _camera(args)
    if local:  # fail fast, before any worker is started
        _probe(cam.url, settings)

    redis_url(settings)  # embedded: this process owns it for the run
    r = connect(settings)
    lease = Lease(r, grabber_lease_key(settings, cam.name), f"process-{os.getpid()}", LEASE_TTL_MS)
    if not lease.acquire():
        raise UserError(f"camera {cam.name!r} is being read by {lease.holder()}; pick another --camera name")

    t0 = time.monotonic()
    procs, need, wait_matcher = _embedded_workers(args, settings, r)
    res, watcher, matched = _push_and_wait(args, settings, r, cam, local, lease, procs, wait_matcher, t0)
    _report(args, cam, time.monotonic() - t0, res, watcher, matched, need)
    return 0


def _camera(args):
    """The camera for this run (external: no grabber reads it) and whether its source is a local file."""
    from ..cameras import is_file_source
    from ..config import CameraConfig

    src = args.source
    local = is_file_source(src)
    if local:
        path = Path(src[7:] if src.startswith("file://") else src)
        if not path.is_file():
            raise UserError(f"{src}: no such file")
        src = str(path.resolve())
    if args.fps is not None and args.fps <= 0:
        raise UserError("--fps must be > 0")
    name = args.camera or (Path(src).stem if local else None)
    if not name:
        raise UserError("--camera NAME is required for a stream URL")
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in name)[:64].lstrip("_.-") or "video"
    try:
        return CameraConfig(name=name, url=src, fps=args.fps, external=True), local
    except ValueError as e:
        raise UserError(f"camera {name!r}: {e}") from None


def _probe(src: str, settings) -> None:
    """A local file must open and give a first frame."""
    from ..sources import SourceError, open_capture

    try:
        cap = open_capture(src, settings, read_timeout_s=10)
    except SourceError as e:
        raise UserError(f"{e}: not a readable video") from None
    ok = cap.read()[0]
    cap.release()
    if not ok:
        raise UserError(f"{src}: no decodable video frames")


def _embedded_workers(args, settings, r):
    """Starts the roles this run needs that are not running: (processes, their roles, wait for the matcher)."""
    from ..backbone import child_env
    from workers.supervisor import start_children

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
    return procs, need, wait_matcher


def _renew(lease, stop: threading.Event, renew_fail: threading.Event) -> None:
    from ..publisher import LEASE_TTL_MS

    while not stop.wait(LEASE_TTL_MS / 3000):
        if not lease.renew():
            renew_fail.set()
            stop.set()


def _push_and_wait(args, settings, r, cam, local, lease, procs, wait_matcher, t0):
    """Registers the camera, pushes the source, waits for the pipeline; puts everything back afterwards."""
    from ..backbone import connect, transient_client
    from ..cameras import CameraRegistry
    from ..keys import StreamNames
    from ..sources import SourceError, push_file, push_stream
    from workers.base import deadletter_key
    from workers.supervisor import stop_children

    name, src = cam.name, cam.url
    names = StreamNames.of(settings)
    reg = CameraRegistry(r, settings)
    stop = threading.Event()
    renew_fail = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease, stop, renew_fail), daemon=True, name="process-lease")
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
            res = push_stream(r, settings, name, src, args.fps, stop, lease.token or "")
        watcher.eos_seq = res.eos_seq
        reg.set_status(name, "ended", frames=res.frames, eos_seq=res.eos_seq)
        log.info("camera %s: %d frame(s) pushed (seq %d..%d); waiting for the pipeline", name, res.frames,
                 res.first_seq, res.eos_seq - 1)
        deadline = t0 + args.timeout if args.timeout else None
        _wait_embeddings(r, settings, name, watcher, res, dl_start, procs, deadline)
        matched = _wait_matcher(r, settings, name, res.eos_seq, procs, deadline) if wait_matcher else None
    except (SourceError, InterruptedError) as e:
        if renew_fail.is_set():
            raise UserError(f"camera {name!r}: lost the camera lease to another process") from None
        raise UserError(str(e)) from None
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
    return res, watcher, matched


def _wait_embeddings(r, settings, name, watcher, res, dl_start, procs, deadline) -> None:
    """With several workers the EOS can overtake the last frames: done = EOS + every seq (or dead-lettered)."""
    from workers.base import deadletter_key

    wanted = set(range(res.first_seq, res.eos_seq))
    while True:
        if watcher.error:
            raise watcher.error
        if res.eos_seq in watcher.eos_seen:
            pending = wanted - watcher.seen
            if not pending:
                return
            failed = _dead_lettered(r, deadletter_key(settings), dl_start, name)
            if pending <= failed:
                log.error("camera %s: %d frame(s) could not be processed (see %s)", name, len(pending),
                          deadletter_key(settings))
                return
        _check(procs, deadline, "embeddings")
        time.sleep(0.1)


def _wait_matcher(r, settings, name, eos_seq, procs, deadline) -> bool:
    pk = progress_key(settings, name)
    while int(r.get(pk) or -1) < eos_seq:
        _check(procs, deadline, "the matcher")
        time.sleep(0.1)
    return True


def _report(args, cam, elapsed, res, watcher, matched, need) -> None:
    from ..cameras import redact_url

    name = cam.name
    wanted = set(range(res.first_seq, res.eos_seq))
    missing = sorted(wanted - watcher.seen)
    lat = sorted(watcher.latencies)
    summary = {"camera": name, "source": redact_url(cam.url), "frames": res.frames, "frames_read": res.read,
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
            raise UserError(f"an embedded worker (pid {p.pid}) exited with code {p.returncode} "
                              f"while waiting for {what}")
    if deadline is not None and time.monotonic() > deadline:
        raise UserError(f"timed out waiting for {what}")
