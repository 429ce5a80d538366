"""Label Studio JSON export -> combined COCO (docs/FORMAT.md): one annotation per object with its
polygon(s) or mask, box, area and its own keypoints.

Pipeline: per task, pick the annotations to export (:func:`exported_annotations`) and read each one's
typed regions (:mod:`combined_coco.labelstudio`); check the polygons of all of them in one vectorized
batch; per annotation, form instances and place keypoints (:mod:`combined_coco.association`) -> COCO
dicts. Problems with the user's data never raise: they become :class:`Issue` s naming the task and
region, and the rest of the export is still converted. Only input that cannot be read at all raises
:class:`ConversionError`.

Which annotations: every one that was not cancelled, each as its own image entry (same file, its
``ls_annotation_id``), as Label Studio's own exporters do (users choose annotations with Label Studio's
export filters); predictions are ignored. ``annotations="ground_truth_first"`` keeps only the ones
marked ground truth in tasks that have any (for training). Whatever is left out is named in the issues.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from combined_coco.association import AssociatedObject, assign_keypoints, group_instances
from combined_coco.data_url import DataUrlError, EmbeddedImage, embedded_image, is_data_url
from combined_coco.dataset import write_json
from combined_coco.issues import ConversionError, Issue, shown
from combined_coco.labelstudio import (
    TaskRegions,
    clean_shapes,
    parse_results,
    result_size,
    results_from_json_min,
    size_fits,
)
from combined_coco.schema import KeypointLayout, Schema, SchemaError
from combined_coco.validate import MAX_IMAGE_SIDE

__all__ = [
    "ConversionError",
    "ConversionResult",
    "Issue",
    "convert_export_file",
    "convert_tasks",
    "exported_annotations",
]

# Label Studio prefixes uploaded files with 8 hex chars and a dash: /data/upload/3/1a2b3c4d-quokka.jpg
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")

AnnotationChoice = Literal["all", "ground_truth_first"]


@dataclass
class _Entry:
    """One future image entry: a task's image with the regions of one of its annotations."""

    task_id: int | str | None
    annotation_id: int | str | None
    url: str
    regions: TaskRegions
    embedded: EmbeddedImage | None  # the image itself, when the task holds it as a data: URL


@dataclass
class ConversionResult:
    """The combined COCO dict and every issue found, grouped by task in export order; images that
    tasks embed as data: URLs (their bytes are not in the COCO file: :meth:`write_embedded_images`)."""

    coco: dict
    issues: list[Issue]
    embedded_images: list[EmbeddedImage] = field(default_factory=list)

    def write_embedded_images(self, folder: str | os.PathLike) -> list[Path]:
        """Write the data:-URL images under their COCO ``file_name`` into ``folder``."""
        return [image.write(Path(folder)) for image in self.embedded_images]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


def exported_annotations(task: dict, choice: AnnotationChoice, issues: list[Issue]) -> list[dict]:
    """The annotations of a full-JSON task that become image entries, in export order.

    Cancelled (skipped) ones are left out; with ``"ground_truth_first"``, so are the ones not marked
    ``ground_truth`` when the task has a ground-truth annotation. Each one left out is named in ``issues``.
    """
    task_id, annotations = task.get("id"), task.get("annotations")
    if annotations is None:
        return []
    if not isinstance(annotations, list):
        issues.append(Issue(task_id, None, f"'annotations' is {shown(annotations)}, not a list; skipped", "error"))
        return []
    kept = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            issues.append(Issue(task_id, None, f"annotation #{index} is not an object; skipped", "error"))
        elif annotation.get("was_cancelled") or annotation.get("skipped"):
            issues.append(
                Issue(
                    task_id,
                    None,
                    f"annotation {shown(annotation.get('id'))} was cancelled (skipped) by its annotator; not exported",
                )
            )
        else:
            kept.append(annotation)
    if choice == "ground_truth_first" and any(a.get("ground_truth") is True for a in kept):
        for a in kept:
            if a.get("ground_truth") is not True:
                issues.append(
                    Issue(
                        task_id,
                        None,
                        f"annotation {shown(a.get('id'))} is not marked ground truth and "
                        "another annotation of this task is; not used",
                    )
                )
        kept = [a for a in kept if a.get("ground_truth") is True]
    return kept


