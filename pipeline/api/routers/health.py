"""/healthz (no key needed: Redis, workers, cameras) and /metrics (Prometheus text, built from Redis at scrape)."""
from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ..deps import state

log = logging.getLogger("facetrail.api")

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Health(BaseModel):
    status: str = Field(description="ok | degraded (a camera is in error/stalled, or cameras are registered but a "
                                    "pipeline role has no live worker) | down (Redis unreachable)")
    redis: Check
    workers: dict[str, dict] = Field(default_factory=dict, description="live workers per role, from heartbeats")
    cameras: dict[str, dict] = Field(default_factory=dict, description="camera name -> state, fps, last frame age")
    uptime_s: float


PIPELINE_ROLES = ("grabber", "detector", "embedder", "matcher")


def _workers(st) -> dict[str, dict]:
    from ...metrics import alive_workers

    out: dict[str, dict] = {}
    for w in alive_workers(st.redis, st.settings):
        row = out.setdefault(str(w.get("role", "?")), {"alive": 0, "consumers": []})
        row["alive"] += 1
        row["consumers"].append(str(w.get("consumer", "?")))
    return out


def _cameras(st) -> tuple[dict[str, dict], bool]:
    from ...cameras import CameraRegistry

    reg = CameraRegistry(st.redis, st.settings)
    out, ok = {}, True
    now = time.time()
    for cam in reg.list():
        s = reg.status(cam.name)
        last = s.get("last_frame_at")
        row = {"state": s.get("state") or ("disabled" if not cam.enabled else "unknown"), "fps": s.get("fps"),
               "last_frame_age_s": round(now - last, 3) if last else None}
        if cam.enabled and row["state"] in ("error", "stalled"):
            ok = False
        out[cam.name] = row
    return out, ok


def _health(st) -> tuple[int, Health]:
    try:
        st.redis.ping()
        redis_ok = Check(ok=True)
    except Exception as e:  # noqa: BLE001
        redis_ok = Check(ok=False, detail=f"cannot reach Redis: {str(e)[:200]}")
        return 503, Health(status="down", redis=redis_ok, uptime_s=round(time.time() - st.started, 3))
    try:
        workers = _workers(st)
        cameras, c_ok = _cameras(st)
    except Exception as e:  # noqa: BLE001 - health answers even when a probe breaks
        log.warning("healthz: probe failed: %s", e)
        return 200, Health(status="degraded", redis=redis_ok, uptime_s=round(time.time() - st.started, 3))
    # cameras to watch but a pipeline role with no live worker: frames are not being processed
    missing = [r for r in PIPELINE_ROLES if cameras and not workers.get(r, {}).get("alive")]
    status = "ok" if c_ok and not missing else "degraded"
    return 200, Health(status=status, redis=redis_ok, workers=workers, cameras=cameras,
                       uptime_s=round(time.time() - st.started, 3))


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=Health, summary="liveness and readiness (no API key needed)",
            responses={503: {"description": "Redis is unreachable"}})
async def healthz(request: Request):
    code, body = await run_in_threadpool(_health, state(request))
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response,
                    responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request):
    from ..prom import render

    body, ctype = await run_in_threadpool(render, state(request))
    return Response(content=body, media_type=ctype)
