"""combined_coco.images.read_image on inputs the EXIF test does not cover: 16-bit greyscale, the pixel limit."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from combined_coco.images import ImageReadError, ImageTooLarge, read_image


def test_16_bit_greyscale_reads_as_opencv_does(tmp_path: Path) -> None:
    depth = np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), depth)
    assert Image.open(path).mode.startswith("I;16")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None
    assert np.array_equal(read_image(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "PNG")
    with pytest.raises(ImageTooLarge, match=r"^upload\.png: image is 300x200, over the limit of 50000 pixels") as err:
        read_image(buf.getvalue(), 50_000, name="upload.png")
    assert err.value.size == (300, 200)
    assert read_image(buf.getvalue(), 60_000).shape == (200, 300, 3)


def test_missing_and_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        read_image(tmp_path / "gone.jpg")
    broken = tmp_path / "broken.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
    broken.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(broken)
