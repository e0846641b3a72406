"""The generated dataset: deterministic bytes, valid COCO, sensible annotations."""

import hashlib
import json
import pathlib

import numpy as np
from pycocotools.coco import COCO as CocoApi

from efafnet_jax.data.synthetic import generate


def _digest(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_write_byte_identical_files(tmp_path):
    generate(str(tmp_path / "a"), train=6, val=3, seed=5)
    generate(str(tmp_path / "b"), train=6, val=3, seed=5)
    generate(str(tmp_path / "c"), train=6, val=3, seed=6)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 6 + 3 + 3
    assert a != c


def test_annotations_load_in_pycocotools_with_every_image_present(tmp_path):
    paths = generate(str(tmp_path), train=12, val=4, seed=0)
    for split in ("train", "val"):
        api = CocoApi(paths[split])
        for image in api.dataset["images"]:
            path = tmp_path / "images" / split / image["file_name"]
            assert path.is_file()
        assert len(api.getAnnIds()) >= len(api.getImgIds())
    results = api.loadRes(paths["detections"])
    assert len(results.getAnnIds()) > 0


def test_visibility_area_and_boxes_follow_coco_conventions(tmp_path):
    paths = generate(str(tmp_path), train=30, val=0, seed=1)
    data = json.loads(pathlib.Path(paths["train"]).read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    flags = []
    for ann in data["annotations"]:
        kpts = np.array(ann["keypoints"]).reshape(17, 3)
        width, height = sizes[ann["image_id"]]
        unlabelled = kpts[:, 2] == 0
        assert (kpts[unlabelled, :2] == 0).all()
        inside = kpts[~unlabelled]
        assert ((inside[:, 0] >= 0) & (inside[:, 0] < width)).all()
        assert ann["num_keypoints"] == int((~unlabelled).sum())
        x, y, w, h = ann["bbox"]
        assert 0 < ann["area"] <= w * h
        flags.extend(kpts[:, 2].tolist())
    # All three visibility states occur: visible, occluded, truncated.
    assert {0, 1, 2} <= set(flags)
