"""Keypoint -> instance rules (docs/FORMAT.md), instance grouping and both keypoint layouts."""

from __future__ import annotations

import pytest

from combined_coco.labelstudio import (
    keypoint_result,
    occluded_result,
    polygon_result,
    rectangle_result,
    relation_result,
)

W, H = 960, 643  # the quokka image size

SQUARE = [(100, 100), (300, 100), (300, 300), (100, 300)]
BIG = [(50, 50), (600, 50), (600, 600), (50, 600)]


def poly(rid: str, pts, label: str = "animal", **kw) -> dict:
    return polygon_result(rid, label, pts, W, H, **kw)


def kp(rid: str, label: str, x: float, y: float, **kw) -> dict:
    return keypoint_result(rid, label, x, y, W, H, **kw)


def keypoint_of(ann: dict, schema, name: str) -> list[float]:
    i = schema.keypoint_index(name)
    return ann["keypoints"][3 * i : 3 * i + 3]


def by_region(coco: dict, rid: str) -> dict:
    return next(a for a in coco["annotations"] if a["ls_region_ids"][0] == rid)


def test_parent_id_wins_over_containment(convert_one, generic) -> None:
    # nose lies inside the small square, but is nested under the big polygon
    res = convert_one([poly("small", SQUARE), poly("big", BIG), kp("k", "nose", 200, 200, parent_id="big")])
    assert not res.issues
    assert keypoint_of(by_region(res.coco, "big"), generic, "nose") == pytest.approx([200, 200, 2], abs=1e-3)
    assert by_region(res.coco, "small")["num_keypoints"] == 0


def test_relation_links_keypoint(convert_one, generic) -> None:
    res = convert_one([poly("small", SQUARE), poly("big", BIG), kp("k", "nose", 200, 200), relation_result("big", "k")])
    assert by_region(res.coco, "big")["num_keypoints"] == 1
    assert by_region(res.coco, "small")["num_keypoints"] == 0


def test_smallest_containing_polygon(convert_one) -> None:
    res = convert_one([poly("big", BIG), poly("small", SQUARE), kp("k", "nose", 200, 200)])
    assert by_region(res.coco, "small")["num_keypoints"] == 1
    assert by_region(res.coco, "big")["num_keypoints"] == 0


def test_containment_only_among_applicable_categories(convert_one) -> None:
    # "tip" is a tool keypoint: the smaller animal polygon around it is not a candidate
    res = convert_one([poly("tool", BIG, "tool"), poly("animal", SQUARE), kp("k", "tip", 200, 200)])
    assert by_region(res.coco, "tool")["num_keypoints"] == 1
    assert by_region(res.coco, "animal")["num_keypoints"] == 0


def test_nearest_within_tolerance(convert_one, generic) -> None:
    # 10 px right of the square; tolerance 2% of the 1156 px diagonal = 23 px
    res = convert_one([poly("sq", SQUARE), kp("k", "nose", 310, 200)])
    assert not res.issues
    assert keypoint_of(by_region(res.coco, "sq"), generic, "nose")[:2] == pytest.approx([310, 200])


def test_too_far_is_reported_not_dropped_or_copied(convert_one) -> None:
    res = convert_one([poly("a", SQUARE), poly("b", [(500, 100), (700, 100), (700, 300)]), kp("k", "nose", 400, 500)])
    assert [a["num_keypoints"] for a in res.coco["annotations"]] == [0, 0]
    (issue,) = res.issues
    assert issue.severity == "error" and issue.task_id == 7 and issue.region_id == "k"
    assert "not inside or near" in str(issue) and str(issue).startswith("task 7, region k: ")


def test_keypoint_nested_under_wrong_category(convert_one) -> None:
    res = convert_one([poly("t", SQUARE, "tool"), kp("k", "nose", 200, 200, parent_id="t")])
    (issue,) = res.issues
    assert issue.region_id == "k" and "does not apply to category 'tool'" in issue.message
    assert res.coco["annotations"][0]["num_keypoints"] == 0


def test_second_keypoint_of_a_name_is_reported(convert_one, generic) -> None:
    res = convert_one(
        [poly("p", SQUARE), kp("k1", "nose", 150, 150, parent_id="p"), kp("k2", "nose", 250, 250, parent_id="p")]
    )
    assert keypoint_of(res.coco["annotations"][0], generic, "nose")[:2] == pytest.approx([150, 150])
    (issue,) = res.issues
    assert issue.region_id == "k2" and "already has keypoint 'nose'" in issue.message


def test_nested_keypoint_beats_earlier_unnested_one(convert_one, generic) -> None:
    res = convert_one([poly("p", SQUARE), kp("loose", "nose", 150, 150), kp("nested", "nose", 250, 250, parent_id="p")])
    assert keypoint_of(res.coco["annotations"][0], generic, "nose")[:2] == pytest.approx([250, 250])
    assert [i.region_id for i in res.issues] == ["loose"]


def test_occluded_choice_gives_v1(convert_one, generic) -> None:
    res = convert_one([poly("p", SQUARE), kp("k", "eye_left", 150, 150, parent_id="p"), occluded_result("k")])
    assert keypoint_of(res.coco["annotations"][0], generic, "eye_left")[2] == 1


def test_parent_pointing_to_keypoint_falls_back_to_position(convert_one) -> None:
    res = convert_one([poly("p", SQUARE), kp("a", "nose", 150, 150), kp("b", "eye_left", 160, 150, parent_id="a")])
    assert res.coco["annotations"][0]["num_keypoints"] == 2
    assert [i.region_id for i in res.issues] == ["b"] and res.issues[0].severity == "warning"


