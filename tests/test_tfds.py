"""TFDS builders (COCO keypoints, CrowdPose, MPII) built and read without TensorFlow: the
same records, byte-identical batches and the same metrics as the released files; bad
input at build time handled as the file readers handle it; no half-built dataset read."""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIG_DIR, DATA_DIR, REPO, load_test_config

COCO_DIR, MPII_DIR = DATA_DIR / "coco", DATA_DIR / "mpii"
COCO_DETECTIONS = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def _coco_layout(root, ann_file=COCO_DIR / "test_coco.json", image_dir=COCO_DIR, suffix="2017"):
    """The COCO release layout around the sample (train and val are both the sample)."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(ann_file, root / "annotations" / f"person_keypoints_{split}{suffix}.json")
        shutil.copytree(image_dir, root / "images" / f"{split}{suffix}")
    if (image_dir / "test_coco_det_AP_H_56.json").is_file():
        (root / COCO_DETECTIONS).parent.mkdir()
        shutil.copy(image_dir / "test_coco_det_AP_H_56.json", root / COCO_DETECTIONS)
    return root


def _crowdpose_layout(root):
    from test_readers import _crowdpose_file

    (root / "json").mkdir(parents=True)
    path = _crowdpose_file(root / "json")
    for name in ("trainval", "test"):
        shutil.copy(path, root / "json" / f"crowdpose_{name}.json")
    shutil.copytree(COCO_DIR, root / "images")
    return root


def _mpii_layout(root):
    """MPII's layout around the sample, with a gt_valid.mat of made-up head boxes."""
    import scipy.io

    (root / "annot").mkdir(parents=True)
    for name in ("train", "valid"):
        shutil.copy(MPII_DIR / "test_mpii.json", root / "annot" / f"{name}.json")
    shutil.copytree(MPII_DIR, root / "images")
    entries = json.loads((MPII_DIR / "test_mpii.json").read_text())
    joints = np.array([e["joints"] for e in entries], np.float64)  # [N, 16, 2]
    centers = np.array([e["center"] for e in entries], np.float64)
    boxes = np.stack([centers - 15, centers + 15], axis=1)  # [N, 2, 2]
    scipy.io.savemat(
        root / "annot" / "gt_valid.mat",
        {
            "headboxes_src": boxes.transpose(1, 2, 0),
            "jnt_missing": (np.array([e["joints_vis"] for e in entries]) == 0).T.astype(float),
            "pos_gt_src": joints.transpose(1, 2, 0),
        },
    )
    return root


LAYOUTS = {"coco_keypoints": _coco_layout, "crowdpose": _crowdpose_layout, "mpii": _mpii_layout}
DATASETS = {"coco_keypoints": "coco", "crowdpose": "crowdpose", "mpii": "mpii"}


def _data_configs(name: str, manual, data_dir):
    """(config.data reading the released files, the same reading the built dataset)."""
    from efafnet_jax.config import build_config

    dataset = DATASETS[name]
    joints = {"coco": 17, "crowdpose": 14, "mpii": 16}[dataset]
    files = build_config(dataset, num_joints=joints, spec="sbn", default_size=(64, 64)).data
    if name == "coco_keypoints":
        ann, images = manual / "annotations" / "person_keypoints_{}2017.json", manual / "images"
        files.train_ann, files.val_ann = str(ann).format("train"), str(ann).format("val")
        files.train_images, files.val_images = str(images / "train2017"), str(images / "val2017")
        files.val_detections = str(manual / COCO_DETECTIONS)
    elif name == "crowdpose":
        files.train_ann = str(manual / "json" / "crowdpose_trainval.json")
        files.val_ann = str(manual / "json" / "crowdpose_test.json")
        files.train_images = files.val_images = str(manual / "images")
    else:
        files.train_ann = str(manual / "annot" / "train.json")
        files.val_ann = str(manual / "annot" / "valid.json")
        files.train_images = files.val_images = str(manual / "images")
        files.mpii_headboxes = str(manual / "annot" / "gt_valid.mat")
    built = files.copy_and_resolve_references()
    built.source, built.tfds_data_dir = "tfds", str(data_dir)
    if files.val_detections:
        built.val_detections = "tfds"
    return files, built


def assert_same_records(from_files, from_tfds) -> None:
    """Every field equal; image paths name the same file (in the folder or in the split)."""
    assert len(from_files) == len(from_tfds) > 0
    for a, b in zip(from_files, from_tfds, strict=True):
        for field in dataclasses.fields(a):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if field.name == "image_path":
                assert os.path.basename(x) == os.path.basename(y)
            else:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=field.name)


