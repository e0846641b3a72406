"""TFDS builders for COCO keypoints 2017, CrowdPose and MPII, built without TensorFlow.

One example per image: the encoded image as released (the JPEG bytes unchanged), and
every annotation of the image with the fields the readers and the metrics use, each
with its position in the released file, so that a reader of the split can rebuild
the file's content in the file's order (`efafnet_jax.data.tfds.source`). Reference
filtering (crowd annotations, empty boxes, persons without joints) stays at read
time, where the file readers apply it; bad input is handled at build time by the
same reader functions and `on_bad_record` policy, and counted in the dataset's
metadata.

The builders are `tfds.core.ShardBasedBuilder`s: each shard is written in file order
by its own generator, so no split goes through TFDS's shuffle buffer, whose spill to
disk above 1 GiB (`tensorflow_datasets/core/shuffle.py`) needs `tf.io.gfile`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from efafnet_jax.data.coco_format import image_table, read_coco_keypoints, read_detections
from efafnet_jax.data.json_files import finite_numbers, load_json
from efafnet_jax.data.keypoints import COCO, CROWDPOSE, MPII, KeypointSpec
from efafnet_jax.data.mpii import read_gt_valid, read_mpii
from efafnet_jax.data.records import (
    BadRecordError,
    BadRecordHandler,
    ReadSummary,
    image_label,
)

# Shards of about this many image bytes: COCO train2017 (19 GB) becomes ~75 shards.
DEFAULT_SHARD_BYTES = 256 << 20

Example = dict
ShardGenerator = Callable[[], Iterator[tuple[int, Example]]]


def _float64(*shape: int | None) -> tfds.features.Tensor:
    # Stored as raw bytes: a tf.train.Example float list is float32, and the JSON's
    # numbers must survive exactly for the records to match the file reader's.
    return tfds.features.Tensor(
        shape=shape, dtype=np.float64, encoding=tfds.features.Encoding.BYTES
    )


def _float_tensor(*shape: int | None) -> tfds.features.Tensor:
    return _float64(None, *shape)


def _int_tensor(*shape: int | None) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(None, *shape), dtype=np.int64)


class PoseBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
    """What the three builders share: options, sharding, progress and the build summary."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: one example per image, file order."}
    spec: KeypointSpec
    homepage: str

    def __init__(
        self,
        *,
        on_bad_record: str = "raise",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        splits: tuple[str, ...] = (),
        detections: str = "",
        **kwargs,
    ):
        """on_bad_record: 'raise' or 'skip' (bad records left out and counted in the
        metadata). shard_bytes: image bytes per shard. splits: build only these
        ('train', 'val'); all found when empty. detections: a person-detections file
        stored with the val split (COCO-format builders)."""
        self.on_bad_record = on_bad_record
        self.shard_bytes = shard_bytes
        self.only_splits = tuple(splits)
        self.detections_file = detections
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(self.feature_spec()),
            homepage=self.homepage,
            metadata=tfds.core.MetadataDict(),
        )

    def feature_spec(self) -> dict:
        raise NotImplementedError

    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        """{split: its released files} for the splits present in `manual_dir`."""
        raise NotImplementedError

    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        """The split's examples (image as a path) and what the build kept and skipped."""
        raise NotImplementedError

    def _shard_iterators_per_split(self, dl_manager) -> dict[str, list[ShardGenerator]]:
        manual_dir = os.fspath(dl_manager.manual_dir)
        found = self.split_files(manual_dir)
        wanted = self.only_splits or tuple(found)
        missing = [s for s in wanted if s not in found]
        if missing or not found:
            raise BadRecordError(
                f"{self.name}: manual_dir {manual_dir} has no {missing or 'train or val'} split "
                f"in the released layout ({self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()})"
            )
        shards = {}
        for split in wanted:
            examples, summary = self.split_examples(found[split])
            if not examples:
                raise BadRecordError(f"{self.name} {split}: no usable image in {summary.line()}")
            self.info.metadata[split] = {
                "files": found[split],
                "images": len(examples),
                "stored_annotations": summary.kept,
                "skipped_records": len(summary.skipped),
                "skipped": summary.skipped[:100],
                "on_bad_record": self.on_bad_record,
                **self.split_metadata(found[split]),
            }
            shards[split] = self._shards(split, examples)
        return shards

    def split_metadata(self, files: dict[str, str]) -> dict:
        """Extra per-split metadata the reader needs (COCO's categories)."""
        return {}

    def _shards(self, split: str, examples: list[Example]) -> list[ShardGenerator]:
        groups, size = [[]], 0
        for example in examples:
            image_bytes = os.path.getsize(example["image"])
            if groups[-1] and size + image_bytes > self.shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(example)
            size += image_bytes
        progress = _Progress(f"{self.name} {split}", len(examples))
        return [_ShardGenerator(group, start, progress) for group, start in _starts(groups)]


