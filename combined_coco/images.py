"""The one image reader of the project: training, evaluation, prediction, augmentation and the ML backend.

The EXIF rule, stated once: Label Studio's browser shows a photo rotated by its EXIF orientation
tag, so the annotations are drawn in that frame. Every reader here therefore applies the EXIF
orientation (``PIL.ImageOps.exif_transpose``); a reader that did not (Pillow's plain ``open``) would
hand a phone photo to the model sideways while training saw it upright.

Torch-free and OpenCV-free (Pillow + numpy), so it runs inside Label Studio, the backend and the
workers alike. The pixel count is checked from the header before anything is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# ~150 MP: far beyond any camera's photo, and 450 MB decoded at most (Pillow refuses ~179 MP itself).
DEFAULT_MAX_PIXELS = 150_000_000


class ImageReadError(ValueError):
    """The bytes are not an image, or one too large to decode; the message names the image."""


class ImageTooLarge(ImageReadError):
    """Over the pixel limit (found from the header, nothing decoded); ``size`` is (width, height) when known."""

    def __init__(self, label: str, size: tuple[int, int] | None, max_pixels: int) -> None:
        self.size, self.max_pixels = size, max_pixels
        what = f"{size[0]}x{size[1]}" if size else f"over {max_pixels} pixels"
        super().__init__(f"{label}: image is {what}, over the limit of {max_pixels} pixels; resize it")


class ImageSizeMismatch(ValueError):
    """The decoded image does not have the width/height its COCO entry declares."""


def read_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB of a file path or encoded bytes, in the EXIF-rotated frame (see module docstring).

    ``name`` is how errors refer to the image (default: the path, or "the image" for bytes).
    Raises FileNotFoundError for a missing path, :class:`ImageReadError` for anything else.
    """
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(
            f"cannot read image {name or source}: no such file; check the image root and the file_name"
        )
    return _decode(source, max_pixels, name, lambda image: _rgb8(ImageOps.exif_transpose(image)))


def read_depth_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """HxW depth values of an image file exactly as stored (a 16-bit PNG stays uint16; of a colour
    file the blue channel, the one this project's earlier OpenCV reader took). No EXIF rotation and
    no conversion: a depth sensor's map holds measurements, not a photo's pixels; the caller aligns
    it with the photo."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"cannot read depth image {path}: no such file")
    depth = _decode(path, max_pixels, None, np.array)
    if depth.ndim == 3:  # Pillow gives RGB(A); OpenCV's first channel was blue
        depth = depth[..., 2 if depth.shape[2] >= 3 else 0]
    return depth


def _decode(
    source: str | Path | bytes, max_pixels: int, name: str | None, convert: Callable[[Image.Image], np.ndarray]
) -> np.ndarray:
    """Open (header only), check the pixel count, then decode with ``convert``."""
    label = name or ("the image" if isinstance(source, bytes) else str(source))
    stream = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is the one in force
            image = Image.open(stream)  # reads the header only, so the size check is cheap
    except Image.DecompressionBombError:
        raise ImageTooLarge(label, None, max_pixels) from None
    except Image.UnidentifiedImageError:  # its message is the stream's repr, a memory address
        raise ImageReadError(f"{label}: not an image Pillow can read (no known image format)") from None
    except Exception as exc:
        raise ImageReadError(f"{label}: not an image Pillow can read ({exc})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(label, (width, height), max_pixels)
        try:
            return convert(image)
        except Exception as exc:
            raise ImageReadError(f"{label}: the image cannot be decoded ({exc})") from None


def _rgb8(image: Image.Image) -> np.ndarray:
    """A writable HxWx3 uint8 copy (torch.from_numpy warns on read-only arrays). 16-bit greyscale keeps
    its high byte, as OpenCV reads it; Pillow's own conversion would clip every value above 255 to white."""
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))


def check_image_size(pixels: np.ndarray, entry: dict) -> None:
    """Raise :class:`ImageSizeMismatch` when decoded pixels and a COCO image entry disagree on size:
    the annotations were drawn on a ``width x height`` image, so on any other they are wrong."""
    height, width = pixels.shape[:2]
    if (width, height) != (entry.get("width"), entry.get("height")):
        raise ImageSizeMismatch(
            f"image {entry.get('id')} ({entry.get('file_name')}): the file is {width}x{height} (EXIF orientation applied)"
            f" but the dataset says {entry.get('width')}x{entry.get('height')}; re-export the dataset or replace the file"
        )
