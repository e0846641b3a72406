"""Every user path may be a gs:// URL: readers, the generated dataset, packs, training,
evaluation and their outputs against a GCS API on localhost (tests/gcs_emulator.py)."""

import dataclasses
import io
import json
import re
import struct
import uuid

import ml_collections
import numpy as np
import pytest
import scipy.io
from conftest import DATA_DIR, GCS_TEST_BUCKET
from etils import epath

from efafnet_jax.config import load_config
from efafnet_jax.data.image_store import PackedImages, image_store
from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.mpii import read_gt_valid
from efafnet_jax.data.pack import pack
from efafnet_jax.data.records import BadRecordError, PersonRecord
from efafnet_jax.data.splits import read_split, split_images
from efafnet_jax.data.synthetic import generate
from efafnet_jax.inference.boxes import list_images
from efafnet_jax.train.loop import train_and_evaluate
from efafnet_jax.train.quickstart import final_evaluation, write_quickstart_report

COCO_FILES = (
    "test_coco.json",
    "test_coco_det_AP_H_56.json",
    "000000000785.jpg",
    "000000040083.jpg",
    "000000196141.jpg",
    "000000197388.jpg",
)
MPII_FILES = (
    "test_mpii.json",
    "004645041.jpg",
    "005808361.jpg",
    "051423444.jpg",
    "052475643.jpg",
    "060754485.jpg",
)


def _copy_to(folder: epath.Path, local_dir, names) -> None:
    for name in names:
        (folder / name).write_bytes((local_dir / name).read_bytes())


def _files_under(root: epath.Path, prefix: str = "") -> dict[str, bytes]:
    """{path relative to root: bytes} of every file under `root` (a folder or a URL).
    (epath's walk() yields gs:// folders without their scheme.)"""
    files = {}
    for entry in root.iterdir():
        if entry.is_dir():
            files |= _files_under(entry, f"{prefix}{entry.name}/")
        else:
            files[prefix + entry.name] = entry.read_bytes()
    return files


def _coco_data(folder) -> ml_collections.ConfigDict:
    data = load_config("coco").data
    data.train_ann = data.val_ann = str(folder / "test_coco.json")
    data.train_images = data.val_images = str(folder)
    data.val_detections = str(folder / "test_coco_det_AP_H_56.json")
    return data


def _mpii_data(folder) -> ml_collections.ConfigDict:
    data = load_config("mpii").data
    data.train_ann, data.train_images = str(folder / "test_mpii.json"), str(folder)
    return data


def _generated_data(data, root, paths: dict) -> None:
    """Points `data` at the generated dataset under `root` (generate()'s `paths`)."""
    data.train_ann, data.val_ann = paths["train"], paths["val"]
    data.train_images, data.val_images = str(root / "images/train"), str(root / "images/val")
    data.val_detections = ""


def _assert_same_split(local_data, remote_data, split: str, local_root, remote_root) -> None:
    """read_split gives the same records from both copies (image paths under their own
    roots) and each image decodes to the same pixels."""
    local, _, _ = read_split(local_data, split)
    remote, _, _ = read_split(remote_data, split)
    assert len(local) == len(remote) > 0

    def fields(record: PersonRecord, root) -> dict:
        values = dataclasses.asdict(record)
        relative = epath.Path(values.pop("image_path")).relative_to(root)
        return {"image": str(relative), **{k: np.asarray(v).tolist() for k, v in values.items()}}

    for a, b in zip(local, remote, strict=True):
        assert fields(a, local_root) == fields(b, remote_root)
        assert b.image_path.startswith("gs://")
    local_images = split_images(local_data, split)
    remote_images = split_images(remote_data, split)
    for a, b in {r.image_id: (r, s) for r, s in zip(local, remote, strict=True)}.values():
        np.testing.assert_array_equal(local_images.load(a), remote_images.load(b))


def test_coco_and_mpii_splits_read_from_a_bucket_equal_the_local_copy(gs_tmp_path):
    coco, mpii = gs_tmp_path / "coco", gs_tmp_path / "mpii"
    _copy_to(coco, DATA_DIR / "coco", COCO_FILES)
    _copy_to(mpii, DATA_DIR / "mpii", MPII_FILES)
    local_coco, local_mpii = DATA_DIR / "coco", DATA_DIR / "mpii"
    _assert_same_split(_coco_data(local_coco), _coco_data(coco), "train", local_coco, coco)
    _assert_same_split(_coco_data(local_coco), _coco_data(coco), "val", local_coco, coco)
    _assert_same_split(_mpii_data(local_mpii), _mpii_data(mpii), "train", local_mpii, mpii)
    # predict's --images FOLDER and PCKh's head boxes.
    assert [epath.Path(p).name for p in list_images([str(coco)])] == sorted(COCO_FILES[2:])
    buffer = io.BytesIO()
    headboxes = np.arange(5 * 2 * 2, dtype=np.float64).reshape(2, 2, 5)
    scipy.io.savemat(
        buffer,
        {
            "headboxes_src": headboxes,
            "jnt_missing": np.zeros((16, 5)),
            "pos_gt_src": np.ones((16, 2, 5)),
        },
    )
    (mpii / "gt_valid.mat").write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(
        read_gt_valid(str(mpii / "gt_valid.mat"))["headboxes"], np.transpose(headboxes, (2, 0, 1))
    )


