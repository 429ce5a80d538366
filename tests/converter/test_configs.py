"""The shipped labeling configs parse into the intended schemas; bad configs fail with clear messages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from label_studio_sdk.label_interface import LabelInterface

from combined_coco.cli import main
from combined_coco.config_from_description import config_from_description
from combined_coco.schema import Schema, SchemaError

CONFIGS = Path(__file__).resolve().parents[2] / "labeling_configs"


@pytest.mark.parametrize("name", ["generic", "diesel_engine", "planetary_gearbox"])
def test_shipped_configs_parse_and_label_studio_reads_them(name: str) -> None:
    xml = (CONFIGS / f"{name}.xml").read_text()
    schema = Schema.from_label_config(xml)
    assert schema.controls is not None
    assert schema.controls.polygon == "polygon" and schema.controls.keypoint == "keypoint"
    assert schema.controls.visibility == "visibility"
    assert all(c.keypoints for c in schema.categories), "every category has meaningful keypoints"
    assert {c.tag for c in LabelInterface(xml).controls} >= {"PolygonLabels", "KeyPointLabels", "Choices"}


def test_diesel_engine_schema() -> None:
    schema = Schema.from_label_config((CONFIGS / "diesel_engine.xml").read_text())
    assert schema.category("rocker_arm").keypoints == ("pivot", "tip_valve_side", "tip_pushrod_side")
    names = schema.keypoint_names
    flips = {(names[a], names[b]) for a, b in schema.flip_pairs}
    assert ("bridge_end_left", "bridge_end_right") in flips
    assert (names.index("pivot"), names.index("tip_valve_side")) in schema.skeleton


def test_planetary_gearbox_gears_share_keypoints() -> None:
    schema = Schema.from_label_config((CONFIGS / "planetary_gearbox.xml").read_text())
    for gear in ("sun_gear", "planet_gear", "ring_gear"):
        assert schema.category(gear).keypoints == ("center", "tooth_ref")
    assert schema.keypoint_names.count("center") == 1


@pytest.mark.parametrize("name", ["diesel_engine", "planetary_gearbox", "scenes"])
def test_committed_xml_is_what_make_config_writes(name: str, tmp_path) -> None:
    out = tmp_path / "config.xml"
    assert main(["make-config", str(CONFIGS / f"{name}.yaml"), "-o", str(out)]) == 0
    assert out.read_text() == (CONFIGS / f"{name}.xml").read_text()


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ({"categories": {}}, "'categories' is empty"),
        ({"categories": {"gear": ["center", "center"]}}, "lists a keypoint twice"),
        ({"categories": {"gear": ["center"]}, "flip_pairs": [["center", "rim"]]}, "'rim' is not a keypoint"),
        ({"categories": {"gear": ["center"]}, "skeleton": [["center"]]}, "not a pair"),
        ({"categories": "gear"}, "must be a mapping"),
        ({"categories": {"a": ["l", "r", "m"]}, "flip_pairs": [["l", "r"], ["l", "m"]]}, "flip partner of both"),
    ],
)
def test_bad_descriptions_say_what_is_wrong(desc: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        config_from_description(desc)


def test_make_config_reports_yaml_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("categories: [gear\n")
    assert main(["make-config", str(bad)]) == 1
    assert "s.yaml" in capsys.readouterr().err


def test_make_config_list_form_and_shared_keypoints() -> None:
    xml = config_from_description(
        yaml.safe_load("""
categories:
  - {name: sun, keypoints: [center], color: "#000000"}
  - {name: planet, keypoints: [center, tooth]}
occluded: false
""")
    )
    schema = Schema.from_label_config(xml)
    assert schema.category("sun").keypoints == ("center",)
    assert schema.category("planet").keypoints == ("center", "tooth")
    assert schema.controls is not None
    assert schema.controls.visibility is None and 'background="#000000"' in xml


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            "<View><Image name='i' value='$image'/><KeyPointLabels name='k' toName='i'><Label value='a'/>"
            "</KeyPointLabels></View>",
            "needs <PolygonLabels>",
        ),
        (
            "<View><Image name='i' value='$image'/><PolygonLabels name='p' toName='i'><Label value='gear'/>"
            "</PolygonLabels><KeyPointLabels name='k' toName='i'><Label value='c' category='shaft'/>"
            "</KeyPointLabels></View>",
            'category="shaft"',
        ),
        ("<View><Image", "not valid XML"),
    ],
)
def test_bad_labeling_configs(xml: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Schema.from_label_config(xml)


# Label Studio 1.23's editor tool keys (web/libs/editor hotkey defaults): a label on one of them
# switches the tool instead of (only) selecting the label.
LABEL_STUDIO_TOOL_KEYS = {
    "h",
    "o",
    "e",
    "m",
    "k",
    "w",
    "p",
    "r",
    "v",
    "b",
    "u",
    "[",
    "]",
    "shift+1",
    "shift+2",
    "shift+r",
}


@pytest.mark.parametrize("name", ["generic", "diesel_engine", "planetary_gearbox"])
def test_shipped_configs_have_free_hotkeys_model_index_and_the_ctrl_click_hint(name: str) -> None:
    root = ET.fromstring((CONFIGS / f"{name}.xml").read_text())
    keyed = [el for el in root.iter() if el.tag in ("Label", "Choice")]
    hotkeys = [el.get("hotkey") for el in keyed]
    assert None not in hotkeys, "a label without hotkey gets one from Label Studio, possibly a tool key"
    assert len(set(hotkeys)) == len(hotkeys), hotkeys
    assert not set(hotkeys) & LABEL_STUDIO_TOOL_KEYS
    schema = Schema.from_label_config((CONFIGS / f"{name}.xml").read_text())
    control, header = root.find("KeyPointLabels"), root.find("Header")
    assert control is not None and header is not None
    keypoint_labels = control.findall("Label")
    assert (
        [int(lab.get("model_index", "")) for lab in keypoint_labels]
        == [schema.keypoint_index(lab.get("value", "")) for lab in keypoint_labels]
        == list(range(schema.num_keypoints))
    )
    assert "Ctrl+click (Cmd+click on a Mac)" in header.get("value", "")


def test_make_config_runs_out_of_hotkeys_with_a_clear_message() -> None:
    many = {"categories": {f"part{i}": [f"point{i}"] for i in range(20)}, "rectangles": True}
    with pytest.raises(SchemaError, match="more labels than the 38 hotkeys"):
        config_from_description(many)
