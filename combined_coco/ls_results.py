"""Pixel geometry -> Label Studio result dicts: the inverse of :mod:`combined_coco.ls_regions`.

Tests and the export benchmark build Label Studio exports with these, so they exercise exactly the
result shape Label Studio writes (percent coordinates, ``original_width``/``original_height``,
``parentID`` for nesting, per-region ``choices`` sharing the keypoint's id).
"""

from __future__ import annotations

from typing import Sequence


def _base(region_id: str, rtype: str, from_name: str, width: int, height: int, parent_id: str | None) -> dict:
    r = {"id": region_id, "type": rtype, "from_name": from_name, "to_name": "image", "origin": "manual",
         "original_width": width, "original_height": height, "image_rotation": 0}
    if parent_id is not None:
        r["parentID"] = parent_id
    return r


def polygon_result(region_id: str, label: str, points: Sequence[Sequence[float]], width: int, height: int, *,
                   parent_id: str | None = None, from_name: str = "polygon") -> dict:
    r = _base(region_id, "polygonlabels", from_name, width, height, parent_id)
    r["value"] = {"points": [[x / width * 100.0, y / height * 100.0] for x, y in points],
                  "closed": True, "polygonlabels": [label]}
    return r


def rectangle_result(region_id: str, label: str, x: float, y: float, w: float, h: float, width: int, height: int,
                     *, rotation: float = 0.0, parent_id: str | None = None, from_name: str = "box") -> dict:
    r = _base(region_id, "rectanglelabels", from_name, width, height, parent_id)
    r["value"] = {"x": x / width * 100.0, "y": y / height * 100.0, "width": w / width * 100.0,
                  "height": h / height * 100.0, "rotation": rotation, "rectanglelabels": [label]}
    return r


def keypoint_result(region_id: str, label: str, x: float, y: float, width: int, height: int, *,
                    parent_id: str | None = None, from_name: str = "keypoint") -> dict:
    r = _base(region_id, "keypointlabels", from_name, width, height, parent_id)
    r["value"] = {"x": x / width * 100.0, "y": y / height * 100.0, "width": 0.5, "keypointlabels": [label]}
    return r


def occluded_result(region_id: str, *, from_name: str = "visibility") -> dict:
    """The per-region Choices result Label Studio stores next to a keypoint marked occluded."""
    return {"id": region_id, "type": "choices", "from_name": from_name, "to_name": "image",
            "origin": "manual", "value": {"choices": ["occluded"]}}


def relation_result(from_id: str, to_id: str) -> dict:
    return {"type": "relation", "from_id": from_id, "to_id": to_id, "direction": "right"}


def task(task_id: int, image: str, results: list[dict], *, annotation_id: int | None = None) -> dict:
    """A task as in Label Studio's JSON export, with one annotation."""
    return {
        "id": task_id,
        "data": {"image": image},
        "annotations": [{"id": annotation_id or task_id, "result": results, "was_cancelled": False,
                         "created_at": "2026-01-01T00:00:00.000000Z", "completed_by": 1, "lead_time": 10.0}],
        "predictions": [],
    }
