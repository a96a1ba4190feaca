"""THE bytes -> model-input path, shared by training and serving.

Training decodes every image through :func:`decode_image` and the service decodes every
request through the same function, so the model never sees pixels prepared differently
from the ones it was trained on. Text needs nothing here: normalisation and tokenisation
live inside the model graph (a ``TextVectorization`` layer).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ArtifactError, InvalidImage, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:  # the model store needs pydantic; decoding alone must not
    from service.model_store import GoldenExample

# Pillow's own guard would raise at 2x its limit; we check explicitly against our own.
Image.MAX_IMAGE_PIXELS = None

ImageFormat = Literal["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
"""Image formats the decoder supports (Pillow's names), detected from the content."""

SUPPORTED_FORMATS: frozenset[str] = frozenset(get_args(ImageFormat))

FILE_EXTENSIONS: dict[str, str] = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
}
"""The usual file extension of each supported format (for image files the service writes)."""


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def image_format(data: bytes) -> str | None:
    """The format of encoded image bytes, read from the header alone (Pillow's name, e.g.
    ``"PNG"``); None when Pillow does not recognise the bytes.

    The usual formats are told by their signature (Pillow's open also parses a JPEG's
    tables, which costs more than writing the file); anything else goes to Pillow. Bytes
    that start like an image but are not one may still get a name: meant for bytes the
    service has already decoded."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


GOLDEN_TOLERANCE = 1e-4
"""Largest probability difference between the served path and the golden examples
training recorded: the trainer checks its artifact against it, the server its start-up."""

_WHITE = (255, 255, 255, 255)
_ORIENTATION = 0x0112  # EXIF tag; exif_transpose copies the image even when it is upright
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def decode_image(
    data: bytes,
    size: tuple[int, int],
    *,
    max_pixels: int | None = None,
    allowed_formats: frozenset[str] = SUPPORTED_FORMATS,
) -> np.ndarray:
    """Decode encoded image bytes into a uint8 array of shape ``[H, W, 3]``.

    ``size`` is ``(height, width)``. EXIF orientation is applied, transparency is
    composited on white, and every other mode (palette, greyscale, CMYK, 16-bit) becomes
    8-bit RGB. The image is stretched to ``size`` with bilinear resampling. Raises
    :class:`InvalidImage` for bytes that are not a decodable image (empty, truncated,
    corrupt), :class:`UnsupportedMediaType` for an image whose format (detected from the
    content) is not in ``allowed_formats``, and :class:`PayloadTooLarge` when the header
    declares more than ``max_pixels`` pixels. Both checks read only the header, before any
    pixel is decoded.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    height, width = size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in allowed_formats:
                allowed = ", ".join(sorted(allowed_formats))
                raise UnsupportedMediaType(
                    f"image format {fmt} is not supported (accepted: {allowed})"
                )
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise PayloadTooLarge(
                    f"image is {img.width}x{img.height} pixels, more than the limit of {max_pixels}"
                )
            if fmt == "JPEG":
                # Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) when the image is far
                # larger than the model input; the result stays at least twice the target.
                side = 2 * max(height, width)
                img.draft("RGB", (side, side))
            img.load()
            if img.getexif().get(_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    except (InvalidImage, PayloadTooLarge, UnsupportedMediaType):
        raise
    except UnidentifiedImageError as exc:  # its message names an in-memory file's address
        raise InvalidImage("cannot decode image: not an image format Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from exc
    except Exception as exc:
        raise InvalidImage(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


def preprocess_image(
    data: bytes,
    size: tuple[int, int],
    *,
    max_pixels: int | None = None,
    allowed_formats: frozenset[str] = SUPPORTED_FORMATS,
) -> np.ndarray:
    """Decode bytes into the model's image input: float32 ``[H, W, 3]`` in ``0..255``."""
    image = decode_image(data, size, max_pixels=max_pixels, allowed_formats=allowed_formats)
    return image.astype(np.float32)


def blank_image(size: tuple[int, int]) -> np.ndarray:
    """The image that stands for 'no image' (modality dropout, ablation, text-only calls)."""
    return np.zeros((size[0], size[1], 3), dtype=np.float32)


BLANK_TEXT = ""
"""The text that stands for 'no text' (modality dropout, ablation, image-only calls)."""

BLANK_IMAGE = "all zeros"
"""How ``metadata.json`` (``preprocessing.image.blank``) names :func:`blank_image`."""


@dataclass(frozen=True, eq=False)
class Blanks:
    """What a model was trained to read as a missing modality."""

    image: np.ndarray
    """float32 ``[H, W, 3]`` pixels, already the model's input (never an encoded file)."""
    text: str


def declared_blanks(preprocessing: Mapping[str, Any], size: tuple[int, int]) -> Blanks:
    """The blanks an artifact's ``preprocessing`` metadata declares, at the model's ``size``.

    Artifacts written before the ``blank`` keys existed get the blanks training has always
    used (:data:`BLANK_IMAGE`, :data:`BLANK_TEXT`). Raises :class:`ArtifactError` for a blank
    this code does not know: serving must substitute exactly what training did.
    """
    image = (preprocessing.get("image") or {}).get("blank", BLANK_IMAGE)
    text = (preprocessing.get("text") or {}).get("blank", BLANK_TEXT)
    if image != BLANK_IMAGE:
        raise ArtifactError(
            f"metadata declares the image blank {image!r}; this server knows {BLANK_IMAGE!r}"
        )
    if not isinstance(text, str):
        raise ArtifactError(f"metadata declares a text blank that is not a string: {text!r}")
    return Blanks(blank_image(size), text)


def golden_pixels(
    folder: Path, example: GoldenExample, size: tuple[int, int], blank: np.ndarray | None = None
) -> np.ndarray:
    """The model's image input for a golden example: its file (in ``folder``) through the
    shared preprocessing, or the blank image (``blank``, else :func:`blank_image`) for an
    example without one."""
    if example.image is None:
        return blank_image(size) if blank is None else blank
    return preprocess_image((folder / example.image).read_bytes(), size)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr / 257.0, 0, 255).round().astype(np.uint8), "L")
        mode = "L"
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
        mode = "L"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
