"""Combined COCO files (docs/FORMAT.md) in and out: the one reader, the one atomic writer, COCO RLE
masks and the left/right keypoint swap.

Why one module: the optional per-category keypoint layout, the str/bytes form of RLE ``counts`` and
"write a temp file, then rename" are format rules; when every stage re-implements them they drift
(an augmenter that permutes per-category lists while training permutes the global one, a writer
that forgets the rename). Here each rule has one owner:

- :func:`read_combined_coco` returns the file in the **global** keypoint layout (every annotation's
  keypoints are 3*K numbers in ``Schema.keypoint_names`` order, or empty), whatever layout the file
  was written in, so nothing downstream maps keypoints per category.
- :func:`write_atomic` is the one way the project puts a file in place (datasets, augmented images,
  checkpoints, the published-model pointer): a temporary file in the target's folder, flushed to
  disk, then ``os.replace``. A reader, or a process killed half-way, never sees half a file.
- RLE ``counts`` are ``str`` in files (JSON) and ``bytes`` for pycocotools' encoder: :func:`rle_encode`
  and :func:`rle_text` give the file form, the other helpers accept either.
- :func:`swap_left_right` applies ``Schema.flip_indices`` (the one flip permutation) to keypoints
  after a mirroring transform, for augmentation and for training-time flips alike.

Torch-free (numpy + pycocotools): it runs inside Label Studio (export plugin) too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from pycocotools import mask as mask_utils

from combined_coco.schema import Schema

# ---- files ----------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, content: bytes | Callable[[IO[bytes]], object]) -> Path:
    """Put ``content`` (bytes, or a function that writes to the open binary file) at ``path``
    atomically: a temporary file ``.<name>.<pid>.<random>.tmp`` in the same folder (so the rename
    cannot cross file systems; the augmentation merge sweeps ``.*.tmp`` left by killed workers),
    fsync, ``os.replace``. Created with the process umask like any file (not mkstemp's 0600: images
    and models are read by other services). The temporary file is removed on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as compact UTF-8 JSON, atomically (combined COCO files, shard files)."""
    return write_atomic(path, json_bytes(data))


def json_bytes(data: Any) -> bytes:
    """The bytes :func:`write_json` writes (for a file stored elsewhere, e.g. object storage)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def read_combined_coco(path: str | os.PathLike) -> tuple[dict, Schema]:
    """The file in the global keypoint layout and its schema (parsed once here, passed along)."""
    data = json.loads(Path(path).read_bytes())
    schema = Schema.from_coco_categories(data["categories"])
    return global_layout(data, schema), schema


def global_layout(coco: dict, schema: Schema) -> dict:
    """``coco`` in the global keypoint layout (docs/FORMAT.md): categories list all K names and each
    annotation's keypoints are 3*K numbers in K order (names a category does not list are
    ``0, 0, 0``); empty keypoint lists stay empty. The input is not modified; a file already in the
    global layout comes back as it is (after the length check).

    Raises ValueError for an annotation whose keypoint count differs from its category's list.
    """
    names = list(schema.keypoint_names)
    index = {name: i for i, name in enumerate(names)}
    listed = {c["id"]: list(c.get("keypoints") or []) for c in coco["categories"]}
    _check_keypoint_counts(coco["annotations"], {cid: len(kps) for cid, kps in listed.items()})
    if all(kps == names for kps in listed.values()):
        return coco
    positions = {cid: [index[n] for n in kps] for cid, kps in listed.items()}
    annotations = []
    for ann in coco["annotations"]:
        flat = ann.get("keypoints")
        if flat:
            out = np.zeros((len(names), 3))
            out[positions[ann["category_id"]]] = np.asarray(flat, float).reshape(-1, 3)
            ann = {**ann, "keypoints": out.ravel().tolist()}
        annotations.append(ann)
    info = {**coco.get("info", {}), "keypoint_layout": "global"}
    return {**coco, "info": info, "categories": schema.to_coco_categories("global"), "annotations": annotations}


def _check_keypoint_counts(annotations: Sequence[dict], listed: dict[int, int]) -> None:
    for ann in annotations:
        flat = ann.get("keypoints")
        expected = listed.get(ann["category_id"], 0)
        if flat and len(flat) != 3 * expected:
            raise ValueError(
                f"annotation {ann.get('id')}: {len(flat) // 3} keypoints, but category {ann['category_id']} lists {expected}"
            )


def keypoint_array(annotation: dict, num_keypoints: int) -> np.ndarray:
    """[K,3] float32 (x, y, v) of an annotation in the global layout; zeros when it has none."""
    flat = annotation.get("keypoints")
    if not flat:
        return np.zeros((num_keypoints, 3), np.float32)
    return np.asarray(flat, np.float32).reshape(num_keypoints, 3)


# ---- keypoint flips -------------------------------------------------------------------------

Keypoints = TypeVar("Keypoints")  # numpy array or torch tensor, [..., K, 3]


def swap_left_right(keypoints: Keypoints, flip_indices: Sequence[int]) -> Keypoints:
    """After a mirroring transform a left eye sits where the right eye was: reorder the K axis (the
    one before last) by the schema's ``flip_indices``, so each name again holds its own point."""
    return keypoints[..., list(flip_indices), :]  # type: ignore[index]


# ---- RLE masks ------------------------------------------------------------------------------


def rle_text(rle: dict) -> dict:
    """The file (JSON) form of a compressed RLE: ``{"size": [h, w], "counts": str}``."""
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def rle_encode(mask: np.ndarray) -> dict:
    """Compressed RLE, file form, of an HxW mask (non-zero = inside)."""
    return rle_text(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8)))


def rle_compressed(rle: dict) -> dict:
    """A compressed RLE of an RLE given either way (uncompressed ``counts`` lists are compressed)."""
    if isinstance(rle["counts"], list):
        height, width = rle["size"]
        return mask_utils.frPyObjects(rle, height, width)
    return rle


def rle_decode(rle: dict) -> np.ndarray:
    """HxW uint8 mask of an RLE (compressed with str or bytes ``counts``, or uncompressed)."""
    return mask_utils.decode(rle_compressed(rle)).astype(np.uint8)


def rle_area_bbox(rle: dict) -> tuple[float, list[float]]:
    """Pixel count and COCO ``[x, y, w, h]`` of an RLE."""
    rle = rle_compressed(rle)
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]


def rle_merge(rles: Sequence[dict]) -> dict:
    """Union of several masks of one object (file form)."""
    return rle_text(mask_utils.merge([rle_compressed(r) for r in rles], intersect=False))


def decode_segmentation(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """HxW uint8 mask of a COCO segmentation: polygons (rasterized by pycocotools) or RLE."""
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))).astype(np.uint8)
    return rle_decode(segmentation)