def _starts(groups: list[list[Example]]) -> Iterator[tuple[list[Example], int]]:
    start = 0
    for group in groups:
        yield group, start
        start += len(group)


class _Progress:
    """About twenty lines per split: images written and the time left."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.start = label, total, 0, time.time()

    def advance(self) -> None:
        self.done += 1
        if self.done == self.total or self.done % max(1, self.total // 20) == 0:
            elapsed = time.time() - self.start
            eta = (self.total - self.done) * elapsed / self.done
            print(
                f"{self.label}: {self.done}/{self.total} images  ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )


class _ShardGenerator:
    """One shard's (key, example) pairs; the key is the image's position in the split."""

    def __init__(self, examples: list[Example], start: int, progress: _Progress):
        self.examples, self.start, self.progress = examples, start, progress

    def __call__(self) -> Iterator[tuple[int, Example]]:
        for offset, example in enumerate(self.examples):
            yield self.start + offset, example
            self.progress.advance()


def _missing_image_check(
    paths_and_ids: list[tuple[str, int]], handler: BadRecordHandler
) -> set[str]:
    """Paths of images whose file is missing, each reported once under the policy (the
    message the file readers give, not repeated if the reader gave it already)."""
    missing = set()
    for path, image_id in paths_and_ids:
        if path in missing or os.path.isfile(path):
            continue
        message = f"{image_label(path, image_id)} does not exist"
        if message not in handler.summary.skipped:
            handler.bad(message)
        missing.add(path)
    return missing


class CocoFormatBuilder(PoseBuilder, skip_registration=True):
    """COCO-format keypoint files: images, annotations, categories."""

    with_crowd_index = False
    detections_name = ""  # the released detections file looked for under manual_dir

    def feature_spec(self) -> dict:
        k = self.spec.num_joints
        spec = {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "file_name": tfds.features.Text(),
            "image_id": np.int64,
            "width": np.int64,  # -1: absent from the file
            "height": np.int64,
            "persons": {
                "annotation_id": _int_tensor(),
                "file_position": _int_tensor(),
                "category_id": _int_tensor(),
                "bbox": _float_tensor(4),
                "keypoints": _float_tensor(k, 3),
                "area": _float_tensor(),  # NaN: absent (CrowdPose)
                "iscrowd": _int_tensor(),
                "num_keypoints": _int_tensor(),  # -1: absent
            },
            "detections": {
                "file_position": _int_tensor(),
                "category_id": _int_tensor(),
                "bbox": _float_tensor(4),
                "score": _float_tensor(),
            },
        }
        if self.with_crowd_index:
            spec["crowd_index"] = _float64()  # NaN: absent
        return spec

    def split_metadata(self, files: dict[str, str]) -> dict:
        return {"categories": load_json(files["annotations"]).get("categories") or []}

    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        ann_file, image_dir = files["annotations"], files["images"]
        # The file reader's checks and policy, with its messages; its records are rebuilt
        # at read time, where the crop geometry is known.
        _, summary = read_coco_keypoints(
            ann_file, image_dir, self.spec, 1.0, on_bad_record=self.on_bad_record
        )
        handler = BadRecordHandler(self.on_bad_record, summary)
        data = load_json(ann_file)
        images = image_table(data, ann_file)
        path_of = {i: os.path.join(image_dir, image["file_name"]) for i, image in images.items()}
        missing = _missing_image_check([(p, i) for i, p in path_of.items()], handler)
        skipped = set(summary.skipped_annotations)
        persons: dict[int, list[tuple[int, dict]]] = {i: [] for i in images}
        for position, ann in enumerate(data.get("annotations") or []):
            if position not in skipped and path_of[ann["image_id"]] not in missing:
                persons[ann["image_id"]].append((position, ann))
        detections = self._detections(files, data, handler, missing, path_of)
        examples = []
        for image_id, image in images.items():
            if path_of[image_id] in missing:
                continue
            example = {
                "image": path_of[image_id],
                "file_name": image["file_name"],
                "image_id": image_id,
                "width": _size(image.get("width")),
                "height": _size(image.get("height")),
                "persons": self._persons(ann_file, image_id, persons[image_id], handler),
                "detections": _detection_arrays(detections.get(image_id, [])),
            }
            if self.with_crowd_index:
                example["crowd_index"] = float(image.get("crowdIndex", math.nan))
            examples.append(example)
        summary.kept = sum(len(e["persons"]["bbox"]) for e in examples)
        return examples, summary

    def _persons(
        self, ann_file: str, image_id: int, anns: list[tuple[int, dict]], handler
    ) -> dict[str, np.ndarray]:
        k = self.spec.num_joints
        rows = []
        for position, ann in anns:
            where = f"{ann_file}: annotation id {ann.get('id', '?')} (image id {image_id})"
            try:
                bbox = finite_numbers(ann, "bbox", 4, where)
                # Crowd regions may carry no keypoints: no reader or metric uses them.
                keypoints = (
                    finite_numbers(ann, "keypoints", k * 3, where)
                    if "keypoints" in ann or not ann.get("iscrowd", 0)
                    else [0.0] * (k * 3)
                )
            except BadRecordError as err:
                handler.bad(str(err))
                continue
            rows.append(
                (
                    int(ann.get("id", -1)),
                    position,
                    int(ann.get("category_id", -1)),
                    bbox,
                    keypoints,
                    float(ann["area"]) if "area" in ann else math.nan,
                    int(ann.get("iscrowd", 0)),
                    int(ann.get("num_keypoints", -1)),
                )
            )
        names = ("annotation_id", "file_position", "category_id", "bbox")
        names += ("keypoints", "area", "iscrowd", "num_keypoints")
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        arrays = {}
        for name, column in zip(names, columns, strict=True):
            dtype = np.float64 if name in ("bbox", "keypoints", "area") else np.int64
            arrays[name] = np.asarray(column, dtype)
        arrays["bbox"] = arrays["bbox"].reshape(-1, 4)
        arrays["keypoints"] = arrays["keypoints"].reshape(-1, k, 3)
        return arrays

    def _detections(self, files, data, handler, missing, path_of) -> dict[int, list]:
        det_file = files.get("detections", "")
        if not det_file:
            return {}
        _, summary = read_detections(
            det_file,
            files["annotations"],
            files["images"],
            self.spec,
            1.0,
            score_threshold=-math.inf,
            on_bad_record=self.on_bad_record,
            check_images=False,
            gt_content=data,
        )
        handler.summary.skipped.extend(summary.skipped)
        skipped = set(summary.skipped_annotations)
        by_image: dict[int, list] = {}
        for position, det in enumerate(load_json(det_file)):
            if position not in skipped and path_of[det["image_id"]] not in missing:
                by_image.setdefault(det["image_id"], []).append((position, det))
        return by_image


def _size(value) -> int:
    return int(value) if isinstance(value, (int, float)) and value > 0 else -1


def _detection_arrays(detections: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
    return {
        "file_position": np.asarray([p for p, _ in detections], np.int64),
        "category_id": np.asarray([d.get("category_id", -1) for _, d in detections], np.int64),
        "bbox": np.asarray([d["bbox"] for _, d in detections], np.float64).reshape(-1, 4),
        "score": np.asarray([d["score"] for _, d in detections], np.float64),
    }


def _existing(files: dict[str, str]) -> dict[str, str] | None:
    """`files` if its annotation file and image folder exist, else None."""
    if os.path.isfile(files["annotations"]) and os.path.isdir(files["images"]):
        return files
    return None


class CocoKeypoints(CocoFormatBuilder):
    """COCO keypoints 2017 (person_keypoints_{train,val}2017.json), one example per image."""

    spec = COCO
    homepage = "https://cocodataset.org/#keypoints-2017"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir/annotations/person_keypoints_{train,val}2017.json,
    manual_dir/images/{train,val}2017/*.jpg and, for val, optionally
    manual_dir/person_detection_results/COCO_val2017_detections_AP_H_56_person.json
    (HRNet's release). Files without the '2017' suffix are accepted too (the
    project's generated dataset)."""

    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        found = {}
        for split in ("train", "val"):
            for suffix in ("2017", ""):
                files = _existing(
                    {
                        "annotations": os.path.join(
                            manual_dir, "annotations", f"person_keypoints_{split}{suffix}.json"
                        ),
                        "images": os.path.join(manual_dir, "images", f"{split}{suffix}"),
                    }
                )
                if files:
                    found[split] = files
                    break
        if "val" in found:
            detections = self.detections_file or os.path.join(
                manual_dir,
                "person_detection_results",
                "COCO_val2017_detections_AP_H_56_person.json",
            )
            if os.path.isfile(detections):
                found["val"]["detections"] = detections
            elif self.detections_file:
                raise BadRecordError(f"--detections {detections}: no such file")
        return found