def convert_tasks(
    tasks: Iterable[dict],
    schema: Schema,
    *,
    layout: KeypointLayout = "global",
    progress: bool = False,
    nearest_tolerance: float = 0.02,
    max_image_side: int = MAX_IMAGE_SIDE,
    annotations: AnnotationChoice = "all",
) -> ConversionResult:
    """Convert Label Studio tasks (full JSON export items, or JSON_MIN records) to combined COCO.

    Every exported annotation of a task is its own image entry (see the module docstring for
    ``annotations``); image ids stay unique, so two entries may share one ``file_name``.

    ``nearest_tolerance`` is the keypoint-to-polygon distance accepted by the nearest rule, as a
    fraction of the image diagonal. Tasks whose image is larger than ``max_image_side`` pixels a side
    (as their regions say) are reported and skipped before anything of that size is allocated; above
    the default, COCO tools (pycocotools) cannot make masks at all.
    """
    if not 0 < max_image_side <= MAX_IMAGE_SIDE:
        raise ValueError(f"max_image_side must be in 1..{MAX_IMAGE_SIDE}, got {max_image_side!r}")
    if annotations not in ("all", "ground_truth_first"):
        raise ValueError(f"annotations must be 'all' or 'ground_truth_first', got {annotations!r}")
    if layout not in ("global", "per_category"):
        raise ValueError(f"layout must be 'global' or 'per_category', got {layout!r}")
    issues: list[Issue] = []
    images: list[dict] = []
    objects: list[dict] = []
    with _cyclic_gc_paused():
        entries, order = _read_tasks(tasks, schema, progress, max_image_side, annotations, issues)
        clean_shapes([(e.task_id, e.regions) for e in entries], issues)
        for e in entries:
            image_id = len(images) + 1
            if e.embedded is None:
                name, source = _basename(e.url), e.url
            else:
                name, source = e.embedded.file_name, e.embedded.description
            image = {
                "id": image_id,
                "file_name": name,
                "width": e.regions.width,
                "height": e.regions.height,
                "ls_task_id": e.task_id,
                "ls_image": source,
            }
            if e.annotation_id is not None:
                image["ls_annotation_id"] = e.annotation_id
            images.append(image)
            instances, by_region = group_instances(e.regions)
            first = len(issues)
            assign_keypoints(e.task_id, e.regions, instances, by_region, schema, nearest_tolerance, issues)
            _name_annotation(issues[first:], e.regions.annotation_id)
            for inst in instances:
                objects.append(_coco_object(inst, len(objects) + 1, image_id, schema, layout))
    _name_images(images)
    # Shapes are checked in one batch after all tasks are read; put each task's issues back together.
    issues.sort(key=lambda i: -1 if i.task_id is None else order.get(i.task_id, -1))
    coco = {
        "info": {
            "description": "combined COCO exported from Label Studio",
            "keypoint_layout": layout,
            "source": "label-studio",
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
            # In the file itself: an Export-dialog user never sees the server log.
            "conversion_issues": [f"{i.severity}: {i}" for i in issues],
        },
        "images": images,
        "categories": schema.to_coco_categories(layout),
        "annotations": objects,
    }
    embedded = {id(e.embedded): e.embedded for e in entries if e.embedded is not None}  # once per task
    return ConversionResult(coco, issues, list(embedded.values()))


