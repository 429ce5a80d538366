"""The "COCO combined" format inside a real Label Studio: listed, enabled only where it fits, and exported
through every route Label Studio offers (Export dialog's sync endpoint, snapshot API, ``label-studio export``).

The data is created through Label Studio's own APIs: images uploaded with the import API (so they are real
``/data/upload/...`` files), regions posted as annotations, as the labeling UI stores them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result
from export_plugin.export_format import FORMAT_INFO, FORMAT_NAME
from stack.services import REPO
from tests.support.labelstudio import LabelStudioServer, png_bytes

pytestmark = pytest.mark.labelstudio

GENERIC_CONFIG = (REPO / "labeling_configs" / "generic.xml").read_text()
POLYGON_ONLY_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="polygon" toName="image"><Label value="animal"/></PolygonLabels>
</View>"""

# Two images. "animals.png" holds two animals, each a polygon with its keypoints: A's keypoints are nested
# under its polygon (parentID), one of them deliberately drawn inside B's polygon, so only parentID can
# assign it correctly; B's keypoints are free regions inside B. "tool.png" holds one tool drawn as a
# rectangle plus a polygon (the rectangle is the polygon's box as drawn, IoU ~0.9), with free keypoints.
ANIMALS_SIZE, TOOL_SIZE = (200, 100), (120, 80)
ANIMALS_RESULT = [
    polygon_result("polyA", "animal", [(20, 20), (80, 20), (80, 80), (20, 80)], *ANIMALS_SIZE),
    keypoint_result("kpAnose", "nose", 50, 50, *ANIMALS_SIZE, parent_id="polyA"),
    keypoint_result("kpAeye", "eye_left", 125, 30, *ANIMALS_SIZE, parent_id="polyA"),  # inside B, nested under A
    polygon_result("polyB", "animal", [(120, 20), (180, 20), (180, 80), (120, 80)], *ANIMALS_SIZE),
    keypoint_result("kpBnose", "nose", 150, 50, *ANIMALS_SIZE),
    keypoint_result("kpBear", "ear_tip_left", 130, 25, *ANIMALS_SIZE),
]
TOOL_RESULT = [
    rectangle_result("boxT", "tool", 18, 9, 54, 62, *TOOL_SIZE),
    polygon_result("polyT", "tool", [(20, 10), (70, 10), (70, 70), (20, 70)], *TOOL_SIZE),
    keypoint_result("kpThandle", "handle_end", 30, 40, *TOOL_SIZE),
    keypoint_result("kpTtip", "tip", 60, 40, *TOOL_SIZE),
]
# Expected keypoints (pixels) per object, keyed by its polygon's region id.
EXPECTED = {
    "polyA": {"nose": (50, 50), "eye_left": (125, 30)},
    "polyB": {"nose": (150, 50), "ear_tip_left": (130, 25)},
    "polyT": {"handle_end": (30, 40), "tip": (60, 40)},
}


@dataclass(frozen=True)
class Project:
    id: int
    task_ids: dict[str, int]  # image file name -> task id


def create_project(ls: LabelStudioServer, title: str, config: str) -> int:
    project = ls.client.projects.create(title=title, label_config=config)
    assert project.id is not None  # the SDK types it Optional; Label Studio always returns it
    return project.id


@pytest.fixture(scope="module")
def project(label_studio: LabelStudioServer) -> Project:
    pid = create_project(label_studio, "combined export", GENERIC_CONFIG)
    tasks = label_studio.import_images(pid, {"animals.png": png_bytes(ANIMALS_SIZE), "tool.png": png_bytes(TOOL_SIZE)})
    label_studio.annotate(tasks["animals.png"], ANIMALS_RESULT)
    label_studio.annotate(tasks["tool.png"], TOOL_RESULT)
    return Project(pid, tasks)


def export_formats(ls: LabelStudioServer, project_id: int) -> dict[str, dict]:
    """What the Export dialog lists (it calls this endpoint)."""
    resp = httpx.get(f"{ls.url}/api/projects/{project_id}/export/formats", headers=ls.headers, timeout=30)
    resp.raise_for_status()
    return {f["name"]: f for f in resp.json()}


def sync_export(ls: LabelStudioServer, project_id: int) -> httpx.Response:
    """The request the Export dialog's Export button makes for COCO combined."""
    resp = httpx.get(
        f"{ls.url}/api/projects/{project_id}/export",
        params={"exportType": FORMAT_NAME},
        headers=ls.headers,
        timeout=120,
    )
    assert resp.status_code == 200, resp.text[:2000]
    return resp


