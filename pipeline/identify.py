"""Identify on a still: every face of one image with its open-set gallery decision. One function, called by
`facetrail identify` and by POST /v1/identify, so both give the same JSON."""
from __future__ import annotations

import numpy as np


def identify_image(engine, replica, img) -> list[dict]:
    """Faces of one image with their open-set decisions (the `faces` list of `identify --json`).

    `engine` is a pipeline.engine.engine.FaceEngine, `replica` an index.replica.GalleryReplica (any object with
    `identify(vectors) -> decisions`)."""
    faces = engine.analyze([img])[0]
    if not faces:
        return []
    decisions = replica.identify(np.stack([f.embedding for f in faces]).astype(np.float32))
    return [{"box": f.box_list(), "identity": d.name, "score": round(d.score, 4), "runner_up": d.runner_up,
             "runner_up_score": round(d.runner_up_score, 4)} for f, d in zip(faces, decisions)]
