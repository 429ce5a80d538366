"""Augment a combined COCO dataset (json + images) into a new one with N copies per image.

The work is split in three pure-ish steps so the RQ jobs (:mod:`augmentation.jobs`) and the
in-process :func:`augment_dataset` run the very same code:

1. :func:`augment_range` augments source images ``[start, end)`` (in image-id order), writes their
   images and returns a *shard*: image entries with final ids, annotations without ids yet.
2. :func:`merge_shards` concatenates shards in order and numbers annotations 1..M.
3. :func:`combined_coco.dataset.write_json` puts the file in place with a rename, so a reader never
   sees half a file.

Output: ``<out_dir>/annotations.json`` and ``<out_dir>/images/``. Source image at position ``i``
(id order) yields ids ``i * per_image + 1 ...``: the original first (same ``file_name``) when kept,
then copies ``<stem>__img<id>_aug<c><suffix>`` (``id`` the source image's: entries that share a
photo, e.g. several Label Studio annotations of one task, get separate files). Every image entry
keeps the source's fields and adds ``source_image_id``, ``source_file_name`` and ``aug_copy``
(0 = original), so a split can keep every image of one photo together.
``info.augmentation`` records the pipeline, options and the number of dropped instances.

Everything is deterministic: the transform of copy ``c`` of image ``id`` is sampled with a seed
derived from ``(run seed, image id, c)``; output image ids depend only on the image's position and
the copy; annotation ids on the merge order. Re-running any shard gives the same bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
from tqdm import tqdm

from augmentation.albumentations_steps import augment_sample
from augmentation.geometry_transform import InstanceGeometry, Limits
from augmentation.pipelines import build_pipeline, read_pipeline
from combined_coco.dataset import read_combined_coco, rle_compressed, write_json
from combined_coco.images import check_image_size, read_image
from combined_coco.schema import Schema
from combined_coco.validate import shared_file_clashes
from jobqueue.object_storage import Location, location

OUTPUT_JSON = "annotations.json"
IMAGES_DIR = "images"
JPEG_QUALITY = 95


class AugmentationFailed(RuntimeError):
    """Some source images could not be augmented; ``failures`` lists ``{"image_id", "error"}``."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        self.failures = failures
        lines = "; ".join(f"image {f['image_id']}: {f['error']}" for f in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} image(s) failed: {lines}{more}")


@dataclass(frozen=True)
class Options:
    """Everything that determines the output; stored in the output's ``info`` and in job payloads."""

    pipeline: dict[str, Any]  # A.to_dict form
    copies: int = 4
    seed: int = 0
    keep_originals: bool = True
    limits: Limits = field(default_factory=Limits)

    @property
    def per_image(self) -> int:
        return self.copies + int(self.keep_originals)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        return cls(**{**data, "limits": Limits(**data["limits"])})


@dataclass
class Shard:
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)  # without "id"; numbered by merge_shards
    dropped: int = 0  # instances dropped because too little of them stayed in the frame
    failures: list[dict[str, Any]] = field(default_factory=list)


def sample_seed(run_seed: int, image_id: int, copy_index: int) -> int:
    """Independent, reproducible stream per (run, image, copy): shards can run in any order or twice."""
    return int(np.random.SeedSequence([run_seed, image_id, copy_index]).generate_state(1)[0])


def sorted_images(coco: dict) -> list[dict]:
    return sorted(coco["images"], key=lambda im: im["id"])


def _relative(file_name: str) -> Path:
    rel = Path(file_name)
    return Path(rel.name) if rel.is_absolute() or ".." in rel.parts else rel


def augmented_name(file_name: str, image_id: int, copy_index: int) -> str:
    """The file of copy ``copy_index`` of image entry ``image_id``: unique per entry, because several
    entries may share one photo and each copy has its own transform."""
    rel = _relative(file_name)
    return str(rel.with_name(f"{rel.stem}__img{image_id}_aug{copy_index}{rel.suffix or '.jpg'}"))


def instance_from_annotation(ann: dict, flip_indices: Sequence[int]) -> InstanceGeometry:
    """What the augmenter needs of a combined COCO annotation in the global keypoint layout
    (uncompressed RLE is compressed first)."""
    seg = ann["segmentation"]
    kps = list(ann.get("keypoints") or [])
    if isinstance(seg, dict):
        return InstanceGeometry([], rle_compressed(seg), kps, flip_indices)
    return InstanceGeometry([list(p) for p in seg], None, kps, flip_indices)


def _without_id(ann: dict) -> dict:
    """A deep copy without ``id``: annotation ids are assigned at merge time."""
    return {k: copy.deepcopy(v) for k, v in ann.items() if k != "id"}


