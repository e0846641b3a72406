"""Bad input through the evaluator (what eval.py and the training's validation run) and
through eval.py: named errors under 'raise'; under 'skip', counted skips and every valid
answer kept."""

import json

import numpy as np
import pytest
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.records import BadRecordError

COCO_DIR = DATA_DIR / "coco"


def _eval_config(root, detections: str = ""):
    """The tiny model on a copy of the COCO sample, in float64 (argmax ties resolve alike
    however the batches are composed), the given detections or GT boxes."""
    from conftest import CONFIG_DIR, load_test_config

    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:efafnet,64x64")
    d = config.data
    d.val_ann, d.val_images, d.val_detections = str(root / "test_coco.json"), str(root), detections
    config.eval.batch_size, config.eval.workers = 8, 0  # one crop per test device
    config.model.dtype = config.model.param_dtype = "float64"
    return config


def _copy_corpus(root):
    import shutil

    shutil.copytree(COCO_DIR, root)
    return root


@pytest.fixture(scope="module")
def variables(trained_tiny):
    """trained_tiny's weights in float64 (the model of `_eval_config`)."""
    import jax
    import jax.numpy as jnp

    from efafnet_jax.weights import restore_variables

    with jax.enable_x64(True):
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float64), restore_variables(trained_tiny.checkpoint)
        )


def _answers(config, policy: str, variables: dict) -> tuple[dict, dict]:
    """(metrics, {(image id, annotation id or box): keypoints}) of an evaluation."""
    import jax

    from efafnet_jax.evaluation.evaluator import Evaluator
    from efafnet_jax.models import create_model

    config.data.on_bad_record = policy
    with jax.enable_x64(True):
        evaluator = Evaluator(config)
        metrics, keypoints = evaluator.run(create_model(config.model), variables)
    by_person = {
        (r.image_id, r.annotation_id, tuple(np.round(r.box, 3))): keypoints[i]
        for i, r in enumerate(evaluator.records)
        if not np.isnan(keypoints[i]).any()
    }
    return metrics, by_person


@pytest.fixture(scope="module")
def clean_gt_run(tmp_path_factory, variables):
    root = _copy_corpus(tmp_path_factory.mktemp("clean") / "coco")
    return _answers(_eval_config(root), "raise", variables)


def _break_gt_corpus(root) -> None:
    """Three bad inputs: a zero-byte image (1 person), an image smaller than its entry
    says (2 persons), an annotation whose keypoints list is too short."""
    import cv2

    (root / "000000000785.jpg").write_bytes(b"")
    small = cv2.imread(str(root / "000000040083.jpg"))
    cv2.imwrite(str(root / "000000040083.jpg"), cv2.resize(small, (250, 166)))
    data = json.loads((root / "test_coco.json").read_text())
    bad = next(a for a in data["annotations"] if a["id"] == 460541)
    bad["keypoints"] = bad["keypoints"][:48]
    (root / "test_coco.json").write_text(json.dumps(data))


def test_eval_skips_and_counts_bad_inputs_and_keeps_every_valid_answer(
    tmp_path, clean_gt_run, variables, caplog
):
    root = _copy_corpus(tmp_path / "coco")
    _break_gt_corpus(root)
    metrics, answers = _answers(_eval_config(root), "skip", variables)
    messages = caplog.text
    assert "000000000785.jpg (image id 785) is empty (0 bytes)" in messages
    assert (
        "000000040083.jpg (image id 40083) is 250x166 pixels, but the annotation file's "
        "images[].width/height say 500x333" in messages
    )
    assert "annotation id 460541 (image id 196141): field 'keypoints' has 48 values" in messages
    # 1 annotation skipped by the reader, 3 persons on the two unusable images.
    assert metrics["skipped_persons"] == 4 and metrics["skipped_annotations"] == 1
    clean_metrics, clean = clean_gt_run
    assert clean_metrics["skipped_persons"] == clean_metrics["skipped_annotations"] == 0
    assert len(answers) == len(clean) - 4
    for person, keypoints in answers.items():
        np.testing.assert_array_equal(keypoints, clean[person], err_msg=str(person))


@pytest.mark.parametrize(
    "image, message",
    [
        ("000000000785.jpg", r"000000000785\.jpg \(image id 785\) is empty \(0 bytes\)"),
        ("000000040083.jpg", r"000000040083\.jpg \(image id 40083\) is 250x166 pixels"),
        ("test_coco.json", r"annotation id 460541 \(image id 196141\): field 'keypoints'"),
    ],
)
def test_eval_stops_at_the_first_bad_input_and_names_it(tmp_path, variables, image, message):
    import shutil

    broken = _copy_corpus(tmp_path / "broken")
    _break_gt_corpus(broken)
    root = _copy_corpus(tmp_path / "coco")
    shutil.copy(broken / image, root / image)  # this one bad input alone
    with pytest.raises(BadRecordError, match=message):
        _answers(_eval_config(root), "raise", variables)


