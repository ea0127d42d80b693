"""/v1/identify and /v1/verify on uploaded stills: the same code and JSON as `facetrail identify --json` and
`facetrail verify --json` (pipeline.identify.identify_image and the engine's calls, shared, not copied)."""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ..deps import state
from ..errors import ApiError
from ..uploads import decode_checked, read_upload

router = APIRouter(tags=["faces"])

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {413: {"description": "the file is too large or has too many pixels"},
                  415: {"description": "not JPEG, PNG, WebP or BMP"},
                  422: {"description": "empty, corrupt or unreadable image"}}


class FaceMatch(BaseModel):
    box: list[float] = Field(description="x, y, w, h in image pixels")
    identity: str | None = Field(description="gallery name, or null when the face is nobody enrolled")
    score: float = Field(description="cosine similarity to the best identity")
    runner_up: str | None
    runner_up_score: float


class IdentifyResult(BaseModel):
    image: str = Field(description="the uploaded file's name")
    faces: list[FaceMatch]


@router.post("/identify", response_model=IdentifyResult, summary="who is in this photo (1:K, open set)",
             responses=_UPLOAD_ERRORS)
async def identify(request: Request, image: UploadFile = File(description="JPEG, PNG, WebP or BMP")):
    from ...identify import identify_image

    st = state(request)
    data = await read_upload(image, st.settings)
    name = image.filename or "image"

    def work():
        img = decode_checked(data, st.settings, name=name)
        with st.engine_lock:
            engine = st.engine
            return st.with_gallery(lambda replica: identify_image(engine, replica, img))

    faces = await run_in_threadpool(work)
    return IdentifyResult(image=name, faces=faces)


class VerifyResult(BaseModel):
    a: str = Field(description="file name of the first photo")
    b: str = Field(description="file name of the second photo")
    similarity: float = Field(description="cosine similarity of the largest face of each photo")
    same: bool = Field(description="similarity >= threshold")
    threshold: float


@router.post("/verify", response_model=VerifyResult, summary="are two photos the same person? (largest face of each)",
             responses={**_UPLOAD_ERRORS, 422: {"description": "empty, corrupt or unreadable image, or no face"}})
async def verify(request: Request, a: UploadFile = File(description="first photo"),
                 b: UploadFile = File(description="second photo"),
                 threshold: float | None = Form(None, ge=-1.0, le=1.0,
                                                description="same-person cosine threshold "
                                                            "(default: thresholds.match)")):
    """`facetrail verify A B --json`: the same engine calls (FaceEngine.main_face, then the cosine of the two
    unit embeddings, decided at thresholds.match) and the same JSON."""
    st = state(request)
    blobs = [(f.filename or name, await read_upload(f, st.settings)) for f, name in ((a, "a"), (b, "b"))]

    def work():
        imgs = [decode_checked(data, st.settings, name=name) for name, data in blobs]
        embs = []
        with st.engine_lock:
            engine = st.engine
            for (name, _), img in zip(blobs, imgs):
                face = engine.main_face(img)
                if face is None:
                    raise ApiError(422, "no_face", f"{name}: no face found")
                embs.append(face.embedding)
            thr = engine.threshold if threshold is None else float(threshold)
        sim = float(np.dot(embs[0], embs[1]))
        return VerifyResult(a=blobs[0][0], b=blobs[1][0], similarity=round(sim, 4), same=bool(sim >= thr),
                            threshold=thr)

    return await run_in_threadpool(work)
