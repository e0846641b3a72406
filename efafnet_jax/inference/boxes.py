"""Person boxes for your own images: a boxes file, COCO detections, or the whole image."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict

from efafnet_jax.data.coco_format import load_detections
from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.records import BadRecordError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(paths: list[str]) -> list[str]:
    """Files as given, and the image files of folders (sorted), in argument order."""
    images = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            images += [os.path.join(path, n) for n in names]
        else:
            images.append(path)
    return images


def read_boxes_file(path: str) -> dict[str, list[list[float]]]:
    """`{"file.jpg": [[x, y, w, h, score], ...]}`; a box without a score gets 1.0."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise BadRecordError(f"boxes file {path}: expected an object mapping file names to boxes")
    boxes = {}
    for name, entries in data.items():
        if not isinstance(entries, list):
            raise BadRecordError(f"boxes file {path}: {name!r} does not map to a list of boxes")
        boxes[name] = [
            _box(entry, f"boxes file {path}: {name!r} box {i}") for i, entry in enumerate(entries)
        ]
    return boxes


def read_coco_detections(
    det_file: str, ann_file: str, score_threshold: float = 0.0
) -> dict[str, list[list[float]]]:
    """COCO detections (`[{image_id, category_id, bbox, score}]`) by file name (via `ann_file`)."""
    images, person, detections = load_detections(det_file, ann_file)
    boxes = defaultdict(list)
    for i, det in enumerate(detections):
        where = f"detections file {det_file}: detection {i}"
        if not isinstance(det, dict):
            raise BadRecordError(f"{where}: not a JSON object")
        if det.get("category_id", person) != person:
            continue
        if det.get("image_id") not in images:
            raise BadRecordError(f"{where}: field 'image_id' names no image in {ann_file}")
        box = _box([*det.get("bbox", []), det.get("score", 1.0)], f"{where} field 'bbox'")
        if box[4] >= score_threshold:
            boxes[images[det["image_id"]]["file_name"]].append(box)
    return dict(boxes)


def boxes_for_image(table: dict[str, list[list[float]]], image_path: str) -> list[list[float]]:
    """The boxes listed under the image's path as given, or under its file name."""
    if image_path in table:
        return table[image_path]
    return table.get(os.path.basename(image_path), [])


def usable_boxes(
    boxes: list[list[float]], image_shape: tuple[int, ...], image_path: str
) -> list[list[float]]:
    """Drops, with a warning naming image and box, boxes of zero size or wholly outside."""
    height, width = image_shape[:2]
    kept = []
    for i, box in enumerate(boxes):
        x, y, w, h = box[:4]
        if w <= 0 or h <= 0:
            logging.warning("%s: box %d %s has zero size; skipped", image_path, i, box[:4])
        elif x >= width or y >= height or x + w <= 0 or y + h <= 0:
            logging.warning(
                "%s: box %d %s lies wholly outside the %dx%d image; skipped",
                image_path,
                i,
                box[:4],
                width,
                height,
            )
        else:
            kept.append(box)
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
    try:
        values = [float(v) for v in entry]
    except (TypeError, ValueError):
        raise BadRecordError(f"{where}: non-numeric value in {entry!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise BadRecordError(f"{where}: non-finite value in {entry!r}")
    return values if len(values) == 5 else [*values, 1.0]