def check_combined_coco(coco: dict, tmp_path: Path) -> None:
    """One annotation per object, each with its own keypoints at the right pixels, readable by pycocotools."""
    from pycocotools.coco import COCO

    assert len(coco["annotations"]) == 3, coco["annotations"]
    names = {c["id"]: c["keypoints"] for c in coco["categories"]}
    seen = {}
    for ann in coco["annotations"]:
        polygon_ids = [r for r in ann["ls_region_ids"] if r in EXPECTED]
        assert len(polygon_ids) == 1, ann["ls_region_ids"]
        kp = ann["keypoints"]
        labeled = {
            names[ann["category_id"]][i]: (kp[3 * i], kp[3 * i + 1]) for i in range(len(kp) // 3) if kp[3 * i + 2] > 0
        }
        expected = EXPECTED[polygon_ids[0]]
        assert sorted(labeled) == sorted(expected), f"{polygon_ids[0]} got the keypoints of another object"
        for name, xy in expected.items():
            assert labeled[name] == pytest.approx(xy, abs=0.01), (polygon_ids[0], name)
        assert ann["num_keypoints"] == len(labeled)
        seen[polygon_ids[0]] = ann
    assert set(seen) == set(EXPECTED)
    assert {"polyT", "boxT"} <= set(seen["polyT"]["ls_region_ids"]), "rectangle not merged into its polygon"
    assert seen["polyT"]["bbox"] == pytest.approx([20, 10, 50, 60], abs=0.01)

    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    api = COCO(str(path))
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann)
        assert mask.sum() == pytest.approx(ann["area"], rel=0.1)


def test_format_listed_and_enabled_for_polygon_keypoint_project(label_studio: LabelStudioServer, project: Project):
    formats = export_formats(label_studio, project.id)
    assert FORMAT_NAME in formats
    assert formats[FORMAT_NAME]["title"] == FORMAT_INFO["title"]
    assert not formats[FORMAT_NAME].get("disabled")


def test_format_disabled_without_keypoints(label_studio: LabelStudioServer):
    pid = create_project(label_studio, "polygons only", POLYGON_ONLY_CONFIG)
    assert export_formats(label_studio, pid)[FORMAT_NAME].get("disabled") is True


def test_sync_export_as_the_export_dialog_does(label_studio: LabelStudioServer, project: Project, tmp_path: Path):
    resp = sync_export(label_studio, project.id)
    assert resp.headers["Content-Disposition"].endswith('.json"')
    coco = resp.json()
    check_combined_coco(coco, tmp_path)
    by_task = {img["ls_task_id"]: img for img in coco["images"]}
    assert by_task[project.task_ids["animals.png"]]["width"] == ANIMALS_SIZE[0]
    assert by_task[project.task_ids["tool.png"]]["ls_image"].startswith("/data/upload/")


