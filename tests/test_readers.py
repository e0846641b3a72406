"""Readers on the real COCO and MPII samples, CrowdPose-style files and head boxes."""

import copy
import json

import numpy as np
import pytest
import scipy.io
from conftest import DATA_DIR

from efafnet_jax.config import load_config
from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.keypoints import COCO, CROWDPOSE, MPII, spec_from_config
from efafnet_jax.data.mpii import headboxes_from_official, read_gt_valid, read_mpii
from efafnet_jax.data.splits import read_split

COCO_DIR = DATA_DIR / "coco"
MPII_DIR = DATA_DIR / "mpii"


def test_coco_sample_gt_records():
    records, summary = read_coco_keypoints(
        str(COCO_DIR / "test_coco.json"), str(COCO_DIR), COCO, aspect_ratio=0.75
    )
    # 14 persons, 12 with a labelled joint; the other two are the reference's filtering.
    assert len(records) == 12 and summary.kept == 12
    assert summary.filtered["persons without labelled joints"] == 2
    assert "12 persons" in summary.line()
    first = records[0]
    ann = json.loads((COCO_DIR / "test_coco.json").read_text())["annotations"][0]
    assert first.annotation_id == ann["id"] and first.image_id == ann["image_id"]
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(first.center, [x + (w - 1) / 2, y + (h - 1) / 2], rtol=1e-6)
    kpts = np.array(ann["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(first.joints, kpts[:, :2])
    np.testing.assert_array_equal(first.visibility, np.minimum(kpts[:, 2], 1))
    assert first.area == ann["area"]
    assert all(set(np.unique(r.visibility)) <= {0.0, 1.0} for r in records)


def test_coco_sample_detection_records():
    det_file = str(COCO_DIR / "test_coco_det_AP_H_56.json")
    ann_file = str(COCO_DIR / "test_coco.json")
    records, _ = read_detections(det_file, ann_file, str(COCO_DIR), COCO, 0.75)
    assert len(records) == 118
    dets = json.loads((COCO_DIR / "test_coco_det_AP_H_56.json").read_text())
    assert records[0].box_score == dets[0]["score"]
    assert (records[0].visibility == 1).all() and (records[0].joints == 0).all()
    high, summary = read_detections(
        det_file, ann_file, str(COCO_DIR), COCO, 0.75, score_threshold=0.5
    )
    assert len(high) == sum(d["score"] >= 0.5 for d in dets)
    assert summary.filtered["boxes below the score threshold"] == 118 - len(high)
    extended, _ = read_detections(det_file, ann_file, str(COCO_DIR), COCO, 0.75, box_extension=0.3)
    np.testing.assert_allclose(extended[0].scale, records[0].scale * 1.3, rtol=1e-5)
    np.testing.assert_allclose(extended[0].center, records[0].center, rtol=1e-6)


def test_mpii_sample_records():
    records, _ = read_mpii(str(MPII_DIR / "test_mpii.json"), str(MPII_DIR), MPII)
    assert len(records) == 5
    entry = json.loads((MPII_DIR / "test_mpii.json").read_text())[0]
    rec = records[0]
    s = entry["scale"]
    np.testing.assert_allclose(rec.scale, [s * 1.25, s * 1.25])
    np.testing.assert_allclose(
        rec.center, [entry["center"][0] - 1, entry["center"][1] + 15 * s - 1]
    )
    np.testing.assert_allclose(rec.joints, np.array(entry["joints"]) - 1)
    assert rec.annotation_id == 0 and rec.image_path.endswith(entry["image"])


def _crowdpose_file(tmp_path):
    """The COCO sample rewritten as CrowdPose: 14 joints, no 'area', COCO's skeleton."""
    data = json.loads((COCO_DIR / "test_coco.json").read_text())
    data = copy.deepcopy(data)
    # CrowdPose joint k <- COCO joint (shoulders..ankles = COCO 5..16; head, neck from eyes).
    order = list(range(5, 17))
    for ann in data["annotations"]:
        kpts = np.array(ann["keypoints"]).reshape(17, 3)
        head = kpts[1] if kpts[1, 2] else kpts[0]
        ann["keypoints"] = np.concatenate([kpts[order], head[None], kpts[0][None]]).ravel().tolist()
        ann["num_keypoints"] = int((kpts[order][:, 2] > 0).sum())  # 12 limb joints only
        del ann["area"]
    data["categories"][0]["keypoints"] = list(CROWDPOSE.names)
    for image, crowd_index in zip(data["images"], (0.05, 0.5, 0.9, 0.3), strict=True):
        image["crowdIndex"] = crowd_index  # easy, medium, hard, medium
    path = tmp_path / "crowdpose_sample.json"
    path.write_text(json.dumps(data))
    return path


def test_crowdpose_style_file_reads_without_area(tmp_path):
    path = _crowdpose_file(tmp_path)
    records, _ = read_coco_keypoints(str(path), str(COCO_DIR), CROWDPOSE, 0.75)
    assert len(records) == 12
    assert records[0].joints.shape == (14, 2)
    assert records[0].area == pytest.approx(
        np.prod(json.loads(path.read_text())["annotations"][0]["bbox"][2:])
    )


def test_known_dataset_spec_wins_over_the_file_category(tmp_path):
    config = load_config("crowdpose")
    config.data.val_ann = str(_crowdpose_file(tmp_path))
    config.data.val_images = str(COCO_DIR)
    records, _, spec = read_split(config.data, "val")
    assert spec is CROWDPOSE and len(records) == 12


def test_custom_spec_from_the_coco_category():
    config = load_config("coco")
    config.data.dataset = "my_people"
    config.data.train_ann = str(COCO_DIR / "test_coco.json")
    spec = spec_from_config(config.data)
    assert spec.names == COCO.names and spec.skeleton == COCO.skeleton
    assert set(spec.flip_pairs) == set(COCO.flip_pairs)
    assert spec.upper_body_ids == tuple(range(11))


def test_custom_spec_declared_in_the_config():
    config = load_config("coco")
    config.data.dataset = "hands"
    config.data.keypoints.names = ["wrist", "thumb", "index"]
    config.data.keypoints.flip_pairs = []
    config.data.keypoints.sigmas = [0.1, 0.05, 0.05]
    config.data.keypoints.skeleton = [[0, 1], [0, 2]]
    spec = spec_from_config(config.data)
    assert spec.num_joints == 3 and spec.sigmas == (0.1, 0.05, 0.05)
    config.data.keypoints.skeleton = [[0, 5]]
    with pytest.raises(ValueError, match="outside 0..2"):
        spec_from_config(config.data)


def _gt_valid(tmp_path, n):
    rng = np.random.default_rng(0)
    headboxes = rng.uniform(0, 500, size=(2, 2, n))
    path = tmp_path / "gt_valid.mat"
    scipy.io.savemat(
        path,
        {
            "headboxes_src": headboxes,
            "jnt_missing": (rng.random((16, n)) > 0.8).astype(np.uint8),
            "pos_gt_src": rng.uniform(0, 500, size=(16, 2, n)),
            "dataset_joints": np.array([["rank"]] * 16, dtype=object),
        },
    )
    return path, headboxes


def test_gt_valid_headboxes(tmp_path):
    path, headboxes = _gt_valid(tmp_path, 5)
    gt = read_gt_valid(str(path))
    assert gt["headboxes"].shape == (5, 2, 2) and gt["joint_missing"].shape == (5, 16)
    np.testing.assert_array_equal(gt["headboxes"][3], headboxes[:, :, 3])
    assert gt["joints"].shape == (5, 16, 2)


def test_headboxes_from_the_official_annotation_structure(tmp_path):
    entries = json.loads((MPII_DIR / "test_mpii.json").read_text())
    rect_dtype = [
        ("x1", "O"),
        ("y1", "O"),
        ("x2", "O"),
        ("y2", "O"),
        ("scale", "O"),
        ("objpos", "O"),
    ]
    annolist = np.zeros(len(entries), dtype=[("image", "O"), ("annorect", "O")])
    for i, e in enumerate(entries):
        rects = np.zeros(2, dtype=rect_dtype)
        # A decoy person first, then the one the JSON entry describes.
        for j, (cx, cy, s) in enumerate([(5.0, 5.0, 1.0), (*e["center"], e["scale"])]):
            rects[j] = (10.0 * i + j, 20.0, 30.0 * (i + 1), 40.0, s, {"x": cx, "y": cy})
        annolist[i] = ({"name": e["image"]}, rects)
    path = tmp_path / "mpii_official.mat"
    scipy.io.savemat(path, {"RELEASE": {"annolist": annolist}})
    records, _ = read_mpii(str(MPII_DIR / "test_mpii.json"), str(MPII_DIR), MPII)
    boxes = headboxes_from_official(str(path), records)
    assert boxes.shape == (5, 2, 2)
    np.testing.assert_allclose(boxes[2], [[21.0, 20.0], [90.0, 40.0]])