def _encode(image: np.ndarray, suffix: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {suffix} images")
    return buf.tobytes()


def augment_image(
    source: dict,
    index: int,
    annotations: list[dict],
    flip_indices: Sequence[int],
    compose: A.Compose,
    image_root: Location,
    images_out: Location,
    options: Options,
) -> Shard:
    """All outputs (original if kept, then ``copies`` augmented) of the source image at ``index``."""
    out = Shard()
    src = image_root / source["file_name"]
    try:
        data = src.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(
            f"cannot read image {src}: no such file; check the image root and the file_name"
        ) from None
    image = read_image(data, name=str(src))  # RGB, as Albumentations' colour transforms expect
    check_image_size(image, source)
    instances = [instance_from_annotation(a, flip_indices) for a in annotations]
    base_id = index * options.per_image + 1
    slots: list[int] = ([0] if options.keep_originals else []) + list(range(1, options.copies + 1))
    for slot, copy_index in enumerate(slots):
        entry = {
            **source,
            "id": base_id + slot,
            "source_image_id": source["id"],
            "aug_copy": copy_index,
            "source_file_name": str(_relative(source["file_name"])),
        }
        if copy_index == 0:
            entry["file_name"] = str(_relative(source["file_name"]))
            (images_out / entry["file_name"]).write_bytes(data)
            out.images.append(entry)
            out.annotations += [{**_without_id(a), "image_id": entry["id"]} for a in annotations]
            continue
        sample = augment_sample(
            compose, image, instances, sample_seed(options.seed, source["id"], copy_index), options.limits
        )
        entry["file_name"] = augmented_name(source["file_name"], source["id"], copy_index)
        entry["height"], entry["width"] = sample.image.shape[:2]
        (images_out / entry["file_name"]).write_bytes(_encode(sample.image, Path(entry["file_name"]).suffix))
        out.images.append(entry)
        for ann, inst in zip(annotations, sample.instances):
            if inst is None:
                out.dropped += 1
                continue
            new = _without_id(ann)
            new.update(image_id=entry["id"], segmentation=inst.segmentation, bbox=inst.bbox, area=inst.area)
            if "keypoints" in ann:
                new.update(keypoints=inst.keypoints, num_keypoints=inst.num_keypoints)
            out.annotations.append(new)
    return out


def augment_range(
    coco: dict,
    schema: Schema,
    image_root: str | Path | Location,
    out_dir: str | Path | Location,
    options: Options,
    start: int,
    end: int,
    on_image: Callable[[int], None] | None = None,
) -> Shard:
    """Augment source images ``[start, end)`` of the id-sorted image list; failures are collected
    per image (the rest still runs) so one bad file does not hide the next. ``coco`` is in the global
    keypoint layout (:func:`combined_coco.dataset.read_combined_coco`). ``image_root`` and ``out_dir``
    are local folders or object storage (:func:`jobqueue.object_storage.location`)."""
    compose = build_pipeline(options.pipeline)
    images_in, images_out = location(image_root), location(out_dir) / IMAGES_DIR
    flip_indices = schema.flip_indices
    by_image: dict[int, list[dict]] = {}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted_images(coco)
    shard = Shard()
    for done, index in enumerate(range(start, min(end, len(images))), start=1):
        source = images[index]
        try:
            part = augment_image(
                source,
                index,
                by_image.get(source["id"], []),
                flip_indices,
                compose,
                images_in,
                images_out,
                options,
            )
        except Exception as exc:  # reported per image with its id; the caller decides whether to fail
            shard.failures.append({"image_id": source["id"], "error": f"{type(exc).__name__}: {exc}"})
        else:
            shard.images += part.images
            shard.annotations += part.annotations
            shard.dropped += part.dropped
        if on_image is not None:
            on_image(done)
    return shard


def merge_shards(coco: dict, shards: Sequence[Shard], options: Options, pipeline_name: str) -> dict:
    """One combined COCO dataset from shards in image order; annotation ids 1..M in that order."""
    images = [im for s in shards for im in s.images]
    if clashes := shared_file_clashes(images):  # two entries writing one file: the last one written wins
        raise AugmentationFailed([{"image_id": image_id, "error": problem} for image_id, problem in clashes])
    annotations = [{"id": i, **a} for i, a in enumerate((a for s in shards for a in s.annotations), start=1)]
    info = {
        **coco.get("info", {}),
        "augmentation": {
            "pipeline_name": pipeline_name,
            "options": options.to_dict(),
            "source_images": len(coco["images"]),
            "dropped_instances": sum(s.dropped for s in shards),
        },
    }
    return {**coco, "info": info, "images": images, "annotations": annotations}


def augment_dataset(
    coco_path: Path,
    image_root: Path,
    out_dir: Path,
    *,
    pipeline: str | Path = "light",
    copies: int = 4,
    seed: int = 0,
    keep_originals: bool = True,
    progress: bool = False,
) -> Path:
    """Augment in this process; returns the output json (images under ``out_dir/images``).

    Raises :class:`AugmentationFailed` listing every image that failed; no json is written then.
    """
    coco, schema = read_combined_coco(coco_path)
    options = Options(read_pipeline(pipeline), copies=copies, seed=seed, keep_originals=keep_originals)
    total = len(coco["images"])
    with tqdm(total=total, disable=not progress, unit="img", desc="augment") as bar:
        shard = augment_range(
            coco, schema, Path(image_root), Path(out_dir), options, 0, total, lambda done: bar.update(1)
        )
    if shard.failures:
        raise AugmentationFailed(shard.failures)
    out_path = Path(out_dir) / OUTPUT_JSON
    write_json(out_path, merge_shards(coco, [shard], options, str(pipeline)))
    return out_path