def _wait_for(fetch, done, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not done within {timeout} s: {value}")


def test_snapshot_export_and_convert(label_studio: LabelStudioServer, project: Project, tmp_path: Path):
    api = f"{label_studio.url}/api/projects/{project.id}/exports"
    h = label_studio.headers
    snapshot = httpx.post(f"{api}/", headers=h, json={"title": "snapshot"}, timeout=60)
    assert snapshot.status_code == 201, snapshot.text
    pk = snapshot.json()["id"]

    def detail() -> dict:
        return httpx.get(f"{api}/{pk}", headers=h, timeout=30).json()

    _wait_for(detail, lambda d: d["status"] == "completed", "snapshot")
    convert = httpx.post(f"{api}/{pk}/convert", headers=h, json={"export_type": FORMAT_NAME}, timeout=120)
    assert convert.status_code == 200, convert.text
    formats = _wait_for(
        detail,
        lambda d: any(
            f["export_type"] == FORMAT_NAME and f["status"] in ("completed", "failed") for f in d["converted_formats"]
        ),
        "conversion",
    )["converted_formats"]
    converted = next(f for f in formats if f["export_type"] == FORMAT_NAME)
    assert converted["status"] == "completed", converted.get("traceback")

    download = httpx.get(f"{api}/{pk}/download", params={"exportType": FORMAT_NAME}, headers=h, timeout=60)
    assert download.status_code == 200, download.text[:2000]
    check_combined_coco(download.json(), tmp_path)


def test_convert_rejects_format_for_project_without_keypoints(label_studio: LabelStudioServer):
    """Label Studio's own validation (ExportConvertSerializer) sees the format as disabled there."""
    pid = create_project(label_studio, "polygons only 2", POLYGON_ONLY_CONFIG)
    api = f"{label_studio.url}/api/projects/{pid}/exports"
    pk = httpx.post(f"{api}/", headers=label_studio.headers, json={}, timeout=60).json()["id"]
    resp = httpx.post(
        f"{api}/{pk}/convert", headers=label_studio.headers, json={"export_type": FORMAT_NAME}, timeout=60
    )
    assert resp.status_code == 400
    assert "KeyPointLabels" in resp.text, resp.text


def test_label_studio_export_cli(label_studio: LabelStudioServer, project: Project, tmp_path: Path):
    """``label-studio export <project> COCO_COMBINED`` on the same data dir (a second Django process)."""
    cmd = [
        sys.executable,
        "-m",
        "label_studio.server",
        "export",
        str(project.id),
        FORMAT_NAME,
        "--export-path",
        str(tmp_path),
    ]
    run = subprocess.run(cmd, env=label_studio.env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    written = sorted(tmp_path.glob("project-*.json"))
    assert run.returncode == 0 and written, run.stdout[-3000:] + run.stderr[-3000:]
    check_combined_coco(json.loads(written[0].read_text()), tmp_path)


def test_unassignable_keypoint_is_reported_not_copied(label_studio: LabelStudioServer):
    """A keypoint far from every object is left out and named (task, region) in the file and Label Studio's log."""
    pid = create_project(label_studio, "stray keypoint", GENERIC_CONFIG)
    size = (200, 100)
    task_id = label_studio.import_images(pid, {"stray.png": png_bytes(size)})["stray.png"]
    label_studio.annotate(task_id, [
        polygon_result("polyS", "animal", [(20, 20), (60, 20), (60, 60), (20, 60)], *size),
        keypoint_result("kpStray", "nose", 190, 90, *size),
    ])  # fmt: skip
    coco = sync_export(label_studio, pid).json()
    [ann] = coco["annotations"]
    assert ann["num_keypoints"] == 0
    assert any(f"task {task_id}, region kpStray" in line for line in coco["info"]["conversion_issues"])
    assert f"COCO combined export: task {task_id}, region kpStray:" in label_studio.log_tail(20_000)


def test_every_annotation_of_a_task_is_exported(label_studio: LabelStudioServer):
    """Two annotators on one task: both annotations are image entries of the same file; a cancelled
    (skipped) one is left out and named (issue 12: the newest annotation alone was kept)."""
    pid = create_project(label_studio, "two annotators", GENERIC_CONFIG)
    size = (200, 100)
    task_id = label_studio.import_images(pid, {"twice.png": png_bytes(size)})["twice.png"]
    square = [(20, 20), (60, 20), (60, 60), (20, 60)]
    first = label_studio.annotate(task_id, [polygon_result("p1", "animal", square, *size)])
    second = label_studio.annotate(task_id, [polygon_result("p2", "tool", square, *size)])
    resp = httpx.post(
        f"{label_studio.url}/api/tasks/{task_id}/annotations",
        headers=label_studio.headers,
        json={"result": [], "was_cancelled": True},
        timeout=60,
    )
    resp.raise_for_status()
    cancelled = resp.json()["id"]
    coco = sync_export(label_studio, pid).json()
    images = sorted(coco["images"], key=lambda im: im["ls_annotation_id"])
    assert [(im["ls_task_id"], im["ls_annotation_id"]) for im in images] == [(task_id, first), (task_id, second)]
    assert len({im["id"] for im in images}) == 2 and len({im["file_name"] for im in images}) == 1
    labels = {
        im["ls_annotation_id"]: [a["category_id"] for a in coco["annotations"] if a["image_id"] == im["id"]]
        for im in images
    }
    assert labels == {first: [1], second: [2]}
    assert (
        f"warning: task {task_id}: annotation {cancelled} was cancelled (skipped) by its annotator; not exported"
        in coco["info"]["conversion_issues"]
    )


def test_uploaded_images_are_private_under_the_stacks_umask(label_studio: LabelStudioServer) -> None:
    """Label Studio runs with umask 077 here, as in the stack: an upload must not be readable by others."""
    ls = label_studio
    project = ls.client.projects.create(title="private uploads", label_config=GENERIC_CONFIG)
    assert project.id is not None
    [task_id] = ls.import_images(project.id, {"private.png": png_bytes((40, 30))}).values()
    uploads = list((ls.data_dir / "media" / "upload").rglob("*private.png"))
    assert len(uploads) == 1, uploads
    for path in [uploads[0], uploads[0].parent]:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name}: {oct(path.stat().st_mode & 0o777)}"
    assert httpx.get(f"{ls.url}/api/tasks/{task_id}", headers=ls.headers, timeout=30).status_code == 200
