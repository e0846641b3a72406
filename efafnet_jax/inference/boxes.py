"""Person boxes for your own images: a boxes file, COCO detections, or the whole image.

Each box becomes a `PersonRecord` (centre and scale of its crop), as evaluation's
readers make them. A COCO detections file is read by evaluation's own reader
(`read_detections`: `data.det_score_threshold` and `data.det_box_extension` apply);
a boxes file's boxes are used as given.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence

import ml_collections
import numpy as np
from etils import epath

from efafnet_jax.data.coco_format import degenerate_box_problem, read_detections
from efafnet_jax.data.json_files import describe, is_number, load_json
from efafnet_jax.data.keypoints import spec_from_config
from efafnet_jax.data.records import BadRecordError, BadRecordHandler, PersonRecord, ReadSummary
from efafnet_jax.data.transforms import box_to_center_scale

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BOX_FIELDS = ("x", "y", "w", "h", "score")

# Boxes by the key they are listed under (a path or a file name): each a record and
# where it comes from for messages ("FILE: 'KEY' box I", I its place under the key).
LabelledRecord = tuple[str, PersonRecord]
BoxTable = dict[str, list[LabelledRecord]]


def list_images(paths: list[str]) -> list[str]:
    """Files as given, and the image files of folders (sorted), in argument order; each
    a local path or a URL."""
    images = []
    for path in paths:
        folder = epath.Path(path)
        if folder.is_dir():
            names = sorted(p.name for p in folder.iterdir())
            images += [str(folder / n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            images.append(path)
    return images


def box_record(
    image_path: str, box: Sequence[float], aspect_ratio: float, num_joints: int
) -> PersonRecord:
    """A person to crop from x, y, w, h[, score] as given (score 1 without one): centre and
    scale as evaluation's detection records without box extension; no joints."""
    center, scale = box_to_center_scale(box, aspect_ratio)
    return PersonRecord(
        image_path=image_path,
        image_id=-1,  # not from a dataset
        center=center,
        scale=scale,
        joints=np.zeros((num_joints, 2), np.float32),
        visibility=np.ones(num_joints, np.float32),
        box_score=float(box[4]) if len(box) > 4 else 1.0,
        area=float(box[2]) * float(box[3]),
        box=np.asarray(box[:4], np.float32),
    )


def read_boxes_file(
    path: str, aspect_ratio: float, num_joints: int, on_bad_record: str = "raise"
) -> tuple[BoxTable, ReadSummary]:
    """`{"file.jpg": [[x, y, w, h, score], ...]}` (a box without a score gets 1.0), boxes
    used as given. A malformed or non-finite box is a bad record (`on_bad_record`); a
    file that is not such an object raises BadRecordError."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise BadRecordError(f"boxes file {path}: expected an object mapping file names to boxes")
    summary = ReadSummary(source=path)
    handler = BadRecordHandler(on_bad_record, summary)
    table = {}
    for name, entries in data.items():
        if not isinstance(entries, list):
            handler.bad(f"boxes file {path}: {name!r} does not map to a list of boxes")
            continue
        table[name] = []
        for i, entry in enumerate(entries):
            where = f"boxes file {path}: {name!r} box {i}"
            try:
                box = _box(entry, where)
            except BadRecordError as err:
                handler.bad(str(err))
                continue
            table[name].append((where, box_record(name, box, aspect_ratio, num_joints)))
    summary.kept = sum(len(records) for records in table.values())
    return table, handler.finish()


def read_coco_detections(
    det_file: str, ann_file: str, data: ml_collections.ConfigDict, on_bad_record: str = "raise"
) -> tuple[BoxTable, ReadSummary]:
    """COCO detections (`[{image_id, category_id, bbox, score}]`) as evaluation reads them
    (`data.det_score_threshold`, `data.det_box_extension`, the crop's aspect ratio), by the
    file name that `ann_file` gives each image id. A record's label counts the image's
    detections that the reader kept, in file order (the reader names a detection it
    rejects by its index in the file)."""
    height, width = data.crop_hw
    records, summary = read_detections(
        det_file,
        ann_file,
        "",  # image_path = the file name: predict matches it against --images
        spec_from_config(data),
        width / height,
        score_threshold=data.det_score_threshold,
        box_extension=data.det_box_extension,
        on_bad_record=on_bad_record,
        check_images=False,  # predict reports the images it cannot read
    )
    table = defaultdict(list)
    for record in records:
        kept = table[record.image_path]
        kept.append((f"detections file {det_file}: {record.image_path!r} box {len(kept)}", record))
    return dict(table), summary


def match_images(
    table: BoxTable, images: list[str]
) -> tuple[dict[str, list[LabelledRecord]], list[str]]:
    """(each image's boxes: those listed under its path as given, else under its file
    name, else none; the keys of `table` that match no image)."""
    matched, used = {}, set()
    for path in images:
        key = path if path in table else epath.Path(path).name
        matched[path] = table.get(key, [])
        if key in table:
            used.add(key)
    return matched, [key for key in table if key not in used]


def usable_boxes(
    boxes: list[LabelledRecord], image_shape: tuple[int, ...], image_path: str
) -> list[PersonRecord]:
    """The records of `boxes`, less those of no area or wholly outside the image: each
    of these is warned about, naming the image, the box (its label) and its values."""
    height, width = image_shape[:2]
    kept = []
    for label, record in boxes:
        problem = degenerate_box_problem(record.box, width, height)
        if problem:
            box = [round(float(v), 2) for v in record.box]
            logging.warning("image %s: %s %s %s; skipped", image_path, label, box, problem)
        else:
            kept.append(record)
    return kept


def whole_image_box(image_shape: tuple[int, ...]) -> list[float]:
    """The image as one person box, score 1."""
    height, width = image_shape[:2]
    return [0.0, 0.0, float(width), float(height), 1.0]


def _box(entry, where: str) -> list[float]:
    if not isinstance(entry, list | tuple) or len(entry) not in (4, 5):
        raise BadRecordError(
            f"{where}: expected [x, y, w, h] or [x, y, w, h, score], got {entry!r}"
        )
    values = []
    for field, value in zip(BOX_FIELDS, entry, strict=False):
        # "12.5" or true would convert with float(); a boxes file holds JSON numbers.
        if not is_number(value):
            raise BadRecordError(
                f"{where}: field '{field}' is {describe(value)}, not a number, in {entry!r}"
            )
        if not math.isfinite(value):
            raise BadRecordError(f"{where}: field '{field}' is not finite in {entry!r}")
        values.append(float(value))
    return values if len(values) == 5 else [*values, 1.0]
