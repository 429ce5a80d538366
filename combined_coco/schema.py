"""The one keypoint/category schema of a project, parsed once from its Label Studio labeling config.

Everything downstream (converter, export plugin, augmentation, model, ML backend) receives a
:class:`Schema` and never re-derives categories or keypoint order on its own, so the order of
keypoints in an exported file, the flip permutation used by augmentation and the keypoint head of
the model cannot drift apart.

The labeling config carries the schema in plain attributes that Label Studio accepts and ignores:

.. code-block:: xml

    <KeyPointLabels name="keypoint" toName="image">
      <Label value="eye_left"  category="quokka" flip="eye_right" skeleton="nose"/>
      <Label value="eye_right" category="quokka" flip="eye_left"  skeleton="nose"/>
      <Label value="nose"      category="quokka"/>
    </KeyPointLabels>

- ``category``: comma-separated category (polygon label) names the keypoint belongs to; absent means
  every category.
- ``flip``: the keypoint that takes this one's place after a horizontal flip (declare it on one or
  both sides; it is made symmetric).
- ``skeleton``: comma-separated keypoint names this one is connected to.

Attribute names must not end in ``name``: Label Studio's uniqueness check matches ``name="..."``.

The global keypoint list K is the order of ``Label`` tags in ``KeyPointLabels``. Category ids are
1..N in the order of the polygon labels (then labels only found on rectangles/brushes).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

KeypointLayout = Literal["global", "per_category"]

# Label Studio control tags this project reads, by role; a result's ``type`` is its control's tag, lowercased.
INSTANCE_TAGS: dict[str, Literal["polygon", "rectangle", "brush"]] = {
    "polygonlabels": "polygon",
    "rectanglelabels": "rectangle",
    "brushlabels": "brush",
}
KEYPOINT_TAG = "keypointlabels"
OCCLUDED_CHOICE = "occluded"  # the per-region Choices value that makes a keypoint COCO v=1


class SchemaError(ValueError):
    """The labeling config (or COCO categories) cannot describe a combined polygon+keypoint schema."""


@dataclass(frozen=True)
class Category:
    """One object class. ``keypoints`` are the names that apply to it, in global K order."""

    id: int
    name: str
    keypoints: tuple[str, ...]


@dataclass(frozen=True)
class Controls:
    """Names of the Label Studio tags a project uses, and the labels of each, needed to read results
    and write predictions: a region must carry a label of its own control (a class may be a polygon
    label and not a rectangle label), which the merged categories no longer tell.

    The labels do not take part in equality: which control offers a class does not change what a
    model learns, so a checkpoint saved before they were recorded still matches its project.
    """

    image: str
    image_value: str  # data key of the image, e.g. "image" for value="$image"
    polygon: str | None = None
    keypoint: str | None = None
    rectangle: str | None = None
    brush: str | None = None
    visibility: str | None = None  # per-region Choices with an "occluded" choice
    polygon_labels: tuple[str, ...] = field(default=(), compare=False)
    rectangle_labels: tuple[str, ...] = field(default=(), compare=False)
    brush_labels: tuple[str, ...] = field(default=(), compare=False)
    keypoint_labels: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> Controls:
        """Read :meth:`Schema.to_dict`'s form back (JSON turned the label tuples into lists)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)


