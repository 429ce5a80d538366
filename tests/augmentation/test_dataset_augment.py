"""The dataset-level contract: ids, file names, determinism, flips on the real quokka, refusals, split, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO

from augmentation import AugmentationFailed, PipelineError, augment_dataset, load_pipeline
from augmentation.albumentations_steps import augment_sample
from augmentation.cli import main as cli_main
from augmentation.dataset_augment import sample_seed
from augmentation.pipelines import preset_names
from augmentation.split import split_by_source
from combined_coco.geometry import polygons_bbox
from combined_coco.schema import Schema
from combined_coco.validate import validate_coco
from tests.support.processes import tree_bytes
from tests.support.samples import QUOKKA


def _pipeline_file(tmp_path: Path, *transforms: A.BasicTransform) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(A.to_dict(A.Compose(list(transforms)))))
    return path


def test_output_is_deterministic_valid_coco_with_stable_ids(synthetic: Path, tmp_path: Path) -> None:
    images = synthetic.parent / "images"
    first = augment_dataset(synthetic, images, tmp_path / "a", pipeline="medium", copies=2, seed=5)
    second = augment_dataset(synthetic, images, tmp_path / "b", pipeline="medium", copies=2, seed=5)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    other_seed = augment_dataset(synthetic, images, tmp_path / "c", pipeline="medium", copies=2, seed=6)
    assert other_seed.read_bytes() != first.read_bytes()

    out = json.loads(second.read_text())
    source = json.loads(synthetic.read_text())
    assert [im["id"] for im in out["images"]] == list(range(1, 3 * len(source["images"]) + 1))
    assert [a["id"] for a in out["annotations"]] == list(range(1, len(out["annotations"]) + 1))
    first_image = out["images"][:3]
    assert [im["file_name"] for im in first_image] == [
        "synthetic_0001.png",
        "synthetic_0001__img1_aug1.png",
        "synthetic_0001__img1_aug2.png",
    ]
    assert {im["source_image_id"] for im in first_image} == {1}
    coco = COCO(str(second))
    for ann in out["annotations"]:
        im = coco.imgs[ann["image_id"]]
        assert (tmp_path / "b" / "images" / im["file_name"]).exists()
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
        assert ann["area"] > 0
        if isinstance(ann["segmentation"], list):
            assert ann["bbox"] == pytest.approx(polygons_bbox(ann["segmentation"]))
            assert all(
                0 <= x <= im["width"] and 0 <= y <= im["height"]
                for p in ann["segmentation"]
                for x, y in zip(p[::2], p[1::2])
            )
        assert coco.annToMask(ann).sum() > 0
    assert out["info"]["augmentation"]["options"]["copies"] == 2


def test_without_originals_only_copies_are_written(synthetic: Path, tmp_path: Path) -> None:
    out = augment_dataset(synthetic, synthetic.parent / "images", tmp_path, copies=1, keep_originals=False)
    names = [im["file_name"] for im in json.loads(out.read_text())["images"]]
    assert names == [f"synthetic_{i:04d}__img{i}_aug1.png" for i in range(1, 5)]


def test_quokka_horizontal_flip_swaps_named_keypoints(quokka: Path, tmp_path: Path) -> None:
    pipeline = _pipeline_file(tmp_path, A.HorizontalFlip(p=1))
    out = json.loads(augment_dataset(quokka, QUOKKA, tmp_path / "out", pipeline=pipeline, copies=1).read_text())
    schema = Schema.from_coco_categories(out["categories"])
    src, flipped = (np.reshape(a["keypoints"], (-1, 3)) for a in out["annotations"])
    names = schema.keypoint_names
    for i, name in enumerate(names):
        partner = schema.flip_indices[i]
        if src[partner, 2] > 0:
            assert flipped[i].tolist() == pytest.approx([960 - src[partner, 0], src[partner, 1], src[partner, 2]]), name
    assert flipped[names.index("eye_left"), 0] == pytest.approx(960 - 366.0)  # eye_right was at x=366
    assert out["annotations"][1]["area"] == pytest.approx(out["annotations"][0]["area"])
    image = cv2.imread(str(tmp_path / "out" / "images" / "quokka__img1_aug1.jpg"))
    assert image is not None and image.shape == (643, 960, 3)


@pytest.mark.parametrize("preset", preset_names())
def test_presets_run_on_the_quokka(preset: str, quokka: Path, tmp_path: Path) -> None:
    out = json.loads(augment_dataset(quokka, QUOKKA, tmp_path, pipeline=preset, copies=2).read_text())
    for ann in out["annotations"]:
        im = next(i for i in out["images"] if i["id"] == ann["image_id"])
        kps = np.reshape(ann["keypoints"], (-1, 3))
        inside = (kps[:, 0] >= 0) & (kps[:, 0] < im["width"]) & (kps[:, 1] >= 0) & (kps[:, 1] < im["height"])
        assert np.all(inside | (kps[:, 2] == 0))


def test_pixel_level_transforms_leave_geometry_untouched(synthetic: Path, tmp_path: Path) -> None:
    pipeline = _pipeline_file(tmp_path, A.ColorJitter(p=1), A.GaussNoise(p=1), A.Blur(p=1), A.CLAHE(p=1))
    out = json.loads(
        augment_dataset(synthetic, synthetic.parent / "images", tmp_path / "o", pipeline=pipeline, copies=1).read_text()
    )
    by_image: dict[int, list[dict]] = {}
    for ann in out["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for original_id in range(1, 2 * 4, 2):
        for a, b in zip(by_image[original_id], by_image[original_id + 1]):
            for key in ("segmentation", "bbox", "area", "keypoints", "num_keypoints"):
                assert a[key] == b[key], key


def test_objects_pushed_out_of_the_frame_are_dropped_and_counted(synthetic: Path, tmp_path: Path) -> None:
    pipeline = _pipeline_file(tmp_path, A.Affine(translate_percent={"x": (0.97, 0.97), "y": (0, 0)}, p=1))
    out = json.loads(
        augment_dataset(synthetic, synthetic.parent / "images", tmp_path / "o", pipeline=pipeline, copies=1).read_text()
    )
    source = json.loads(synthetic.read_text())
    kept = len(out["annotations"]) - len(source["annotations"])
    assert out["info"]["augmentation"]["dropped_instances"] == len(source["annotations"]) - kept > 0


@pytest.mark.parametrize(
    "transform, message",
    [
        (A.GridDistortion(border_mode=cv2.BORDER_REFLECT_101, p=1), "border_mode"),
        (A.Affine(rotate=10, border_mode=cv2.BORDER_REFLECT_101, p=1), "border_mode"),
        (A.CropAndPad(px=10, p=1), "Supported geometric transforms"),
    ],
)
def test_transforms_that_would_be_wrong_are_refused(transform: A.BasicTransform, message: str, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=message):
        load_pipeline(_pipeline_file(tmp_path, A.HorizontalFlip(), A.OneOf([transform, A.Blur()])))


def test_unknown_pipeline_names_the_presets() -> None:
    with pytest.raises(PipelineError, match="light, medium"):
        load_pipeline("mediun")


def test_missing_image_fails_with_its_id(synthetic: Path, tmp_path: Path) -> None:
    coco = json.loads(synthetic.read_text())
    coco["images"][1]["file_name"] = "gone.png"
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(AugmentationFailed, match="image 2: FileNotFoundError") as err:
        augment_dataset(path, synthetic.parent / "images", tmp_path / "out", copies=1)
    assert [f["image_id"] for f in err.value.failures] == [2]
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_split_keeps_copies_of_a_source_together(synthetic: Path, tmp_path: Path) -> None:
    out = json.loads(augment_dataset(synthetic, synthetic.parent / "images", tmp_path, copies=2).read_text())
    train, val = split_by_source(out, val_fraction=0.25, seed=1)
    sources = [{im["source_image_id"] for im in part["images"]} for part in (train, val)]
    assert len(sources[1]) == 1 and not sources[0] & sources[1]
    assert len(train["images"]) + len(val["images"]) == len(out["images"])
    val_ids = {im["id"] for im in val["images"]}
    assert all(a["image_id"] in val_ids for a in val["annotations"])


def test_cli_help_has_examples_and_run_locally_works(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for command in ([], ["submit"], ["status"], ["wait"], ["resubmit"], ["run-locally"], ["split"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main([*command, "--help"])
        assert exit_.value.code == 0
        assert "example" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli_main(["run-locally", str(synthetic), str(synthetic.parent / "images"), str(tmp_path), "--copies", "1"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "annotations.json")
    with pytest.raises(SystemExit, match="neither a preset"):
        cli_main(["run-locally", str(synthetic), str(synthetic.parent / "images"), str(tmp_path), "--pipeline", "nope"])


def test_entries_sharing_a_photo_get_their_own_copies(synthetic: Path, tmp_path: Path) -> None:
    """Two image entries on one file (e.g. two Label Studio annotations of one task) each get copy
    files of their own, and each file holds the transform sampled for its entry."""
    coco = json.loads(synthetic.read_text())
    first = coco["images"][0]
    twin = {**first, "id": 5, "ls_annotation_id": 2}
    coco["images"].append(twin)
    coco["annotations"].append(
        {**next(a for a in coco["annotations"] if a["image_id"] == 1), "id": 1000, "image_id": 5}
    )
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    pipeline = _pipeline_file(tmp_path, A.Affine(rotate=(-40, 40), translate_percent=(-0.2, 0.2), p=1))
    out = json.loads(
        augment_dataset(path, synthetic.parent / "images", tmp_path / "out", pipeline=pipeline, copies=2).read_text()
    )
    assert validate_coco(out) == []
    copies = [im for im in out["images"] if im["aug_copy"] > 0]
    assert len({im["file_name"] for im in copies}) == len(copies) == 10
    compose = load_pipeline(pipeline)
    bgr = cv2.imread(str(synthetic.parent / "images" / first["file_name"]))
    assert bgr is not None
    source = bgr[:, :, ::-1].copy()
    for entry in (im for im in copies if im["source_image_id"] in (1, 5)):
        seed = sample_seed(0, entry["source_image_id"], entry["aug_copy"])
        expected = augment_sample(compose, source, [], seed).image
        written = cv2.imread(str(tmp_path / "out" / "images" / entry["file_name"]))
        assert written is not None
        written = written[:, :, ::-1]
        assert np.array_equal(written, expected), entry["file_name"]


def test_split_keeps_every_image_of_one_photo_together(synthetic: Path, tmp_path: Path) -> None:
    """Entries sharing a photo (two Label Studio annotations of one task) and all their copies are
    one group, with or without the originals in the output."""
    coco = json.loads(synthetic.read_text())
    coco["images"].append({**coco["images"][0], "id": 5, "ls_annotation_id": 2})
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    for keep in (True, False):
        out = json.loads(
            augment_dataset(
                path, synthetic.parent / "images", tmp_path / f"o{keep}", copies=2, keep_originals=keep
            ).read_text()
        )
        for seed in range(6):
            train, val = split_by_source(out, val_fraction=0.4, seed=seed)
            photos = [{im["source_file_name"] for im in part["images"]} for part in (train, val)]
            assert photos[0] and photos[1] and not photos[0] & photos[1], seed
