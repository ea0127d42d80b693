"""Bad and unusual images, built on the fly: each is decoded to upright 8-bit BGR or refused with an ImageError."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from pipeline.engine import imageio
from pipeline.engine.imageio import ImageError, decode_image, image_size, load_image


def _enc(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _test_image(h: int = 40, w: int = 60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 4] = (255, 255, 255)  # white band on the left
    img[: h // 4, :, 2] = 200           # red band on top
    return img


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag right after SOI."""
    tiff = (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _patch_jpeg_size(jpeg: bytes, w: int, h: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]


def _patch_png_size(png: bytes, w: int, h: int) -> bytes:
    ihdr = png[12:16] + struct.pack(">II", w, h) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def test_empty_missing_directory_and_garbage(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "zero.jpg")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="not a supported image format"):
        decode_image(b"this is not an image at all" * 10)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_truncated_files_are_refused(ext):
    data = _enc(ext, _test_image(120, 160))
    for cut in (40, len(data) // 3):
        try:
            img = decode_image(data[:cut], name=f"cut{ext}")
        except ImageError as e:
            assert f"cut{ext}" in str(e)
        else:  # libjpeg may hand back a partly grey picture: then it must still be a proper image
            assert img.shape == (120, 160, 3) and img.dtype == np.uint8


def test_huge_images_are_refused_from_the_header_without_decoding(monkeypatch):
    jpeg = _patch_jpeg_size(_enc(".jpg", _test_image()), 20000, 20000)
    png = _patch_png_size(_enc(".png", _test_image()), 20000, 20000)
    assert image_size(jpeg) == ("jpeg", 20000, 20000)
    assert image_size(png) == ("png", 20000, 20000)

    def boom(*a, **k):
        raise AssertionError("decoder must not run for an over-limit image")

    monkeypatch.setattr(imageio.cv2, "imdecode", boom)
    for data in (jpeg, png):
        with pytest.raises(ImageError, match="20000x20000 is 400.0 megapixels"):
            decode_image(data, name="huge")


def test_max_pixels_parameter(tmp_path):
    p = tmp_path / "small.png"
    p.write_bytes(_enc(".png", _test_image(40, 60)))
    assert load_image(p).shape == (40, 60, 3)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(p, max_pixels=2000)


def test_zero_size_header_is_refused():
    with pytest.raises(ImageError, match="no pixels"):
        decode_image(_patch_png_size(_enc(".png", _test_image()), 0, 10))


@pytest.mark.parametrize("ext,fmt", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp"), (".bmp", "bmp"),
                                     (".tiff", "tiff"), (".ppm", "pnm")])
def test_formats_header_size_and_decode(ext, fmt):
    img = _test_image(23, 37)
    data = _enc(ext, img)
    assert image_size(data) == (fmt, 37, 23)
    out = decode_image(data)
    assert out.shape == (23, 37, 3) and out.dtype == np.uint8
    assert out[12, 2].min() > 200 and out[20, 30].max() < 60  # white band left, black elsewhere


def test_grayscale_becomes_three_equal_channels():
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (20, 1))
    for ext in (".png", ".jpg"):
        out = decode_image(_enc(ext, grey))
        assert out.shape == (20, 50, 3)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        assert abs(int(out[5, 40, 0]) - 200) <= 4


def test_sixteen_bit_colour_and_grey_become_eight_bit():
    img16 = np.zeros((10, 20, 3), np.uint16)
    img16[:, :10] = (65535, 32768, 256)
    out = decode_image(_enc(".png", img16))
    assert out.dtype == np.uint8
    assert tuple(out[5, 5]) == (255, 128, 1) and tuple(out[5, 15]) == (0, 0, 0)
    grey16 = np.full((10, 20), 51400, np.uint16)
    out = decode_image(_enc(".png", grey16))
    assert out.shape == (10, 20, 3) and int(out[0, 0, 0]) == 51400 >> 8


def test_rgba_alpha_is_composited():
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :, :3] = (10, 20, 250)
    rgba[:, :10, 3] = 255   # opaque left half keeps its colour
    rgba[:, 10:, 3] = 0     # transparent right half becomes neutral grey, not the hidden colour
    out = decode_image(_enc(".png", rgba))
    assert out.shape == (10, 20, 3)
    assert tuple(out[5, 2]) == (10, 20, 250)
    assert tuple(out[5, 15]) == (127, 127, 127)


@pytest.mark.parametrize("orientation,shape,white_at", [
    (1, (40, 60), (20, 3)),     # upright: white band on the left
    (3, (40, 60), (20, 56)),    # rotated 180: band on the right
    (6, (60, 40), (3, 20)),     # rotate 90 clockwise to view: left band goes to the top
    (8, (60, 40), (56, 20)),    # rotate 90 counter-clockwise: left band goes to the bottom
])
def test_exif_orientation_is_applied(orientation, shape, white_at):
    jpeg = _with_exif_orientation(_enc(".jpg", _test_image(40, 60)), orientation)
    out = decode_image(jpeg)
    assert out.shape[:2] == shape
    y, x = white_at
    assert out[y, x].min() > 200


def test_shared_32bit_png(faces_dir):
    img = load_image(faces_dir / "face_recognition" / "tests" / "test_images" / "32bit.png")
    assert img.shape == (1200, 626, 3) and img.dtype == np.uint8