@dataclass(frozen=True)
class Schema:
    categories: tuple[Category, ...]
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based indices into keypoint_names
    flip_pairs: tuple[tuple[int, int], ...] = ()  # 0-based indices into keypoint_names
    controls: Controls | None = None
    _by_name: dict[str, Category] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        if ids != list(range(1, len(ids) + 1)):
            raise SchemaError(f"category ids must be 1..N in order, got {ids}")
        if len(set(self.keypoint_names)) != len(self.keypoint_names):
            raise SchemaError(f"duplicate keypoint names in {list(self.keypoint_names)}")
        self._by_name.update({c.name: c for c in self.categories})

    # ---- lookups ---------------------------------------------------------------------------
    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def category(self, name: str) -> Category:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"unknown label {name!r}; the labeling config defines {list(self._by_name)}") from None

    def has_category(self, name: str) -> bool:
        return name in self._by_name

    def category_by_id(self, category_id: int) -> Category:
        return self.categories[category_id - 1]

    def keypoint_index(self, name: str) -> int:
        return self.keypoint_names.index(name)

    @property
    def flip_indices(self) -> list[int]:
        """Permutation of K applied to keypoints after a horizontal flip (detectron2's hflip indices)."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    # ---- COCO ------------------------------------------------------------------------------
    def to_coco_categories(self, layout: KeypointLayout = "global") -> list[dict]:
        """COCO ``categories``: ``keypoints`` and 1-based ``skeleton`` per the layout, plus
        ``applicable_keypoints`` and ``flip_pairs`` (by name) so the schema survives the file."""
        names = self.keypoint_names
        flip = [[names[a], names[b]] for a, b in self.flip_pairs]
        out = []
        for c in self.categories:
            listed = names if layout == "global" else c.keypoints
            pos = {n: i + 1 for i, n in enumerate(listed)}
            skeleton = [
                [pos[names[a]], pos[names[b]]]
                for a, b in self.skeleton
                if names[a] in pos
                and names[b] in pos
                and (layout == "global" or (names[a] in c.keypoints and names[b] in c.keypoints))
            ]
            out.append(
                {
                    "id": c.id,
                    "name": c.name,
                    "supercategory": "object",
                    "keypoints": list(listed),
                    "skeleton": skeleton,
                    "applicable_keypoints": list(c.keypoints),
                    "flip_pairs": [p for p in flip if layout == "global" or set(p) <= set(c.keypoints)],
                }
            )
        return out

    @classmethod
    def from_coco_categories(cls, categories: Sequence[dict]) -> Schema:
        """Rebuild the schema from a combined COCO file (either layout). K is the ordered union."""
        cats = sorted(categories, key=lambda c: c["id"])
        names: list[str] = []
        for c in cats:
            for n in c.get("keypoints") or []:
                if n not in names:
                    names.append(n)
        skeleton: set[tuple[int, int]] = set()
        flips: set[tuple[int, int]] = set()
        categories_out = []
        for i, c in enumerate(cats, start=1):
            if c["id"] != i:
                raise SchemaError(f"category ids must be 1..N, got {[x['id'] for x in cats]}")
            listed = c.get("keypoints") or []
            own = c.get("applicable_keypoints", listed)
            for a, b in c.get("skeleton") or []:
                skeleton.add(_ordered(names.index(listed[a - 1]), names.index(listed[b - 1])))
            for a, b in c.get("flip_pairs") or []:
                flips.add(_ordered(names.index(a), names.index(b)))
            categories_out.append(Category(i, c["name"], tuple(n for n in names if n in own)))
        return cls(tuple(categories_out), tuple(names), tuple(sorted(skeleton)), tuple(sorted(flips)))

    def to_dict(self) -> dict:
        """Plain-JSON form, stored in model checkpoints and job payloads."""
        return {
            "categories": self.to_coco_categories("global"),
            "controls": None
            if self.controls is None
            else {k: list(v) if isinstance(v, tuple) else v for k, v in self.controls.__dict__.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        schema = cls.from_coco_categories(data["categories"])
        controls = Controls.from_dict(data["controls"]) if data.get("controls") else None
        return cls(schema.categories, schema.keypoint_names, schema.skeleton, schema.flip_pairs, controls)

    # ---- labeling config -------------------------------------------------------------------
    @classmethod
    def from_label_config(cls, config: str) -> Schema:
        """Parse a Label Studio labeling config (XML string)."""
        try:
            root = ET.fromstring(config)
        except ET.ParseError as exc:
            raise SchemaError(f"labeling config is not valid XML: {exc}") from None
        images = {el.get("name", ""): el for el in root.iter() if el.tag.lower() == "image"}
        if not images:
            raise SchemaError("labeling config has no <Image> tag")

        controls: dict[str, Any] = {}  # Controls fields: role -> control name, "<role>_labels" -> its labels
        label_order: list[str] = []
        to_names: set[str] = set()
        kp_labels: list[ET.Element] = []
        for el in root.iter():
            tag = el.tag.lower()
            role = INSTANCE_TAGS.get(tag) or ("keypoint" if tag == KEYPOINT_TAG else None)
            if role is None:
                if tag == "choices" and _is_visibility_choices(el):
                    controls.setdefault("visibility", el.get("name", ""))
                continue
            if role in controls:
                raise SchemaError(
                    f"labeling config has two <{el.tag}> tags ({controls[role]!r}, {el.get('name')!r});"
                    " use one control per role"
                )
            controls[role] = el.get("name", "")
            to_names.add(el.get("toName", ""))
            labels = [lab for lab in el if lab.tag.lower() == "label"]
            controls[f"{role}_labels"] = tuple(lab.get("value", "") for lab in labels)
            if role == "keypoint":
                kp_labels = labels
            else:
                for lab in labels:
                    value = lab.get("value", "")
                    if value not in label_order:
                        label_order.append(value)
        if not label_order:
            raise SchemaError(
                "labeling config needs <PolygonLabels> (or RectangleLabels/BrushLabels) with at least one <Label>"
            )
        image_name = _pick_image(images, to_names)
        image_value = images[image_name].get("value", "$image").lstrip("$")

        kp_names = [lab.get("value", "") for lab in kp_labels]
        if len(set(kp_names)) != len(kp_names):
            raise SchemaError(f"<KeyPointLabels> repeats a label value: {kp_names}")
        applies: dict[str, set[str]] = {c: set() for c in label_order}
        skeleton: set[tuple[int, int]] = set()
        flips: set[tuple[int, int]] = set()
        for i, lab in enumerate(kp_labels):
            name = kp_names[i]
            targets = _split(lab.get("category")) or label_order
            for cat in targets:
                if cat not in applies:
                    raise SchemaError(
                        f'keypoint label "{name}" has category="{cat}", which is not a label of the'
                        f" polygon/rectangle control; known: {label_order}"
                    )
                applies[cat].add(name)
            for other in _split(lab.get("skeleton")):
                skeleton.add(_ordered(i, _kp_ref(kp_names, other, name, "skeleton")))
            if lab.get("flip"):
                j = _kp_ref(kp_names, lab.get("flip", ""), name, "flip")
                if j != i:
                    flips.add(_ordered(i, j))
        _check_flip_pairs(flips, kp_names)
        categories = tuple(
            Category(i, c, tuple(n for n in kp_names if n in applies[c])) for i, c in enumerate(label_order, 1)
        )
        return cls(
            categories,
            tuple(kp_names),
            tuple(sorted(skeleton)),
            tuple(sorted(flips)),
            Controls(image=image_name, image_value=image_value, **controls),
        )


def _is_visibility_choices(el: ET.Element) -> bool:
    return el.get("perRegion", "").lower() == "true" and any(
        ch.get("value", "").lower() == OCCLUDED_CHOICE for ch in el if ch.tag.lower() == "choice"
    )


def _pick_image(images: dict[str, ET.Element], to_names: set[str]) -> str:
    used = [n for n in images if n in to_names]
    if len(used) > 1:
        raise SchemaError(f"controls point at several images {used}; a combined config labels one <Image>")
    return used[0] if used else next(iter(images))


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _ordered(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)


def _kp_ref(names: list[str], ref: str, owner: str, attr: str) -> int:
    try:
        return names.index(ref)
    except ValueError:
        raise SchemaError(
            f'keypoint label "{owner}" has {attr}="{ref}", which is not a <KeyPointLabels> label; known: {names}'
        ) from None


def _check_flip_pairs(flips: Iterable[tuple[int, int]], names: list[str]) -> None:
    seen: dict[int, int] = {}
    for a, b in flips:
        for x, y in ((a, b), (b, a)):
            if x in seen and seen[x] != y:
                raise SchemaError(
                    f'keypoint "{names[x]}" is declared the flip partner of both "{names[seen[x]]}" and "{names[y]}"'
                )
            seen[x] = y
