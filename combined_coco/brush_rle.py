"""Label Studio BrushLabels RLE -> COCO RLE.

Label Studio stores a brush mask as its own bit-packed RLE of the RGBA canvas (``value.rle``); COCO
needs pycocotools' column-major RLE. We decode with label_studio_sdk's reference decoder (so a change
in Label Studio's format is fixed in one place upstream) and encode with :func:`combined_coco.dataset.rle_encode`.
"""

from __future__ import annotations

from combined_coco.dataset import rle_encode


class BrushDecodeError(ValueError):
    """The brush RLE does not decode to a ``height x width`` RGBA mask."""


def ls_brush_to_coco_rle(rle: list[int] | None, width: int, height: int) -> dict:
    """COCO RLE ``{"size": [h, w], "counts": str}`` of the pixels with non-zero alpha."""
    # Imported here: label_studio_sdk takes about a second to import and most projects draw no brushes
    # (and outside Label Studio it is the optional extra "brush").
    try:
        from label_studio_sdk.converter.brush import decode_rle
    except ImportError:
        raise ImportError(
            "brush masks are decoded with label_studio_sdk, which is not installed: pip install 'ls-multitask[brush]'"
        ) from None

    if not rle or not isinstance(rle, list):
        raise BrushDecodeError("no 'rle' list in the brush value")
    if not all(type(b) is int and 0 <= b < 256 for b in rle):
        raise BrushDecodeError("brush RLE must be a list of bytes (ints 0..255)")
    # The first 32 bits say how many values follow; the decoder allocates that many before reading them.
    declared = int.from_bytes(bytes(rle[:4]), "big")
    if declared != width * height * 4:
        raise BrushDecodeError(
            f"brush RLE declares {declared} values, expected {width}x{height}x4 = {width * height * 4}"
        )
    try:
        flat = decode_rle(rle)
    except Exception as exc:  # the decoder raises bare IndexError/ValueError on truncated data
        raise BrushDecodeError(f"brush RLE cannot be decoded: {exc}") from None
    if flat.size != width * height * 4:
        raise BrushDecodeError(
            f"brush RLE holds {flat.size} values, expected {width}x{height}x4 = {width * height * 4}"
        )
    mask = flat.reshape(height, width, 4)[:, :, 3] > 0
    if not mask.any():
        raise BrushDecodeError("brush mask is empty")
    return rle_encode(mask)
