"""/v1/gallery: list, enroll (multipart images), get, rename, delete (the person's events and snapshots go too).
All gallery logic is index/'s (GalleryStore, templates_from_image); this module only maps HTTP onto it."""
from __future__ import annotations

import hashlib
import json
import logging

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ..deps import state
from ..errors import ApiError
from ..uploads import decode_checked, read_upload

log = logging.getLogger("facetrail.api")

router = APIRouter(prefix="/gallery", tags=["gallery"])

NAME_OR_ID = Path(min_length=1, max_length=200, description="person name or identity id")


class Person(BaseModel):
    id: str
    name: str
    templates: int
    created: str
    metadata: dict = Field(default_factory=dict)


class TemplateInfo(BaseModel):
    id: int
    sha256: str
    quality: float
    created: str
    thumbnail_bytes: int


class PersonDetail(Person):
    template_list: list[TemplateInfo]


class EnrollResult(BaseModel):
    id: str
    name: str
    added: int = Field(description="templates added by this request (a photo enrolled before adds none)")
    templates: int = Field(description="templates the person has now")
    images: int = Field(description="photos used")
    refused: list[str] = Field(default_factory=list, description="photos refused, with the reason")


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class Removed(BaseModel):
    id: str
    name: str
    templates: int = Field(description="templates removed")


def _store(request: Request):
    from index.store import GalleryStore

    st = state(request)
    return GalleryStore(st.redis, st.settings)


def _errors():
    from index.enroll import EnrollError
    from index.store import GalleryError

    return EnrollError, GalleryError


def _gallery_error(e: Exception) -> ApiError:
    msg = str(e)
    if msg.startswith("no such person"):
        return ApiError(404, "not_found", msg)
    if "belongs to another person" in msg or "already in use" in msg:
        return ApiError(409, "conflict", msg)
    return ApiError(422, "invalid_request", msg)


def _person(i) -> Person:
    return Person(id=i.id, name=i.name, templates=i.templates, created=i.created, metadata=i.metadata)


def _after_change(request: Request) -> None:
    """Snapshot when enough changes piled up (as the CLI does); never fails the request that made the change."""
    try:
        state(request).with_gallery(lambda g: g.maybe_snapshot())
    except Exception:  # noqa: BLE001
        log.exception("gallery snapshot after a change failed request_id=%s", request.state.request_id
                      if hasattr(request.state, "request_id") else "-")


@router.get("", response_model=list[Person], summary="enrolled people")
async def list_people(request: Request):
    store = _store(request)
    return [_person(i) for i in await run_in_threadpool(store.identities)]