def _id_or_none(value: object) -> int | str | None:
    """A Label Studio id as given, or None when it is not one (the COCO file records only real ids)."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _name_annotation(issues: list[Issue], annotation_id: int | str | None) -> None:
    for issue in issues:
        issue.annotation_id = annotation_id


def _read_tasks(
    tasks: Iterable[dict],
    schema: Schema,
    progress: bool,
    max_side: int,
    choice: AnnotationChoice,
    issues: list[Issue],
) -> tuple[list[_Entry], dict]:
    """The image entries of all usable tasks, and task id -> position in the export."""
    entries: list[_Entry] = []
    seen: set = set()
    order: dict = {}
    json_min_reported = False
    total = len(tasks) if hasattr(tasks, "__len__") else None  # type: ignore[arg-type]
    for position, task in enumerate(tqdm(tasks, total=total, disable=not progress, unit="task", desc="converting")):
        if not isinstance(task, dict):
            issues.append(Issue(None, None, f"item #{position} of the export is not a task object; skipped", "error"))
            continue
        task_id = task.get("id")
        if task_id is not None and not isinstance(task_id, (int, str)):
            issues.append(Issue(None, None, f"item #{position} has id {task_id!r}, not a task id; skipped", "error"))
            continue
        json_min = "annotations" not in task and "data" not in task
        if json_min and not json_min_reported:
            json_min_reported = True
            issues.append(
                Issue(
                    None,
                    None,
                    "this is a JSON_MIN export: relations and occlusion choices are not in "
                    "it, so keypoints without parentID are placed by position only; export as JSON to "
                    "keep them",
                )
            )
        # A JSON_MIN export lists one row per annotation, so only the annotation id must be new there.
        key = (task_id, _id_or_none(task.get("annotation_id"))) if json_min else task_id
        if task_id is not None and key in seen:
            issues.append(
                Issue(
                    task_id,
                    None,
                    "duplicate annotation row; skipped" if json_min else "duplicate task id; skipped",
                    "warning" if json_min else "error",
                )
            )
            continue
        if task_id is not None:
            seen.add(key)
            order.setdefault(task_id, position)
        entries += _read_task(task, task_id, json_min, schema, max_side, choice, issues)
    return entries, order


def _read_task(
    task: dict,
    task_id,
    json_min: bool,
    schema: Schema,
    max_side: int,
    choice: AnnotationChoice,
    issues: list[Issue],
) -> list[_Entry]:
    """The task's image entries, one per exported annotation; none (with issues) when it cannot become one."""
    image_key = schema.controls.image_value if schema.controls else "image"
    data = task if json_min else task.get("data")
    url = data.get(image_key) if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        issues.append(
            Issue(
                task_id,
                None,
                f"task data has no {image_key!r} image (the labeling config reads ${image_key}); skipped",
                "error",
            )
        )
        return []
    embedded = None
    if is_data_url(url):
        try:
            embedded = embedded_image(url, task_id)
        except DataUrlError as exc:
            issues.append(Issue(task_id, None, f"{exc}; skipped", "error"))
            return []
    sources: list[tuple[int | str | None, object]]  # (annotation id, its results: checked below)
    if json_min:
        sources = [(_id_or_none(task.get("annotation_id")), results_from_json_min(task, schema.controls))]
    else:
        # A task without annotations is still an image (without objects) when its size is known.
        sources = [(_id_or_none(a.get("id")), a.get("result")) for a in exported_annotations(task, choice, issues)] or [
            (None, [])
        ]
    several = len(sources) > 1
    entries = []
    for annotation_id, results in sources:
        if not isinstance(results, list):
            issues.append(
                Issue(task_id, None, f"annotation {shown(annotation_id)} has no result list; skipped", "error")
            )
            continue
        first = len(issues)
        regions = _regions(task, task_id, results, schema, max_side, issues)
        if several:  # the same region id may appear in two annotations of one task: say which one
            _name_annotation(issues[first:], annotation_id)
        if regions is not None:
            regions.annotation_id = annotation_id if several else None
            entries.append(_Entry(task_id, annotation_id, url, regions, embedded))
    return entries


def _regions(
    task: dict, task_id, results: list, schema: Schema, max_side: int, issues: list[Issue]
) -> TaskRegions | None:
    """One annotation's regions with the image size, or None (with an issue) when it cannot become an image."""
    regions = parse_results(task_id, results, schema, issues, max_side)
    if regions is None:
        return None
    if regions.width is None:
        size = _any_size(task)
        if size is None:
            if any(str(r.get("type", "")).lower().endswith("labels") for r in results if isinstance(r, dict)):
                issues.append(
                    Issue(
                        task_id,
                        None,
                        "its regions have no original_width/original_height, so "
                        "coordinates cannot be converted; re-export from Label Studio; skipped",
                        "error",
                    )
                )
            else:
                issues.append(Issue(task_id, None, "no labeled regions and no known image size; skipped"))
            return None
        if not size_fits(task_id, *size, max_side, issues):
            return None
        regions.width, regions.height = size
    return regions


def _coco_object(inst: AssociatedObject, object_id: int, image_id: int, schema: Schema, layout: KeypointLayout) -> dict:
    """One COCO ``annotations`` item (an object; "annotation" in this module is Label Studio's)."""
    category = schema.category(inst.label)
    names = schema.keypoint_names if layout == "global" else category.keypoints
    keypoints: list[float] = []
    labeled = 0
    for name in names:
        kp = inst.keypoints.get(name)
        if kp is None:
            keypoints += [0, 0, 0]
        else:
            keypoints += [kp.x, kp.y, kp.visibility]
            labeled += 1
    return {
        "id": object_id,
        "image_id": image_id,
        "category_id": category.id,
        "iscrowd": 0,
        "segmentation": inst.rle if inst.rle is not None else inst.polygons,
        "bbox": inst.bbox,
        "area": inst.area,
        "keypoints": keypoints,
        "num_keypoints": labeled,
        "ls_region_ids": inst.region_ids,
    }


