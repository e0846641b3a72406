"""TFDS builders for the COCO-format keypoint datasets: COCO keypoints 2017 and
CrowdPose (`efafnet_jax.data.tfds.builders`)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.keypoints import COCO, CROWDPOSE
from efafnet_jax.data.records import BadRecordError, BadRecordHandler, ReadSummary
from efafnet_jax.data.tfds.base import (
    Example,
    PoseBuilder,
    existing_files,
    float64_tensor,
    float_column,
    int_column,
    missing_image_check,
)


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
                "annotation_id": int_column(),
                "file_position": int_column(),
                "category_id": int_column(),
                "bbox": float_column(4),
                "keypoints": float_column(k, 3),
                "area": float_column(),  # NaN: absent (CrowdPose)
                "iscrowd": int_column(),
                "num_keypoints": int_column(),  # -1: absent
            },
            "detections": {
                "file_position": int_column(),
                "category_id": int_column(),
                "bbox": float_column(4),
                "score": float_column(),
            },
        }
        if self.with_crowd_index:
            spec["crowd_index"] = float64_tensor()  # NaN: absent
        return spec

    def split_metadata(self, files: dict[str, str]) -> dict:
        return {"categories": load_json(files["annotations"]).get("categories") or []}

    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        ann_file, image_dir = files["annotations"], files["images"]
        data = load_json(ann_file)
        # The file reader's checks and policy, with its messages; its records are rebuilt
        # at read time, where the crop geometry is known.
        _, summary = read_coco_keypoints(
            ann_file, image_dir, self.spec, 1.0, on_bad_record=self.on_bad_record, content=data
        )
        handler = BadRecordHandler(self.on_bad_record, summary)
        # What the reader accepted: every field typed, ids unique (a repeated image id
        # keeps its first entry, as the reader's).
        skipped_images = set(summary.skipped_images)
        images = {
            image["id"]: image
            for position, image in enumerate(data["images"])
            if position not in skipped_images
        }
        image_root = epath.Path(image_dir)
        path_of = {i: str(image_root / image["file_name"]) for i, image in images.items()}
        missing = missing_image_check([(p, i) for i, p in path_of.items()], handler)
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
                "persons": self._persons(persons[image_id]),
                "detections": _detection_arrays(detections.get(image_id, [])),
            }
            if self.with_crowd_index:
                example["crowd_index"] = float(image.get("crowdIndex", math.nan))
            examples.append(example)
        summary.kept = sum(len(e["persons"]["bbox"]) for e in examples)
        return examples, summary

    def _persons(self, anns: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
        k = self.spec.num_joints
        rows = []
        for position, ann in anns:
            # The reader has checked every field's type; crowd regions may carry no
            # keypoints (no reader or metric uses them).
            rows.append(
                (
                    ann["id"],
                    position,
                    int(ann.get("category_id", -1)),
                    ann["bbox"],
                    ann.get("keypoints", [0.0] * (k * 3)),
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
        # The GT file's own bad entries were reported when it was read: count them once.
        reported = set(handler.summary.skipped)
        handler.summary.skipped.extend(m for m in summary.skipped if m not in reported)
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
        manual = epath.Path(manual_dir)
        found = {}
        for split in ("train", "val"):
            for suffix in ("2017", ""):
                files = existing_files(
                    {
                        "annotations": str(
                            manual / "annotations" / f"person_keypoints_{split}{suffix}.json"
                        ),
                        "images": str(manual / "images" / f"{split}{suffix}"),
                    }
                )
                if files:
                    found[split] = files
                    break
        if "val" in found:
            detections = self.detections_file or str(
                manual / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
            )
            if epath.Path(detections).is_file():
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
        manual = epath.Path(manual_dir)
        images = str(manual / "images")
        found = {}
        for split, name in (("train", "trainval"), ("val", "test")):
            ann = str(manual / "json" / f"crowdpose_{name}.json")
            files = existing_files({"annotations": ann, "images": images})
            if files:
                found[split] = files
        if "val" in found and self.detections_file:
            if not epath.Path(self.detections_file).is_file():
                raise BadRecordError(f"--detections {self.detections_file}: no such file")
            found["val"]["detections"] = self.detections_file
        return found
