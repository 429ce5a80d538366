"""The edit-cost counter on hand-made pre-annotations whose costs are counted here by hand.

Image 200 x 200; one category ``gear`` with 7 keypoints ``k0`` .. ``k6``, one ``bolt`` without keypoints (box-only in
the rectangle case). Regions are written with the same writers the backend uses, so they are what Label Studio
receives (percent coordinates, ``parentID`` nesting).
"""

from __future__ import annotations

import math
from typing import Any

from backend.edit_cost import EditCost, image_edit_cost, total_edit_cost
from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result

W = H = 200
NAMES = [f"k{i}" for i in range(7)]
SQUARE = [(20.0, 20.0), (120.0, 20.0), (120.0, 120.0), (20.0, 120.0)]  # area 10,000
TRIANGLE = [(140.0, 140.0), (190.0, 140.0), (165.0, 190.0)]
KEYPOINTS = {name: (30.0 + 10 * i, 40.0 + 5 * i) for i, name in enumerate(NAMES)}
# sigma 0.05, area 10,000: OKS falls below 0.5 at 2 * 0.05 * 100 * sqrt(2 ln 2) = 11.77 px
TOLERANCE = 2 * 0.05 * 100 * math.sqrt(2 * math.log(2))


def _coco(*objects: tuple[str, list[tuple[float, float]], dict[str, tuple[float, float]]]) -> dict[str, Any]:
    """A combined COCO file (per-category layout) with one image holding ``objects`` (label, outline, keypoints)."""
    categories = [
        {"id": 1, "name": "gear", "supercategory": "", "keypoints": NAMES, "skeleton": []},
        {"id": 2, "name": "bolt", "supercategory": "", "keypoints": [], "skeleton": []},
    ]
    ids = {c["name"]: c["id"] for c in categories}
    annotations = []
    for n, (label, outline, keypoints) in enumerate(objects, 1):
        names = NAMES if label == "gear" else []
        flat: list[float] = []
        for name in names:
            flat += [*keypoints[name], 2] if name in keypoints else [0, 0, 0]
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
        annotations.append(
            {
                "id": n,
                "image_id": 1,
                "category_id": ids[label],
                "iscrowd": 0,
                "segmentation": [[c for p in outline for c in p]],
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                "area": area,
                "keypoints": flat,
                "num_keypoints": len(keypoints),
            }
        )
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    return {"images": images, "categories": categories, "annotations": annotations}


def _predicted(
    prefix: str,
    label: str,
    outline: list[tuple[float, float]],
    keypoints: dict[str, tuple[float, float]],
    score: float = 0.9,
    rectangle: bool = False,
) -> list[dict[str, Any]]:
    """One object as the backend sends it: polygon, optionally a rectangle nested under it, keypoints nested."""
    regions = [polygon_result(prefix, label, outline, W, H, score=score)]
    if rectangle:
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        box = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        regions.append(rectangle_result(f"{prefix}r", label, *box, W, H, parent_id=prefix, score=score))
    for name, (x, y) in keypoints.items():
        regions.append(keypoint_result(f"{prefix}{name}", name, x, y, W, H, parent_id=prefix, score=score))
    return regions


def _only(cost: EditCost, **expected: int) -> None:
    """Every kind not named is 0."""
    assert {k: v for k, v in cost.actions.items() if v} == expected


def test_a_perfect_pre_annotation_costs_nothing() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS), ("bolt", TRIANGLE, {}))
    regions = _predicted("a", "gear", SQUARE, KEYPOINTS) + _predicted("b", "bolt", TRIANGLE, {})
    cost = image_edit_cost(regions, coco, 1)
    _only(cost)
    assert cost.from_scratch == 4 + 7 + 3
    assert cost.ratio == 0.0
    assert (cost.truth_objects, cost.predicted_objects, cost.matched_objects) == (2, 2, 2)


def test_a_duplicate_with_its_rectangle_and_7_keypoints_is_9_deletions() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS))
    shifted = [(x + 3, y + 2) for x, y in SQUARE]  # IoU 0.95 with the truth: a duplicate, not a better match
    regions = _predicted("a", "gear", SQUARE, KEYPOINTS, 0.95) + _predicted(
        "b", "gear", shifted, KEYPOINTS, 0.8, rectangle=True
    )
    _only(image_edit_cost(regions, coco, 1), delete_object=9)


def test_a_rectangle_under_a_kept_polygon_is_one_deletion() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS))
    cost = image_edit_cost(_predicted("a", "gear", SQUARE, KEYPOINTS, rectangle=True), coco, 1)
    _only(cost, delete_rectangle=1)
    assert cost.ratio == 1 / 11


def test_the_higher_score_is_kept_and_the_lower_deleted() -> None:
    """Greedy by score: the better-scored prediction takes the truth even when the other one fits it better."""
    coco = _coco(("gear", SQUARE, {}))
    loose = [(15.0, 15.0), (125.0, 15.0), (125.0, 125.0), (15.0, 125.0)]  # IoU 0.83: redrawn
    regions = _predicted("a", "gear", loose, {}, 0.9) + _predicted("b", "gear", SQUARE, {}, 0.6)
    _only(image_edit_cost(regions, coco, 1), redraw_shape=4, delete_object=1)


