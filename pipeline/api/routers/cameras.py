"""/v1/cameras: list with live status, get one, add, remove. Changes go through the camera registry's change
stream, so running grabbers pick them up without a restart."""
from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ...config import CameraConfig
from ..deps import state
from ..errors import ApiError

router = APIRouter(prefix="/cameras", tags=["cameras"])

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class CameraStatus(BaseModel):
    state: str | None = Field(None, description="connecting | live | stalled | error | ended; null before the "
                                                "grabber first reports")
    fps: float | None = None
    frames: int = 0
    drops: int = 0
    stalls: int = 0
    reconnects: int = 0
    last_frame_at: float | None = None
    error: str | None = None
    owner: str | None = None
    updated_at: float | None = None


class CameraOut(BaseModel):
    name: str
    url: str = Field(description="source URL; passwords are shown as ***")
    fps: float | None = None
    enabled: bool = True
    status: CameraStatus


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, examples=["door"])
    url: str = Field(min_length=1, max_length=2048, examples=["rtsp://user:pass@10.0.0.5/stream1"])
    fps: float | None = Field(None, gt=0, le=1000, description="analysis fps; null = every frame")
    enabled: bool = True


def _registry(request: Request):
    from ...cameras import CameraRegistry

    st = state(request)
    return CameraRegistry(st.redis, st.settings)


def _out(reg, cam: CameraConfig) -> CameraOut:
    from ...cameras import redact_url

    raw = reg.status(cam.name)
    known = set(CameraStatus.model_fields)
    st = CameraStatus(**{k: (v if v != "" else None) for k, v in raw.items() if k in known})
    return CameraOut(name=cam.name, url=redact_url(cam.url), fps=cam.fps, enabled=cam.enabled, status=st)


@router.get("", response_model=list[CameraOut], summary="cameras with their live status")
async def list_cameras(request: Request):
    reg = _registry(request)
    return await run_in_threadpool(lambda: [_out(reg, c) for c in reg.list()])


@router.get("/{name}", response_model=CameraOut, responses={404: {"description": "no such camera"}})
async def get_camera(request: Request, name: str = Path(pattern=NAME)):
    reg = _registry(request)

    def work():
        cam = reg.get(name)
        if cam is None:
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        return _out(reg, cam)

    return await run_in_threadpool(work)


@router.post("", response_model=CameraOut, status_code=201, summary="add a camera (picked up live)",
             responses={409: {"description": "a camera with this name exists"}})
async def add_camera(request: Request, body: CameraIn):
    reg = _registry(request)
    try:
        cam = CameraConfig(name=body.name, url=body.url, fps=body.fps, enabled=body.enabled)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"camera {body.name!r}: {e}") from None

    def work():
        if not reg.add(cam, replace=False):
            raise ApiError(409, "conflict", f"a camera named {cam.name!r} exists; remove it first")
        return _out(reg, cam)

    return await run_in_threadpool(work)


@router.delete("/{name}", status_code=204, summary="remove a camera (its grabber stops)",
               responses={404: {"description": "no such camera"}})
async def remove_camera(request: Request, name: str = Path(pattern=NAME)):
    reg = _registry(request)
    if not await run_in_threadpool(reg.remove, name):
        raise ApiError(404, "not_found", f"no camera named {name!r}")
    return Response(status_code=204)