def _any_size(task: dict) -> tuple[int, int] | None:
    """An image size from any annotation or prediction of the task, for images without regions."""
    for source in ("annotations", "predictions"):
        items = task.get(source)
        for item in items if isinstance(items, list) else []:
            results = item.get("result") if isinstance(item, dict) else None
            for r in results if isinstance(results, list) else []:
                w, h = result_size(r) if isinstance(r, dict) else (None, None)
                if w is not None and h is not None:
                    return w, h
    return None


def _basename(url: str) -> str:
    path = urlparse(url).path if "://" in url or url.startswith("/") else url
    # Label Studio local-files URLs carry the path in the query: /data/local-files/?d=dir/img.jpg
    if not path.rstrip("/") or path.rstrip("/").endswith("local-files"):
        query = urlparse(url).query
        path = next((v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "d"), path)
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) or url


def _name_images(images: list[dict]) -> None:
    """Strip Label Studio's upload prefix unless two different files would then share a name."""
    stripped = [_UPLOAD_PREFIX.sub("", im["file_name"]) for im in images]
    sources: dict[str, set[str]] = {}
    for im, short in zip(images, stripped, strict=True):
        sources.setdefault(short, set()).add(im["file_name"])
    for im, short in zip(images, stripped, strict=True):
        if len(sources[short]) == 1:
            im["file_name"] = short


def convert_export_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    label_config: str,
    *,
    layout: KeypointLayout = "global",
    progress: bool = False,
    nearest_tolerance: float = 0.02,
    max_image_side: int = MAX_IMAGE_SIDE,
    annotations: AnnotationChoice = "all",
    images_dir: str | os.PathLike | None = None,
) -> ConversionResult:
    """Read a Label Studio JSON (or JSON_MIN) export file and write combined COCO atomically.

    ``images_dir``: where to write the images that tasks embed as data: URLs (else they are only named).

    Raises :class:`ConversionError` when the input cannot be used at all; per-task problems are in
    the returned issues and the output is still written.
    """
    try:
        schema = Schema.from_label_config(label_config)
    except SchemaError as exc:
        raise ConversionError(f"labeling config: {exc}") from None
    with _cyclic_gc_paused():
        tasks = read_export(input_path)
        result = convert_tasks(
            tasks,
            schema,
            layout=layout,
            progress=progress,
            nearest_tolerance=nearest_tolerance,
            max_image_side=max_image_side,
            annotations=annotations,
        )
        if tasks and not result.coco["images"] and result.errors:
            shown = "\n".join(str(i) for i in result.errors[:5])
            raise ConversionError(f"no task of {input_path} could be converted; first problems:\n{shown}")
        write_json(output_path, result.coco)
        if images_dir is not None:
            result.write_embedded_images(images_dir)
    return result


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Reading and converting an export allocates millions of small dicts and lists without cycles;
    CPython's cyclic collector rescans them again and again (a third of the export time at 5,000
    tasks). Reference counting still frees everything meanwhile; the collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_export(input_path: str | os.PathLike) -> list:
    """The task list of a Label Studio export file, or ConversionError saying what is wrong with it."""
    path = Path(input_path)
    try:
        with path.open("rb") as f:
            tasks = json.load(f)
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (character {exc.pos})"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConversionError(
            f"{path} is not UTF-8 text (byte {exc.start}); export it again from Label Studio"
        ) from None
    except RecursionError:
        raise ConversionError(f"{path} nests lists or objects too deeply to be a Label Studio export") from None
    except ValueError as exc:  # Python refuses integers of more than 4,300 digits (a denial-of-service guard)
        raise ConversionError(f"{path} holds a number Python will not read: {exc}".split("; use sys.")[0]) from None
    if isinstance(tasks, dict):
        hint = (
            "it looks like a COCO file already"
            if "images" in tasks
            else "it looks like a single task; wrap it in [ ]"
            if "data" in tasks
            else f"keys: {list(tasks)[:5]}"
        )
        raise ConversionError(f"{path} holds a JSON object, but a Label Studio export is a list of tasks ({hint})")
    if not isinstance(tasks, list):
        raise ConversionError(
            f"{path} holds a JSON {type(tasks).__name__}, but a Label Studio export is a list of tasks"
        )
    if tasks and not any(isinstance(t, dict) for t in tasks):
        raise ConversionError(f"{path} is a list without task objects; is it a Label Studio JSON export?")
    return tasks
