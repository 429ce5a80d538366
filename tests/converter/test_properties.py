"""Property-based tests over generated Label Studio exports."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from combined_coco.converter import convert_tasks
from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result, relation_result, task
from combined_coco.validate import validate_coco

W, H = 960, 643
COLS, ROWS = 4, 3  # grid cells of 240 x 214 px; one object per cell keeps objects disjoint
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def disjoint_objects(draw, schema) -> tuple[list[dict], dict[str, str]]:
    """Rectangles drawn as polygons in distinct grid cells, keypoints strictly inside their own
    rectangle, some nested via parentID; returns results and keypoint id -> polygon id."""
    cells = draw(st.lists(st.integers(0, COLS * ROWS - 1), min_size=1, max_size=6, unique=True))
    results, owner = [], {}
    for n, cell in enumerate(cells):
        cx, cy = (cell % COLS) * 240, (cell // COLS) * 214
        x0, y0 = cx + draw(st.integers(1, 60)), cy + draw(st.integers(1, 60))
        x1, y1 = x0 + draw(st.integers(40, 170)), y0 + draw(st.integers(40, 145))
        category = draw(st.sampled_from(schema.categories))
        pid = f"p{n}"
        extra = draw(st.integers(0, 3))  # extra collinear vertices on the top edge
        top = [(x0 + (x1 - x0) * (i + 1) / (extra + 1), y0) for i in range(extra)]
        results.append(polygon_result(pid, category.name, [(x0, y0), *top, (x1, y0), (x1, y1), (x0, y1)], W, H))
        names = draw(st.lists(st.sampled_from(category.keypoints), unique=True))
        for k, name in enumerate(names):
            kx = draw(st.floats(x0 + 0.5, x1 - 0.5, allow_nan=False))
            ky = draw(st.floats(y0 + 0.5, y1 - 0.5, allow_nan=False))
            kid = f"k{n}_{k}"
            nested = draw(st.booleans())
            results.append(keypoint_result(kid, name, kx, ky, W, H, parent_id=pid if nested else None))
            owner[kid] = pid
    return draw(st.permutations(results)), owner


@SETTINGS
@given(data=st.data())
def test_each_keypoint_lands_on_its_own_object(generic, data) -> None:
    results, owner = data.draw(disjoint_objects(generic))
    res = convert_tasks([task(1, "a.jpg", results)], generic)
    assert res.issues == []
    coco = res.coco
    for ann in coco["annotations"]:
        pid, *kids = ann["ls_region_ids"]
        assert all(owner[k] == pid for k in kids)
        assert ann["num_keypoints"] == len(kids)
    assert sum(a["num_keypoints"] for a in coco["annotations"]) == len(owner)
    check_invariants(coco)


coords = st.floats(-50, 1050, allow_nan=False)


@st.composite
def messy_results(draw, schema) -> list[dict]:
    """Anything a user could draw: overlapping, self-intersecting, out-of-image polygons, rotated and
    degenerate rectangles, unknown labels, keypoints anywhere with random nesting and relations."""
    labels = list(schema.category_names) + ["unknown"]
    kp_labels = list(schema.keypoint_names) + ["unknown"]
    results = []
    n_poly = draw(st.integers(0, 4))
    for n in range(n_poly):
        pts = draw(st.lists(st.tuples(coords, coords), min_size=3, max_size=8))
        parent = draw(st.sampled_from([None] + [f"p{i}" for i in range(n_poly)]))
        results.append(polygon_result(f"p{n}", draw(st.sampled_from(labels)), pts, W, H, parent_id=parent))
    for n in range(draw(st.integers(0, 2))):
        x, y, w, h = draw(coords), draw(coords), draw(st.floats(0, 400)), draw(st.floats(0, 400))
        results.append(
            rectangle_result(
                f"r{n}",
                draw(st.sampled_from(labels)),
                x,
                y,
                w,
                h,
                W,
                H,
                rotation=draw(st.sampled_from([0.0, 30.0, 90.0])),
                parent_id=draw(st.sampled_from([None, "p0"])),
            )
        )
    shape_ids = [r["id"] for r in results]
    for k in range(draw(st.integers(0, 8))):
        parent = draw(st.sampled_from([None, "nowhere"] + shape_ids))
        if shape_ids and draw(st.booleans()):
            results.append(relation_result(f"k{k}", draw(st.sampled_from(shape_ids))))
        results.append(
            keypoint_result(
                f"k{k}", draw(st.sampled_from(kp_labels)), draw(coords), draw(coords), W, H, parent_id=parent
            )
        )
    return results


@SETTINGS
@given(data=st.data(), layout=st.sampled_from(["global", "per_category"]))
def test_messy_input_gives_valid_output_and_accounts_for_every_keypoint(generic, data, layout) -> None:
    results = data.draw(messy_results(generic))
    res = convert_tasks([task(1, "a.jpg", results)], generic, layout=layout)
    coco = res.coco
    check_invariants(coco)
    placed = {rid for a in coco["annotations"] for rid in a["ls_region_ids"]}
    reported = {i.region_id for i in res.issues if i.severity == "error" or "not in the labeling config" in i.message}
    keypoints = [r["id"] for r in results if r.get("type") == "keypointlabels"]
    assert sum(a["num_keypoints"] for a in coco["annotations"]) <= len(keypoints)
    for kid in keypoints:
        assert kid in placed or kid in reported, f"keypoint {kid} dropped silently"
        assert not (
            kid in placed and kid in reported and any(i.region_id == kid and i.severity == "error" for i in res.issues)
        )
    assert sum(kid in a["ls_region_ids"] for a in coco["annotations"] for kid in keypoints) <= len(keypoints)


def check_invariants(coco: dict) -> None:
    assert validate_coco(coco) == []
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert [im["id"] for im in coco["images"]] == list(range(1, len(coco["images"]) + 1))
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        for poly in ann["segmentation"]:
            assert all(x - 1e-6 <= px <= x + w + 1e-6 for px in poly[0::2])
            assert all(y - 1e-6 <= py <= y + h + 1e-6 for py in poly[1::2])
        assert 0 < ann["area"] <= w * h * (1 + 1e-9) + 1e-6