def test_degenerate_and_bad_detections_are_skipped_with_a_warning(tmp_path, variables, caplog):
    root = _copy_corpus(tmp_path / "coco")
    # One eval batch of detections (unoptimised, inference costs about 0.1 s a crop).
    detections = json.loads((root / "test_coco_det_AP_H_56.json").read_text())[:8]
    clean_file = root / "clean_dets.json"
    clean_file.write_text(json.dumps(detections))
    _, clean = _answers(_eval_config(root, str(clean_file)), "raise", variables)
    bad = [
        dict(detections[0], bbox=[10, 10, 0, 50]),  # no area
        dict(detections[0], bbox=[10, 10, -5, 50]),  # negative width
        dict(detections[0], bbox=[5000, 10, 30, 50]),  # wholly outside the 640-px image
        dict(detections[0], bbox=[10, 10, float("nan"), 50]),  # a bad record
    ]
    bad_file = root / "dets.json"
    bad_file.write_text(json.dumps(detections + bad))
    metrics, answers = _answers(_eval_config(root, str(bad_file)), "skip", variables)
    n = len(detections)
    assert f"dets.json: detection {n} (image id {detections[0]['image_id']})" in caplog.text
    assert f"detection {n + 1} " in caplog.text and "has no area (width -5" in caplog.text
    assert f"detection {n + 2} " in caplog.text and "lies wholly outside the 640x" in caplog.text
    assert f"detection {n + 3} " in caplog.text and "field 'bbox' has a non-finite" in caplog.text
    assert metrics["skipped_persons"] == 1  # the NaN box; the degenerate ones are filtered
    assert answers.keys() == clean.keys()
    for person, keypoints in answers.items():
        np.testing.assert_array_equal(keypoints, clean[person], err_msg=str(person))
    with pytest.raises(BadRecordError, match=f"detection {n + 3} .* field 'bbox'"):
        _answers(_eval_config(root, str(bad_file)), "raise", variables)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_nothing_to_evaluate_names_the_file_and_the_reason(tmp_path, policy):
    from efafnet_jax.data.splits import read_split

    root = _copy_corpus(tmp_path / "coco")
    config = _eval_config(root)
    config.data.on_bad_record = policy
    data = json.loads((root / "test_coco.json").read_text())
    (root / "empty.json").write_text(json.dumps(dict(data, annotations=[])))
    others = [dict(a, category_id=2) for a in data["annotations"]]
    (root / "others.json").write_text(json.dumps(dict(data, annotations=others)))
    (root / "no_dets.json").write_text("[]")
    cases = [
        (dict(val_ann=str(root / "empty.json")), r"no persons in .*empty\.json"),
        (
            dict(val_ann=str(root / "others.json")),
            r"no usable persons in .*others\.json: 0 persons; .*other categories",
        ),
        (dict(val_detections=str(root / "no_dets.json")), r"no detections in .*no_dets\.json"),
        (
            dict(val_detections=str(root / "test_coco_det_AP_H_56.json"), det_score_threshold=2.0),
            r"no usable detections in .*boxes below the score threshold",
        ),
    ]
    for changes, message in cases:
        data_config = config.data.copy_and_resolve_references()
        data_config.update(changes)
        with pytest.raises(BadRecordError, match=message):
            read_split(data_config, "val")