@pytest.fixture(scope="module")
def generated_in_bucket(gcs_environment) -> tuple[epath.Path, dict]:
    """trained_tiny's generated dataset (same arguments), written to the bucket."""
    root = epath.Path(f"gs://{GCS_TEST_BUCKET}/generated-{uuid.uuid4().hex[:8]}")
    return root, generate(str(root), train=8, val=5, seed=3)


def test_the_generated_dataset_written_to_a_bucket_reads_back_the_same(
    trained_tiny, generated_in_bucket
):
    root, paths = generated_in_bucket
    assert all(p.startswith("gs://") for p in paths.values())
    local_root = epath.Path(trained_tiny.data_root)
    assert _files_under(root) == _files_under(local_root)  # byte-identical files
    local, remote = trained_tiny.config.data, trained_tiny.config.data.copy_and_resolve_references()
    _generated_data(remote, root, paths)
    for split in ("train", "val"):
        _assert_same_split(local, remote, split, local_root, root)


def test_a_pack_in_a_bucket_serves_the_same_images(gcs_environment, gs_tmp_path, monkeypatch):
    # ArrayRecord reads gs:// shards with google-cloud-cpp, which finds the emulator here.
    url = gcs_environment["STORAGE_EMULATOR_HOST"]
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", url)
    _copy_to(gs_tmp_path / "coco", DATA_DIR / "coco", COCO_FILES)
    index = pack(
        str(gs_tmp_path / "coco" / "test_coco.json"),
        str(gs_tmp_path / "coco"),
        str(gs_tmp_path / "pack"),
        shards=2,
    )
    assert len(index["shards"]) == 2
    data = _coco_data(DATA_DIR / "coco")
    records, _, _ = read_split(data, "train")
    packed = image_store(str(gs_tmp_path / "pack"))
    assert isinstance(packed, PackedImages)
    files = split_images(data, "train")
    for record in {r.image_id: r for r in records}.values():
        in_pack = dataclasses.replace(
            record, image_path=str(gs_tmp_path / "pack" / epath.Path(record.image_path).name)
        )
        np.testing.assert_array_equal(packed.load(in_pack), files.load(record))


def _event_scalars(data: bytes) -> set[tuple[str, int]]:
    """(tag, step) of every scalar in a TensorBoard event file, its records' CRCs checked."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars, offset = set(), 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("Q", header)
        (header_crc,) = struct.unpack("I", data[offset + 8 : offset + 12])
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("I", data[offset + 12 + length : offset + 16 + length])
        assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload)
        event = event_pb2.Event.FromString(payload)
        scalars |= {(value.tag, event.step) for value in event.summary.value}
        offset += 16 + length
    return scalars


def test_training_with_a_workdir_in_a_bucket_resumes_and_writes_nothing_locally(
    trained_tiny, generated_in_bucket, gs_tmp_path, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would land here
    assert list(tmp_path.iterdir()) == []
    root, paths = generated_in_bucket
    config = trained_tiny.config.copy_and_resolve_references()
    _generated_data(config.data, root, paths)
    config.train.log_every_steps, config.train.eval_every_epochs = 1, 1
    workdir = str(gs_tmp_path / "run")
    config.train.epochs = 1.0  # 2 of trained_tiny's 4 steps
    assert train_and_evaluate(config, workdir)["steps"] == 2
    config.train.epochs = 2.0
    result = train_and_evaluate(config, workdir)
    assert result["steps"] == 4
    summary, evaluator = final_evaluation(config, workdir, result, wall_s=0.0)
    write_quickstart_report(workdir, summary, evaluator)

    run = epath.Path(workdir)
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"2", "4"}
    assert (run / "best").is_dir()
    # One metrics log across both runs: run 2 started at step 3, so it resumed.
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], "val/AP" in line) for line in lines] == [
        (1, False), (2, False), (2, True), (3, False), (4, False), (4, True),
    ]  # fmt: skip
    assert json.loads((run / "best.json").read_text())["step"] in (2, 4)
    events = sorted((run / "tensorboard").iterdir())
    assert len(events) == 2  # one event file per run
    scalars = _event_scalars(events[0].read_bytes()) | _event_scalars(events[1].read_bytes())
    assert {("train/loss", step) for step in (1, 2, 3, 4)} <= scalars
    assert {("val/AP", 2), ("val/AP", 4)} <= scalars
    results = run / "results"
    assert load_json(str(results / "val_metrics.json"))["AP"] == summary["AP"]
    assert len(load_json(str(results / "val_keypoints.json"))) > 0
    assert load_json(str(results / "final_metrics.json"))["steps"] == 4
    assert len(list((results / "vis").iterdir())) == 4
    assert list(tmp_path.iterdir()) == []


def test_a_missing_annotation_file_in_a_bucket_is_a_named_error(gs_tmp_path):
    _copy_to(gs_tmp_path, DATA_DIR / "coco", COCO_FILES[2:])
    data = _coco_data(gs_tmp_path)
    missing = str(gs_tmp_path / "test_coco.json")
    with pytest.raises(BadRecordError, match=rf"data\.train_ann='{re.escape(missing)}': no such"):
        read_split(data, "train")
    with pytest.raises(
        BadRecordError, match=f"annotation file {re.escape(missing)} does not exist"
    ):
        load_json(missing)
    _copy_to(gs_tmp_path, DATA_DIR / "coco", COCO_FILES[:1])  # the control: now it is there
    assert len(read_split(data, "train")[0]) == 12
