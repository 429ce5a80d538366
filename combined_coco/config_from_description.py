"""Write a Label Studio labeling config from a short YAML/JSON description of the objects.

Writing the XML by hand means repeating every keypoint's ``category``/``flip``/``skeleton``
attributes (see :mod:`combined_coco.schema`); a description that lists keypoints per category is
shorter and cannot get them inconsistent. The generated XML is parsed back with
:meth:`Schema.from_label_config` before it is returned, so it is always a valid combined config.

.. code-block:: yaml

    title: Draw one polygon per part, then its keypoints nested under it.
    rectangles: true        # also offer RectangleLabels (box-only objects); default false
    occluded: true          # per-keypoint "occluded" choice (COCO v=1); default true
    categories:
      rocker_arm: [pivot, tip_valve_side, tip_pushrod_side]
      valve_bridge: {keypoints: [end_left, bridge_center, end_right], color: "#8E44AD"}
    flip_pairs: [[end_left, end_right]]
    skeleton: [[pivot, tip_valve_side], [pivot, tip_pushrod_side]]

A keypoint name listed under several categories is one keypoint shared by them (e.g. ``center`` of
every gear), which is what the global keypoint layout expects.

Every label (and the ``occluded`` choice) gets an explicit ``hotkey`` from :data:`LABEL_HOTKEYS`:
without one, Label Studio assigns letters itself and hands out keys its tools use (``v`` selects the
Move tool, so a keypoint label on ``v`` creates nothing on click). Keypoint labels carry
``model_index`` (their slot in the global keypoint list): Label Studio's own COCO/YOLO exporters
need it and answer HTTP 500 without it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import yaml

from combined_coco.schema import Schema, SchemaError

# Keys free in Label Studio 1.23's editor. Its tool keys (web/libs/editor hotkey defaults) are
# h o e m k w p r v b, [ ], u (unselect), shift+1/shift+2 (zoom) and shift+r (3-point rectangle).
LABEL_HOTKEYS = tuple("1234567890acdfgijlnqstxy") + tuple(f"shift+{c}" for c in "acdfgijlnqstxy")

_PALETTE = [
    "#2E86DE",
    "#E67E22",
    "#27AE60",
    "#C0392B",
    "#8E44AD",
    "#16A085",
    "#F1C40F",
    "#D35400",
    "#2C3E50",
    "#E84393",
    "#00CEC9",
    "#6C5CE7",
]


def load_description(path: str | Path) -> dict:
    """Read a YAML or JSON description (JSON is YAML, but its errors read better from json)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping with 'categories', got {type(data).__name__}")
    return data


def config_from_description(desc: dict) -> str:
    """The labeling config XML for a description (see module docstring)."""
    categories = _categories(desc.get("categories"))
    keypoints: dict[str, list[str]] = {}  # name -> categories, in first-listed order
    for cat, names in categories:
        for name in names:
            keypoints.setdefault(name, []).append(cat)
    flips = _pairs(desc.get("flip_pairs"), "flip_pairs", keypoints)
    edges = _pairs(desc.get("skeleton"), "skeleton", keypoints)

    view = ET.Element("View")
    if desc.get("title"):
        ET.SubElement(view, "Header", value=str(desc["title"]))
    image = str(desc.get("image", "image"))
    ET.SubElement(view, "Image", name="image", value=f"${image}", zoom="true", zoomControl="true")
    colors = {
        cat: _color(desc["categories"], cat) or _PALETTE[i % len(_PALETTE)] for i, (cat, _) in enumerate(categories)
    }
    hotkeys = iter(LABEL_HOTKEYS)
    polygon = ET.SubElement(
        view, "PolygonLabels", name="polygon", toName="image", strokeWidth="2", pointSize="small", opacity="0.4"
    )
    for cat, _ in categories:
        ET.SubElement(polygon, "Label", value=cat, background=colors[cat], hotkey=_next_hotkey(hotkeys))
    if desc.get("rectangles", False):
        rect = ET.SubElement(view, "RectangleLabels", name="box", toName="image")
        for cat, _ in categories:
            ET.SubElement(rect, "Label", value=cat, background=colors[cat], hotkey=_next_hotkey(hotkeys))
    if keypoints:
        kp_tag = ET.SubElement(view, "KeyPointLabels", name="keypoint", toName="image", strokeWidth="2", smart="false")
        all_cats = [c for c, _ in categories]
        for i, (name, cats) in enumerate(keypoints.items()):
            attrs = {"value": name}
            if cats != all_cats:
                attrs["category"] = ",".join(cats)
            partner = next((b if a == name else a for a, b in flips if name in (a, b)), None)
            if partner:
                attrs["flip"] = partner
            linked = [b for a, b in edges if a == name]
            if linked:
                attrs["skeleton"] = ",".join(linked)
            attrs["background"] = _PALETTE[(i + 3) % len(_PALETTE)]
            attrs["model_index"] = str(i)
            attrs["hotkey"] = _next_hotkey(hotkeys)
            ET.SubElement(kp_tag, "Label", attrs)
        if desc.get("occluded", True):
            choices = ET.SubElement(
                view,
                "Choices",
                name="visibility",
                toName="image",
                perRegion="true",
                whenTagName="keypoint",
                choice="single",
            )
            ET.SubElement(choices, "Choice", value="occluded", hotkey=_next_hotkey(hotkeys))
    ET.indent(view, "  ")
    xml = ET.tostring(view, encoding="unicode") + "\n"
    Schema.from_label_config(xml)  # the contract: what we write, the schema parser reads
    return xml


def _next_hotkey(hotkeys: Iterator[str]) -> str:
    try:
        return next(hotkeys)
    except StopIteration:
        raise SchemaError(
            f"more labels than the {len(LABEL_HOTKEYS)} hotkeys Label Studio leaves free; "
            "split the project or write the XML by hand with your own hotkeys"
        ) from None


def _categories(raw) -> list[tuple[str, list[str]]]:
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(c.get("name"), c) if isinstance(c, dict) else (c, []) for c in raw]
    else:
        raise SchemaError("'categories' must be a mapping (name: [keypoints]) or a list of {name, keypoints}")
    if not items:
        raise SchemaError("'categories' is empty; list at least one object class")
    out = []
    for name, spec in items:
        names = spec.get("keypoints", []) if isinstance(spec, dict) else spec or []
        if not isinstance(name, str) or not name:
            raise SchemaError(f"category without a name: {spec!r}")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise SchemaError(f"category {name!r}: keypoints must be a list of names, got {names!r}")
        if len(set(names)) != len(names):
            raise SchemaError(f"category {name!r} lists a keypoint twice: {names}")
        out.append((name, names))
    if len({n for n, _ in out}) != len(out):
        raise SchemaError(f"a category is listed twice: {[n for n, _ in out]}")
    return out


def _color(raw, cat: str) -> str | None:
    spec = (
        raw.get(cat)
        if isinstance(raw, dict)
        else next((c for c in raw if isinstance(c, dict) and c.get("name") == cat), None)
    )
    return str(spec["color"]) if isinstance(spec, dict) and spec.get("color") else None


def _pairs(raw, key: str, keypoints: dict[str, list[str]]) -> list[tuple[str, str]]:
    out = []
    for pair in raw or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise SchemaError(f"{key}: {pair!r} is not a pair of keypoint names")
        for name in pair:
            if name not in keypoints:
                raise SchemaError(f"{key}: {name!r} is not a keypoint of any category; known: {list(keypoints)}")
        out.append((pair[0], pair[1]))
    return out
