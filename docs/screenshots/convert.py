"""Turn the PNGs the browser tests save (FACETRAIL_UI_SCREENSHOTS=DIR pytest tests/test_ui.py) into the README's
JPEGs here, each under 150 KB. Usage: python docs/screenshots/convert.py DIR"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
# README name <- test screenshot name; phone shots (device scale 2) are halved back to 390 px wide
NAMES = {"events": "events-desktop", "event": "event-detail-matched", "people": "people-desktop",
         "unknowns": "unknowns-desktop", "cameras": "cameras-desktop", "system": "system-desktop",
         "events-phone": "events-phone-clip", "people-phone": "people-phone-clip", "login": "login-desktop"}
LIMIT = 150_000


def main(src: Path) -> int:
    for out, name in NAMES.items():
        img = cv2.imread(str(src / f"{name}.png"))
        if img is None:
            print(f"missing {name}.png", file=sys.stderr)
            return 1
        if img.shape[1] > 1300:
            img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for q in (85, 78, 70, 60, 50):
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
            if ok and len(buf) < LIMIT:
                break
        (HERE / f"{out}.jpg").write_bytes(buf.tobytes())
        print(f"{out}.jpg {img.shape[1]}x{img.shape[0]} q{q} {len(buf) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
