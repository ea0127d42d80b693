"""Upload checks, cheapest first, all before any pixel is decoded: declared content type, byte size, then the
format and width x height read from the file header alone (engine.imageio.image_size) against api.max_pixels."""
from __future__ import annotations

import numpy as np
from fastapi import UploadFile

from ..config import Settings
from ..engine import imageio
from .errors import ApiError

ALLOWED_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/png": "png",
                 "image/webp": "webp", "image/bmp": "bmp", "image/x-bmp": "bmp", "image/x-ms-bmp": "bmp"}
ALLOWED_TEXT = "image/jpeg, image/png, image/webp or image/bmp"
ALLOWED_FORMATS = {"jpeg", "png", "webp", "bmp"}


def check_image_bytes(data: bytes, settings: Settings, *, name: str = "image") -> str:
    """Raise ApiError unless data is a non-empty allowed image within the size and pixel limits; returns format."""
    limit = int(settings.api.max_upload_mb * 1024 * 1024)
    if not data:
        raise ApiError(422, "empty_image", f"{name}: empty file")
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"{name}: {len(data)} bytes; the limit is {limit} "
                                                 f"(api.max_upload_mb={settings.api.max_upload_mb:g})")
    try:
        fmt, w, h = imageio.image_size(data)  # header only: nothing is decoded yet
    except imageio.ImageError as e:
        if data[:2] in (b"\xff\xd8", b"\x89P", b"RI", b"BM"):
            raise ApiError(422, "bad_image", f"{name}: {e}") from None
        raise ApiError(422, "bad_image", f"{name}: not a JPEG, PNG, WebP or BMP image") from None
    if fmt not in ALLOWED_FORMATS:
        raise ApiError(415, "unsupported_media_type", f"{name}: {fmt.upper()} images are not accepted; "
                                                      f"send {ALLOWED_TEXT}")
    if w <= 0 or h <= 0:
        raise ApiError(422, "bad_image", f"{name}: image has no pixels ({w}x{h})")
    if w * h > settings.api.max_pixels:
        raise ApiError(413, "too_many_pixels", f"{name}: {w}x{h} = {w * h} pixels; the limit is "
                                               f"{settings.api.max_pixels} (api.max_pixels)")
    return fmt


def decode_checked(data: bytes, settings: Settings, *, name: str = "image") -> np.ndarray:
    check_image_bytes(data, settings, name=name)
    try:
        return imageio.decode_image(data, name=name, max_pixels=settings.api.max_pixels)
    except imageio.ImageError as e:
        raise ApiError(422, "bad_image", str(e)) from None


async def read_upload(file: UploadFile, settings: Settings) -> bytes:
    """Check the declared type and size of one multipart file part, then return its bytes."""
    name = file.filename or "image"
    ctype = (file.content_type or "").split(";")[0].strip().lower()
    if ctype not in ALLOWED_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"{name}: content type {ctype or 'none'!r} is not allowed; send {ALLOWED_TEXT}")
    limit = int(settings.api.max_upload_mb * 1024 * 1024)
    if file.size is not None and file.size > limit:
        raise ApiError(413, "payload_too_large", f"{name}: {file.size} bytes; the limit is {limit} "
                                                 f"(api.max_upload_mb={settings.api.max_upload_mb:g})")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"{name}: larger than the limit of {limit} bytes "
                                                 f"(api.max_upload_mb={settings.api.max_upload_mb:g})")
    return data


async def decode_upload(file: UploadFile, settings: Settings) -> np.ndarray:
    return decode_checked(await read_upload(file, settings), settings, name=file.filename or "image")
