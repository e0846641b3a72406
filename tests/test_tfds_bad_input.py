"""Bad input at TFDS build time is handled as the file readers handle it: the same named
error under 'raise'; under 'skip' the same records skipped and counted, the rest kept."""

import json

import pytest
from test_tfds import (
    COCO_DETECTIONS,
    _build,
    _coco_layout,
    _data_configs,
    _mpii_layout,
    assert_same_records,
)


def _break(manual, kind: str) -> tuple[str, int, int]:
    """Breaks the COCO layout's val split: (the file reader's message part, records a
    build under 'skip' counts as skipped, examples it keeps)."""
    if kind != "detection score as string":  # the GT's breaks alone
        (manual / COCO_DETECTIONS).unlink()
    if kind == "missing image":
        (manual / "images" / "val2017" / "000000197388.jpg").unlink()
        return "000000197388.jpg (image id 197388) does not exist", 1, 3
    if kind == "detection score as string":
        path = manual / COCO_DETECTIONS
        detections = json.loads(path.read_text())
        detections[2]["score"] = str(detections[2]["score"])
        path.write_text(json.dumps(detections))
        return "detection 2 (image id 785): field 'score' is the string", 1, 4
    path = manual / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(path.read_text())
    images, annotations = data["images"], data["annotations"]
    if kind == "malformed annotation":
        annotations[3]["keypoints"][5] = "x"
        part, skipped, kept = f"annotation id {annotations[3]['id']} (image id", 1, 4
    elif kind == "bbox as strings":
        annotations[3]["bbox"] = [str(v) for v in annotations[3]["bbox"]]
        part, skipped, kept = "field 'bbox' holds the string", 1, 4
    elif kind == "repeated annotation id":
        annotations[5]["id"] = annotations[4]["id"]
        part, skipped, kept = "field 'id' repeats the id of annotations[4]", 1, 4
    else:  # repeated image id: the last image's entry, and so its 5 persons, are skipped
        assert kind == "repeated image id"
        orphans = sum(a["image_id"] == images[3]["id"] for a in annotations)
        images[3]["id"] = images[2]["id"]
        part, skipped, kept = "images[3] (id 196141): field 'id' repeats", 1 + orphans, 3
    path.write_text(json.dumps(data))
    return part, skipped, kept


BUILD_BREAKS = [
    "missing image",
    "malformed annotation",
    "bbox as strings",
    "repeated annotation id",
    "repeated image id",
    "detection score as string",
]


def _val_configs(manual, data_dir, kind: str, policy: str):
    """(files, built) reading the val split, with the detections when they are broken."""
    files, built = _data_configs("coco_keypoints", manual, data_dir)
    if kind != "detection score as string":
        files.val_detections = built.val_detections = ""
    files.on_bad_record = built.on_bad_record = policy
    return files, built


@pytest.mark.parametrize("kind", BUILD_BREAKS)
def test_bad_input_at_build_time_stops_with_the_file_readers_message(tmp_path, kind):
    from efafnet_jax.data.records import BadRecordError
    from efafnet_jax.data.splits import read_split

    manual = _coco_layout(tmp_path / "manual")
    part, _, _ = _break(manual, kind)
    files, _ = _val_configs(manual, tmp_path / "tfds", kind, "raise")
    with pytest.raises(BadRecordError) as from_files:
        read_split(files, "val")
    with pytest.raises(BadRecordError) as at_build:
        _build("coco_keypoints", manual, tmp_path / "tfds", splits=("val",))
    assert part in str(at_build.value)
    assert str(at_build.value) == str(from_files.value)


@pytest.mark.parametrize("kind", BUILD_BREAKS)
def test_bad_input_at_build_time_is_skipped_counted_and_the_rest_kept(tmp_path, kind):
    from efafnet_jax.data.splits import read_split

    manual = _coco_layout(tmp_path / "manual")
    part, skipped, kept = _break(manual, kind)
    builder = _build(
        "coco_keypoints", manual, tmp_path / "tfds", splits=("val",), on_bad_record="skip"
    )
    meta = builder.info.metadata["val"]
    assert meta["skipped_records"] == skipped and part in meta["skipped"][0]
    files, built = _val_configs(manual, tmp_path / "tfds", kind, "skip")
    from_files, summary, _ = read_split(files, "val")
    assert len(summary.skipped) == skipped
    assert_same_records(from_files, read_split(built, "val")[0])
    assert builder.info.splits["val"].num_examples == kept


def test_a_repeated_image_id_is_counted_once_though_the_detections_read_the_gt_again(tmp_path):
    manual = _coco_layout(tmp_path / "manual")
    path = manual / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(path.read_text())
    data["images"][3]["id"] = data["images"][2]["id"]
    path.write_text(json.dumps(data))
    builder = _build(
        "coco_keypoints", manual, tmp_path / "tfds", splits=("val",), on_bad_record="skip"
    )
    skipped = builder.info.metadata["val"]["skipped"]
    repeats = [m for m in skipped if "field 'id' repeats the id of images[2]" in m]
    assert len(repeats) == 1 and len(set(skipped)) == len(skipped)
    # The image's 5 persons and its detections name an image the file no longer has.
    detections = json.loads((manual / COCO_DETECTIONS).read_text())
    orphans = sum(d["image_id"] == 197388 for d in detections)
    assert len(skipped) == 1 + 5 + orphans


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_an_mpii_field_of_the_wrong_type_at_build_time_is_named_or_skipped(tmp_path, policy):
    from efafnet_jax.data.records import BadRecordError
    from efafnet_jax.data.splits import read_split

    manual = _mpii_layout(tmp_path / "manual")
    path = manual / "annot" / "valid.json"
    entries = json.loads(path.read_text())
    entries[1]["scale"] = str(entries[1]["scale"])
    path.write_text(json.dumps(entries))
    message = r"valid\.json: entry 1 \(image .*\): field 'scale' is the string"
    if policy == "raise":
        with pytest.raises(BadRecordError, match=message):
            _build("mpii", manual, tmp_path / "tfds", splits=("val",))
        return
    builder = _build("mpii", manual, tmp_path / "tfds", splits=("val",), on_bad_record="skip")
    meta = builder.info.metadata["val"]
    assert meta["skipped_records"] == 1 and "field 'scale' is the string" in meta["skipped"][0]
    files, built = _data_configs("mpii", manual, tmp_path / "tfds")
    files.on_bad_record = built.on_bad_record = "skip"
    from_files = read_split(files, "val")[0]
    assert [r.annotation_id for r in from_files] == [i for i in range(len(entries)) if i != 1]
    assert_same_records(from_files, read_split(built, "val")[0])
