"""Camera registry, status and ownership leases, all in Redis so every process sees the same cameras.

Keys (prefix = redis.key_prefix):
  <p>:cameras                  hash  name -> CameraConfig JSON (seeded from YAML by `facetrail up`, edited at runtime)
  <p>:cameras:changes          stream of CameraCommand (add/remove); workers XREAD it to follow changes live
  <p>:camera:{name}:status     hash  state (connecting|live|stalled|error|ended), last_frame_at, fps, frames,
                                     drops, stalls, reconnects, error, owner, updated_at
  <p>:camera:{name}:seq        next frame seq of the camera (monotonic across runs, never reset)
  <p>:lease:grabber:{name}     owner token of the grabber reading the camera (SET NX PX, renewed)
  <p>:lease:grabber:{name}:fence  INCR'd on every acquisition: the token carries it (fencing)
"""
from __future__ import annotations

import builtins
import logging
import time
import uuid

import redis

from .backbone import key
from .config import CameraConfig, Settings
from .messages import CameraCommand

log = logging.getLogger("facetrail.cameras")

STATES = ("connecting", "live", "stalled", "error", "ended")


class CameraError(ValueError):
    pass


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


def is_file_source(url: str) -> bool:
    """A finite local file (read every frame, EOS at the end) vs a live source (rtsp/http/webcam index)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    if url.isdigit() or url.startswith("/dev/video"):
        return False
    return True


class CameraRegistry:
    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.hash = key(settings, "cameras")
        self.changes = key(settings, "cameras", "changes")

    # -- registry ---------------------------------------------------------------------------------------------
    def list(self) -> builtins.list[CameraConfig]:
        raw = self.r.hgetall(self.hash)
        out = []
        for name, body in sorted(raw.items()):
            try:
                out.append(CameraConfig.model_validate_json(body))
            except ValueError as e:
                log.error("camera %s: unreadable registry entry skipped: %s", _s(name), e)
        return out

    def names(self) -> builtins.list[str]:
        return sorted(_s(n) for n in self.r.hkeys(self.hash))

    def get(self, name: str) -> CameraConfig | None:
        body = self.r.hget(self.hash, name)
        return CameraConfig.model_validate_json(body) if body else None

    def add(self, cam: CameraConfig, *, replace: bool = True) -> bool:
        """Register (or update) a camera and announce it; False when it exists and replace is False."""
        body = cam.model_dump_json()
        if replace:
            self.r.hset(self.hash, cam.name, body)
        elif not self.r.hsetnx(self.hash, cam.name, body):
            return False
        self._announce(CameraCommand(op="add", name=cam.name, url=cam.url, fps=cam.fps))
        log.info("camera %s: registered url=%s fps=%s", cam.name, _redact(cam.url), cam.fps)
        return True

    def remove(self, name: str) -> bool:
        if not self.r.hdel(self.hash, name):
            return False
        self._announce(CameraCommand(op="remove", name=name))
        log.info("camera %s: removed", name)
        return True

    def seed(self, cameras: builtins.list[CameraConfig]) -> int:
        """Register the config file's cameras. Returns how many were added or updated.

        A camera not registered yet is added. One registered from the file and not changed at runtime since
        follows the file (an edited `fps` or url applies at the next `up`). One changed at runtime
        (`facetrail camera add`, the API) keeps the runtime setting, and a WARNING says which setting is ignored
        and how to go back to the file: never silently. The file's last seeded body per camera is kept in
        <p>:cameras:seeded to tell the two apart."""
        seeded_key = self.hash + ":seeded"
        n = 0
        for c in cameras:
            body = c.model_dump_json()
            cur = self.r.hget(self.hash, c.name)
            last = self.r.hget(seeded_key, c.name)
            if cur is None:
                self.add(c)
                self.r.hset(seeded_key, c.name, body)
                n += 1
                continue
            cur, last = _s(cur), _s(last) if last is not None else None
            if cur == body:
                self.r.hset(seeded_key, c.name, body)
                continue
            if last is not None and cur == last:  # the file changed, the camera was not edited at runtime
                old = CameraConfig.model_validate_json(cur)
                self.add(c)
                self.r.hset(seeded_key, c.name, body)
                log.warning("camera %s: config file changed (%s): applied", c.name, _diff(old, c))
                n += 1
                continue
            runtime = CameraConfig.model_validate_json(cur)
            log.warning("camera %s: the config file's settings (%s) are ignored: the camera was changed at runtime "
                        "and the runtime settings win; `facetrail camera remove %s` and restart `up` to use the "
                        "file again", c.name, _diff(runtime, c), c.name)
        return n

    def _announce(self, cmd: CameraCommand) -> None:
        self.r.xadd(self.changes, {"m": cmd.encode()}, maxlen=1000, approximate=True)

    def last_change_id(self) -> str:
        last = self.r.xrevrange(self.changes, count=1)
        return _s(last[0][0]) if last else "0-0"

    def wait_change(self, after_id: str, block_ms: int) -> tuple[str, builtins.list[CameraCommand]]:
        """Changes after after_id (blocks up to block_ms): (new last id, commands)."""
        resp = self.r.xread({self.changes: after_id}, block=max(1, block_ms), count=100)
        cmds = []
        for _stream, entries in resp or []:
            for msg_id, fields in entries:
                after_id = _s(msg_id)
                try:
                    cmds.append(CameraCommand.decode(fields.get(b"m", fields.get("m"))))
                except ValueError as e:
                    log.error("cameras:changes %s: unreadable command skipped: %s", after_id, e)
        return after_id, cmds

    # -- status -----------------------------------------------------------------------------------------------
    def status_key(self, name: str) -> str:
        return key(self.settings, "camera", name, "status")

    def seq_key(self, name: str) -> str:
        from .keys import StreamNames

        return StreamNames.of(self.settings).seq(name)  # beside the frames stream (the frame push writes it)

    def set_status(self, name: str, state: str | None = None, **fields) -> None:
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown camera state {state!r}")
            fields["state"] = state
        fields["updated_at"] = time.time()
        self.r.hset(self.status_key(name), mapping={k: ("" if v is None else v) for k, v in fields.items()})

    def status(self, name: str) -> dict:
        raw = self.r.hgetall(self.status_key(name))
        out: dict = {}
        for k, v in raw.items():
            k, v = _s(k), _s(v)
            if k in ("last_frame_at", "fps", "updated_at", "stalled_at", "live_at"):
                out[k] = float(v) if v else None
            elif k in ("frames", "drops", "stalls", "reconnects", "fence"):
                out[k] = int(v) if v else 0
            else:
                out[k] = v
        return out

    def all_status(self) -> dict[str, dict]:
        return {n: self.status(n) for n in self.names()}

    def next_seq(self, name: str) -> int:
        v = self.r.get(self.seq_key(name))
        return int(v) if v else 0


def _diff(old: CameraConfig, new: CameraConfig) -> str:
    """'fps 5.0 -> 10.0, url ...' for the fields that differ (urls redacted)."""
    parts = []
    for f in ("url", "fps", "enabled", "external"):
        a, b = getattr(old, f), getattr(new, f)
        if a != b:
            if f == "url":
                a, b = _redact(a), _redact(b)
            parts.append(f"{f} {a} -> {b}")
    return ", ".join(parts) or "no change"


def _redact(url: str) -> str:
    """rtsp://user:pass@host -> rtsp://user:***@host (never log a password)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


