"""The shared bytes -> pixels path: every common format and mode, and its failures."""

from __future__ import annotations

import io
from typing import get_args

import numpy as np
import pytest
from PIL import Image

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from service.preprocessing import (
    SUPPORTED_FORMATS,
    blank_image,
    decode_image,
    preprocess_image,
)
from service.serving.settings import ImageFormat

SIZE = (16, 24)  # (height, width): not square, so a swapped axis would show


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def solid(mode: str, colour: object, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new(mode, size, colour)


@pytest.mark.parametrize(
    ("fmt", "kw", "tol"),
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 3),
        ("GIF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
    ],
)
def test_formats_decode_to_float_rgb(fmt: str, kw: dict[str, object], tol: int) -> None:
    data = encode(solid("RGB", (200, 40, 10)), fmt, **kw)
    out = preprocess_image(data, SIZE)
    assert out.shape == (16, 24, 3)
    assert out.dtype == np.float32
    assert np.abs(out - np.array([200, 40, 10])).max() <= tol + (10 if fmt == "GIF" else 0)


def test_values_stay_in_0_255_not_rescaled() -> None:
    out = preprocess_image(encode(solid("RGB", (255, 0, 128)), "PNG"), SIZE)
    assert out.max() == 255.0 and out.min() == 0.0


def test_rgba_is_composited_on_white() -> None:
    img = solid("RGBA", (255, 0, 0, 0))  # fully transparent red
    out = decode_image(encode(img, "PNG"), SIZE)
    assert (out == 255).all()
    half = solid("RGBA", (0, 0, 0, 128))
    out = decode_image(encode(half, "PNG"), SIZE)
    assert np.allclose(out, 127, atol=1)


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = solid("P", 0)
    img.putpalette([10, 20, 30] * 256)
    data = encode(img, "PNG", transparency=0)
    assert (decode_image(data, SIZE) == 255).all()


def test_greyscale_becomes_three_equal_channels() -> None:
    out = decode_image(encode(solid("L", 77), "PNG"), SIZE)
    assert out.shape == (16, 24, 3)
    assert (out == 77).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    img = Image.fromarray(np.full((30, 40), 65535 // 2, dtype=np.uint16))
    out = decode_image(encode(img, "PNG"), SIZE)
    assert np.allclose(out, 127.5, atol=1)


def test_cmyk_jpeg_converts_to_rgb() -> None:
    out = decode_image(encode(solid("CMYK", (0, 255, 255, 0)), "JPEG", quality=95), SIZE)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_exif_orientation_is_applied() -> None:
    # 40 wide x 20 high, left half black, right half white; orientation 6 = rotate 90 CW.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 255
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(img, "PNG", exif=exif), (40, 20))
    # After rotating clockwise the white half is at the bottom.
    assert out[:15].mean() < 30 and out[25:].mean() > 225


def test_resize_is_to_height_width() -> None:
    out = decode_image(encode(solid("RGB", (1, 2, 3), (100, 50)), "PNG"), (10, 70))
    assert out.shape == (10, 70, 3)


def test_large_jpeg_draft_decode_stays_close_to_full_decode() -> None:
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((128, 128, 1))).astype(np.uint8)
    data = encode(Image.fromarray(big), "JPEG", quality=95)
    out = decode_image(data, (32, 32)).astype(float)
    full = np.asarray(Image.fromarray(big).resize((32, 32), Image.Resampling.BILINEAR), float)
    assert np.abs(out - full).mean() < 4


def test_decoding_is_deterministic() -> None:
    data = encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 60, 3), np.uint8)), "JPEG"
    )
    assert np.array_equal(decode_image(data, SIZE), decode_image(data, SIZE))


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_garbage_is_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, SIZE)


def test_truncated_jpeg_is_invalid_image() -> None:
    data = encode(
        Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG"
    )
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], SIZE)


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(solid("L", 0, (3000, 3000)), "PNG")
    with pytest.raises(PayloadTooLarge):
        decode_image(data, SIZE, max_pixels=1_000_000)
    assert decode_image(data, SIZE, max_pixels=10_000_000).shape == (16, 24, 3)


def test_disallowed_format_is_refused() -> None:
    # A real image of a format the caller does not allow: 415, not "invalid image".
    with pytest.raises(UnsupportedMediaType, match="BMP"):
        decode_image(
            encode(solid("RGB", (0, 0, 0)), "BMP"), SIZE, allowed_formats=frozenset({"PNG"})
        )


def test_settings_offer_exactly_the_supported_formats() -> None:
    # settings.py cannot import the decoder (numpy, Pillow), so it repeats the list.
    assert set(get_args(ImageFormat)) == SUPPORTED_FORMATS


def test_blank_image_is_zeros_of_model_size() -> None:
    blank = blank_image(SIZE)
    assert blank.shape == (16, 24, 3) and blank.dtype == np.float32 and not blank.any()
