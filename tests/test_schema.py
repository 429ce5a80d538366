"""The schema parsed from a labeling config is the one source of keypoint order, flips and skeleton."""

import json
from pathlib import Path
from typing import Literal

import pytest

from combined_coco.schema import Schema, SchemaError

CONFIGS = Path(__file__).resolve().parents[1] / "labeling_configs"


def generic() -> Schema:
    return Schema.from_label_config((CONFIGS / "generic.xml").read_text())


def test_generic_config_gives_categories_keypoints_and_controls() -> None:
    s = generic()
    assert s.category_names == ("animal", "tool")
    assert [c.id for c in s.categories] == [1, 2]
    assert s.keypoint_names[:2] == ("ear_tip_left", "ear_tip_right")
    assert s.category("tool").keypoints == ("handle_end", "tip")
    assert len(s.category("animal").keypoints) == 7
    assert s.controls is not None
    assert (s.controls.polygon, s.controls.keypoint, s.controls.rectangle) == ("polygon", "keypoint", "box")
    assert s.controls.visibility == "visibility"
    assert s.controls.image_value == "image"


def test_flip_indices_swap_left_and_right_only() -> None:
    s = generic()
    perm = s.flip_indices
    names = s.keypoint_names
    flipped = [names[i] for i in perm]
    assert flipped[names.index("eye_left")] == "eye_right"
    assert flipped[names.index("eye_right")] == "eye_left"
    assert flipped[names.index("nose")] == "nose"
    assert sorted(perm) == list(range(len(names)))


@pytest.mark.parametrize("layout", ["global", "per_category"])
def test_schema_survives_coco_categories(layout: Literal["global", "per_category"]) -> None:
    s = generic()
    back = Schema.from_coco_categories(s.to_coco_categories(layout))
    assert back.keypoint_names == s.keypoint_names
    assert back.categories == s.categories
    assert back.flip_pairs == s.flip_pairs
    assert back.skeleton == s.skeleton


def test_coco_categories_layouts() -> None:
    cats = generic().to_coco_categories("global")
    assert cats[0]["keypoints"] == cats[1]["keypoints"]  # one global K for torchvision/detectron2
    assert cats[1]["applicable_keypoints"] == ["handle_end", "tip"]
    per = generic().to_coco_categories("per_category")
    assert per[1]["keypoints"] == ["handle_end", "tip"]
    assert per[1]["skeleton"] == [[1, 2]]


def test_dict_round_trip_keeps_controls() -> None:
    s = generic()
    assert Schema.from_dict(s.to_dict()) == s
    back = Schema.from_dict(json.loads(json.dumps(s.to_dict()))).controls
    assert back == s.controls
    assert back is not None and s.controls is not None
    assert back.__dict__ == s.controls.__dict__  # labels per control too (not compared)
    assert s.controls.rectangle_labels == ("animal", "tool") and "nose" in s.controls.keypoint_labels


BAD = {
    "unknown category": (
        '<KeyPointLabels name="k" toName="i"><Label value="a" category="car"/></KeyPointLabels>',
        "car",
    ),
    "unknown flip": ('<KeyPointLabels name="k" toName="i"><Label value="a" flip="zz"/></KeyPointLabels>', "zz"),
    "repeated keypoint": (
        '<KeyPointLabels name="k" toName="i"><Label value="a"/><Label value="a"/></KeyPointLabels>',
        "repeats",
    ),
    "ambiguous flip": (
        '<KeyPointLabels name="k" toName="i"><Label value="a" flip="b"/><Label value="b"/>'
        '<Label value="c" flip="a"/></KeyPointLabels>',
        "flip partner",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_name_the_offending_label(case: str) -> None:
    body, needle = BAD[case]
    xml = (
        '<View><Image name="i" value="$image"/>'
        '<PolygonLabels name="p" toName="i"><Label value="part"/></PolygonLabels>' + body + "</View>"
    )
    with pytest.raises(SchemaError, match=needle):
        Schema.from_label_config(xml)


def test_config_without_instances_is_refused() -> None:
    with pytest.raises(SchemaError, match="PolygonLabels"):
        Schema.from_label_config('<View><Image name="i" value="$image"/></View>')
    with pytest.raises(SchemaError, match="not valid XML"):
        Schema.from_label_config("<View>")