redact_url = _redact


# Renew only while we still hold it (compare token, then extend); release the same way.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One owner per resource: SET NX PX with a token "<fence>:<owner>:<uuid>", renewed; the fence number is
    monotonic (INCR), so writes guarded by the token (e.g. FramePusher) are refused once someone else owns it."""

    def __init__(self, r: redis.Redis, lease_key: str, owner: str, ttl_ms: int):
        self.r = r
        self.key = lease_key
        self.owner = owner
        self.ttl_ms = int(ttl_ms)
        self.token: str | None = None
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    @property
    def fence(self) -> int:
        return int(self.token.split(":", 1)[0]) if self.token else 0

    def acquire(self) -> bool:
        if self.token and self.renew():
            return True
        if self.r.exists(self.key):
            return False
        fence = self.r.incr(self.key + ":fence")
        token = f"{fence}:{self.owner}:{uuid.uuid4().hex[:8]}"
        if self.r.set(self.key, token, nx=True, px=self.ttl_ms):
            self.token = token
            return True
        return False

    def renew(self) -> bool:
        if not self.token:
            return False
        ok = bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        if not ok:
            self.token = None
        return ok

    def release(self) -> None:
        if self.token:
            try:
                self._release(keys=[self.key], args=[self.token])
            except redis.RedisError:
                pass
            self.token = None

    def holder(self) -> str | None:
        v = self.r.get(self.key)
        return _s(v) if v else None


def grabber_lease_key(settings: Settings, camera: str) -> str:
    return key(settings, "lease", "grabber", camera)


def camera_from_args(name: str, url: str, fps: float | None = None) -> CameraConfig:
    try:
        return CameraConfig(name=name, url=url, fps=fps)
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else None
        msg = f"{first['loc'][0]}: {first['msg']}" if first else str(e)
        raise CameraError(f"camera {name!r}: {msg}") from None
