"""predict on bad input, and predict against eval.py on the same detections.

One generated dataset (4 images, 12 detections) goes through eval.py and predict
clean; then through predict with every kind of bad input added at once (bad and
degenerate boxes, keys and images that match nothing, undecodable and empty image
files, an image of the wrong size), once as COCO detections and once as a boxes file.
Each test checks one kind: the warning names the file (and the box and the field), the
summary counts it, and the valid images' outputs equal the clean run's, keypoint for
keypoint. The boxes file holds the boxes that the detections become (extended as
eval.py extends them), so that the one clean run is the reference of both dirty runs.

Every command restores trained_tiny's weights (nothing is initialised) and computes in
float64: eval.py and predict batch their crops differently, and in float32 the rounding
of two batch compositions can move an argmax between two near-equal heatmap values; a
few training steps leave the heatmaps too flat to rule that out.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

from efafnet_jax.data.records import BadRecordError
from efafnet_jax.data.synthetic import generate

EXTENSION = 0.3  # CrowdPose's detection box extension: the extension matters
NAN = float("nan")
PREDICT = ("-m", "efafnet_jax.inference.predict")


def _run(trained_tiny, command, *args: str, status: int = 0) -> subprocess.CompletedProcess:
    """`python COMMAND ARGS` with trained_tiny's model and weights, in float64, on 2
    devices."""
    proc = subprocess.run(
        [
            sys.executable,
            *command,
            "--config",
            trained_tiny.spec,
            "--checkpoint",
            trained_tiny.checkpoint,
            "--config.model.dtype=float64",
            "--config.model.param_dtype=float64",
            f"--config.data.det_box_extension={EXTENSION}",
            # Every joint counts in the person scores: a few training steps leave every
            # joint's score under the default 0.2, which would make all scores 0.
            "--config.eval.in_vis_threshold=0.0",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_ENABLE_X64": "1",
        },
        timeout=900,
    )
    assert proc.returncode == status, proc.stderr[-3000:]
    return proc


def _predict_args(data, name: str, images: str, boxes: str, *args: str) -> list[str]:
    return [
        "--images",
        str(data[images]),
        "--boxes",
        str(data[boxes]),
        "--out",
        str(data["root"] / name),
        "--json",
        # A batch as large as an image's detections, not 32 (unoptimised inference costs
        # about 0.1 s a padded crop); eval.py batches 8 crops of several images.
        f"--batch_size={max(data['clean_counts'])}",
        *args,
    ]


def _predict(trained_tiny, data, name: str, images: str, boxes: str, *args: str) -> tuple:
    """(output folder, stderr, the --json summary) of predict with the default settings on
    `data[images]` and `data[boxes]`."""
    proc = _run(trained_tiny, PREDICT, *_predict_args(data, name, images, boxes, *args))
    return data["root"] / name, proc.stderr, json.loads(proc.stdout.strip().splitlines()[-1])


def _dump(path, data) -> str:
    path.write_text(json.dumps(data))  # NaN is written as the bare NaN that json reads
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The clean dataset, and copies with bad input added to the clean content."""
    from efafnet_jax.data.transforms import extend_box

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

    # A boxes file: the detections' boxes as the detections reader extends them, by file
    # name, in file order (boxes are used as given: the same crops as the detections').
    boxes = {name: [] for name in names}
    for det in detections:
        extended = extend_box(det["bbox"], EXTENSION).tolist()
        boxes[names[ids.index(det["image_id"])]].append([*extended, det["score"]])
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
def eval_results(trained_tiny, data):
    """eval.py's results (after its rescoring) on the clean detections, OKS-NMS off (OKS
    never exceeds 1), so that every detection is compared: trained weights give two of
    them keypoints within OKS 0.9 of each other."""
    out = data["root"] / "eval"
    _run(
        trained_tiny,
        ("eval.py",),
        f"--config.data.val_ann={data['val_ann']}",
        f"--config.data.val_images={data['val_dir']}",
        f"--config.data.val_detections={data['detections']}",
        "--config.eval.workers=0",
        "--config.eval.batch_size=8",
        "--config.eval.oks_threshold=1.0",
        "--out",
        str(out),
    )
    return json.loads((out / "results" / "val_keypoints.json").read_text())


@pytest.fixture(scope="module")
def clean_detections(trained_tiny, data):
    return _predict(
        trained_tiny, data, "clean_det", "val_dir", "detections", "--ann", data["val_ann"]
    )


@pytest.fixture(scope="module")
def dirty_detections(trained_tiny, data):
    args = ("--ann", data["dirty_ann"])
    return _predict(trained_tiny, data, "dirty_det", "dirty_dir", "dirty_detections", *args)


@pytest.fixture(scope="module")
def dirty_boxes(trained_tiny, data):
    return _predict(trained_tiny, data, "dirty_boxes", "dirty_dir", "dirty_boxes")


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