def test_configured_paths_are_checked_before_training_and_name_their_key(tmp_path):
    from conftest import CONFIG_DIR, load_test_config

    from efafnet_jax.data.synthetic import generate
    from efafnet_jax.train.loop import train_and_evaluate

    paths = generate(str(tmp_path / "data"), train=2, val=1, seed=0)
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:efafnet,64x64")
    d = config.data
    d.train_ann, d.train_images = paths["train"], str(tmp_path / "data" / "images" / "train")
    d.val_ann, d.val_images = paths["val"], str(tmp_path / "data" / "images" / "val")
    # A custom val_ann with the COCO default detections left in place: the reported case.
    assert d.val_detections.startswith("data/coco/")
    with pytest.raises(BadRecordError, match=r"data\.val_detections='data/coco/.*': no such file"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training
    d.val_detections = str(tmp_path)
    with pytest.raises(BadRecordError, match=r"data\.val_detections=.* is a directory, not a file"):
        train_and_evaluate(config, str(tmp_path / "run"))
    d.val_detections, d.val_ann = "", str(tmp_path)
    with pytest.raises(BadRecordError, match=r"data\.val_ann=.* is a directory, not a file"):
        train_and_evaluate(config, str(tmp_path / "run"))
    with pytest.raises(BadRecordError, match=r"data is a directory, not a JSON file"):
        read_coco_keypoints(str(tmp_path / "data"), str(tmp_path), COCO, 0.75)


def test_crowdpose_gt_without_what_its_metric_needs_stops_before_inference(tmp_path):
    from efafnet_jax.evaluation.evaluator import metric_ground_truth

    root = _copy_corpus(tmp_path / "coco")
    config = _eval_config(root)
    config.data.dataset = "crowdpose"  # the COCO sample has no crowdIndex
    with pytest.raises(BadRecordError, match=r"test_coco\.json: images\[0\] \(id 785\) lacks"):
        metric_ground_truth(config.data, COCO, None)
    data = json.loads((root / "test_coco.json").read_text())
    for image in data["images"]:
        image["crowdIndex"] = 0.5
    del data["annotations"][3]["num_keypoints"]
    (root / "test_coco.json").write_text(json.dumps(data))
    with pytest.raises(
        BadRecordError,
        match=r"annotation id 1202706 \(image id 40083\): field 'num_keypoints' is missing",
    ):
        metric_ground_truth(config.data, COCO, None)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_eval_py_reports_bad_input_by_name_under_both_policies(tmp_path, trained_tiny, policy):
    import subprocess
    import sys

    from conftest import REPO

    root = _copy_corpus(tmp_path / "coco")
    _break_gt_corpus(root)
    proc = subprocess.run(
        [
            sys.executable,
            "eval.py",
            "--config",
            trained_tiny.spec,
            "--checkpoint",
            trained_tiny.checkpoint,
            f"--config.data.val_ann={root / 'test_coco.json'}",
            f"--config.data.val_images={root}",
            "--config.data.val_detections=",
            f"--config.data.on_bad_record={policy}",
            "--config.eval.workers=0",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if policy == "raise":  # the reader meets the bad annotation first
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith("eval.py: error: ")
        assert "annotation id 460541 (image id 196141): field 'keypoints'" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["skipped_persons"] == 4 and metrics["skipped_annotations"] == 1
    written = json.loads((tmp_path / "out" / "results" / "val_metrics.json").read_text())
    assert written["skipped_persons"] == 4
    assert "000000000785.jpg (image id 785) is empty (0 bytes)" in proc.stderr


def _break_gt_fields(root, which: tuple[str, ...]) -> dict[str, str]:
    """Breaks the sample's GT in the ways named in `which`; returns each one's message."""
    path = root / "test_coco.json"
    data = json.loads(path.read_text())
    annotation = {a["id"]: a for a in data["annotations"]}
    messages = {}
    if "repeated image id" in which:  # a second entry for image 785, naming another file
        data["images"].append(dict(data["images"][0], file_name="000000040083.jpg"))
        messages["repeated image id"] = r"images\[4\] \(id 785\): field 'id' repeats the id"
    if "bbox as strings" in which:  # pycocotools' computeOks raised TypeError on it
        annotation[460541]["bbox"] = [str(v) for v in annotation[460541]["bbox"]]
        messages["bbox as strings"] = r"annotation id 460541 \(image id 196141\): field 'bbox'"
    if "repeated annotation id" in which:  # another image's person under 442619's id
        annotation[437295]["id"] = 442619
        messages["repeated annotation id"] = r"annotation id 442619 \(image id 197388\): field 'id'"
    if "no area" in which:  # pycocotools reads it for every person: KeyError
        del annotation[230195]["area"]
        messages["no area"] = r"annotation id 230195 \(image id 40083\): field 'area' is missing"
    path.write_text(json.dumps(data))
    return messages


GT_FIELD_BREAKS = ("repeated image id", "bbox as strings", "repeated annotation id", "no area")


@pytest.mark.parametrize("which", GT_FIELD_BREAKS)
def test_gt_fields_the_metric_reads_are_named_before_inference(tmp_path, which):
    from efafnet_jax.evaluation.evaluator import Evaluator

    root = _copy_corpus(tmp_path / "coco")
    message = _break_gt_fields(root, (which,))[which]
    config = _eval_config(root)
    with pytest.raises(BadRecordError, match=rf"test_coco\.json: {message}"):
        Evaluator(config)


def test_under_skip_the_metric_scores_the_gt_the_reader_accepted(tmp_path):
    from efafnet_jax.evaluation.evaluator import Evaluator

    root = _copy_corpus(tmp_path / "coco")
    _break_gt_fields(root, GT_FIELD_BREAKS)
    config = _eval_config(root)
    config.data.on_bad_record = "skip"
    evaluator = Evaluator(config)
    # Two annotations the reader skipped, one the metric could not read.
    assert evaluator.skipped["skipped_annotations"] == 3
    ids = [r.annotation_id for r in evaluator.records]
    assert 460541 not in ids and ids.count(442619) == 1 and 230195 not in ids
    # The GT's own persons as answers: perfect against the GT as read. Had the repeated
    # annotation id reached pycocotools, image 785's person would be scored against the
    # other image's person (its index keeps one annotation per id): AP < 1.
    results = [
        {
            "image_id": r.image_id,
            "category_id": 1,
            "keypoints": [
                v
                for joint, seen in zip(r.joints, r.visibility, strict=True)
                for v in (*joint.tolist(), float(seen))
            ],
            "score": 1.0,
        }
        for r in evaluator.records
    ]
    metrics = evaluator.metrics(None, results)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    metric_gt = json.loads(open(evaluator.metric_gt_file).read())
    assert [image["id"] for image in metric_gt["images"]] == [785, 40083, 196141, 197388]
