"""Each kind of bad input names its file and record; 'skip' counts it in one line."""

import json

import numpy as np
import pytest
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import COCO, MPII
from efafnet_jax.data.mpii import read_gt_valid, read_mpii
from efafnet_jax.data.records import BadRecordError

COCO_DIR = DATA_DIR / "coco"


def _tiny_coco(tmp_path, annotation_changes=None, write_image=True):
    """One image with two persons; `annotation_changes` edits the second one."""
    image = tmp_path / "img.jpg"
    if write_image:
        import cv2

        cv2.imwrite(str(image), np.full((60, 80, 3), 128, np.uint8))
    person = dict(
        id=7,
        image_id=3,
        category_id=1,
        iscrowd=0,
        area=400.0,
        bbox=[10, 10, 20, 40],
        keypoints=[15, 15, 2] * 17,
        num_keypoints=17,
    )
    second = dict(person, id=8, **(annotation_changes or {}))
    data = dict(
        images=[dict(id=3, file_name="img.jpg", width=80, height=60)],
        annotations=[person, second],
        categories=[dict(id=1, name="person", keypoints=list(COCO.names))],
    )
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(keypoints=[1, 2, 2] * 16), "field 'keypoints' has 48 values, expected 51"),
        (dict(bbox=[10, 10, float("nan"), 40]), "field 'bbox' has a non-finite value"),
        (
            dict(keypoints=[15, 15, 2] * 16 + [float("inf"), 1, 2]),
            "field 'keypoints' has a non-finite value",
        ),
        (dict(bbox=None), "field 'bbox' is null, not a list"),
        (dict(image_id=99), "'image_id' 99 names no image"),
    ],
)
def test_bad_annotation_names_file_and_annotation(tmp_path, changes, fragment):
    path = _tiny_coco(tmp_path, changes)
    with pytest.raises(BadRecordError) as err:
        read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)
    assert str(path) in str(err.value) and fragment in str(err.value)
    if changes.get("image_id") != 99:
        assert "annotation id 8 (image id 3)" in str(err.value)


def test_skip_policy_skips_and_counts_in_one_line(tmp_path):
    path = _tiny_coco(tmp_path, dict(keypoints=[1, 2, 2] * 16))
    records, summary = read_coco_keypoints(
        str(path), str(tmp_path), COCO, 0.75, on_bad_record="skip"
    )
    assert [r.annotation_id for r in records] == [7]
    assert len(summary.skipped) == 1
    assert "1 bad records skipped" in summary.line() and "annotation id 8" in summary.line()


def test_unknown_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_bad_record"):
        read_coco_keypoints(
            str(_tiny_coco(tmp_path)), str(tmp_path), COCO, 0.75, on_bad_record="ignore"
        )


def test_reference_filtering_is_not_bad_input(tmp_path):
    path = _tiny_coco(tmp_path, dict(iscrowd=1))
    records, summary = read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)
    assert len(records) == 1 and summary.filtered["crowd annotations"] == 1
    path = _tiny_coco(tmp_path, dict(keypoints=[0, 0, 0] * 17))
    _, summary = read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)
    assert summary.filtered["persons without labelled joints"] == 1
    path = _tiny_coco(tmp_path, dict(bbox=[100, 100, 20, 40]))  # wholly right of the image
    _, summary = read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)
    assert summary.filtered["empty boxes"] == 1 and not summary.skipped


def test_missing_image_is_named(tmp_path):
    path = _tiny_coco(tmp_path, write_image=False)
    with pytest.raises(BadRecordError, match=r"img\.jpg \(image id 3\) does not exist"):
        read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)
    records, summary = read_coco_keypoints(
        str(path), str(tmp_path), COCO, 0.75, on_bad_record="skip"
    )
    assert records == [] and len(summary.skipped) == 1
    with pytest.raises(BadRecordError, match=r"img\.jpg \(image id 3\) does not exist"):
        read_image(str(tmp_path / "img.jpg"), 3)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(BadRecordError, match=r"broken\.jpg \(image id 12\) cannot be decoded"):
        read_image(str(bad), 12)


@pytest.mark.parametrize("text", ['{"images": [', '{"images": [1, 2,]}', ""])
def test_truncated_or_malformed_json_is_named(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(BadRecordError, match=r"broken\.json is not valid JSON"):
        read_coco_keypoints(str(path), str(tmp_path), COCO, 0.75)


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(BadRecordError, match=r"nope\.json does not exist"):
        read_coco_keypoints(str(tmp_path / "nope.json"), str(tmp_path), COCO, 0.75)


def test_bad_detection_is_named(tmp_path):
    dets = json.loads((COCO_DIR / "test_coco_det_AP_H_56.json").read_text())[:3]
    dets[1]["bbox"] = [1, 2, 3]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(BadRecordError) as err:
        read_detections(str(path), str(COCO_DIR / "test_coco.json"), str(COCO_DIR), COCO, 0.75)
    assert "dets.json: detection 1 (image id" in str(err.value)
    assert "field 'bbox' has 3 values, expected 4" in str(err.value)
    del dets[1]["score"]
    dets[1]["bbox"] = [1, 2, 3, 4]
    path.write_text(json.dumps(dets))
    with pytest.raises(BadRecordError, match="detection 1 .* field 'score' is missing"):
        read_detections(str(path), str(COCO_DIR / "test_coco.json"), str(COCO_DIR), COCO, 0.75)


def test_bad_mpii_entry_is_named(tmp_path):
    entries = json.loads((DATA_DIR / "mpii" / "test_mpii.json").read_text())
    entries[2]["joints"] = entries[2]["joints"][:15]
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(BadRecordError) as err:
        read_mpii(str(path), str(DATA_DIR / "mpii"), MPII)
    assert f"entry 2 (image {entries[2]['image']})" in str(err.value)
    assert "field 'joints' has 15 joints, expected 16" in str(err.value)


def test_bad_headbox_file_is_named(tmp_path):
    path = tmp_path / "gt_valid.mat"
    path.write_bytes(b"garbage")
    with pytest.raises(BadRecordError, match=r"gt_valid\.mat cannot be read"):
        read_gt_valid(str(path))


def test_image_without_id_is_named_by_its_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadRecordError, match=r"image file .*empty\.jpg is empty") as err:
        read_image(str(tmp_path / "empty.jpg"), -1)
    assert "image id" not in str(err.value)