def _metadata(raw: str | None) -> dict:
    """The enroll form's metadata field: a JSON object, or {} when absent; anything else is a 422."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ApiError(422, "invalid_request", "metadata: not valid JSON") from None
    if not isinstance(meta, dict):
        raise ApiError(422, "invalid_request", "metadata: must be a JSON object")
    return meta


@router.post("", response_model=EnrollResult, status_code=201,
             summary="enroll a person from photos (adds templates when the name exists)",
             responses={413: {"description": "a file or the request is too large / too many pixels"},
                        415: {"description": "a file is not JPEG, PNG, WebP or BMP"},
                        422: {"description": "no usable face, several faces, low quality, corrupt image"}})
async def enroll(request: Request,
                 name: str = Form(min_length=1, max_length=200),
                 images: list[UploadFile] = File(description="one or more photos of the person"),
                 face: int | None = Form(None, ge=0, le=100, description="which face when a photo has several "
                                                                           "(0 = largest)"),
                 largest: bool = Form(False, description="take the largest face when a photo has several"),
                 flip: bool | None = Form(None, description="also enroll the mirrored face "
                                                            "(default: gallery.flip_augment)"),
                 skip_bad: bool = Form(False, description="enroll the usable photos even if some are refused"),
                 metadata: str | None = Form(None, max_length=8192, description="a JSON object")):
    st = state(request)
    settings = st.settings
    if len(images) > settings.api.max_files:
        raise ApiError(413, "payload_too_large", f"{len(images)} files; at most {settings.api.max_files} per "
                                                 f"request (api.max_files)")
    if face is not None and largest:
        raise ApiError(422, "invalid_request", "give face or largest, not both")
    meta = _metadata(metadata)
    from index.enroll import FaceChoice, templates_from_image
    from index.store import valid_name

    EnrollError, GalleryError = _errors()
    try:
        name = valid_name(name)
    except GalleryError as e:
        raise _gallery_error(e) from None
    blobs = [(f.filename or f"image{i}", await read_upload(f, settings)) for i, f in enumerate(images)]
    store = _store(request)
    choice = FaceChoice(index=face, largest=largest)

    def work():
        templates, problems, used = [], [], 0
        for fname, data in blobs:
            try:
                img = decode_checked(data, settings, name=fname)
                with st.engine_lock:
                    templates += templates_from_image(st.engine, img, settings, name=fname, choice=choice,
                                                      flip=flip, sha256=hashlib.sha256(data).hexdigest())
                used += 1
            except ApiError as e:
                problems.append(e)
            except (EnrollError, GalleryError) as e:
                problems.append(ApiError(422, "enroll_refused", str(e)))
        if problems and (not skip_bad or not templates):
            first = problems[0]
            raise ApiError(first.status, first.code,
                           f"nothing enrolled: {len(problems)} of {len(blobs)} photo(s) refused; {first.message}"
                           + ("" if skip_bad or len(problems) == len(blobs) else
                              " (skip_bad=true enrolls the others)"))
        try:
            iid, added = store.enroll(name, templates, metadata=meta or None)
        except GalleryError as e:
            raise _gallery_error(e) from None
        return EnrollResult(id=iid, name=name, added=len(added), templates=len(store.template_ids(iid)),
                            images=used, refused=[p.message for p in problems])

    res = await run_in_threadpool(work)
    await run_in_threadpool(_after_change, request)
    return res


@router.get("/{person}", response_model=PersonDetail, responses={404: {"description": "no such person"}})
async def get_person(request: Request, person: str = NAME_OR_ID):
    store = _store(request)

    def work():
        iid = store.resolve(person)
        ident = store.identity(iid) if iid else None
        if ident is None:
            raise ApiError(404, "not_found", f"no such person in the gallery: {person!r}")
        rows = [TemplateInfo(id=t.id, sha256=t.sha256, quality=round(t.quality, 4), created=t.created,
                             thumbnail_bytes=len(t.thumbnail)) for t in store.templates(iid)]
        return PersonDetail(**_person(ident).model_dump(), template_list=rows)

    return await run_in_threadpool(work)


@router.get("/{person}/templates/{template_id}/thumbnail", response_class=Response,
            summary="a template's face thumbnail (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such person or template"}})
async def get_thumbnail(request: Request, person: str = NAME_OR_ID,
                        template_id: int = Path(ge=0, le=2**62)):
    store = _store(request)

    def work():
        iid = store.resolve(person)
        if iid is None:
            raise ApiError(404, "not_found", f"no such person in the gallery: {person!r}")
        if template_id not in store.template_ids(iid):
            raise ApiError(404, "not_found", f"{person!r} has no template {template_id}")
        jpeg = store.thumbnail(template_id)
        if not jpeg:
            raise ApiError(404, "not_found", f"template {template_id} has no thumbnail")
        return jpeg

    return Response(content=await run_in_threadpool(work), media_type="image/jpeg")


@router.patch("/{person}", response_model=Person, summary="rename a person (the id stays)",
              responses={404: {"description": "no such person"}, 409: {"description": "the name is taken"}})
async def rename_person(request: Request, body: RenameIn, person: str = NAME_OR_ID):
    store = _store(request)
    _, GalleryError = _errors()

    def work():
        try:
            iid = store.rename(person, body.name)
        except GalleryError as e:
            raise _gallery_error(e) from None
        return _person(store.identity(iid))

    res = await run_in_threadpool(work)
    await run_in_threadpool(_after_change, request)
    return res


@router.delete("/{person}", response_model=Removed,
               summary="forget a person: templates, vectors, thumbnails, and their events with snapshots",
               responses={404: {"description": "no such person"}})
async def remove_person(request: Request, person: str = NAME_OR_ID):
    store = _store(request)
    _, GalleryError = _errors()

    def work():
        try:
            iid, name, tids = store.remove(person)
        except GalleryError as e:
            raise _gallery_error(e) from None
        return Removed(id=iid, name=name, templates=len(tids))

    res = await run_in_threadpool(work)
    await run_in_threadpool(_after_change, request)
    return res
