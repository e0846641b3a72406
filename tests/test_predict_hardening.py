"""predict on bad input, and predict against eval.py on the same detections.

One generated dataset (4 images, 12 detections) goes through eval.py and predict
clean; then through predict with every kind of bad input added at once (bad and
degenerate boxes, keys and images that match nothing, undecodable and empty image
files, an image of the wrong size). Each test checks one kind: the warning names the
file (and the box and the field), the summary counts it, and the valid images' outputs
equal the clean run's, keypoint for keypoint.
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

from efafnet_jax.data.synthetic import generate

CONFIG = "configs/tiny.py:efafnet,64x64"
EXTENSION = "--config.data.det_box_extension=0.3"  # CrowdPose's: the extension matters
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
NAN = float("nan")


def _run(*args: str, status: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=ENV, timeout=900
    )
    assert proc.returncode == status, proc.stderr[-3000:]
    return proc


def _predict_args(data, name: str, images: str, boxes: str, *args: str) -> list[str]:
    return [
        "-m",
        "efafnet_jax.inference.predict",
        "--config",
        CONFIG,
        "--images",
        str(data[images]),
        "--boxes",
        str(data[boxes]),
        "--out",
        str(data["root"] / name),
        "--json",
        *args,
    ]


def _predict(data, name: str, images: str, boxes: str, *args: str) -> tuple:
    """(output folder, stderr, the --json summary) of predict with the default settings on
    `data[images]` and `data[boxes]`."""
    proc = _run(*_predict_args(data, name, images, boxes, *args))
    return data["root"] / name, proc.stderr, json.loads(proc.stdout.strip().splitlines()[-1])


def _dump(path, data) -> str:
    path.write_text(json.dumps(data))  # NaN is written as the bare NaN that json reads
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The clean dataset, and copies with bad input added to the clean content."""
    root = tmp_path_factory.mktemp("hardening")
    paths = generate(str(root / "data"), train=1, val=4, seed=3)
    val_dir = root / "data" / "images" / "val"
    ann = json.loads(open(paths["val"]).read())
    detections = json.loads(open(paths["detections"]).read())
    assert len(detections) == 12
    names = [image["file_name"] for image in ann["images"]]
    ids = [image["id"] for image in ann["images"]]
    first = ann["images"][0]

    dirty_dir = root / "dirty_images"
    shutil.copytree(val_dir, dirty_dir)
    (dirty_dir / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg " * 20)
    (dirty_dir / "empty.jpg").write_bytes(b"")
    shutil.copy(val_dir / names[0], dirty_dir / "no_boxes.jpg")
    image = cv2.imread(str(val_dir / names[0]))
    cv2.imwrite(str(dirty_dir / "resized.jpg"), cv2.resize(image, (first["width"] + 8, 100)))

    # Detections: the annotation file also names the resized image (at its original
    # size) and an image that is not among --images.
    dirty_ann = dict(ann)
    dirty_ann["images"] = [
        *ann["images"],
        dict(first, id=7, file_name="resized.jpg"),
        dict(first, id=8, file_name="absent.jpg"),
    ]
    bad_detections = [
        dict(image_id=ids[0], category_id=1, bbox=[NAN, 10, 30, 40], score=0.9),
        dict(image_id=999, category_id=1, bbox=[10, 10, 30, 40], score=0.9),
        dict(image_id=ids[3], category_id=1, bbox=[10, 10, 30, 40], score=NAN),
        dict(image_id=ids[1], category_id=1, bbox=[10, 10, 0, 50], score=0.9),
        dict(image_id=ids[1], category_id=1, bbox=[50, 50, -20, 30], score=0.9),
        dict(image_id=ids[2], category_id=1, bbox=[1000, 1000, 20, 20], score=0.9),
        dict(image_id=7, category_id=1, bbox=[10, 10, 50, 80], score=0.9),
        dict(image_id=8, category_id=1, bbox=[10, 10, 50, 80], score=0.9),
    ]

    # A boxes file: the detections' boxes as given, by file name.
    boxes = {name: [] for name in names}
    for det in detections:
        boxes[names[ids.index(det["image_id"])]].append([*det["bbox"], det["score"]])
    dirty_boxes = {name: list(entries) for name, entries in boxes.items()}
    dirty_boxes[names[0]] += [[NAN, 10, 30, 40, 0.9], [10, 10, 0, 50, 0.9]]
    dirty_boxes[names[1]] += [[50, 50, -20, 30]]
    dirty_boxes[names[2]] += [[1000, 1000, 20, 20]]
    dirty_boxes[names[3]] += [[1, 2, 3]]
    dirty_boxes.update({n: [[0, 0, 10, 10]] for n in ("missing.jpg", "garbage.jpg", "empty.jpg")})

    return dict(
        root=root,
        garbage=dirty_dir / "garbage.jpg",
        resized=dirty_dir / "resized.jpg",
        resized_width=first["width"] + 8,
        names=names,
        ids=ids,
        val_ann=paths["val"],
        val_dir=val_dir,
        detections=paths["detections"],
        dirty_dir=dirty_dir,
        dirty_ann=_dump(root / "dirty_ann.json", dirty_ann),
        dirty_detections=_dump(root / "dirty_det.json", detections + bad_detections),
        first_bad_detection=len(detections),
        resized_detection=_dump(root / "resized_det.json", bad_detections[6:7]),
        boxes=_dump(root / "boxes.json", boxes),
        dirty_boxes=_dump(root / "dirty_boxes.json", dirty_boxes),
        clean_counts=[len(boxes[name]) for name in names],
    )


@pytest.fixture(scope="module")
def eval_results(data):
    """eval.py's results (after its rescoring and OKS-NMS) on the clean detections."""
    out = data["root"] / "eval"
    _run(
        "eval.py",
        "--config",
        CONFIG,
        f"--config.data.val_ann={data['val_ann']}",
        f"--config.data.val_images={data['val_dir']}",
        f"--config.data.val_detections={data['detections']}",
        EXTENSION,
        "--config.eval.workers=0",
        "--out",
        str(out),
    )
    return json.loads((out / "results" / "val_keypoints.json").read_text())


@pytest.fixture(scope="module")
def clean_detections(data):
    return _predict(data, "clean_det", "val_dir", "detections", "--ann", data["val_ann"], EXTENSION)


@pytest.fixture(scope="module")
def dirty_detections(data):
    args = ("--ann", data["dirty_ann"], EXTENSION)
    return _predict(data, "dirty_det", "dirty_dir", "dirty_detections", *args)


@pytest.fixture(scope="module")
def clean_boxes(data):
    return _predict(data, "clean_boxes", "val_dir", "boxes")


@pytest.fixture(scope="module")
def dirty_boxes(data):
    return _predict(data, "dirty_boxes", "dirty_dir", "dirty_boxes")


def _people(out, name: str) -> list[dict]:
    return json.loads((out / f"{os.path.splitext(name)[0]}.json").read_text())["people"]


def _assert_valid_outputs_equal(data, clean, dirty) -> None:
    """Every valid image's people (boxes, keypoints, scores) as in the clean run."""
    for name, count in zip(data["names"], data["clean_counts"], strict=True):
        assert len(_people(clean[0], name)) == count, name
        assert _people(dirty[0], name) == _people(clean[0], name), name


def _warnings(stderr: str, *parts: str) -> list[str]:
    """The warning lines of `stderr` that contain every one of `parts`."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("W") and all(p in line for p in parts)
    ]


def test_detections_give_eval_keypoints(data, eval_results, clean_detections):
    """Same detections, same weights, default settings: eval.py's keypoints to 1e-3 px.

    eval.py writes its persons after OKS-NMS (in score order), predict writes every
    detection: each eval.py person is matched to the nearest predict person of its image.
    """
    out, _, summary = clean_detections
    assert summary["people"] == 12 and summary["images"] == 4
    file_of = dict(zip(data["ids"], data["names"], strict=True))
    worst, matched = 0.0, set()
    for result in eval_results:
        expected = np.reshape(result["keypoints"], (-1, 3))
        people = _people(out, file_of[result["image_id"]])
        gaps = [np.abs(np.asarray(p["keypoints"]) - expected).max() for p in people]
        best = int(np.argmin(gaps))
        matched.add((result["image_id"], best))
        worst = max(worst, gaps[best])
        assert abs(people[best]["score"] - result["score"]) <= 1e-5
    # Both files round to 3 decimals: values that differ by less than 1e-3 px round to
    # at most one step (1e-3) apart.
    assert worst <= 1e-3 + 1e-9, f"predict is {worst:.4f} px from eval.py"
    # OKS-NMS (threshold 0.9) drops none of these 12: every predict person is compared.
    assert len(matched) == len(eval_results) == 12


def test_a_nan_box_is_skipped_and_counted(
    data, clean_detections, dirty_detections, clean_boxes, dirty_boxes
):
    n = data["first_bad_detection"]
    det_stderr, det_summary = dirty_detections[1:]
    # Detections: the file, the detection (its index in the file, its image) and the field.
    for i, image_id, field in ((n, data["ids"][0], "bbox"), (n + 2, data["ids"][3], "score")):
        where = f"dirty_det.json: detection {i} (image id {image_id}): field '{field}'"
        assert _warnings(det_stderr, where, "non-finite", "skipped"), where
    assert _warnings(det_stderr, f"detection {n + 1} (image id 999): field 'image_id'")
    assert det_summary["bad_boxes"] == 3
    _assert_valid_outputs_equal(data, clean_detections, dirty_detections)

    boxes_stderr, boxes_summary = dirty_boxes[1:]
    first, last = data["names"][0], data["names"][3]
    box = data["clean_counts"][0]
    assert _warnings(
        boxes_stderr, f"dirty_boxes.json: '{first}' box {box}: field 'x' is not finite"
    )
    assert _warnings(
        boxes_stderr, f"dirty_boxes.json: '{last}' box {data['clean_counts'][3]}: expected [x, y"
    )
    assert boxes_summary["bad_boxes"] == 2
    _assert_valid_outputs_equal(data, clean_boxes, dirty_boxes)


def test_degenerate_boxes_are_skipped_and_counted(
    data, clean_detections, dirty_detections, clean_boxes, dirty_boxes
):
    n = data["first_bad_detection"]
    det_stderr, det_summary = dirty_detections[1:]
    ids = data["ids"]
    # eval.py's reader warns about these, by detection index, image id and field.
    for i, image_id, problem in (
        (n + 3, ids[1], "has no area (width 0, height 50)"),
        (n + 4, ids[1], "has no area (width -20, height 30)"),
        (n + 5, ids[2], "lies wholly outside the"),
    ):
        where = f"dirty_det.json: detection {i} (image id {image_id}): field 'bbox'"
        assert _warnings(det_stderr, where, problem, "skipped"), where
    assert det_summary["degenerate_boxes"] == 3
    _assert_valid_outputs_equal(data, clean_detections, dirty_detections)

    boxes_stderr, boxes_summary = dirty_boxes[1:]
    names, counts = data["names"], data["clean_counts"]
    for name, box, values, problem in (
        # The NaN box before it keeps its place: the index is the one in the file.
        (names[0], counts[0] + 1, "[10.0, 10.0, 0.0, 50.0]", "has no area (width 0, height 50)"),
        (names[1], counts[1], "[50.0, 50.0, -20.0, 30.0]", "has no area (width -20, height 30)"),
        (names[2], counts[2], "[1000.0, 1000.0, 20.0, 20.0]", "lies wholly outside the"),
    ):
        image = str(data["dirty_dir"] / name)
        where = f"image {image}: boxes file {data['dirty_boxes']}: '{name}' box {box} {values}"
        assert _warnings(boxes_stderr, where, problem, "skipped"), where
    assert boxes_summary["degenerate_boxes"] == 3
    _assert_valid_outputs_equal(data, clean_boxes, dirty_boxes)


def test_unmatched_keys_and_images_without_boxes_are_warned_and_counted(
    data, clean_detections, dirty_detections, clean_boxes, dirty_boxes
):
    for run, clean, key, summary_without in (
        (dirty_detections, clean_detections, "absent.jpg", 3),
        (dirty_boxes, clean_boxes, "missing.jpg", 2),
    ):
        out, stderr, summary = run
        assert _warnings(stderr, f"'{key}' matches no image of --images", "boxes not used: 1")
        assert summary["unmatched_keys"] == 1
        assert _warnings(stderr, f"image {data['dirty_dir'] / 'no_boxes.jpg'}: no boxes for it in")
        assert _people(out, "no_boxes.jpg") == []
        assert summary["images_without_boxes"] == summary_without
        assert summary["people"] == 12
        _assert_valid_outputs_equal(data, clean, run)


def test_unreadable_images_are_skipped_and_counted(
    data, clean_detections, dirty_detections, clean_boxes, dirty_boxes
):
    for run, clean in ((dirty_detections, clean_detections), (dirty_boxes, clean_boxes)):
        out, stderr, summary = run
        for name, problem in (("garbage.jpg", "cannot be decoded"), ("empty.jpg", "empty")):
            (line,) = _warnings(stderr, f"image file {data['dirty_dir'] / name}", problem)
            assert "image id" not in line  # predict's images have no id: the file says it
            assert not (out / name.replace(".jpg", ".json")).exists()
        assert summary["unreadable"] == 2
        assert summary["images"] == (5 if run is dirty_detections else 6)
        _assert_valid_outputs_equal(data, clean, run)


def test_an_image_of_another_size_than_the_annotation_says_is_skipped(
    data, clean_detections, dirty_detections
):
    out, stderr, summary = dirty_detections
    assert _warnings(stderr, f"image file {data['dirty_dir'] / 'resized.jpg'} is ", "skipped")
    assert summary["wrong_size"] == 1
    assert not (out / "resized.json").exists()
    _assert_valid_outputs_equal(data, clean_detections, dirty_detections)


def test_clean_runs_report_nothing_skipped(clean_detections, clean_boxes):
    for _, stderr, summary in (clean_detections, clean_boxes):
        counts = {k: v for k, v in summary.items() if k not in ("images", "people", "out")}
        assert set(counts.values()) == {0}, counts
        assert (summary["images"], summary["people"]) == (4, 12)
        assert not _warnings(stderr, "skipped")


def test_under_raise_the_first_bad_input_stops_predict_with_its_message(data):
    """--on_bad_record=raise: exit status 2 and `error: <message>` naming the file (the
    box and the field), no traceback; the default (skip) is tested above."""
    raise_ = "--on_bad_record=raise"
    n, first = data["first_bad_detection"], data["names"][0]
    for images, boxes, args, message in (
        (
            "dirty_dir",
            "dirty_detections",
            ("--ann", data["dirty_ann"]),
            f"dirty_det.json: detection {n} (image id {data['ids'][0]}): field 'bbox'",
        ),
        (
            "dirty_dir",
            "dirty_boxes",
            (),
            f"dirty_boxes.json: '{first}' box {data['clean_counts'][0]}: field 'x' is not finite",
        ),
        ("garbage", "boxes", (), f"image file {data['dirty_dir'] / 'garbage.jpg'} "),
        (
            "resized",
            "resized_detection",
            ("--ann", data["dirty_ann"]),
            f"image file {data['dirty_dir'] / 'resized.jpg'} is {data['resized_width']}x100 "
            "pixels, but the annotation file's images[].width/height say",
        ),
    ):
        proc = _run(*_predict_args(data, "raise", images, boxes, *args, raise_), status=2)
        (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert message in line, (message, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
