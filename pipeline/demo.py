"""`facetrail demo`: enroll people, push a clip through the real pipeline (`facetrail process`), show the events.

With the shared test data (../shared/data beside the repo, or FACETRAIL_DEMO_DATA): enroll Lin-Manuel Miranda
and Alex Lacamoire from their photos and process short_hamilton_clip.mp4 (Miranda on stage, Lacamoire at the
piano, audience faces that must stay unknown).

Without it: a scene built from a public-domain photo — NASA's portrait of astronaut Eileen Collins, which
scikit-image ships as skimage/data/astronaut.png. The demo downloads the scikit-image wheel with
`pip download --no-deps` (PyPI; not installed, only read as a zip) and takes that one file. It renders a
short clip of the photo moving and zooming over a background, processes it once with an empty gallery (an
unknown-track event), enrolls her from a differently framed, mirrored, re-lit copy of the photo, and
processes it again (a matched event).

Everything lives in its own data dir (default <XDG_DATA_HOME>/facetrail-demo, or FACETRAIL_DEMO_DIR) with its
own embedded Redis, so the demo never touches your gallery, events or sinks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
MARKER = ".facetrail-demo"
ASTRONAUT_MEMBER = "skimage/data/astronaut.png"


class DemoError(RuntimeError):
    pass


@dataclass
class Scenario:
    name: str
    camera: str
    clip: Path
    people: dict[str, Path]                      # name -> enrollment photo
    expect: list[str]                            # names the demo should find
    passes: list[str] = field(default_factory=lambda: ["enrolled"])  # "empty" = process before enrolling


def demo_dir() -> Path:
    d = os.environ.get("FACETRAIL_DEMO_DIR")
    if d:
        return Path(d).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "facetrail-demo"


def shared_data() -> Path | None:
    cand = os.environ.get("FACETRAIL_DEMO_DATA") or os.environ.get("FACETRAIL_SHARED_DATA")
    for d in ([Path(cand)] if cand else []) + [REPO.parent / "shared" / "data"]:
        fr = d / "faces" / "face_recognition"
        if (fr / "short_hamilton_clip.mp4").is_file():
            return d
    return None


def hamilton(data: Path) -> Scenario:
    fr = data / "faces" / "face_recognition"
    people = {"lin-manuel-miranda": fr / "lin-manuel-miranda.png", "alex-lacamoire": fr / "alex-lacamoire.png"}
    return Scenario("hamilton", "hamilton", fr / "short_hamilton_clip.mp4", people, list(people))


# ---- the synthetic scene ---------------------------------------------------------------------------------
def astronaut_photo(cache: Path) -> Path:
    """skimage/data/astronaut.png out of the scikit-image wheel (downloaded once into cache, never installed)."""
    out = cache / "astronaut.png"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scikit_image-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d",
               str(cache), "scikit-image"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = sorted(cache.glob("scikit_image-*.whl"))
        if res.returncode != 0 or not wheels:
            raise DemoError("no shared test data, and the scikit-image wheel (for its public-domain astronaut "
                            f"photo) could not be downloaded from PyPI: {res.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[-1]) as z:
        if ASTRONAUT_MEMBER not in z.namelist():
            raise DemoError(f"{wheels[-1].name} has no {ASTRONAUT_MEMBER}")
        out.write_bytes(z.read(ASTRONAUT_MEMBER))
    return out


def render_scene(photo: Path, out_dir: Path, seconds: float = 4.0, fps: float = 15.0) -> tuple[Path, Path]:
    """(clip, enrollment photo). The clip: the portrait sliding and zooming over a textured background.
    The enrollment photo: a tighter, mirrored, re-lit crop, so enrollment and clip are not the same pixels."""
    import cv2
    import numpy as np

    img = cv2.imread(str(photo))
    if img is None:
        raise DemoError(f"cannot read {photo}")
    h, w = img.shape[:2]
    enroll = img[int(0.02 * h):int(0.62 * h), int(0.18 * w):int(0.78 * w)]
    enroll = cv2.convertScaleAbs(cv2.flip(enroll, 1), alpha=1.1, beta=12)
    enroll_path = out_dir / "eileen-collins.jpg"
    cv2.imwrite(str(enroll_path), enroll, [cv2.IMWRITE_JPEG_QUALITY, 92])

    W, H = 640, 360
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.integers(40, 200, (H // 8, W // 8, 3), dtype=np.uint8), (3, 3), 0)
    bg = cv2.resize(bg, (W, H), interpolation=cv2.INTER_CUBIC)
    clip = out_dir / "astronaut_scene.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), fps, (W, H))
    if not writer.isOpened():
        raise DemoError("OpenCV cannot write an mp4 here (no mp4v encoder)")
    n = int(seconds * fps)
    for i in range(n):
        t = i / max(1, n - 1)
        side = int(260 + 60 * np.sin(np.pi * t))               # zoom in and out
        face = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        x = int(20 + t * (W - side - 40))                        # slide left to right
        y = max(0, (H - side) // 2 + int(10 * np.sin(4 * np.pi * t)))
        frame = bg.copy()
        hh, ww = min(side, H - y), min(side, W - x)
        frame[y:y + hh, x:x + ww] = face[:hh, :ww]
        writer.write(frame)
    writer.release()
    return clip, enroll_path


def astronaut(work: Path) -> Scenario:
    photo = astronaut_photo(work.parent / "cache")
    clip, enroll = render_scene(photo, work)
    return Scenario("astronaut", "astronaut", clip, {"eileen-collins": enroll}, ["eileen-collins"],
                    passes=["empty", "enrolled"])


# ---- running it ------------------------------------------------------------------------------------------
def _env(base_dir: Path, models_dir: Path) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("FACETRAIL_"):
            del env[k]  # no user config, no external Redis, no sinks: the demo is self-contained
    env.update(FACETRAIL_DATA_DIR=str(base_dir / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
               FACETRAIL_REDIS_URL="")
    return env


def _cli(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise DemoError(f"facetrail {' '.join(args[:2])} failed: {(res.stderr or res.stdout).strip()[-800:]}")
    return res


def _fresh_dir(keep: bool) -> Path:
    """The demo's data dir, emptied (but its model cache) unless keep; refuses a dir that is not the demo's."""
    base = demo_dir()
    if base.exists() and not keep:
        if not (base / MARKER).exists() and any(p.name != "cache" for p in base.iterdir()):
            raise DemoError(f"{base} exists and is not a facetrail demo dir; set FACETRAIL_DEMO_DIR elsewhere")
        for p in base.iterdir():
            if p.name != "cache":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    (base / "work").mkdir(parents=True, exist_ok=True)
    (base / MARKER).touch()
    return base


def run_demo(models_dir: Path, *, synthetic: bool = False, keep: bool = False,
             say: Callable[[str], None] = print) -> dict:
    """Returns {"scenario", "events": [...], "matched": {name: n}, "unknown_tracks": n, "snapshots": dir}."""
    base = _fresh_dir(keep)
    data = None if synthetic else shared_data()
    sc = hamilton(data) if data else astronaut(base / "work")
    say(f"facetrail demo: scenario {sc.name!r} (data dir {base})")
    env = _env(base, models_dir)

    from .backbone import connect
    from .config import load_settings

    settings = load_settings([], env={k: v for k, v in env.items() if k.startswith("FACETRAIL_")})
    r = connect(settings)  # this process starts (and owns) the demo's embedded Redis; the children join it
    t0 = time.monotonic()
    for stage in sc.passes:
        if stage == "enrolled":
            for name, photo in sc.people.items():
                _cli(env, "gallery", "enroll", name, str(photo))
                say(f"  enrolled {name} from {photo.name}")
        else:
            say("  gallery empty: the first pass can only give unknown tracks")
        say(f"  processing {sc.clip.name} through the pipeline (grabber -> detector -> embedder -> matcher) ...")
        res = _cli(env, "process", str(sc.clip), "--camera", sc.camera, "--json")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        say(f"  {summary['frames']} frames, {summary['faces']} faces in {summary['seconds']:.1f} s")

    from .events.render import format_line
    from .events.store import EventStore

    store = EventStore(r, settings)
    events = store.query(camera=sc.camera, limit=100_000).events
    snaps = base / "snapshots"
    snaps.mkdir(exist_ok=True)
    say("")
    say("events (facetrail events --camera %s):" % sc.camera)
    for ev in events:
        say("  " + format_line(ev))
        if ev.type == "track.ended" and ev.snapshot_id:
            jpeg = store.snapshot(ev.snapshot_id)
            if jpeg:
                (snaps / f"{ev.track_id.replace(':', '_')}_{ev.identity or 'unknown'}.jpg").write_bytes(jpeg)
    matched: dict[str, int] = {}
    for ev in events:
        if ev.type == "identity.matched" and ev.identity is not None:
            matched[ev.identity] = matched.get(ev.identity, 0) + 1
    unknown = sum(1 for ev in events if ev.type == "track.ended" and ev.identity is None)
    say("")
    say("summary: " + ", ".join(f"{n} matched on {c} track(s)" for n, c in sorted(matched.items())) +
        f"; {unknown} unknown track(s); snapshots in {snaps}; {time.monotonic() - t0:.0f} s")
    missing = [n for n in sc.expect if n not in matched]
    if missing:
        say(f"NOT FOUND: {', '.join(missing)}")
    return {"scenario": sc.name, "events": [e.public() for e in events], "matched": matched,
            "unknown_tracks": unknown, "missing": missing, "snapshots": str(snaps)}
