"""Fields of the wrong JSON type and repeated ids, caught where the file is read: under
'raise' a BadRecordError naming the file, the record and the field; under 'skip' a count,
with every valid record kept. One case per field each reader uses, and for each kind of
wrong value (a number as a string, a bool, null, a nested list)."""

import json

import pytest
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.keypoints import COCO, MPII, spec_from_coco_category
from efafnet_jax.data.mpii import read_mpii
from efafnet_jax.data.records import BadRecordError

PERSON = dict(
    category_id=1,
    iscrowd=0,
    area=400.0,
    bbox=[10.0, 10.0, 20.0, 40.0],
    keypoints=[15.0, 15.0, 2.0] * 17,
    num_keypoints=17,
)


def _coco_content() -> dict:
    """Two images: id 3 with annotations 7 and 8, id 4 with annotation 9."""
    content = dict(
        images=[
            dict(id=3, file_name="a.jpg", width=80, height=60),
            dict(id=4, file_name="b.jpg", width=80, height=60),
        ],
        annotations=[
            dict(PERSON, id=7, image_id=3),
            dict(PERSON, id=8, image_id=3),
            dict(PERSON, id=9, image_id=4),
        ],
        categories=[dict(id=1, name="person", keypoints=list(COCO.names))],
    )
    return json.loads(json.dumps(content))  # no list shared between annotations


def _read(tmp_path, data, policy):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    records, summary = read_coco_keypoints(
        str(path), str(tmp_path), COCO, 0.75, on_bad_record=policy, check_images=False
    )
    return path, records, summary


def _bad_annotation_8(field, value):
    def change(data):
        data["annotations"][1][field] = value

    return change


def _bad_bbox_value(value):
    def change(data):
        data["annotations"][1]["bbox"][2] = value

    return change


def _bad_keypoint_value(value):
    def change(data):
        data["annotations"][1]["keypoints"][4] = value

    return change


# (change to annotation id 8, what the message says); each skips annotation 8 alone.
ANNOTATION_CASES = {
    "bbox as strings (the reported file)": (
        _bad_annotation_8("bbox", ["316.76", "10", "20", "40"]),
        "field 'bbox' holds the string '316.76' at index 0, expected a number",
    ),
    "bbox value true": (_bad_bbox_value(True), "field 'bbox' holds true at index 2"),
    "bbox value null": (_bad_bbox_value(None), "field 'bbox' holds null at index 2"),
    "bbox value nested": (_bad_bbox_value([20.0]), "field 'bbox' holds a list at index 2"),
    "bbox a string": (_bad_annotation_8("bbox", "10 10 20 40"), "field 'bbox' is the string"),
    "keypoint as string": (
        _bad_keypoint_value("15"),
        "field 'keypoints' holds the string '15' at index 4",
    ),
    "keypoint true": (_bad_keypoint_value(True), "field 'keypoints' holds true at index 4"),
    "keypoint null": (_bad_keypoint_value(None), "field 'keypoints' holds null at index 4"),
    "keypoints nested": (
        _bad_annotation_8("keypoints", [[15.0, 15.0, 2.0]] * 17),
        "field 'keypoints' has 17 values, expected 51",
    ),
    "area as string": (
        _bad_annotation_8("area", "400"),
        "field 'area' is the string '400', expected a number",
    ),
    "area null": (_bad_annotation_8("area", None), "field 'area' is null, expected a number"),
    "iscrowd true": (_bad_annotation_8("iscrowd", True), "field 'iscrowd' is true, expected an"),
    "iscrowd 2": (_bad_annotation_8("iscrowd", 2), "field 'iscrowd' is 2, expected 0 or 1"),
    "category_id as string": (
        _bad_annotation_8("category_id", "1"),
        "field 'category_id' is the string '1', expected an integer",
    ),
    "num_keypoints as float": (
        _bad_annotation_8("num_keypoints", 17.0),
        "field 'num_keypoints' is 17.0, expected an integer",
    ),
    "image_id as string": (
        _bad_annotation_8("image_id", "3"),
        "annotation id 8: field 'image_id' is the string '3', expected an integer",
    ),
    "id as string": (
        _bad_annotation_8("id", "8"),
        "annotations[1] (image id 3): field 'id' is the string '8', expected an integer",
    ),
    "id null": (_bad_annotation_8("id", None), "annotations[1] (image id 3): field 'id' is null"),
    "id missing": (
        lambda data: data["annotations"][1].pop("id"),
        "annotations[1] (image id 3): field 'id' is missing",
    ),
    "not an object": (
        lambda data: data["annotations"].__setitem__(1, [8, 3]),
        "annotations[1] is a list, not an object",
    ),
    "repeated annotation id": (
        _bad_annotation_8("id", 7),
        "annotation id 7 (image id 3): field 'id' repeats the id of annotations[0]",
    ),
    # The reader leaves crowd regions out, but the metric reads their boxes.
    "crowd region's bbox as strings": (
        lambda data: data["annotations"][1].update(iscrowd=1, bbox=["1", "2", "3", "4"]),
        "field 'bbox' holds the string '1' at index 0",
    ),
}


