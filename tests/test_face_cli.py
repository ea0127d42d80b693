"""`facetrail detect` / `facetrail verify` as a user runs them: subprocess, real models, JSON-lines contracts."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.config.sections import ThresholdsConfig

# the console script of the environment running the tests (whatever VENV that is), not a fixed .venv
FACETRAIL = str(Path(sys.executable).parent / "facetrail")


def run(args: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FACETRAIL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240)


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_verify_pairs_decides_every_deepface_pair(cli_env, faces_dir):
    pairs_csv = faces_dir / "deepface" / "pairs.csv"
    with open(pairs_csv, newline="") as f:
        truth = [(r["file_x"], r["file_y"], r["Decision"].strip() == "Yes") for r in csv.DictReader(f)]
    p = run(["verify", "--pairs", str(pairs_csv), "--json"], cli_env)
    assert p.returncode == 0, p.stderr
    rows = lines(p.stdout)
    assert len(rows) == len(truth) == 300
    wrong = []
    for row, (x, y, same) in zip(rows, truth):
        assert set(row) == {"a", "b", "similarity", "same", "threshold"}
        assert (row["a"], row["b"]) == (x, y)
        assert isinstance(row["similarity"], float) and isinstance(row["same"], bool)
        if row["same"] != same:
            wrong.append(row)
    assert wrong == []
    assert {r["threshold"] for r in rows} == {ThresholdsConfig().match}  # the documented default


def test_verify_pairs_goes_on_past_bad_rows(cli_env, faces_dir, tmp_path):
    fr = faces_dir / "face_recognition"
    (tmp_path / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("file_x,file_y\n"
                        f"{fr / 'obama.jpg'},{fr / 'obama2.jpg'}\n"
                        f"empty.jpg,{fr / 'obama.jpg'}\n"
                        f"{fr / 'biden.jpg'},blank.png\n"
                        f"missing.jpg,blank.png\n"
                        f"{fr / 'obama.jpg'},{fr / 'biden.jpg'}\n")
    p = run(["verify", "--pairs", str(csv_path), "--json"], cli_env)
    assert p.returncode == 1
    rows = lines(p.stdout)
    assert len(rows) == 5
    assert rows[0]["same"] is True and "error" not in rows[0]
    assert "empty file" in rows[1]["error"] and rows[1]["a"] == "empty.jpg"
    assert "no face" in rows[2]["error"]
    assert "cannot read" in rows[3]["error"]
    assert rows[4]["same"] is False and rows[4]["similarity"] < 0.3


def test_verify_two_images_human_and_json(cli_env, faces_dir):
    fr = faces_dir / "face_recognition"
    p = run(["verify", str(fr / "obama.jpg"), str(fr / "obama-480p.jpg"), "--json"], cli_env)
    assert p.returncode == 0, p.stderr
    (row,) = lines(p.stdout)
    assert row["same"] is True and row["similarity"] >= row["threshold"]
    p = run(["verify", str(fr / "obama.jpg"), str(fr / "biden.jpg"), "--threshold", "0.2"], cli_env)
    assert p.returncode == 0 and p.stdout.startswith("different") and "(threshold 0.2)" in p.stdout


def test_detect_json_draw_and_bad_images(cli_env, faces_dir, tmp_path):
    fr = faces_dir / "face_recognition"
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    huge = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    huge = huge[:16] + (20000).to_bytes(4, "big") * 2 + huge[24:]  # IHDR claims 20000x20000
    (tmp_path / "huge.png").write_bytes(huge)
    grey = cv2.cvtColor(cv2.imread(str(fr / "obama.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = tmp_path / "drawn.jpg"
    imgs = [str(fr / "two_people.jpg"), str(tmp_path / "zero.jpg"), str(tmp_path / "junk.jpg"),
            str(tmp_path / "huge.png"), str(tmp_path / "grey.png")]
    p = run(["detect", *imgs, "--json", "--draw", str(out)], cli_env)
    assert p.returncode == 1
    rows = lines(p.stdout)
    assert [r["image"] for r in rows] == imgs
    two = rows[0]
    assert set(two) == {"image", "width", "height", "faces"} and (two["width"], two["height"]) == (1126, 661)
    assert len(two["faces"]) == 2
    for f in two["faces"]:
        assert set(f) == {"box", "score", "quality", "landmarks"}
        assert len(f["box"]) == 4 and len(f["landmarks"]) == 5 and all(len(pt) == 2 for pt in f["landmarks"])
        assert 0 <= f["quality"] <= 1 and 0 < f["score"] <= 1
    assert "empty file" in rows[1]["error"]
    assert "error" in rows[2] and "faces" not in rows[2]
    assert "megapixels" in rows[3]["error"]
    assert len(rows[4]["faces"]) == 1
    assert (tmp_path / "drawn_0.jpg").is_file() and (tmp_path / "drawn_4.jpg").is_file()
    assert not (tmp_path / "drawn_1.jpg").exists()


def test_user_errors_exit_2(cli_env, tmp_path):
    p = run(["verify", "--pairs", str(tmp_path / "nope.csv")], cli_env)
    assert p.returncode == 2 and "cannot read" in p.stderr and p.stdout == ""
    bad = tmp_path / "bad.csv"
    bad.write_text("left,right\na.jpg,b.jpg\n")
    p = run(["verify", "--pairs", str(bad)], cli_env)
    assert p.returncode == 2 and "file_x,file_y" in p.stderr
    p = run(["verify", "only_one.jpg"], cli_env)
    assert p.returncode == 2 and "two images" in p.stderr