def test_multi_polygon_instance_by_parent_and_relation(convert_one) -> None:
    left = [(100, 100), (200, 100), (200, 200), (100, 200)]
    right = [(300, 100), (400, 100), (400, 200), (300, 200)]
    third = [(500, 100), (600, 100), (600, 200), (500, 200)]
    res = convert_one(
        [
            poly("l", left),
            poly("r", right, parent_id="l"),
            poly("t", third),
            relation_result("r", "t"),
            kp("k", "nose", 350, 150),
        ]
    )
    (ann,) = res.coco["annotations"]
    assert len(ann["segmentation"]) == 3
    assert ann["bbox"] == pytest.approx([100, 100, 500, 100])
    assert ann["area"] == pytest.approx(30000)
    assert ann["num_keypoints"] == 1 and set(ann["ls_region_ids"]) == {"l", "r", "t", "k"}


def test_linked_polygons_of_different_labels_stay_apart(convert_one) -> None:
    res = convert_one([poly("a", SQUARE), poly("t", BIG, "tool", parent_id="a")])
    assert len(res.coco["annotations"]) == 2


def test_rectangle_matching_polygon_is_one_instance(convert_one) -> None:
    res = convert_one(
        [
            poly("p", [(100, 100), (300, 100), (300, 300), (200, 310), (100, 300)]),
            rectangle_result("r", "animal", 98, 99, 204, 212, W, H),
            kp("k", "nose", 150, 150, parent_id="r"),
        ]
    )
    (ann,) = res.coco["annotations"]
    assert ann["bbox"] == pytest.approx([100, 100, 200, 210])  # from the polygon, not the drawn box
    assert ann["num_keypoints"] == 1 and set(ann["ls_region_ids"]) == {"p", "r", "k"}


def test_rectangle_linked_by_parent_merges_even_if_loose(convert_one) -> None:
    res = convert_one([poly("p", SQUARE), rectangle_result("r", "animal", 50, 50, 400, 400, W, H, parent_id="p")])
    assert len(res.coco["annotations"]) == 1


def test_rectangle_far_from_polygon_is_its_own_object(convert_one) -> None:
    res = convert_one([poly("p", SQUARE), rectangle_result("r", "animal", 400, 300, 100, 80, W, H)])
    rect = by_region(res.coco, "r")
    assert rect["bbox"] == pytest.approx([400, 300, 100, 80])
    assert rect["segmentation"] == [pytest.approx([400, 300, 500, 300, 500, 380, 400, 380])]
    assert rect["area"] == pytest.approx(8000)


def test_rotated_rectangle_becomes_its_corners() -> None:
    from combined_coco.labelstudio import _rectangle

    corners = _rectangle({"x": 10.0, "y": 10.0, "width": 10.0, "height": 10.0, "rotation": 90}, 1000, 1000)
    assert [c for p in corners for c in p] == pytest.approx([100, 100, 100, 200, 0, 200, 0, 100])


def test_layouts(convert_one, generic) -> None:
    results = [
        poly("a", SQUARE),
        kp("k1", "nose", 150, 150),
        poly("t", [(400, 400), (500, 400), (500, 500)], "tool"),
        kp("k2", "tip", 480, 420),
    ]
    glob = convert_one(results).coco
    per = convert_one(results, layout="per_category").coco
    assert glob["info"]["keypoint_layout"] == "global" and per["info"]["keypoint_layout"] == "per_category"
    assert all(len(a["keypoints"]) == 3 * generic.num_keypoints for a in glob["annotations"])
    animal, tool = per["annotations"]
    assert len(animal["keypoints"]) == 3 * 7 and animal["keypoints"][12:15] == pytest.approx([150, 150, 2])
    assert tool["keypoints"] == pytest.approx([0, 0, 0, 480, 420, 2])
    assert per["categories"][1]["keypoints"] == ["handle_end", "tip"]
    assert per["categories"][1]["skeleton"] == [[1, 2]]


def test_index_gives_the_same_placement_as_testing_every_object(convert_one, monkeypatch) -> None:
    """Tasks with many objects narrow candidates through an R-tree of their boxes (issue 12): the
    placement must equal the one from testing every object, nested boxes, ties and near misses included."""
    import random

    from combined_coco import association

    rng = random.Random(3)
    results = []
    for n in range(60):
        x, y = rng.uniform(0, 900), rng.uniform(0, 600)
        w, h = rng.choice([(40, 30), (200, 150), (5, 5)])
        results.append(poly(f"p{n}", [(x, y), (x + w, y), (x + w, y + h), (x, y + h)], rng.choice(["animal", "tool"])))
    names = ["nose", "eye_left", "tip", "handle_end"]
    for k in range(300):
        results.append(kp(f"k{k}", rng.choice(names), rng.uniform(0, W), rng.uniform(0, H)))
    indexed = convert_one(results)
    monkeypatch.setattr(association, "_INDEX_FROM", 10**9)
    every = convert_one(results)
    assert indexed.coco["annotations"] == every.coco["annotations"]
    assert [str(i) for i in indexed.issues] == [str(i) for i in every.issues]
    assert sum(a["num_keypoints"] for a in every.coco["annotations"]) > 50  # the case is not trivial


def test_dense_task_places_keypoints_in_about_linear_time(generic) -> None:
    """5,000 polygons with 5,000 free keypoints took 5 s of CPU (every point against every polygon;
    20,000 took 155 s); through the index it is a fraction of a second."""
    import time

    from benchmarks.export_speed import make_export
    from combined_coco.converter import convert_tasks

    tasks = make_export(1, 5000, generic, dense=True)
    started = time.process_time()
    res = convert_tasks(tasks, generic)
    assert time.process_time() - started < 2.5
    assert sum(a["num_keypoints"] for a in res.coco["annotations"]) == 5000 and not res.issues