def _build(name, manual, data_dir, **options):
    from efafnet_jax.data.tfds.build import build

    return build(name, str(manual), str(data_dir), **options)


def _training_batches(data) -> list[dict]:
    """The training batches of 2 epochs (batch 4, seed 7) of `data`'s train split."""
    from efafnet_jax.data.pipeline import build_pipeline
    from efafnet_jax.data.splits import read_split, sample_config, split_images

    records, _, spec = read_split(data, "train")
    pipeline = build_pipeline(
        records,
        spec,
        sample_config(data),
        split_images(data, "train"),
        batch_size=4,
        seed=7,
        train=True,
        num_epochs=2,
        workers=0,
    )
    return [dict(batch) for batch in pipeline]


def assert_byte_identical(from_files: list[dict], from_tfds: list[dict]) -> None:
    assert len(from_files) == len(from_tfds) >= 2
    for a, b in zip(from_files, from_tfds, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    assert from_files[0]["image"].std() > 10  # real crops, not an empty pipeline


@pytest.mark.parametrize("small_threshold", [False, True], ids=["default", "small_threshold"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_builder_builds_without_tensorflow_and_reads_back_the_file_records(
    tmp_path, monkeypatch, name, small_threshold
):
    """The same records, every image's bytes, and byte-identical training batches (with
    one image per shard, the image reads index the examples across shard boundaries)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import shuffle

    from efafnet_jax.data.splits import read_split

    assert importlib.util.find_spec("tensorflow") is None, "this checks a build without it"
    manual = LAYOUTS[name](tmp_path / "manual")
    options = {}
    if small_threshold:
        # Past TFDS's in-memory shuffle limit its writer spills through tf.io.gfile; the
        # builders write shard by shard instead, here one image per shard.
        monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1)
        options["shard_bytes"] = 1
    builder = _build(name, manual, tmp_path / "tfds", **options)
    assert "tensorflow" not in sys.modules
    files, built = _data_configs(name, manual, tmp_path / "tfds")
    for split in ("train", "val"):
        info = builder.info.splits[split]
        records = read_split(files, split)[0]
        images = {os.path.basename(r.image_path): r.image_path for r in records}
        assert info.num_examples == len(images)
        assert len(info.shard_lengths) == (info.num_examples if small_threshold else 1)
        assert_same_records(records, read_split(built, split)[0])
        source = tfds.data_source(
            name,
            split=split,
            data_dir=str(tmp_path / "tfds"),
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        examples = [source[i] for i in range(len(source))]
        assert sorted(e["file_name"].decode() for e in examples) == sorted(images)
        for example in examples:
            path = images[example["file_name"].decode()]
            with open(path, "rb") as image:
                assert example["image"] == image.read(), path
    assert_byte_identical(_training_batches(files), _training_batches(built))
    assert builder.info.metadata["val"]["skipped_records"] == 0
    assert "tensorflow" not in sys.modules


def test_files_and_tfds_give_byte_identical_training_batches_from_a_generated_corpus(tmp_path):
    """The unsuffixed release names (person_keypoints_train.json, images/train) and
    several shards of 30 kB; each builder's batches from the samples are compared above."""
    from efafnet_jax.data.synthetic import generate

    manual = tmp_path / "generated"
    generate(str(manual), train=24, val=4, seed=3)
    _build("coco_keypoints", manual, tmp_path / "tfds", splits=("train",), shard_bytes=30_000)
    files, built = _data_configs("coco_keypoints", manual, tmp_path / "tfds")
    files.train_ann = str(manual / "annotations" / "person_keypoints_train.json")
    files.train_images = str(manual / "images" / "train")
    assert_byte_identical(_training_batches(files), _training_batches(built))


def test_evaluation_gives_the_same_answers_and_metrics_from_tfds_as_from_files(tmp_path):
    """What eval.py runs (Evaluator.run) on the val split and its detections, read from
    the files and from the built dataset alone. The model reads its heatmaps off the
    crops (test_codec_options.CropReader), so equal answers mean equal crops from both
    sources; the metrics' sensitivity to the answers is tested below."""
    from test_codec_options import CropReader

    from efafnet_jax.config import build_config
    from efafnet_jax.evaluation.evaluator import Evaluator

    manual = _coco_layout(tmp_path / "manual")
    _build("coco_keypoints", manual, tmp_path / "tfds", splits=("val",))
    files, built = _data_configs("coco_keypoints", manual, tmp_path / "tfds")
    built.val_ann = built.val_images = ""  # nothing read from the files
    answers, metrics = [], []
    for data, label in ((files, "files"), (built, "tfds")):
        config = build_config("coco", num_joints=17, spec="sbn", default_size=(64, 64))
        config.data = data
        config.eval.batch_size, config.eval.workers = 8, 0
        model = CropReader((4, 4), tuple(data.heatmap_hw), num_joints=17)
        metrics.append(Evaluator(config).run(model, {}, str(tmp_path / label), progress=False)[0])
        results = tmp_path / label / "results" / "val_keypoints.json"
        answers.append(json.loads(results.read_text()))
    assert metrics[0] == metrics[1] and len(metrics[0]) > 10
    assert len(answers[0]) > 50 and answers[0] == answers[1]


@pytest.mark.parametrize("name", ["coco_keypoints", "crowdpose"])
def test_metrics_against_the_split_equal_metrics_against_the_files(tmp_path, name):
    """The metric's ground truth written from the split is the released file's: the same
    answers (GT joints moved by a few pixels) score the same, and well above zero."""
    from efafnet_jax.config import build_config
    from efafnet_jax.evaluation.evaluator import Evaluator

    manual = LAYOUTS[name](tmp_path / "manual")
    _build(name, manual, tmp_path / "tfds", splits=("val",))
    results = []
    for data in _data_configs(name, manual, tmp_path / "tfds"):
        joints = {"coco": 17, "crowdpose": 14}[data.dataset]
        config = build_config(data.dataset, num_joints=joints, spec="sbn", default_size=(64, 64))
        data.val_detections = ""
        config.data = data
        evaluator = Evaluator(config)
        truth = np.stack([r.joints for r in evaluator.records])
        guess = truth + np.random.default_rng(0).normal(0, 4, truth.shape)
        keypoints = np.concatenate([guess, np.ones((*truth.shape[:2], 1))], axis=-1)
        results.append(evaluator.metrics(keypoints))
    assert results[0] == results[1]
    assert results[0]["AP"] > 0.2


def test_mpii_pckh_from_the_split_equals_pckh_from_the_files(tmp_path):
    from efafnet_jax.evaluation.evaluator import Evaluator

    manual = _mpii_layout(tmp_path / "manual")
    _build("mpii", manual, tmp_path / "tfds", splits=("val",))
    files, built = _data_configs("mpii", manual, tmp_path / "tfds")
    results = []
    for data, origin in ((files, files.mpii_headboxes), (built, "TFDS mpii val")):
        config = load_test_config(f"{CONFIG_DIR / 'mpii.py'}:sbn,r50,256x256")
        config.data = data
        evaluator = Evaluator(config)
        rng = np.random.default_rng(0)
        truth = np.stack([r.joints for r in evaluator.records])
        guess = truth + rng.normal(0, 10, truth.shape)
        keypoints = np.concatenate([guess, np.ones((*truth.shape[:2], 1))], axis=-1)
        results.append(evaluator.metrics(keypoints))
        # Answers that do not match the head boxes person for person are refused by name.
        count = len(truth)
        with pytest.raises(ValueError, match=f"{origin} has {count} persons, the split has"):
            evaluator.metrics(keypoints[:-1])
    assert results[0] == results[1]
    assert 0 < results[0]["Mean"] < 100


KILLED_BUILD = """
import os, sys
from efafnet_jax.data.tfds import base
from efafnet_jax.data.tfds.build import build

write_shard = base._ShardGenerator.__call__

def killed(self):
    for n, item in enumerate(write_shard(self)):
        if n == 2:
            os._exit(9)  # killed half-way through a shard: no cleanup runs
        yield item

base._ShardGenerator.__call__ = killed
build("coco_keypoints", sys.argv[1], sys.argv[2], splits=("val",))
"""


def test_an_interrupted_build_leaves_no_dataset_a_reader_accepts(tmp_path):
    import tensorflow_datasets as tfds

    from efafnet_jax.data.records import BadRecordError
    from efafnet_jax.data.splits import read_split

    manual = _coco_layout(tmp_path / "manual")
    data_dir = tmp_path / "tfds"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(manual), str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 9, proc.stderr[-3000:]
    partial = [p for p in data_dir.rglob("*array_record*")]
    assert partial and all("incomplete." in str(p) for p in partial)  # half a shard lies there
    _, built = _data_configs("coco_keypoints", manual, data_dir)
    with pytest.raises(BadRecordError, match="no complete dataset"):
        read_split(built, "val")
    # No dataset_info.json: TFDS takes the dataset for one in its default format
    # (TFRecord) and refuses to read it.
    unprepared = "Random access data source for file format FileFormat.TFRECORD is not supported"
    with pytest.raises(NotImplementedError, match=unprepared):
        tfds.data_source("coco_keypoints", split="val", data_dir=str(data_dir), download=False)


def assert_same_split(a, b) -> None:
    """Every TfdsSplit field equal (the head-box arrays value for value)."""
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "pckh" and x is not None and y is not None:
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        else:
            assert x == y, field.name


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_annotations_file_gives_the_split_that_reading_every_example_gives(
    tmp_path, caplog, name
):
    """Start-up reads the annotations file the builder wrote beside the shards; the same
    dataset without it (as built before #28) is read example by example, with a warning
    naming the folder and the rebuild command, into the same split."""
    from efafnet_jax.data.tfds.annotations import annotations_path
    from efafnet_jax.data.tfds.source import load_split

    manual = LAYOUTS[name](tmp_path / "manual")
    builder = _build(name, manual, tmp_path / "tfds", splits=("val",))
    from_annotations = load_split.__wrapped__(name, str(tmp_path / "tfds"), "val")
    annotations = annotations_path(builder.data_dir, name, "val")
    annotations.rename(tmp_path / "annotations.npz")
    with caplog.at_level("WARNING"):
        from_examples = load_split.__wrapped__(name, str(tmp_path / "tfds"), "val")
    assert f"{builder.data_dir} has no {annotations.name}" in caplog.text
    assert f"python -m efafnet_jax.data.tfds.build --dataset {name} " in caplog.text
    assert_same_split(from_annotations, from_examples)
    assert from_annotations.content and from_annotations.positions
    assert (from_annotations.detections is not None) == (name == "coco_keypoints")
    assert (from_annotations.pckh is not None) == (name == "mpii")


def test_start_up_reads_no_image_from_the_shards(tmp_path):
    """With every shard overwritten by noise, the split's records still load (start-up
    reads the annotations file alone), while reading an image fails, and so does
    reading the split from its examples (the control: what start-up did before #28)."""
    from efafnet_jax.data.splits import read_split, split_images
    from efafnet_jax.data.tfds.annotations import annotations_path
    from efafnet_jax.data.tfds.source import load_split

    manual = _coco_layout(tmp_path / "manual")
    builder = _build("coco_keypoints", manual, tmp_path / "tfds", splits=("val",))
    data_dir = str(tmp_path / "tfds")
    intact = load_split.__wrapped__("coco_keypoints", data_dir, "val")
    noise = np.random.default_rng(0)
    for shard in intact.shards:
        with open(shard, "r+b") as f:
            f.write(noise.bytes(os.path.getsize(shard)))
    assert_same_split(load_split.__wrapped__("coco_keypoints", data_dir, "val"), intact)
    _, built = _data_configs("coco_keypoints", manual, data_dir)
    records = read_split(built, "val")[0]
    assert len(records) > 5
    corrupted = "Corrupted Riegeli/records file"
    with pytest.raises(RuntimeError, match=corrupted):
        split_images(built, "val").load(records[0])
    annotations_path(builder.data_dir, "coco_keypoints", "val").unlink()
    with pytest.raises(RuntimeError, match=corrupted):
        load_split.__wrapped__("coco_keypoints", data_dir, "val")


def test_an_annotations_file_that_disagrees_with_the_split_is_refused(tmp_path):
    """Examples matched to the wrong shard positions would pair records with the wrong
    images: an annotations file that does not hold the split's examples is refused."""
    from efafnet_jax.data.records import BadRecordError
    from efafnet_jax.data.tfds.annotations import (
        annotations_path,
        read_annotations,
        write_annotations,
    )
    from efafnet_jax.data.tfds.source import load_split

    manual = _coco_layout(tmp_path / "manual")
    builder = _build("coco_keypoints", manual, tmp_path / "tfds", splits=("val",))
    annotations = annotations_path(builder.data_dir, "coco_keypoints", "val")
    write_annotations(annotations, read_annotations(annotations)[1:])
    with pytest.raises(BadRecordError, match="holds 3 examples, the split 4: rebuild"):
        load_split.__wrapped__("coco_keypoints", str(tmp_path / "tfds"), "val")
