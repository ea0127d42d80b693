"""/v1/unknowns: unknown visitors clustered across cameras and days (list, one, face crops), and the actions
on a cluster: name (enroll + file its tracks under the name), merge, ignore, delete. Same store and rules as
`facetrail unknowns`."""
from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..deps import state
from ..errors import ApiError
from ..params import CAMERA, TIME_HELP, parse_time

router = APIRouter(prefix="/unknowns", tags=["unknowns"])

CLUSTER_ID = r"^u-[0-9a-f]{1,32}$"
FACE_ID = r"^[A-Za-z0-9_.:-]{1,160}$"


class Face(BaseModel):
    id: str
    quality: float
    track_id: str


class Cluster(BaseModel):
    id: str
    tracks: int
    cameras: list[str]
    first_seen: float
    last_seen: float
    snapshot_id: str | None = Field(None, description="the best face's id (GET /v1/unknowns/faces/{id}/thumbnail)")
    suggestion: str | None = Field(None, description="the enrolled person this cluster comes closest to")
    suggestion_score: float | None = None
    ignored: bool = False
    faces: list[Face] = Field(default_factory=list, description="best faces first")


class ClusterTrack(BaseModel):
    track_id: str
    camera: str | None
    first_seen: float | None
    last_seen: float | None
    event_ids: list[str]


class ClusterDetail(Cluster):
    track_list: list[ClusterTrack] = Field(default_factory=list)


class ClusterList(BaseModel):
    clusters: list[Cluster]


class NameIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class MergeIn(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=100)


class Refused(BaseModel):
    face: str
    reason: str


class Named(BaseModel):
    cluster: str
    name: str
    identity_id: str
    created: bool
    templates_added: int
    refused: list[Refused]
    tracks_named: int


class Ignored(BaseModel):
    id: str
    ignored: bool


class Removed(BaseModel):
    id: str
    removed: bool
    faces: int


def unknown_store(request: Request):
    """One UnknownStore per app (it caches the cluster index between requests)."""
    from ...unknowns.store import UnknownStore

    st = state(request)
    if st.unknowns is None:
        st.unknowns = UnknownStore(st.redis, st.settings)
    return st.unknowns


async def call(request: Request, fn, *args):
    """Run a store action off the event loop; its user errors become 404 / 400."""
    from ...unknowns.store import NotFound, UnknownsError

    def work():
        try:
            return fn(*args)
        except NotFound as e:
            raise ApiError(404, "not_found", str(e)) from None
        except UnknownsError as e:
            raise ApiError(400, "bad_request", str(e)) from None

    return await run_in_threadpool(work)


@router.get("", response_model=ClusterList, summary="unknown-visitor clusters, most recently seen first")
async def list_clusters(request: Request, camera: str | None = Query(None, pattern=CAMERA),
                        since: str | None = Query(None, description=TIME_HELP),
                        include_ignored: bool = Query(False), limit: int = Query(100, ge=1, le=1000)):
    st = state(request)
    store = unknown_store(request)
    t = parse_time(since, "since")
    k = max(2, st.settings.gallery.top_k)

    def work():
        store.drain()
        rows = store.clusters(camera=camera, since=t, include_ignored=include_ignored, limit=limit)
        return store.suggest(rows, lambda v: st.with_gallery(lambda g: g.search(v, k)))

    return {"clusters": await run_in_threadpool(work)}


@router.get("/faces/{face_id}/thumbnail", response_class=Response, summary="a face crop of an unknown cluster",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such face (or removed)"}})
async def face_thumbnail(request: Request, face_id: str = Path(pattern=FACE_ID)):
    jpeg = await run_in_threadpool(unknown_store(request).face_jpeg, face_id)
    if jpeg is None:
        raise ApiError(404, "not_found", f"no unknown face {face_id!r} (removed, named or expired)")
    return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/merge", response_model=ClusterDetail, summary="merge clusters into the first id")
async def merge(request: Request, body: MergeIn):
    return await call(request, unknown_store(request).merge, body.ids)


@router.get("/{cluster_id}", response_model=ClusterDetail, responses={404: {"description": "no such cluster"}})
async def get_cluster(request: Request, cluster_id: str = Path(pattern=CLUSTER_ID)):
    return await call(request, unknown_store(request).cluster, cluster_id)


@router.post("/{cluster_id}/name", response_model=Named,
             summary="enroll NAME from the cluster's best faces; its past tracks are filed under NAME")
async def name_cluster(request: Request, body: NameIn, cluster_id: str = Path(pattern=CLUSTER_ID)):
    st = state(request)

    def work(cid, name):
        with st.gallery_lock:  # the API's gallery replica sees the enrollment on its next sync
            return unknown_store(request).name(cid, name)

    return await call(request, work, cluster_id, body.name)


@router.post("/{cluster_id}/ignore", response_model=Ignored, summary="never list or suggest this cluster again")
async def ignore(request: Request, cluster_id: str = Path(pattern=CLUSTER_ID)):
    return await call(request, unknown_store(request).ignore, cluster_id)


@router.delete("/{cluster_id}", response_model=Removed, summary="delete the cluster's crops, embeddings, records")
async def remove(request: Request, cluster_id: str = Path(pattern=CLUSTER_ID)):
    return await call(request, unknown_store(request).remove, cluster_id)
