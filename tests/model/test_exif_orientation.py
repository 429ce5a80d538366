"""One image reader with one EXIF rule (issue 12, item 4).

A phone photo stored landscape with EXIF orientation 6 ("rotate 90 degrees clockwise to display") is
shown portrait by Label Studio, so it is annotated portrait. The training dataset, the predictor's
input (``multitask predict``) and the ML backend's decoder must all see that same portrait array.
Truth: the stored pixels (decoded without any orientation handling) turned clockwise by numpy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.labelstudio import MediaError, decode_image
from combined_coco.images import ImageSizeMismatch, check_image_size, read_image
from multitask.__main__ import main
from multitask.checkpoint import Checkpoint, save_checkpoint
from multitask.dataset import CombinedCocoDataset
from multitask.model import ModelConfig
from multitask.synthetic import SCHEMA

STORED_W, STORED_H = 96, 64  # landscape on disk


@pytest.fixture
def phone_photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A JPEG whose stored pixels are landscape, tagged orientation 6; and the portrait truth."""
    stored = np.zeros((STORED_H, STORED_W, 3), np.uint8)
    stored[:24, :32] = (250, 20, 20)  # a red block in the stored top-left corner
    stored[40:, 60:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif)
    path = tmp_path / "phone.jpg"
    path.write_bytes(buf.getvalue())
    with Image.open(path) as raw:  # Pillow does not apply the orientation by itself
        decoded = np.array(raw.convert("RGB"))
    assert decoded.shape == (STORED_H, STORED_W, 3)
    return path, np.rot90(decoded, k=-1)  # clockwise: portrait, the red block now top-right


def test_training_predictor_and_backend_see_the_same_portrait_image(
    phone_photo: tuple[Path, np.ndarray], tmp_path: Path, small_model: torch.nn.Module, small_config: ModelConfig
) -> None:
    path, portrait = phone_photo
    assert portrait.shape == (STORED_W, STORED_H, 3) and portrait[5, -5, 0] > 200  # red top-right

    coco = {
        "images": [{"id": 1, "file_name": path.name, "width": STORED_H, "height": STORED_W}],
        "categories": SCHEMA.to_coco_categories("global"),
        "annotations": [],
    }
    dataset_json = tmp_path / "coco.json"
    dataset_json.write_text(json.dumps(coco))
    image, _ = CombinedCocoDataset(dataset_json, tmp_path)[0]
    trained_on = (image.permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(trained_on, portrait)

    assert np.array_equal(decode_image(path.read_bytes(), 10**6, task_id=3), portrait)

    checkpoint = save_checkpoint(Checkpoint("exif", SCHEMA, small_config, small_model.state_dict()), tmp_path / "m.pt")
    preds = tmp_path / "preds.json"
    main(["predict", "--checkpoint", str(checkpoint), str(path), "--out", str(preds), "--score-threshold", "0"])
    [predicted] = json.loads(preds.read_text())["images"]
    assert (predicted["width"], predicted["height"]) == (STORED_H, STORED_W)
    assert all(i["box"][2] <= STORED_H + 1e-3 and i["box"][3] <= STORED_W + 1e-3 for i in predicted["instances"])


def test_a_dataset_entry_with_the_stored_size_is_refused_by_name(phone_photo: tuple[Path, np.ndarray]) -> None:
    """width/height copied from the stored pixels (landscape) do not match what the annotator saw."""
    path, portrait = phone_photo
    with pytest.raises(ImageSizeMismatch, match=r"image 7 \(phone.jpg\): the file is 64x96 .* dataset says 96x64"):
        check_image_size(read_image(path), {"id": 7, "file_name": "phone.jpg", "width": STORED_W, "height": STORED_H})


def test_backend_keeps_its_error_contract(phone_photo: tuple[Path, np.ndarray]) -> None:
    path, _ = phone_photo
    with pytest.raises(MediaError, match=r"^task 3: image is 96x64, over MAX_IMAGE_PIXELS=1000$"):
        decode_image(path.read_bytes(), 1000, task_id=3)
    with pytest.raises(MediaError, match=r"^task 3: not an image Pillow can read"):
        decode_image(b"<html>login</html>", 10**6, task_id=3)
