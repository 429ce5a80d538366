"""Every kind of bad input yields a message naming the task and region, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle
from pycocotools import mask as mask_utils

from combined_coco import labelstudio
from combined_coco.converter import ConversionError, convert_export_file, convert_tasks
from combined_coco.labelstudio import keypoint_result, polygon_result, task
from combined_coco.validate import validate_coco

CONFIGS = Path(__file__).resolve().parents[2] / "labeling_configs"
W, H = 960, 643  # the quokka image size

SQUARE = [(100, 100), (300, 100), (300, 300), (100, 300)]


def only_issue(res, region_id: str | None = None):
    (issue,) = res.issues
    assert issue.task_id == 7 and issue.region_id == region_id
    assert str(issue).startswith(f"task 7, region {region_id}: " if region_id else "task 7: ")
    return issue


def test_polygon_under_three_points(convert_one) -> None:
    res = convert_one([polygon_result("p", "animal", [(1, 1), (50, 50)], W, H)])
    assert str(only_issue(res, "p")) == "task 7, region p: polygon has 2 points (needs 3); skipped"
    assert res.coco["annotations"] == [] and len(res.coco["images"]) == 1


def test_self_intersection_is_repaired(convert_one) -> None:
    bowtie = [(100, 100), (300, 300), (300, 100), (100, 300)]
    res = convert_one([polygon_result("p", "animal", bowtie, W, H)])
    issue = only_issue(res, "p")
    assert issue.severity == "warning" and "intersects itself; repaired" in issue.message
    (ann,) = res.coco["annotations"]
    assert len(ann["segmentation"]) == 2 and ann["area"] == pytest.approx(20000)
    assert not validate_coco(res.coco)


def test_out_of_range_is_clipped(convert_one) -> None:
    res = convert_one(
        [
            polygon_result("p", "animal", [(900, 600), (1000, 600), (1000, 700), (900, 700)], W, H),
            keypoint_result("k", "nose", 1000, 650, W, H, parent_id="p"),
        ]
    )
    messages = {i.region_id: i.message for i in res.issues}
    assert "clipped" in messages["p"] and "outside" in messages["k"]
    (ann,) = res.coco["annotations"]
    assert ann["bbox"] == pytest.approx([900, 600, 60, 43])
    assert ann["keypoints"][12:15] == pytest.approx([960, 643, 2])


def test_polygon_entirely_outside_is_skipped(convert_one) -> None:
    res = convert_one([polygon_result("p", "animal", [(1000, 700), (1100, 700), (1100, 800)], W, H)])
    issue = only_issue(res, "p")
    assert issue.severity == "error" and "no area inside the 960x643 image" in issue.message


def test_unknown_labels(convert_one) -> None:
    res = convert_one([polygon_result("p", "robot", SQUARE, W, H)])
    issue = only_issue(res, "p")
    assert "label 'robot' is not in the labeling config" in issue.message and issue.severity == "warning"
    res = convert_one([polygon_result("p", "animal", SQUARE, W, H), keypoint_result("k", "tail", 150, 150, W, H)])
    assert "label 'tail'" in only_issue(res, "k").message


def test_duplicate_region_ids(convert_one) -> None:
    res = convert_one(
        [
            polygon_result("p", "animal", SQUARE, W, H),
            polygon_result("p", "tool", [(400, 400), (500, 400), (500, 500)], W, H),
        ]
    )
    assert "duplicate region id" in only_issue(res, "p").message
    assert len(res.coco["annotations"]) == 1


def test_missing_sizes(generic) -> None:
    result = polygon_result("p", "animal", SQUARE, W, H)
    del result["original_width"], result["original_height"]
    res = convert_tasks([task(7, "a.jpg", [result])], generic)
    assert "original_width/original_height" in only_issue(res).message
    assert res.coco["images"] == []


def test_task_without_regions_kept_only_with_known_size(generic) -> None:
    unlabeled = task(7, "a.jpg", [])
    res = convert_tasks([unlabeled], generic)
    assert res.coco["images"] == [] and "no known image size" in only_issue(res).message
    unlabeled["predictions"] = [{"result": [polygon_result("x", "animal", SQUARE, W, H)]}]
    res = convert_tasks([unlabeled], generic)
    assert res.coco["images"][0]["width"] == W and not res.issues


def test_duplicate_task_ids(generic) -> None:
    res = convert_tasks([task(7, "a.jpg", [polygon_result("p", "animal", SQUARE, W, H)])] * 2, generic)
    assert str(only_issue(res)) == "task 7: duplicate task id; skipped"
    assert len(res.coco["images"]) == 1


def two_annotations(*, ground_truth: bool = False) -> dict:
    """Task 7 annotated twice (ids 7 and 8, same region id in both, as when one starts from the other),
    plus a cancelled annotation 9."""
    t = task(7, "a.jpg", [polygon_result("p", "animal", SQUARE, W, H)])
    t["annotations"].append(
        {
            "id": 8,
            "created_at": "2026-02-01T00:00:00Z",
            "was_cancelled": False,
            "ground_truth": ground_truth,
            "result": [polygon_result("p", "tool", [(0, 0), (1, 0), (0, 1)], W, H)],
        }
    )
    t["annotations"].append(
        {
            "id": 9,
            "created_at": "2026-03-01T00:00:00Z",
            "was_cancelled": True,
            "result": [polygon_result("cancelled", "tool", SQUARE, W, H)],
        }
    )
    return t


def test_every_non_cancelled_annotation_is_an_image_entry(generic) -> None:
    """Issue 12: keeping only the newest annotation lost the real one."""
    res = convert_tasks([two_annotations()], generic)
    images, objects = res.coco["images"], res.coco["annotations"]
    assert [(im["id"], im["ls_task_id"], im["ls_annotation_id"], im["file_name"]) for im in images] == [
        (1, 7, 7, "a.jpg"),
        (2, 7, 8, "a.jpg"),
    ]
    assert [(a["image_id"], a["category_id"]) for a in objects] == [(1, 1)]  # 8 draws only a sliver
    skipped, tiny = res.issues
    assert str(skipped) == "task 7: annotation 9 was cancelled (skipped) by its annotator; not exported"
    assert str(tiny).startswith("task 7, annotation 8, region p: polygon 'tool' has no area")
    assert not validate_coco(res.coco)


def test_ground_truth_first_keeps_the_ground_truth_annotation(generic) -> None:
    res = convert_tasks([two_annotations(ground_truth=True)], generic, annotations="ground_truth_first")
    (image,) = res.coco["images"]
    assert image["ls_annotation_id"] == 8
    assert [str(i) for i in res.issues[:2]] == [
        "task 7: annotation 9 was cancelled (skipped) by its annotator; not exported",
        "task 7: annotation 7 is not marked ground truth and another annotation of this task is; not used",
    ]
    # Without a ground-truth annotation in the task, every annotation is used.
    assert len(convert_tasks([two_annotations()], generic, annotations="ground_truth_first").coco["images"]) == 2


def test_json_min_rows_of_one_task_are_entries(generic) -> None:
    value = dict(polygon_result("p", "animal", SQUARE, W, H)["value"], original_width=W, original_height=H)
    rows = [{"id": 3, "image": "q.jpg", "annotation_id": a, "polygon": [value]} for a in (9, 10, 10)]
    res = convert_tasks(rows, generic)
    assert [im["ls_annotation_id"] for im in res.coco["images"]] == [9, 10]
    assert "task 3: duplicate annotation row; skipped" in [str(i) for i in res.issues]


def test_unreadable_values(convert_one) -> None:
    bad = polygon_result("p", "animal", SQUARE, W, H)
    bad["value"]["points"] = [[1, 2], "x", [3, 4]]
    assert "unreadable polygonlabels value" in only_issue(convert_one([bad]), "p").message
    res = convert_one([{"id": "e", "type": "ellipselabels", "value": {}, "original_width": W, "original_height": H}])
    assert "ellipselabels regions are not converted" in only_issue(res, "e").message


def test_image_names(generic) -> None:
    res = convert_tasks(
        [
            task(1, "/data/upload/3/1a2b3c4d-quokka.jpg", [polygon_result("p", "animal", SQUARE, W, H)]),
            task(2, "/data/upload/3/0000aaaa-shared.jpg", [polygon_result("p", "animal", SQUARE, W, H)]),
            task(3, "/data/upload/3/1111bbbb-shared.jpg", [polygon_result("p", "animal", SQUARE, W, H)]),
            task(4, "/data/local-files/?d=images/a%20b.png", [polygon_result("p", "animal", SQUARE, W, H)]),
        ],
        generic,
    )
    names = [im["file_name"] for im in res.coco["images"]]
    assert names == ["quokka.jpg", "0000aaaa-shared.jpg", "1111bbbb-shared.jpg", "a b.png"]
    assert res.coco["images"][0]["ls_image"] == "/data/upload/3/1a2b3c4d-quokka.jpg"
    assert [im["ls_task_id"] for im in res.coco["images"]] == [1, 2, 3, 4]


def brush_result(rid: str, mask: np.ndarray, label: str = "tool", parent_id: str | None = None) -> dict:
    return labelstudio.brush_result(rid, label, mask2rle(mask), W, H, parent_id=parent_id)


def test_brush_becomes_coco_rle(convert_one) -> None:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[100:200, 300:350] = 255
    brush = brush_result("b", mask)
    res = convert_one([brush, keypoint_result("k", "tip", 320, 150, W, H)])
    assert not res.issues
    (ann,) = res.coco["annotations"]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [H, W]
    assert ann["area"] == 100 * 50 and ann["bbox"] == [300, 100, 50, 100]
    assert ann["num_keypoints"] == 1
    seg = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
    assert (mask_utils.decode(seg) == (mask > 0)).all()
    assert not validate_coco(res.coco)
    broken = dict(brush, value=dict(brush["value"], rle=[1, 2, 3]))
    assert "unreadable brushlabels value" in only_issue(convert_one([broken]), "b").message


def test_linked_brush_strokes_are_one_mask(convert_one) -> None:
    first, second = np.zeros((H, W), dtype=np.uint8), np.zeros((H, W), dtype=np.uint8)
    first[10:20, 10:20] = 255
    second[15:30, 10:20] = 255
    res = convert_one([brush_result("a", first), brush_result("b", second, parent_id="a")])
    (ann,) = res.coco["annotations"]
    assert ann["area"] == 200 and ann["bbox"] == [10, 10, 10, 20]


# ---- file-level input --------------------------------------------------------------------------


@pytest.fixture
def config() -> str:
    return (CONFIGS / "generic.xml").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"id": 1,', "is not valid JSON: Expecting property name enclosed in double quotes at line 1, column 11"),
        ('{"images": [], "annotations": []}', "looks like a COCO file already"),
        ('{"id": 1, "data": {}}', "looks like a single task"),
        ('"tasks"', "holds a JSON str"),
        ("[1, 2]", "list without task objects"),
    ],
)
def test_unusable_files_raise_conversion_error(tmp_path, config: str, content: str, message: str) -> None:
    src = tmp_path / "export.json"
    src.write_text(content)
    with pytest.raises(ConversionError, match=message):
        convert_export_file(src, tmp_path / "out.json", config)
    assert not (tmp_path / "out.json").exists()
    assert list(tmp_path.iterdir()) == [src], "no temporary file left behind"


def test_all_tasks_failing_is_an_error(tmp_path, config: str) -> None:
    result = polygon_result("p", "animal", SQUARE, W, H)
    del result["original_width"]
    (tmp_path / "e.json").write_text(json.dumps([task(5, "a.jpg", [result])]))
    with pytest.raises(ConversionError, match="task 5: its regions have no original_width"):
        convert_export_file(tmp_path / "e.json", tmp_path / "out.json", config)


def test_bad_config_is_a_conversion_error(tmp_path) -> None:
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(ConversionError, match="labeling config: .*no <Image> tag"):
        convert_export_file(tmp_path / "e.json", tmp_path / "out.json", "<View/>")


def test_json_min_export(tmp_path, config: str) -> None:
    rows = [
        {
            "id": 3,
            "image": "/data/upload/1/1a2b3c4d-q.jpg",
            "annotation_id": 9,
            "polygon": [
                dict(
                    polygon_result("p", "animal", SQUARE, W, H)["value"],
                    original_width=W,
                    original_height=H,
                    type="PolygonLabels",
                )
            ],
            "keypoint": [
                dict(
                    keypoint_result("k", "nose", 150, 150, W, H)["value"],
                    original_width=W,
                    original_height=H,
                    type="KeyPointLabels",
                    id="k",
                    parentID=None,
                )
            ],
        }
    ]
    (tmp_path / "min.json").write_text(json.dumps(rows))
    res = convert_export_file(tmp_path / "min.json", tmp_path / "out.json", config)
    (issue,) = res.issues
    assert "JSON_MIN" in issue.message and issue.severity == "warning"
    coco = json.loads((tmp_path / "out.json").read_text())
    assert coco["images"][0]["file_name"] == "q.jpg" and coco["annotations"][0]["num_keypoints"] == 1


def test_issues_travel_inside_the_exported_file(generic) -> None:
    """Export-dialog users never see Label Studio's log, so each issue is also in the file's ``info``."""
    stray = keypoint_result("kp1", "nose", 5, 5, W, H)
    res = convert_tasks([task(7, "/data/upload/1/a.png", [stray])], generic)
    assert res.issues
    listed = res.coco["info"]["conversion_issues"]
    assert listed == [f"{i.severity}: {i}" for i in res.issues]
    assert any("task 7" in line and "kp1" in line for line in listed)


# ---- hostile values (issue 8): each is an issue naming task and region, in bounded time and memory ----


def test_labels_that_are_not_names(convert_one) -> None:
    nested = polygon_result("p", "animal", SQUARE, W, H)
    nested["value"]["polygonlabels"] = [["animal"]]
    assert "label ['animal'] is not a label name" in only_issue(convert_one([nested]), "p").message
    as_dict = keypoint_result("k", "nose", 5, 5, W, H)
    as_dict["value"]["keypointlabels"] = [{"a": 1}]
    assert "is not a label name" in only_issue(convert_one([as_dict]), "k").message


def test_annotations_and_choices_that_are_not_lists(generic) -> None:
    t = task(7, "a.jpg", [polygon_result("p", "animal", SQUARE, W, H)])
    t["annotations"][0]["result"].append({"id": "c", "type": "choices", "value": [1]})
    t["annotations"][0]["result"].append({"id": "d", "type": "choices", "value": {"choices": 5}})
    assert len(convert_tasks([t], generic).coco["annotations"]) == 1
    t["annotations"] = 5
    first, _ = convert_tasks([t], generic).issues
    assert str(first) == "task 7: 'annotations' is 5, not a list; skipped"


@pytest.mark.parametrize("size", [float("inf"), float("nan"), True, 10**400, 1e9, 40_001])
def test_unusable_or_huge_image_sizes(generic, size) -> None:
    result = polygon_result("p", "animal", SQUARE, W, H)
    result["original_width"] = size
    issue = only_issue(convert_tasks([task(7, "a.jpg", [result])], generic))
    assert issue.severity == "error"
    assert (
        "exceeds the limit of 40000 px a side" if size in (10**400, 1e9, 40_001) else "have no original_width"
    ) in issue.message
    assert len(str(issue)) < 200


def test_size_limit_is_a_setting(generic) -> None:
    result = polygon_result("p", "animal", SQUARE, W, H)
    res = convert_tasks([task(7, "a.jpg", [result])], generic, max_image_side=900)
    assert (
        "960x643 (original_width x original_height of its regions) exceeds the limit of 900" in only_issue(res).message
    )
    with pytest.raises(ValueError, match="max_image_side"):
        convert_tasks([], generic, max_image_side=10**6)


@pytest.mark.parametrize("value", [10**400, float("inf"), 1e300])
def test_huge_coordinates(convert_one, value) -> None:
    polygon = polygon_result("p", "animal", SQUARE, W, H)
    polygon["value"]["points"][1][0] = value
    issue = only_issue(convert_one([polygon]), "p")
    assert issue.severity == "error" and len(str(issue)) < 200
    point = keypoint_result("k", "nose", 5, 5, W, H)
    point["value"]["x"] = value
    res = convert_one([point])
    assert all(i.region_id == "k" for i in res.issues) and res.issues


def test_tangled_polygon_is_refused_quickly(convert_one) -> None:
    """3,000 random vertices cross ~40,000 times; repairing them took 50 s. A bowtie is still repaired."""
    import random
    import time

    rng = random.Random(0)
    scribble = [(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(3000)]
    started = time.perf_counter()
    res = convert_one([polygon_result("p", "animal", scribble, W, H)])
    assert time.perf_counter() - started < 5
    assert "crosses itself more than 100 times, too tangled to repair" in only_issue(res, "p").message


def test_brush_declaring_another_size_is_not_decoded(convert_one) -> None:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[1:5, 1:5] = 255
    brush = brush_result("b", mask)
    rle = list(brush["value"]["rle"])
    rle[:4] = [255, 255, 255, 255]  # claims 4 billion values: the decoder would allocate 4 GB first
    brush["value"]["rle"] = rle
    assert "declares 4294967295 values" in only_issue(convert_one([brush]), "b").message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests lists or objects too deeply"),
        ('[{"id": ' + "9" * 5000 + "}]", "holds a number Python will not read: Exceeds the limit (4300 digits)"),
    ],
)
def test_unreadable_numbers_and_nesting_are_conversion_errors(
    tmp_path, config: str, content: str, message: str
) -> None:
    src = tmp_path / "export.json"
    src.write_text(content)
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_export_file(src, tmp_path / "out.json", config)


# ---- images embedded as data: URLs (issue 12) ------------------------------------------------------


def png_data_url(payload: bytes = b"\x89PNG\r\n\x1a\nfake") -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(payload).decode()


def test_data_url_image_gets_a_name_and_stays_out_of_the_file(generic, tmp_path) -> None:
    t = task(7, png_data_url(), [polygon_result("p", "animal", SQUARE, W, H)])
    t["annotations"].append(dict(t["annotations"][0], id=8))  # two entries, one file written once
    res = convert_tasks([t], generic)
    assert [(im["file_name"], im["ls_image"]) for im in res.coco["images"]] == [
        ("task_7.png", "data:image/png;base64,(12 bytes)")
    ] * 2
    assert "base64," + png_data_url()[22:] not in json.dumps(res.coco)
    (written,) = res.write_embedded_images(tmp_path / "images")
    assert written == tmp_path / "images" / "task_7.png"
    assert written.read_bytes() == b"\x89PNG\r\n\x1a\nfake"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:text/plain;base64,aGVsbG8=", "holds 'text/plain', not a known image type"),
        ("data:image/png,%89PNG", "is not base64-encoded (data:image/<type>;base64,...)"),
        ("data:image/png;base64,@@@@", "is not valid base64"),
    ],
)
def test_unusable_data_urls(generic, url: str, message: str) -> None:
    res = convert_tasks([task(7, url, [polygon_result("p", "animal", SQUARE, W, H)])], generic)
    assert str(only_issue(res)) == f"task 7: its data: URL {message}; skipped"


def test_data_url_size_is_bounded_before_decoding(generic, monkeypatch) -> None:
    from combined_coco import data_url

    monkeypatch.setattr(data_url, "MAX_EMBEDDED_BYTES", 11)
    res = convert_tasks([task(7, png_data_url(), [polygon_result("p", "animal", SQUARE, W, H)])], generic)
    assert "holds 12 bytes, more than the limit of 11" in only_issue(res).message


def test_cli_writes_data_url_images(tmp_path, config: str) -> None:
    from combined_coco.cli import main

    (tmp_path / "cfg.xml").write_text(config)
    export = [task(5, png_data_url(), [polygon_result("p", "animal", SQUARE, W, H)])]
    (tmp_path / "e.json").write_text(json.dumps(export))
    assert (
        main(
            [
                "convert",
                str(tmp_path / "e.json"),
                "--config",
                str(tmp_path / "cfg.xml"),
                "-o",
                str(tmp_path / "coco.json"),
                "--images-dir",
                str(tmp_path / "imgs"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "coco.json").read_text())["images"][0]["file_name"] == "task_5.png"
    assert (tmp_path / "imgs" / "task_5.png").read_bytes().startswith(b"\x89PNG")


def test_annotation_ids_that_are_not_ids(generic) -> None:
    value = dict(polygon_result("p", "animal", SQUARE, W, H)["value"], original_width=W, original_height=H)
    res = convert_tasks([{"id": 3, "image": "q.jpg", "annotation_id": [1], "polygon": [value]}], generic)
    assert "ls_annotation_id" not in res.coco["images"][0]
    t = task(7, "a.jpg", [polygon_result("p", "animal", SQUARE, W, H)])
    t["annotations"][0]["id"] = {"x": 1}
    assert "ls_annotation_id" not in convert_tasks([t], generic).coco["images"][0]