def _named_then_skipped(tmp_path, change, message: str):
    """Reads the changed content under 'raise' (the error must start with the file and
    hold `message`), then under 'skip': (records, summary)."""
    data = _coco_content()
    change(data)
    with pytest.raises(BadRecordError) as err:
        _read(tmp_path, data, "raise")
    assert str(err.value).startswith(f"{tmp_path / 'ann.json'}: ")
    assert message in str(err.value)
    _, records, summary = _read(tmp_path, data, "skip")
    return records, summary


@pytest.mark.parametrize("case", sorted(ANNOTATION_CASES))
def test_an_annotation_field_of_the_wrong_type_is_named_or_skipped(tmp_path, case):
    change, message = ANNOTATION_CASES[case]
    records, summary = _named_then_skipped(tmp_path, change, message)
    assert [r.annotation_id for r in records] == [7, 9]
    assert summary.skipped_annotations == [1] and len(summary.skipped) == 1
    assert message in summary.skipped[0]


def _bad_image_4(field, value):
    def change(data):
        data["images"][1][field] = value

    return change


# (change to image id 4, what the message says); each skips image 4 and so annotation 9,
# whose 'image_id' then names an entry skipped as bad.
IMAGE_CASES = {
    "id as string": (_bad_image_4("id", "4"), "images[1]: field 'id' is the string '4'"),
    "id as float": (_bad_image_4("id", 4.0), "images[1]: field 'id' is 4.0, expected an integer"),
    "id true": (_bad_image_4("id", True), "images[1]: field 'id' is true, expected an integer"),
    "file_name a number": (
        _bad_image_4("file_name", 17),
        "images[1] (id 4): field 'file_name' is 17, expected a non-empty string",
    ),
    "file_name null": (_bad_image_4("file_name", None), "field 'file_name' is null"),
    "width as string": (
        _bad_image_4("width", "80"),
        "images[1] (id 4): field 'width' is the string '80', expected a number",
    ),
    "height nested": (_bad_image_4("height", [60]), "field 'height' is a list, expected a number"),
    "crowdIndex as string": (
        _bad_image_4("crowdIndex", "0.5"),
        "field 'crowdIndex' is the string '0.5', expected a number",
    ),
    "repeated image id": (
        _bad_image_4("id", 3),
        "images[1] (id 3): field 'id' repeats the id of images[0]",
    ),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_an_image_field_of_the_wrong_type_or_a_repeated_id_is_named_or_skipped(tmp_path, case):
    change, message = IMAGE_CASES[case]
    records, summary = _named_then_skipped(tmp_path, change, message)
    assert summary.skipped_images == [1] and message in summary.skipped[0]
    assert "images[1]" in summary.skipped[0]
    # Annotation 9 named image 4 ('image_id' 4), which is skipped (or, when the repeated
    # id took 4's place, no image at all): counted, not read against another image.
    assert summary.skipped_annotations == [2] and len(summary.skipped) == 2
    assert "annotation id 9 (image id 4): field 'image_id' 4 names" in summary.skipped[1]
    assert [(r.annotation_id, r.image_id) for r in records] == [(7, 3), (8, 3)]
    assert {r.image_path for r in records} == {str(tmp_path / "a.jpg")}


def test_a_repeated_image_id_keeps_the_first_entry_for_its_annotations(tmp_path):
    data = _coco_content()
    data["images"][1]["id"] = 3
    data["annotations"][2]["image_id"] = 3
    _, records, summary = _read(tmp_path, data, "skip")
    assert len(summary.skipped) == 1 and "repeats the id of images[0]" in summary.skipped[0]
    assert [r.annotation_id for r in records] == [7, 8, 9]
    assert {r.image_path for r in records} == {str(tmp_path / "a.jpg")}


@pytest.mark.parametrize("policy", ["raise", "skip"])
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(id="1"), r"categories\[0\]: field 'id' is the string '1'"),
        (lambda c: c.update(keypoints=[1, 2]), "field 'keypoints' is not a list of joint names"),
    ],
    ids=["id as string", "joint names as numbers"],
)
def test_a_bad_person_category_stops_the_read_under_either_policy(
    tmp_path, policy, change, message
):
    # Without its category no annotation can be read: nothing to skip to.
    data = _coco_content()
    change(data["categories"][0])
    with pytest.raises(BadRecordError, match=message):
        _read(tmp_path, data, policy)


def test_a_custom_keypoint_set_refuses_a_skeleton_of_strings(tmp_path):
    data = _coco_content()
    data["categories"][0]["skeleton"] = [["16", "14"]]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadRecordError, match="'skeleton' is not a list of \\[joint, joint\\]"):
        spec_from_coco_category(str(path))


