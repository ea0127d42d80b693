"""`facetrail up`, `facetrail worker ROLE`, `facetrail process VIDEO|URL` (run by process_cmd.py),
`facetrail camera add|remove|list`."""
from __future__ import annotations

import logging
import signal
import sys
import threading

from .common import print_json, settings_from

log = logging.getLogger("facetrail.cli")


def register(sub) -> None:
    from workers import ROLES

    from .process_cmd import cmd_process

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
