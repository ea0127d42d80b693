"""ReembedGate: a face the gate is following is embedded densely at first, sparsely once settled, and again
whenever it is clearly better; everything else is tracked without a new embedding.

Unit rules on boxes, then the real detector (which runs the gate) and embedder on the clip's first second:
fewer embeddings than faces, every face passed over has an embedded face at the same place within the gate's
window before or after it, and with reembed_s = 0 every face gets a crop."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import FrameMsg, FrameRef
from pipeline.tracking.reembed import ReembedGate
from pipeline.tracking.tracker import iou

BOX = [100.0, 100.0, 80.0, 80.0]
MOVED = [104.0, 102.0, 80.0, 80.0]   # a few pixels on: IoU ~0.85
ELSEWHERE = [300.0, 100.0, 80.0, 80.0]


def test_gate_rules():
    g = ReembedGate(0.1)
    assert g.plan("a", 0.0, [(BOX, 0.5)]) == [True]
    assert g.plan("a", 0.033, [(MOVED, 0.5), (ELSEWHERE, 0.5)]) == [False, True]
    assert g.plan("a", 0.066, [(MOVED, 0.65)]) == [True]      # clearly better: worth a new embedding
    assert g.plan("b", 0.066, [(BOX, 0.5)]) == [True]         # another camera remembers nothing of "a"
    assert g.plan("a", 0.2, [(BOX, 0.5)]) == [True]           # the window has passed
    assert g.plan("a", 0.25, [(BOX, 0.5)]) == [False]
    assert g.plan("a", 0.15, [(BOX, 0.5)]) == [False]         # out of order: an embedding 0.05 s later counts


def test_gate_embeds_densely_then_sparsely_and_follows_a_moving_face():
    g = ReembedGate(0.1, settle_n=3, settled_s=0.5)
    times = []
    for k in range(90):  # 3 s at 30 fps, the face walking 3 px a frame: 270 px in all, far from where it began
        t = k / 30
        if g.plan("a", t, [([100.0 + 3 * k, 100.0, 80.0, 80.0], 0.5)]) == [True]:
            times.append(round(t, 2))
    assert times[:3] == [0.0, 0.1, 0.2]                       # settle_n embeddings, reembed_s apart
    assert all(0.5 <= b - a < 0.55 for a, b in zip(times[2:], times[3:])), times   # then every settled_s
    assert len(times) == 3 + 5
    # gone longer than the follow gap, back at the same place: a new visit, embedded at once
    assert g.plan("a", 3.0 + g.follow_s + 0.1, [([100.0 + 3 * 89, 100.0, 80.0, 80.0], 0.5)]) == [True]


def test_gate_pairs_each_face_with_one_slot():
    g = ReembedGate(0.1)
    near = [110.0, 100.0, 80.0, 80.0]   # overlaps BOX (IoU ~0.78) but is another face beside it
    assert g.plan("a", 0.0, [(BOX, 0.5)]) == [True]
    assert g.plan("a", 0.033, [(BOX, 0.5), (near, 0.5)]) == [False, True]
    assert g.plan("a", 0.066, [(near, 0.5), (BOX, 0.5)]) == [False, False]


def test_gate_forgets_a_camera_whose_stream_time_restarts():
    g = ReembedGate(0.1)
    assert g.plan("a", 0.0, [(BOX, 0.5)]) == [True]
    assert g.plan("a", 5.0, [(ELSEWHERE, 0.5)]) == [True]
    # the same file processed again: pts starts over; its first face is a new visit, embedded
    assert g.plan("a", 0.02, [(BOX, 0.5)]) == [True]
    assert g.plan("a", 0.05, [(BOX, 0.5)]) == [False]


def test_gate_off_embeds_everything():
    g = ReembedGate(0.0)
    assert not g.enabled
    assert g.plan("a", 0.0, [(BOX, 0.5)] * 3) == [True] * 3
    assert g.plan("a", 0.0, [(BOX, 0.5)]) == [True]


def test_gate_memory_is_bounded():
    g = ReembedGate(0.1)
    for i in range(ReembedGate.MAX_CAMERAS + 10):
        g.plan(f"cam{i}", 0.0, [(BOX, 0.5)])
    assert len(g._recent) == ReembedGate.MAX_CAMERAS and "cam0" not in g._recent
    for i in range(200):
        g.plan("busy", 0.0, [([float(100 * i), 0.0, 50.0, 50.0], 0.5)])
    assert len(g._recent["busy"]) == ReembedGate.PER_CAMERA


@pytest.mark.shared_data
def test_stage_skips_only_faces_it_embedded_nearby(settings, faces_dir):
    """The detector's gate: a face passed over gets no crop and no thumbnail, has an embedded face at the same
    place within the gate's window, and comes out of the embedder with an empty embedding."""
    import cv2

    from pipeline.stages import DetectStage
    from pipeline.stages import EmbedStage

    cap = cv2.VideoCapture(str(faces_dir / "face_recognition" / "short_hamilton_clip.mp4"))
    imgs = [cap.read()[1] for _ in range(30)]
    frames = [(FrameMsg(frame=FrameRef(camera="c", seq=i, captured_at=1000.0 + i / 30, pts=i / 30, width=640,
                                       height=360), jpeg=b"x"), img) for i, img in enumerate(imgs)]
    every, settled = settings.workers.reembed_s, settings.workers.reembed_settled_s
    assert every == pytest.approx(0.1) and settled >= every
    det = DetectStage(settings)
    faces = det.process(frames[:16]) + det.process(frames[16:])  # the gate's memory spans batches
    n_faces = sum(len(m.faces) for m in faces)
    assert n_faces >= 30
    for m in faces:
        assert len(m.crops) == len(m.faces)
        for f, c in zip(m.faces, m.crops):
            assert len(c) in (0, 112 * 112 * 3)
            if not c:
                assert f.thumb_jpeg is None  # passed over: no thumbnail either

    out = EmbedStage(settings, det.engine).process(faces)
    assert [m.frame.seq for m in out] == list(range(30))
    embedded = [(m.frame.pts, f) for m in out for f in m.faces if f.embedding]
    skipped = [(m.frame.pts, f) for m in out for f in m.faces if not f.embedding]
    assert skipped and embedded and det.skipped == len(skipped)
    assert len(embedded) == sum(1 for m in faces for c in m.crops if c)
    for _t, f in embedded:
        assert abs(float(np.linalg.norm(f.vector())) - 1.0) < 1e-3
    for t, f in skipped:
        assert any(abs(t - te) < settled and iou(f.box, e.box) >= 0.5 for te, e in embedded), (t, f.box)

    all_on = DetectStage(settings.model_copy(update={"workers": settings.workers.model_copy(
        update={"reembed_s": 0.0})}), det.engine).process(frames)
    assert all(len(c) == 112 * 112 * 3 for m in all_on for c in m.crops)
