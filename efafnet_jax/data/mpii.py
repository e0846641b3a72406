"""MPII in HRNet's JSON form, and head boxes for PCKh.

Records follow HRNet lib/dataset/mpii.py `_get_db`: scale s = [scale, scale];
unless centre x is -1, centre y += 15 * s and s *= 1.25; then the 1-based
(MATLAB) centre and joints become 0-based (- 1).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import scipy.io
from etils import epath

from efafnet_jax.data.json_files import describe, finite_number, finite_numbers, load_json, text
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import (
    BadRecordError,
    BadRecordHandler,
    PersonRecord,
    ReadSummary,
    drop_missing_images,
    read_file,
)


def read_mpii(
    json_file: str,
    image_dir: str,
    spec: KeypointSpec,
    on_bad_record: str = "raise",
    check_images: bool = True,
    content: list | None = None,
    entry_positions: Sequence[int] | None = None,
) -> tuple[list[PersonRecord], ReadSummary]:
    """Person records of an HRNet-style MPII JSON list, in file order.

    image_id numbers images in order of first appearance; annotation_id is the
    entry's index in the file, which is also its column in gt_valid.mat. `content`:
    the file's parsed JSON when it comes from elsewhere (a TFDS split), and
    `entry_positions` its entries' indices in the file it was built from.
    """
    summary = ReadSummary(source=json_file)
    handler = BadRecordHandler(on_bad_record, summary)
    entries = load_json(json_file) if content is None else content
    if not isinstance(entries, list):
        raise BadRecordError(f"MPII file {json_file} is not a JSON list of persons")
    image_ids: dict[str, int] = {}
    images = epath.Path(image_dir)
    records = []
    for i, entry in enumerate(entries):
        name = entry.get("image") if isinstance(entry, dict) else None
        where = f"{json_file}: entry {i} (image {name})"
        try:
            if not isinstance(entry, dict):
                raise BadRecordError(f"{where} is {describe(entry)}, not an object")
            text(entry, "image", where)
            center = np.asarray(finite_numbers(entry, "center", 2, where), np.float64)
            scale_value = finite_number(entry, "scale", where)
            joints = _joint_array(entry, spec.num_joints, where)
            visibility = np.asarray(finite_numbers(entry, "joints_vis", spec.num_joints, where))
        except BadRecordError as err:
            handler.bad(str(err))
            summary.skipped_annotations.append(i)
            continue
        scale = np.array([scale_value, scale_value], np.float64)
        if center[0] != -1:
            center[1] = center[1] + 15 * scale[1]
            scale = scale * 1.25
        image_id = image_ids.setdefault(name, len(image_ids))
        records.append(
            PersonRecord(
                image_path=str(images / name),
                image_id=image_id,
                center=center - 1,
                scale=scale,
                joints=joints - 1,
                visibility=visibility.astype(np.float32),
                box_score=1.0,
                area=float((scale[0] * 200.0) ** 2),
                annotation_id=i if entry_positions is None else entry_positions[i],
            )
        )
    if check_images:
        records = drop_missing_images(records, handler)
    summary.kept = len(records)
    return records, handler.finish()


def _joint_array(entry: dict, num_joints: int, where: str) -> np.ndarray:
    joints = entry.get("joints")
    if not isinstance(joints, list) or len(joints) != num_joints:
        found = len(joints) if isinstance(joints, list) else "no"
        raise BadRecordError(f"{where}: field 'joints' has {found} joints, expected {num_joints}")
    if not all(isinstance(j, list) and len(j) == 2 for j in joints):
        raise BadRecordError(f"{where}: field 'joints' is not a list of [x, y] pairs")
    flat = finite_numbers({"joints": [v for j in joints for v in j]}, "joints", None, where)
    return np.asarray(flat, np.float64).reshape(num_joints, 2)


def _same_person(rect, center: np.ndarray, scale: float) -> bool:
    objpos = getattr(rect, "objpos", None)
    if objpos is None or not hasattr(objpos, "x"):
        return False
    return (
        abs(float(objpos.x) - center[0]) < 1
        and abs(float(objpos.y) - center[1]) < 1
        and abs(float(rect.scale) - scale) < 1e-3
    )


def mat_contents(mat_file: str, label: str) -> io.BytesIO:
    """A .mat file (a local path or a URL) as the file object that scipy.io reads;
    BadRecordError, starting with `label`, when it cannot be read."""
    return io.BytesIO(read_file(mat_file, label))


def read_gt_valid(mat_file: str) -> dict[str, np.ndarray]:
    """HRNet's annot/gt_valid.mat: head boxes and the GT used by PCKh.

    Returns headboxes [N, 2, 2] (per person: top-left and bottom-right, x and y),
    joint_missing [N, K] bool and joints [N, K, 2] (1-based, as stored).
    """
    contents = mat_contents(mat_file, f"head-box file {mat_file}")
    try:
        mat = scipy.io.loadmat(contents)
    except Exception as err:  # scipy raises several types for a bad .mat
        raise BadRecordError(f"head-box file {mat_file} cannot be read: {err}") from err
    for field in ("headboxes_src", "jnt_missing", "pos_gt_src"):
        if field not in mat:
            raise BadRecordError(f"head-box file {mat_file}: field '{field}' is missing")
    return {
        "headboxes": np.transpose(mat["headboxes_src"], (2, 0, 1)).astype(np.float64),
        "joint_missing": np.transpose(mat["jnt_missing"], (1, 0)).astype(bool),
        "joints": np.transpose(mat["pos_gt_src"], (2, 0, 1)).astype(np.float64),
    }


def headboxes_from_official(mat_file: str, records: list[PersonRecord]) -> np.ndarray:
    """Head boxes [N, 2, 2] for `records` from the official MPII annotation file.

    mpii_human_pose_v1_u12_1.mat: RELEASE.annolist(i).image.name names the image and
    annorect(j).{x1, y1, x2, y2} is the head box of the person whose objpos and scale
    the HRNet JSON's centre and scale were taken from; records are matched on those.
    """
    contents = mat_contents(mat_file, f"MPII annotation file {mat_file}")
    try:
        release = scipy.io.loadmat(contents, struct_as_record=False, squeeze_me=True)["RELEASE"]
    except Exception as err:  # a bad .mat or no RELEASE struct
        raise BadRecordError(f"MPII annotation file {mat_file} cannot be read: {err}") from err
    people: dict[str, list] = {}
    for item in np.atleast_1d(release.annolist):
        rects = [r for r in np.atleast_1d(getattr(item, "annorect", [])) if hasattr(r, "x1")]
        people.setdefault(str(item.image.name), []).extend(rects)
    boxes = np.zeros((len(records), 2, 2))
    for n, record in enumerate(records):
        # Undo the reader's preprocessing to recover the file's objpos and scale.
        scale = record.scale[0] / 1.25
        center = np.array(record.center, np.float64) + 1
        center[1] -= 15 * scale
        name = epath.Path(record.image_path).name
        match = [r for r in people.get(name, []) if _same_person(r, center, scale)]
        if not match:
            raise BadRecordError(
                f"{mat_file}: no person in image {name} has the centre "
                f"{center.tolist()} and scale {scale} of record {n}"
            )
        r = match[0]
        boxes[n] = [[r.x1, r.y1], [r.x2, r.y2]]
    return boxes