@pytest.mark.slow
def test_detections_give_eval_keypoints(data, eval_results, clean_detections):
    """Same detections, same weights, default settings: eval.py's keypoints to 1e-3 px.

    eval.py writes its persons in score order, predict in detection order: each eval.py
    person is matched to the nearest predict person of its image.
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
        assert result["score"] > 0
    # Both files round to 3 decimals: values that differ by less than 1e-3 px round to
    # at most one step (1e-3) apart.
    assert worst <= 1e-3 + 1e-9, f"predict is {worst:.4f} px from eval.py"
    # Every predict person is compared.
    assert len(matched) == len(eval_results) == 12


@pytest.mark.slow
def test_a_nan_box_is_skipped_and_counted(data, clean_detections, dirty_detections, dirty_boxes):
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
    _assert_valid_outputs_equal(data, clean_detections, dirty_boxes)


@pytest.mark.slow
def test_degenerate_boxes_are_skipped_and_counted(
    data, clean_detections, dirty_detections, dirty_boxes
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
    _assert_valid_outputs_equal(data, clean_detections, dirty_boxes)


@pytest.mark.slow
def test_unmatched_keys_and_images_without_boxes_are_warned_and_counted(
    data, clean_detections, dirty_detections, dirty_boxes
):
    for run, key, summary_without in (
        (dirty_detections, "absent.jpg", 3),
        (dirty_boxes, "missing.jpg", 2),
    ):
        out, stderr, summary = run
        assert _warnings(stderr, f"'{key}' matches no image of --images", "boxes not used: 1")
        assert summary["unmatched_keys"] == 1
        assert _warnings(stderr, f"image {data['dirty_dir'] / 'no_boxes.jpg'}: no boxes for it in")
        assert _people(out, "no_boxes.jpg") == []
        assert summary["images_without_boxes"] == summary_without
        assert summary["people"] == 12
        _assert_valid_outputs_equal(data, clean_detections, run)


@pytest.mark.slow
def test_unreadable_images_are_skipped_and_counted(
    data, clean_detections, dirty_detections, dirty_boxes
):
    for run in (dirty_detections, dirty_boxes):
        out, stderr, summary = run
        for name, problem in (("garbage.jpg", "cannot be decoded"), ("empty.jpg", "empty")):
            (line,) = _warnings(stderr, f"image file {data['dirty_dir'] / name}", problem)
            assert "image id" not in line  # predict's images have no id: the file says it
            assert not (out / name.replace(".jpg", ".json")).exists()
        assert summary["unreadable"] == 2
        assert summary["images"] == (5 if run is dirty_detections else 6)
        _assert_valid_outputs_equal(data, clean_detections, run)


@pytest.mark.slow
def test_an_image_of_another_size_than_the_annotation_says_is_skipped(
    data, clean_detections, dirty_detections
):
    out, stderr, summary = dirty_detections
    assert _warnings(stderr, f"image file {data['dirty_dir'] / 'resized.jpg'} is ", "skipped")
    assert summary["wrong_size"] == 1
    assert not (out / "resized.json").exists()
    _assert_valid_outputs_equal(data, clean_detections, dirty_detections)


@pytest.mark.slow
def test_a_clean_run_reports_nothing_skipped(clean_detections):
    _, stderr, summary = clean_detections
    counts = {
        k: v
        for k, v in summary.items()
        if k not in ("images", "people", "out", "checkpoint", "step")
    }
    assert set(counts.values()) == {0}, counts
    assert (summary["images"], summary["people"]) == (4, 12)
    assert not _warnings(stderr, "skipped")


def _boxes_of(trained_tiny, data, boxes: str, images: str, ann: str | None, policy: str):
    """predict's boxes for `data[images]` from `data[boxes]` (COCO detections with `ann`),
    read in-process under `policy`: (boxes by image, the summary's counts)."""
    from efafnet_jax.inference.boxes import list_images
    from efafnet_jax.inference.predict import boxes_by_image

    counts = {"images_without_boxes": 0}
    images = list_images([str(data[images])])
    found = boxes_by_image(data[boxes], ann, trained_tiny.config.data, images, counts, policy)
    return found, counts


def test_a_clean_boxes_file_reports_nothing_skipped(trained_tiny, data, caplog):
    """The boxes file's reading (the part of predict that differs from the detections
    run's): nothing counted or warned about, every box kept for its image."""
    with caplog.at_level(logging.WARNING):
        found, counts = _boxes_of(trained_tiny, data, "boxes", "val_dir", None, "skip")
    assert set(counts.values()) == {0}, counts
    assert not caplog.records
    by_name = {os.path.basename(path): boxes for path, boxes in found.items()}
    assert [len(by_name[name]) for name in data["names"]] == data["clean_counts"]


def test_under_raise_a_bad_box_stops_predict_with_its_message(trained_tiny, data):
    """--on_bad_record=raise on bad boxes, as predict reads them before any image: the
    first bad box raises its message, naming the file, the box and the field (the command
    prints it as `error: <message>`: the next test)."""
    n, first = data["first_bad_detection"], data["names"][0]
    with pytest.raises(
        BadRecordError,
        match=rf"dirty_det\.json: detection {n} \(image id {data['ids'][0]}\): field 'bbox'",
    ):
        _boxes_of(trained_tiny, data, "dirty_detections", "dirty_dir", data["dirty_ann"], "raise")
    with pytest.raises(
        BadRecordError,
        match=rf"dirty_boxes\.json: '{first}' box {data['clean_counts'][0]}: field 'x' is not",
    ):
        _boxes_of(trained_tiny, data, "dirty_boxes", "dirty_dir", None, "raise")


@pytest.mark.slow
def test_under_raise_a_bad_image_stops_predict_with_its_message(trained_tiny, data):
    """--on_bad_record=raise: exit status 2 and `error: <message>` naming the file, no
    traceback; the default (skip) is tested above."""
    for images, boxes, args, message in (
        ("garbage", "boxes", (), f"image file {data['dirty_dir'] / 'garbage.jpg'} "),
        (
            "resized",
            "resized_detection",
            ("--ann", data["dirty_ann"]),
            f"image file {data['dirty_dir'] / 'resized.jpg'} is {data['resized_width']}x100 "
            "pixels, but the annotation file's images[].width/height say",
        ),
    ):
        args = _predict_args(data, "raise", images, boxes, *args, "--on_bad_record=raise")
        proc = _run(trained_tiny, PREDICT, *args, status=2)
        (line,) = [line for line in proc.stderr.splitlines() if ": error: " in line]
        assert message in line, (message, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
