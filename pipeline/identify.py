"""Identify on a still: every face of one image with its open-set gallery decision. One function, called by
`facetrail identify` and by POST /v1/identify, so both give the same JSON.

It runs the pipeline's own stage classes in-process (pipeline/stages): the image is a one-frame stream through
DetectStage (detect, quality, align; DetectStage.for_stills: no motion gate, every face embedded) and EmbedStage
(the embedder on the aligned crops), then the gallery's open-set rule (index.replica.decide, which the matcher's
per-face votes use too). The same code, not a copy, decides on a still and on a camera."""
from __future__ import annotations

import numpy as np

from .messages import FrameMsg, FrameRef
from .stages import DetectStage, EmbedStage

STILL = "still"  # the camera name a still travels under (never written anywhere)


def identify_image(engine, replica, img) -> list[dict]:
    """Faces of one image with their open-set decisions (the `faces` list of `identify --json`).

    `engine` is a pipeline.engine.engine.FaceEngine, `replica` an index.replica.GalleryReplica (any object with
    `identify(vectors) -> decisions`)."""
    ref = FrameRef(camera=STILL, seq=0, captured_at=0.0, width=int(img.shape[1]), height=int(img.shape[0]))
    faces = DetectStage.for_stills(engine).process([(FrameMsg(frame=ref, jpeg=b""), img)])[0]
    if not faces.faces:
        return []
    embedded = EmbedStage(engine.settings, engine).process([faces])[0]
    decisions = replica.identify(np.stack([f.vector() for f in embedded.faces]).astype(np.float32))
    return [{"box": [round(float(v), 1) for v in f.box], "identity": d.name, "score": round(d.score, 4),
             "runner_up": d.runner_up, "runner_up_score": round(d.runner_up_score, 4)}
            for f, d in zip(embedded.faces, decisions)]
