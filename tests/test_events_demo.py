"""`facetrail demo --synthetic`: the scene built from one photo, through the real pipeline. The photo is normally
the astronaut portrait out of the scikit-image wheel; here the wheel step is checked with a stand-in zip and the
run uses a face photo from the shared data (no network in tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import cv2
import pytest

from pipeline.demo import ASTRONAUT_MEMBER, DemoError, astronaut_photo, render_scene


def test_photo_comes_out_of_the_wheel(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "scikit_image-0.0.0-py3-none-any.whl", "w") as z:
        z.writestr(ASTRONAUT_MEMBER, b"png-bytes")
    assert astronaut_photo(cache).read_bytes() == b"png-bytes"
    other = tmp_path / "other"
    other.mkdir()
    with zipfile.ZipFile(other / "scikit_image-0.0.0-py3-none-any.whl", "w") as z:
        z.writestr("skimage/data/camera.png", b"x")
    with pytest.raises(DemoError, match="astronaut"):
        astronaut_photo(other)


@pytest.mark.shared_data
def test_synthetic_demo_unknown_then_matched(faces_dir, models_dir, tmp_path):
    demo = tmp_path / "demo"
    (demo / "cache").mkdir(parents=True)
    # a stand-in for the astronaut photo: one clear face, square like the original
    img = cv2.imread(str(faces_dir / "face_recognition" / "obama.jpg"))
    h, w = img.shape[:2]
    side = min(h, w)
    cv2.imwrite(str(demo / "cache" / "astronaut.png"), cv2.resize(img[:side, (w - side) // 2:(w + side) // 2],
                                                                  (512, 512)))
    clip, enroll = render_scene(demo / "cache" / "astronaut.png", tmp_path, seconds=2.0, fps=15.0)
    cap = cv2.VideoCapture(str(clip))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30 and cv2.imread(str(enroll)) is not None
    cap.release()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(FACETRAIL_DEMO_DIR=str(demo), FACETRAIL_MODELS_DIR=str(models_dir))
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--synthetic", "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["scenario"] == "astronaut" and out["matched"] == {"eileen-collins": 1}
    assert out["unknown_tracks"] >= 1  # the first pass, before she was enrolled
    assert {e["identity"] for e in out["events"]} == {"eileen-collins", None}
    assert any(p.suffix == ".jpg" for p in (demo / "snapshots").iterdir())