def test_a_missed_object_is_its_vertices_and_labelled_keypoints() -> None:
    two = {"k0": KEYPOINTS["k0"], "k3": KEYPOINTS["k3"]}  # the other 5 are not labelled (v = 0)
    coco = _coco(("gear", SQUARE, two), ("bolt", TRIANGLE, {}))
    cost = image_edit_cost(_predicted("b", "bolt", TRIANGLE, {}), coco, 1)
    _only(cost, draw_object=4 + 2)
    assert cost.from_scratch == 4 + 2 + 3


def test_nothing_predicted_costs_as_much_as_drawing_from_scratch() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS), ("bolt", TRIANGLE, {}))
    cost = image_edit_cost([], coco, 1)
    assert cost.total == cost.from_scratch == 14
    assert cost.ratio == 1.0


def test_a_keypoint_off_by_more_than_its_oks_tolerance_is_moved() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS))
    x, y = KEYPOINTS["k2"]
    near = {**KEYPOINTS, "k2": (x + TOLERANCE - 0.5, y)}
    far = {**KEYPOINTS, "k2": (x, y + TOLERANCE + 0.5)}
    _only(image_edit_cost(_predicted("a", "gear", SQUARE, near), coco, 1))
    _only(image_edit_cost(_predicted("a", "gear", SQUARE, far), coco, 1), move_keypoint=1)


def test_keypoints_the_truth_lacks_are_deleted_and_missing_ones_added() -> None:
    labelled = {name: KEYPOINTS[name] for name in NAMES[:5]}  # k5, k6 not labelled
    coco = _coco(("gear", SQUARE, labelled))
    predicted = {name: KEYPOINTS[name] for name in NAMES[1:]}  # k0 missing; k5, k6 extra
    _only(image_edit_cost(_predicted("a", "gear", SQUARE, predicted), coco, 1), delete_keypoint=2, add_keypoint=1)


def test_a_polygon_below_0_85_iou_is_redrawn_with_the_truth_vertices() -> None:
    coco = _coco(("gear", SQUARE, {}))
    close = [(20.0, 20.0), (120.0, 20.0), (120.0, 112.0), (20.0, 112.0)]  # IoU 0.92
    poor = [(20.0, 20.0), (120.0, 20.0), (120.0, 95.0), (20.0, 95.0)]  # IoU 0.75
    _only(image_edit_cost(_predicted("a", "gear", close, {}), coco, 1))
    _only(image_edit_cost(_predicted("a", "gear", poor, {}), coco, 1), redraw_shape=4)


def test_a_wrong_label_is_deleted_and_the_object_drawn() -> None:
    coco = _coco(("bolt", SQUARE, {}))
    regions = _predicted("a", "gear", SQUARE, {"k0": KEYPOINTS["k0"]})
    _only(image_edit_cost(regions, coco, 1), delete_object=2, draw_object=4)


def test_orphan_regions_are_one_deletion_each() -> None:
    """A keypoint whose parent is not in the result, and a top-level keypoint, are stray regions."""
    coco = _coco(("gear", SQUARE, {}))
    regions = _predicted("a", "gear", SQUARE, {}) + [
        keypoint_result("x", "k0", 10, 10, W, H, parent_id="missing"),
        keypoint_result("y", "k1", 12, 10, W, H),
    ]
    _only(image_edit_cost(regions, coco, 1), delete_object=2)


def test_box_only_labels_cost_two_clicks_and_a_rectangle_alone_is_their_shape() -> None:
    coco = _coco(("bolt", SQUARE, {}), ("bolt", TRIANGLE, {}))
    rectangle = rectangle_result("r", "bolt", 20, 20, 100, 100, W, H, score=0.9)
    cost = image_edit_cost([rectangle], coco, 1, box_only_labels=["bolt"])
    _only(cost, draw_object=2)  # the square matches the rectangle exactly; the triangle's box is drawn
    assert cost.from_scratch == 4


def test_a_rotated_rectangle_is_rasterised_rotated() -> None:
    """A square turned 90 degrees clockwise about its top-left corner covers the square to its left."""
    coco = _coco(("bolt", [(20.0, 20.0), (70.0, 20.0), (70.0, 70.0), (20.0, 70.0)], {}))
    turned = rectangle_result("r", "bolt", 70, 20, 50, 50, W, H, rotation=90.0, score=0.9)
    _only(image_edit_cost([turned], coco, 1, box_only_labels=["bolt"]))


def test_an_rle_truth_is_drawn_with_the_vertices_of_its_outline() -> None:
    from pycocotools import mask as mask_utils

    coco = _coco(("bolt", SQUARE, {}))
    polygon = [c for p in SQUARE for c in p]
    rle = mask_utils.frPyObjects([polygon], H, W)[0]
    coco["annotations"][0]["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    cost = image_edit_cost([], coco, 1)
    assert cost.from_scratch == cost.actions["draw_object"] == 4


def test_costs_add_up_over_images() -> None:
    coco = _coco(("gear", SQUARE, KEYPOINTS))
    a = image_edit_cost(_predicted("a", "gear", SQUARE, KEYPOINTS, rectangle=True), coco, 1)
    b = image_edit_cost([], coco, 1)
    total = total_edit_cost([a, b])
    assert (total.total, total.from_scratch, total.images) == (1 + 11, 22, 2)
    assert total.as_dict()["by_kind"]["draw_object"] == 11