# Detections: (change to detection 1, message); each skips detection 1 alone.
DETECTION_CASES = {
    "image_id as string": (("image_id", "3"), "field 'image_id' is the string '3'"),
    "category_id as string": (("category_id", "1"), "field 'category_id' is the string '1'"),
    "bbox as strings": (("bbox", ["1", "2", "30", "40"]), "field 'bbox' holds the string '1'"),
    "bbox nested": (("bbox", [[1, 2], [30, 40]]), "field 'bbox' has 2 values, expected 4"),
    "score as string": (("score", "0.9"), "field 'score' is the string '0.9', expected a number"),
    "score true": (("score", True), "field 'score' is true, expected a number"),
    "score null": (("score", None), "field 'score' is null, expected a number"),
}


@pytest.mark.parametrize("case", sorted(DETECTION_CASES))
def test_a_detection_field_of_the_wrong_type_is_named_or_skipped(tmp_path, case):
    (field, value), message = DETECTION_CASES[case]
    gt = tmp_path / "ann.json"
    gt.write_text(json.dumps(_coco_content()))
    detections = [
        dict(image_id=image_id, category_id=1, bbox=[5.0, 5.0, 30.0, 40.0], score=0.9)
        for image_id in (3, 3, 4)
    ]
    detections[1][field] = value
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    read = dict(det_file=str(path), ann_file=str(gt), image_dir=str(tmp_path), spec=COCO)
    with pytest.raises(BadRecordError) as err:
        read_detections(**read, aspect_ratio=0.75, check_images=False)
    assert str(err.value).startswith(f"{path}: detection 1 ") and message in str(err.value)
    records, summary = read_detections(
        **read, aspect_ratio=0.75, check_images=False, on_bad_record="skip"
    )
    assert [r.image_id for r in records] == [3, 4]
    assert summary.skipped_annotations == [1] and message in summary.skipped[0]


def test_a_repeated_image_id_in_the_gt_of_detections_is_named_or_skipped(tmp_path):
    data = _coco_content()
    data["images"][1]["id"] = 3
    gt = tmp_path / "ann.json"
    gt.write_text(json.dumps(data))
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([dict(image_id=3, bbox=[5.0, 5.0, 30.0, 40.0], score=0.9)]))
    read = dict(det_file=str(path), ann_file=str(gt), image_dir=str(tmp_path), spec=COCO)
    with pytest.raises(BadRecordError, match=r"ann\.json: images\[1\] \(id 3\): field 'id' rep"):
        read_detections(**read, aspect_ratio=0.75, check_images=False)
    records, summary = read_detections(
        **read, aspect_ratio=0.75, check_images=False, on_bad_record="skip"
    )
    assert [r.image_path for r in records] == [str(tmp_path / "a.jpg")]
    assert len(summary.skipped) == 1


MPII_CASES = {
    "image a number": (("image", 17), "field 'image' is 17, expected a non-empty string"),
    "center as strings": (("center", ["100", "200"]), "field 'center' holds the string '100'"),
    "scale as string": (("scale", "1.5"), "field 'scale' is the string '1.5', expected a number"),
    "scale null": (("scale", None), "field 'scale' is null, expected a number"),
    "joints a flat list": (("joints", [1.0] * 32), "field 'joints' has 32 joints, expected 16"),
    "joint as strings": (
        ("joints", [["1", "2"]] + [[1.0, 2.0]] * 15),
        "field 'joints' holds the string '1' at index 0",
    ),
    "joints_vis true": (("joints_vis", [True] * 16), "field 'joints_vis' holds true at index 0"),
}


@pytest.mark.parametrize("case", sorted(MPII_CASES))
def test_an_mpii_field_of_the_wrong_type_is_named_or_skipped(tmp_path, case):
    (field, value), message = MPII_CASES[case]
    entries = json.loads((DATA_DIR / "mpii" / "test_mpii.json").read_text())
    entries[1][field] = value
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(entries))
    read = dict(json_file=str(path), image_dir=str(DATA_DIR / "mpii"), spec=MPII)
    with pytest.raises(BadRecordError) as err:
        read_mpii(**read, check_images=False)
    assert str(err.value).startswith(f"{path}: entry 1 (image ") and message in str(err.value)
    records, summary = read_mpii(**read, check_images=False, on_bad_record="skip")
    assert [r.annotation_id for r in records] == [i for i in range(len(entries)) if i != 1]
    assert summary.skipped_annotations == [1] and message in summary.skipped[0]


def test_packing_names_an_image_entry_whose_file_name_is_not_a_string(tmp_path):
    from efafnet_jax.data.pack import image_names

    data = _coco_content()
    data["images"][1]["file_name"] = ["b.jpg"]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadRecordError, match=r"images\[1\]: field 'file_name' is a list"):
        image_names(str(path))
