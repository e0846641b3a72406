"""Reading images as RGB uint8, with errors that name the file and the image id."""

from __future__ import annotations

import cv2
import numpy as np

from efafnet_jax.data.records import BadRecordError, image_label, read_file

# HRNet JointsDataset reads with IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION (EXIF
# orientation is ignored: COCO's keypoints are in the stored pixel grid).
_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_image(data: bytes, path: str, image_id: int, rgb: bool = True) -> np.ndarray:
    """JPEG/PNG bytes -> [H, W, 3] uint8, RGB (or cv2's BGR with rgb=False)."""
    if not data:
        # cv2.imdecode asserts on an empty buffer (a cv2.error naming no file).
        raise BadRecordError(f"{image_label(path, image_id)} is empty (0 bytes)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _READ_FLAGS)
    except cv2.error as err:
        raise BadRecordError(f"{image_label(path, image_id)} cannot be decoded: {err}") from err
    if image is None:
        raise BadRecordError(f"{image_label(path, image_id)} cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def read_image(path: str, image_id: int, rgb: bool = True) -> np.ndarray:
    """The image at `path` (a local path or a URL) as [H, W, 3] uint8 RGB (or BGR with
    rgb=False)."""
    return decode_image(read_file(path, image_label(path, image_id)), path, image_id, rgb)