class Crowdpose(CocoFormatBuilder):
    """CrowdPose (crowdpose_trainval.json as train, crowdpose_test.json as val)."""

    spec = CROWDPOSE
    homepage = "https://github.com/Jeff-sjtu/CrowdPose"
    with_crowd_index = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir/json/crowdpose_{trainval,test}.json and manual_dir/images/*.jpg; the
    train split is trainval, the val split is test, as the config's files."""

    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        images = os.path.join(manual_dir, "images")
        found = {}
        for split, name in (("train", "trainval"), ("val", "test")):
            ann = os.path.join(manual_dir, "json", f"crowdpose_{name}.json")
            files = _existing({"annotations": ann, "images": images})
            if files:
                found[split] = files
        if "val" in found and self.detections_file:
            if not os.path.isfile(self.detections_file):
                raise BadRecordError(f"--detections {self.detections_file}: no such file")
            found["val"]["detections"] = self.detections_file
        return found


class Mpii(PoseBuilder):
    """MPII in HRNet's JSON (annot/{train,valid}.json) with gt_valid.mat's head boxes."""

    spec = MPII
    homepage = "http://human-pose.mpi-inf.mpg.de/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir/annot/{train,valid}.json (HRNet's MPII JSON), manual_dir/images/*.jpg
    and, for PCKh on the val split, manual_dir/annot/gt_valid.mat."""

    def feature_spec(self) -> dict:
        k = self.spec.num_joints
        return {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "file_name": tfds.features.Text(),
            "image_id": np.int64,
            "persons": {
                "file_position": _int_tensor(),
                "center": _float_tensor(2),
                "scale": _float_tensor(),
                "joints": _float_tensor(k, 2),
                "joints_vis": _float_tensor(k),
                # gt_valid.mat's columns for the val split (NaN / False in train).
                "head_box": _float_tensor(2, 2),
                "pckh_joints": _float_tensor(k, 2),
                "pckh_joint_missing": tfds.features.Tensor(shape=(None, k), dtype=np.bool_),
            },
        }

    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        images = os.path.join(manual_dir, "images")
        found = {}
        for split, name in (("train", "train"), ("val", "valid")):
            files = _existing(
                {"annotations": os.path.join(manual_dir, "annot", f"{name}.json"), "images": images}
            )
            if files:
                found[split] = files
        head_boxes = os.path.join(manual_dir, "annot", "gt_valid.mat")
        if "val" in found and os.path.isfile(head_boxes):
            found["val"]["head_boxes"] = head_boxes
        return found

    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        ann_file, image_dir = files["annotations"], files["images"]
        _, summary = read_mpii(ann_file, image_dir, self.spec, self.on_bad_record)
        handler = BadRecordHandler(self.on_bad_record, summary)
        entries = load_json(ann_file)
        head = _gt_valid_columns(files.get("head_boxes"), len(entries), self.spec.num_joints)
        skipped = set(summary.skipped_annotations)
        by_image: dict[str, list[int]] = {}
        for position, entry in enumerate(entries):
            if position not in skipped:
                by_image.setdefault(entry["image"], []).append(position)
        # Image ids number the images in order of first appearance, as read_mpii's.
        paths = [(os.path.join(image_dir, name), i) for i, name in enumerate(by_image)]
        missing = _missing_image_check(paths, handler)
        examples = []
        for image_id, (name, positions) in enumerate(by_image.items()):
            path = os.path.join(image_dir, name)
            if path in missing:
                continue
            chosen = [entries[p] for p in positions]
            examples.append(
                {
                    "image": path,
                    "file_name": name,
                    "image_id": image_id,
                    "persons": {
                        "file_position": np.asarray(positions, np.int64),
                        "center": np.asarray([e["center"] for e in chosen], np.float64),
                        "scale": np.asarray([e["scale"] for e in chosen], np.float64),
                        "joints": np.asarray([e["joints"] for e in chosen], np.float64),
                        "joints_vis": np.asarray([e["joints_vis"] for e in chosen], np.float64),
                        **{key: value[positions] for key, value in head.items()},
                    },
                }
            )
        summary.kept = sum(len(e["persons"]["scale"]) for e in examples)
        return examples, summary


def _gt_valid_columns(mat_file: str | None, count: int, num_joints: int) -> dict[str, np.ndarray]:
    """gt_valid.mat's per-person arrays (NaN / False without the file)."""
    if not mat_file:
        return {
            "head_box": np.full((count, 2, 2), np.nan),
            "pckh_joints": np.full((count, num_joints, 2), np.nan),
            "pckh_joint_missing": np.zeros((count, num_joints), bool),
        }
    mat = read_gt_valid(mat_file)
    if len(mat["headboxes"]) != count:
        raise BadRecordError(
            f"{mat_file} has {len(mat['headboxes'])} persons, the val JSON has {count}"
        )
    return {
        "head_box": mat["headboxes"],
        "pckh_joints": mat["joints"],
        "pckh_joint_missing": mat["joint_missing"],
    }


BUILDERS = {cls.name: cls for cls in (CocoKeypoints, Crowdpose, Mpii)}
