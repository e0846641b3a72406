"""The predict command on real and generated images, and its handling of bad input."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR, REPO

from efafnet_jax.data.records import BadRecordError
from efafnet_jax.data.synthetic import generate
from efafnet_jax.inference.boxes import read_boxes_file, usable_boxes


def _predict(*args: str) -> subprocess.CompletedProcess:
    return _predict_with("configs/tiny.py", *args)


def _predict_with(config: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "efafnet_jax.inference.predict", "--config", config, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("clip", [True, False])
def test_real_coco_images_with_detections(tmp_path, clip):
    coco = DATA_DIR / "coco"
    _predict(
        "--images",
        str(coco),
        "--boxes",
        str(coco / "test_coco_det_AP_H_56.json"),
        "--ann",
        str(coco / "test_coco.json"),
        "--out",
        str(tmp_path),
        f"--{'' if clip else 'no'}clip_to_box",
        "--heatmaps",
    )
    images = sorted(p for p in os.listdir(coco) if p.endswith(".jpg"))
    detections = json.load(open(coco / "test_coco_det_AP_H_56.json"))
    for name in images:
        stem = name[:-4]
        picture = cv2.imread(str(tmp_path / f"{stem}.png"))
        assert picture.shape == cv2.imread(str(coco / name)).shape
        result = json.load(open(tmp_path / f"{stem}.json"))
        assert result["people"], name
        for person in result["people"]:
            x, y, w, h = person["box"]
            keypoints = np.asarray(person["keypoints"])
            assert keypoints.shape == (17, 3)
            # Without clipping a keypoint may sit in the crop's margin: the box widened
            # to the 3:4 aspect ratio and padded by 1.25 (HRNet's centre/scale).
            crop_w = max(w, 0.75 * h) * 1.25
            margin_x, margin_y = (crop_w - w) / 2, (crop_w / 0.75 - h) / 2
            if clip:
                margin_x = margin_y = 0.0
            slack = 0.02  # JSON values (box and keypoints) are rounded to 2 decimals
            assert np.all(keypoints[:, 0] >= x - margin_x - slack)
            assert np.all(keypoints[:, 0] <= x + w + margin_x + slack)
            assert np.all(keypoints[:, 1] >= y - margin_y - slack)
            assert np.all(keypoints[:, 1] <= y + h + margin_y + slack)
            assert 0.0 <= person["score"] <= person["box_score"] + 1e-6
        assert (tmp_path / f"{stem}_heatmaps.png").is_file()
    assert sum(len(json.load(open(tmp_path / f"{n[:-4]}.json"))["people"]) for n in images) == len(
        detections
    )


def test_whole_image_mode(tmp_path):
    generate(str(tmp_path / "data"), train=1, val=1, seed=6)
    image = sorted((tmp_path / "data" / "images" / "val").iterdir())[0]
    _predict("--images", str(image), "--whole_image", "--out", str(tmp_path / "out"))
    result = json.load(open(tmp_path / "out" / f"{image.stem}.json"))
    assert result["people"][0]["box"] == [0.0, 0.0, result["width"], result["height"]]


def test_malformed_boxes_files_name_the_entry(tmp_path):
    # Bad input of every kind through the command: tests/test_predict_hardening.py.
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a.jpg": [[1, 2, 3]]}))
    with pytest.raises(BadRecordError, match=r"boxes.json: 'a.jpg' box 0: expected \[x, y, w, h\]"):
        read_boxes_file(str(path), 0.75, 17)
    path.write_text(json.dumps({"a.jpg": [[1, 2, "w", 4]]}))
    with pytest.raises(BadRecordError, match="'a.jpg' box 0: field 'w' is non-numeric"):
        read_boxes_file(str(path), 0.75, 17)
    path.write_text(json.dumps({"a.jpg": [[1, 2, 3, 4, float("nan")]]}))
    with pytest.raises(BadRecordError, match="'a.jpg' box 0: field 'score' is not finite"):
        read_boxes_file(str(path), 0.75, 17)
    path.write_text(json.dumps([[1, 2, 3, 4]]))
    with pytest.raises(BadRecordError, match="expected an object mapping file names"):
        read_boxes_file(str(path), 0.75, 17, on_bad_record="skip")
    path.write_text(json.dumps({"a.jpg": [[0, 0, 5, 5], [1, 2, 3]], "b.jpg": 5}))
    table, summary = read_boxes_file(str(path), 0.75, 17, on_bad_record="skip")
    assert len(summary.skipped) == 2 and "'b.jpg' does not map to a list" in summary.skipped[1]
    ((label, record),) = table["a.jpg"]
    assert label.endswith("'a.jpg' box 0") and record.box_score == 1.0
    (kept,) = usable_boxes(table["a.jpg"], (10, 10, 3), "x.jpg")
    assert kept is record and kept.box.tolist() == [0, 0, 5, 5]


@pytest.fixture(scope="module")
def quickstart_model(tmp_path_factory):
    """A short run of configs/quickstart.py (a few epochs) in a fresh workdir."""
    workdir = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--workdir",
            str(workdir),
            "--config.train.epochs=4",
            "--config.train.decay_epochs=(3,4)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_quickstart_model_finds_the_generated_joints(quickstart_model, tmp_path):
    from efafnet_jax.weights import latest_checkpoint

    data = quickstart_model / "data"
    truth = json.load(open(data / "annotations" / "person_keypoints_val.json"))
    names = {image["id"]: image["file_name"] for image in truth["images"]}
    people = [a for a in truth["annotations"] if a["num_keypoints"] > 0][:120]
    chosen = sorted({names[a["image_id"]] for a in people})[:40]
    boxes = {}
    for a in truth["annotations"]:
        if names[a["image_id"]] in chosen and a["num_keypoints"] > 0:
            boxes.setdefault(names[a["image_id"]], []).append([*a["bbox"], 1.0])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    _predict_with(
        "configs/quickstart.py",
        "--checkpoint",
        latest_checkpoint(str(quickstart_model)),
        "--images",
        ",".join(str(data / "images" / "val" / n) for n in chosen),
        "--boxes",
        str(tmp_path / "boxes.json"),
        "--out",
        str(tmp_path / "out"),
    )
    hits = total = 0
    for name in chosen:
        result = json.load(open(tmp_path / "out" / f"{name[:-4]}.json"))
        gt = [
            a
            for a in truth["annotations"]
            if names[a["image_id"]] == name and a["num_keypoints"] > 0
        ]
        assert len(result["people"]) == len(gt)
        for person, a in zip(result["people"], gt, strict=True):
            assert person["box"] == [round(v, 2) for v in a["bbox"]]
            expected = np.reshape(a["keypoints"], (-1, 3))
            labelled = expected[:, 2] > 0
            # mmpose's bbox PCK: the error divided by the box's width and height per axis.
            error = (np.asarray(person["keypoints"])[:, :2] - expected[:, :2]) / a["bbox"][2:]
            hits += int(np.sum(np.linalg.norm(error, axis=1)[labelled] <= 0.2))
            total += int(labelled.sum())
    assert total > 500
    assert hits / total >= 0.5, f"PCK@0.2 {hits / total:.3f}"
