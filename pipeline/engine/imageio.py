"""Image loading that never crashes on bad input: every failure is an ImageError with a clear reason.

The pixel count is read from the file header BEFORE anything is decoded, so a 20000x20000 image is refused in
microseconds instead of allocating gigabytes. Formats whose header we cannot read are refused too. Whatever the
file holds (grayscale, RGBA, 16-bit, EXIF-rotated JPEG), the result is an upright 3-channel uint8 BGR array.
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from .cvutil import quiet_cv2

DEFAULT_MAX_PIXELS = 40_000_000  # == settings.api.max_pixels default
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF, PNM"


class ImageError(ValueError):
    pass


# --------------------------------------------------------------------------------------------- header parsing
def _jpeg_size(d: bytes) -> tuple[int, int]:
    i, n = 2, len(d)
    while i < n:
        if d[i] != 0xFF:
            raise ImageError("corrupt JPEG (bad marker)")
        while i < n and d[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = d[i]
        i += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9 or marker == 0xDA:
            break
        if i + 2 > n:
            break
        seg_len = struct.unpack(">H", d[i:i + 2])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 7 > n:
                break
            h, w = struct.unpack(">HH", d[i + 3:i + 7])
            return w, h
        if seg_len < 2:
            raise ImageError("corrupt JPEG (bad segment length)")
        i += seg_len
    raise ImageError("corrupt or truncated JPEG (no frame header)")


def _png_size(d: bytes) -> tuple[int, int]:
    if len(d) < 24 or d[12:16] != b"IHDR":
        raise ImageError("corrupt PNG (no IHDR)")
    return struct.unpack(">II", d[16:24])


def _png_has_alpha(d: bytes) -> bool:
    return len(d) > 25 and d[25] in (4, 6)


def _bmp_size(d: bytes) -> tuple[int, int]:
    if len(d) < 26:
        raise ImageError("corrupt BMP (short header)")
    if struct.unpack("<I", d[14:18])[0] == 12:
        w, h = struct.unpack("<hh", d[18:22])
    else:
        w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _gif_size(d: bytes) -> tuple[int, int]:
    if len(d) < 10:
        raise ImageError("corrupt GIF (short header)")
    return struct.unpack("<HH", d[6:10])


def _webp_size(d: bytes) -> tuple[int, int]:
    if len(d) < 30:
        raise ImageError("corrupt WebP (short header)")
    kind = d[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(d[24:27], "little") + 1
        h = int.from_bytes(d[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        b = int.from_bytes(d[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    raise ImageError("corrupt WebP (unknown chunk)")


def _tiff_size(d: bytes) -> tuple[int, int]:
    e = "<" if d[:2] == b"II" else ">"
    try:
        off = struct.unpack(e + "I", d[4:8])[0]
        count = struct.unpack(e + "H", d[off:off + 2])[0]
        w = h = None
        for k in range(count):
            p = off + 2 + 12 * k
            tag, typ = struct.unpack(e + "HH", d[p:p + 4])
            if tag in (256, 257):
                val = struct.unpack(e + ("H" if typ == 3 else "I"), d[p + 8:p + (10 if typ == 3 else 12)])[0]
                if tag == 256:
                    w = val
                else:
                    h = val
        if w is None or h is None:
            raise ImageError("corrupt TIFF (no width/height)")
        return w, h
    except struct.error:
        raise ImageError("corrupt or truncated TIFF header") from None


def _pnm_size(d: bytes) -> tuple[int, int]:
    tokens: list[bytes] = []
    i = 2
    head = d[:4096]
    while len(tokens) < 2 and i < len(head):
        c = head[i:i + 1]
        if c == b"#":
            j = head.find(b"\n", i)
            i = len(head) if j < 0 else j + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(head) and not head[j:j + 1].isspace() and head[j:j + 1] != b"#":
                j += 1
            tokens.append(head[i:j])
            i = j
    try:
        return int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        raise ImageError("corrupt PNM header") from None


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone; ImageError for unknown formats or broken headers."""
    if data[:3] == b"\xff\xd8\xff":
        return ("jpeg", *_jpeg_size(data))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ("png", *_png_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("webp", *_webp_size(data))
    if data[:2] == b"BM":
        return ("bmp", *_bmp_size(data))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ("gif", *_gif_size(data))
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return ("tiff", *_tiff_size(data))
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return ("pnm", *_pnm_size(data))
    raise ImageError(f"not a supported image format (supported: {SUPPORTED})")


# --------------------------------------------------------------------------------------------------- decoding
def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any cv2 decode result -> 3-channel uint8 BGR; alpha is composited over mid-grey."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    c = img.shape[2]
    if c == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if c == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32)
        return (rgb * alpha + 127.0 * (1.0 - alpha)).round().astype(np.uint8)
    if c == 2:  # grey + alpha
        g = cv2.cvtColor(img[:, :, :1], cv2.COLOR_GRAY2BGR).astype(np.float32)
        alpha = img[:, :, 1:2].astype(np.float32) / 255.0
        return (g * alpha + 127.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(img[:, :, :3])


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> upright 3-channel uint8 BGR, or ImageError (empty, unknown format, corrupt, too many pixels)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    data = bytes(data) if not isinstance(data, bytes) else data
    try:
        fmt, w, h = image_size(data)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: {fmt} header says {w}x{h}: no pixels")
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
                         f"{max_pixels / 1e6:.1f} (max_pixels)")
    buf = np.frombuffer(data, np.uint8)
    try:
        with quiet_cv2(silent=True):  # a corrupt file is reported below, once, as an ImageError
            if fmt == "png" and _png_has_alpha(data):
                raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keep alpha to composite it (PNG: no EXIF rotation)
                img = None if raw is None else _to_bgr8(raw)
            else:
                # IMREAD_COLOR applies EXIF orientation and converts grey / 16-bit / alpha to 8-bit BGR.
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageError(f"{name}: cannot decode {fmt} ({str(e).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise ImageError(f"{name}: corrupt or unreadable {fmt} image")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        img = _to_bgr8(img)
    return img


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise ImageError(f"{p}: is a directory, not an image")
        if size > max_bytes:
            raise ImageError(f"{p}: file is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, name=str(p), max_pixels=max_pixels)
