"""Check that a dict is a usable combined COCO file (docs/FORMAT.md) before anything trains on it.

Every later stage (augmentation, training, evaluation) trusts this contract; a file that breaks it
fails there with an index error far from the cause. Each problem names the image or annotation id.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from numbers import Real
from typing import TypeGuard

from combined_coco.dataset import rle_decode, rle_encode, rle_text

_BBOX_SLACK = 1e-3  # pixels; float rounding of clipped coordinates

# What pycocotools' C code can take without overflowing or exhausting memory (it checks neither):
# masks are h*w bytes and pixel indices are C ints, so sides are bounded (40,000 px is far above any
# photo: 1.6 gigapixels); rasterizing a polygon allocates 5 ints per pixel of its outline
# (sum over edges of max(|dx|, |dy|)) four times over, so outlines are bounded too (4M px: 25 times
# around the largest image, ~350 MB in pycocotools).
MAX_IMAGE_SIDE = 40_000
MAX_OUTLINE_PX = 4_000_000


def validate_coco(coco: object) -> list[str]:
    """Problems found, each naming the image/annotation/category id; an empty list means valid.

    Also loads the file in pycocotools and turns every annotation into a mask there.
    """
    if not isinstance(coco, dict):
        return [f"top level must be an object, got {type(coco).__name__}"]
    problems: list[str] = []
    for key in ("images", "categories", "annotations"):
        if not isinstance(coco.get(key), list):
            problems.append(f"'{key}' must be a list")
    if problems:
        return problems

    images = _check_images(coco["images"], problems)
    categories = _check_categories(coco["categories"], problems)
    _check_annotations(coco["annotations"], images, categories, problems)
    if not problems:
        problems += _pycocotools_problems(coco)
    return problems


def _is_num(v: object) -> TypeGuard[float]:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_id(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _with_unique_ids(items: list, kind: str, problems: list[str]) -> Iterator[tuple[int, dict]]:
    """The items whose ``id`` is a new int >= 1; the others are reported."""
    seen: set[int] = set()
    for n, item in enumerate(items):
        iid = item.get("id") if isinstance(item, dict) else None
        if not _is_id(iid):
            problems.append(f"{kind}s[{n}]: id must be an int >= 1, got {iid!r}")
        elif iid in seen:
            problems.append(f"{kind} {iid}: duplicate {kind} id")
        else:
            seen.add(iid)
            yield iid, item


def _check_images(images: list, problems: list[str]) -> dict[int, tuple[float, float]]:
    sizes: dict[int, tuple[float, float]] = {}
    for iid, im in _with_unique_ids(images, "image", problems):
        w, h = im.get("width"), im.get("height")
        if not (_is_num(w) and _is_num(h) and w > 0 and h > 0):
            problems.append(f"image {iid}: width/height must be positive numbers, got {w!r:.40}x{h!r:.40}")
            continue
        if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
            problems.append(f"image {iid}: {w:g}x{h:g} exceeds {MAX_IMAGE_SIDE} px a side")
            continue
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            problems.append(f"image {iid}: missing file_name")
        sizes[iid] = (float(w), float(h))
    problems += [
        text for _, text in shared_file_clashes([im for im in images if isinstance(im, dict) and im.get("id") in sizes])
    ]
    return sizes


def is_augmented_copy(image: dict) -> bool:
    """An image entry written by augmentation with transformed pixels (``aug_copy`` 0 is the original)."""
    return "source_image_id" in image and image.get("aug_copy") != 0


def shared_file_clashes(images: list[dict]) -> list[tuple[int, str]]:
    """Image entries that claim one file with different content: ``(first image id, problem)`` per file.

    Several entries may share a photo (two tasks on one file, several Label Studio annotations of one
    task), but then they must describe the same pixels: the same width/height, and none of them an
    augmented copy (each copy has its own transform, so a shared file holds only the last one written
    and the other entries' annotations describe pixels that are not there).
    """
    by_file: dict[str, list[dict]] = {}
    for im in images:
        if isinstance(im.get("file_name"), str):
            by_file.setdefault(im["file_name"], []).append(im)
    problems: list[tuple[int, str]] = []
    for name, group in by_file.items():
        if len(group) < 2:
            continue
        ids = ", ".join(str(im["id"]) for im in group)
        if len({(im.get("width"), im.get("height")) for im in group}) > 1:
            sizes = ", ".join(f"{im['id']}: {im.get('width')}x{im.get('height')}" for im in group)
            problems.append(
                (
                    group[0]["id"],
                    f"images {ids} share file_name {name!r} but give different sizes ({sizes}); one file has one size",
                )
            )
        elif any(is_augmented_copy(im) for im in group):
            problems.append(
                (
                    group[0]["id"],
                    (
                        f"images {ids} share file_name {name!r} and at least one is an augmented copy: each copy needs its own"
                        " file (re-run the augmentation, which names copies by image id)"
                    ),
                )
            )
    return problems


def _check_categories(categories: list, problems: list[str]) -> dict[int, int]:
    """Category id -> number of keypoints it lists."""
    out: dict[int, int] = {}
    for n, cat in enumerate(categories):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if cid != n + 1:
            problems.append(f"categories[{n}]: ids must be 1..N in order, got {cid!r}")
            continue
        names = cat.get("keypoints", [])
        if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
            problems.append(f"category {cid}: keypoints must be a list of names")
            continue
        for edge in cat.get("skeleton") or []:
            if not (isinstance(edge, list) and len(edge) == 2 and all(_is_id(v) and v <= len(names) for v in edge)):
                problems.append(f"category {cid}: skeleton edge {edge!r} is not a 1-based pair into its keypoints")
        out[cid] = len(names)
    return out


def _check_annotations(annotations: list, images: dict, categories: dict, problems: list[str]) -> None:
    for aid, ann in _with_unique_ids(annotations, "annotation", problems):
        where = f"annotation {aid} (image {ann.get('image_id')!r})"
        size = images.get(ann.get("image_id"))
        if size is None:
            problems.append(f"{where}: image_id is not an image of this file")
            continue
        if ann.get("category_id") not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not a category of this file")
            continue
        if ann.get("iscrowd", 0) not in (0, 1):
            problems.append(f"{where}: iscrowd must be 0 or 1")
        points = _check_segmentation(ann.get("segmentation"), size, where, problems)
        _check_box(ann, points, size, where, problems)
        _check_keypoints(ann, categories[ann["category_id"]], where, problems)


def _check_segmentation(seg, size: tuple[float, float], where: str, problems: list[str]) -> list[float]:
    """Flat polygon coordinates (for the box check); [] for RLE."""
    if isinstance(seg, dict):
        if seg.get("size") != [int(size[1]), int(size[0])]:
            problems.append(f"{where}: RLE size {seg.get('size')!r} is not [height, width] of its image")
        if not isinstance(seg.get("counts"), (str, list)) or not seg.get("counts"):
            problems.append(f"{where}: RLE counts missing")
        return []
    if not isinstance(seg, list) or not seg:
        problems.append(f"{where}: segmentation must be a non-empty list of polygons or an RLE object")
        return []
    flat: list[float] = []
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_is_num(v) for v in poly):
            problems.append(f"{where}: polygon {k} must be a flat list of >= 3 x,y number pairs")
            continue
        if outline_px(poly) > MAX_OUTLINE_PX:
            problems.append(
                f"{where}: polygon {k} has an outline of {outline_px(poly):.0f} px (limit "
                f"{MAX_OUTLINE_PX}); pycocotools cannot rasterize it"
            )
            continue
        flat += poly
    return flat


def outline_px(flat: list[float]) -> float:
    """Sum over the polygon's edges of max(|dx|, |dy|): the pixels pycocotools walks to rasterize it."""
    xs, ys = flat[0::2], flat[1::2]
    return sum(max(abs(xs[i] - xs[i - 1]), abs(ys[i] - ys[i - 1])) for i in range(len(xs)))


def _check_box(ann: dict, points: list[float], size: tuple[float, float], where: str, problems: list[str]) -> None:
    bbox, area = ann.get("bbox"), ann.get("area")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
        problems.append(f"{where}: bbox must be [x, y, w, h] numbers, got {bbox!r}")
        return
    x, y, w, h = bbox
    if w < 0 or h < 0:
        problems.append(f"{where}: bbox has negative size {bbox}")
    if x < -_BBOX_SLACK or y < -_BBOX_SLACK or x + w > size[0] + _BBOX_SLACK or y + h > size[1] + _BBOX_SLACK:
        problems.append(f"{where}: bbox {bbox} leaves the {size[0]:g}x{size[1]:g} image")
    if points:
        xs, ys = points[0::2], points[1::2]
        if (
            min(xs) < x - _BBOX_SLACK
            or max(xs) > x + w + _BBOX_SLACK
            or min(ys) < y - _BBOX_SLACK
            or max(ys) > y + h + _BBOX_SLACK
        ):
            problems.append(f"{where}: bbox {bbox} does not contain all polygon points")
    if not _is_num(area) or area < 0:
        problems.append(f"{where}: area must be a number >= 0, got {area!r}")
    elif area > w * h * (1 + 1e-6) + _BBOX_SLACK:
        problems.append(f"{where}: area {area} exceeds its bbox area {w * h}")


def _check_keypoints(ann: dict, expected: int, where: str, problems: list[str]) -> None:
    kps = ann.get("keypoints")
    if kps is None and expected == 0:
        return
    if not isinstance(kps, list) or len(kps) != 3 * expected or not all(_is_num(v) for v in kps):
        got = len(kps) if isinstance(kps, list) else kps
        problems.append(f"{where}: keypoints must be {3 * expected} numbers (3 per category keypoint), got {got!r}")
        return
    labeled = 0
    for i in range(0, len(kps), 3):
        x, y, v = kps[i : i + 3]
        if v not in (0, 1, 2):
            problems.append(f"{where}: keypoint {i // 3} has visibility {v!r} (must be 0, 1 or 2)")
        elif v == 0 and (x or y):
            problems.append(f"{where}: keypoint {i // 3} is unlabeled (v=0) but has coordinates")
        labeled += v > 0
    if ann.get("num_keypoints") != labeled:
        problems.append(f"{where}: num_keypoints is {ann.get('num_keypoints')!r} but {labeled} keypoints are labeled")


def _pycocotools_problems(coco: dict) -> list[str]:
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = coco
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines
            api.createIndex()
    except Exception as exc:  # pycocotools raises bare KeyError/TypeError on malformed input
        return [f"pycocotools cannot index the file: {type(exc).__name__}: {exc}"]
    problems = []
    for ann in coco["annotations"]:
        try:
            rle = api.annToRLE(ann)
            if isinstance(ann["segmentation"], dict):
                _check_rle(ann["segmentation"], rle)
        except Exception as exc:
            problems.append(
                f"annotation {ann['id']} (image {ann['image_id']}): pycocotools cannot make its mask: "
                f"{type(exc).__name__}: {exc}"
            )
    return problems


def _check_rle(segmentation: dict, rle: dict) -> None:
    """pycocotools decodes an RLE without bounds checks (runs longer than the image overwrite memory)
    and turns a corrupt one into garbage without complaint: the runs must cover the image exactly,
    and a valid compressed RLE re-encodes to itself."""
    h, w = segmentation["size"]
    runs = segmentation["counts"]
    if isinstance(runs, str):
        runs = compressed_rle_runs(runs)
    elif not all(isinstance(c, int) and 0 <= c <= h * w for c in runs):
        raise ValueError("uncompressed RLE runs must be ints between 0 and height x width")
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs sum to {sum(runs)}, not {h} x {w}")
    if isinstance(segmentation["counts"], list):
        return
    counts = rle_text(rle)["counts"]
    if rle_encode(rle_decode({"size": [h, w], "counts": counts}))["counts"] != counts:
        raise ValueError("counts is not a valid compressed COCO RLE of this size")


def compressed_rle_runs(counts: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' ``rleFrString`` does
    (6-bit groups from '0', delta-coded from the run two back), with the checks it lacks."""
    runs: list[int] = []
    value, shift = 0, 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            raise ValueError(f"counts is not a valid compressed COCO RLE: it contains {ch!r}")
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            if shift >= 35:  # 7 characters hold any 32-bit run; C would shift past its 64-bit long
                raise ValueError("counts is not a valid compressed COCO RLE: a number longer than 7 characters")
            continue
        if c & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value & 0xFFFFFFFF)  # pycocotools stores runs as uint32
        value, shift = 0, 0
    if shift:
        raise ValueError("counts is not a valid compressed COCO RLE: it ends in the middle of a number")
    return runs
