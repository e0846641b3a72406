"""PNGs of images with predicted skeletons (and ground truth in another colour)."""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
from etils import epath

from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.viz import draw_pose, write_png

GT_COLOR = (60, 220, 60)  # BGR green, thin


def write_pictures(
    out_dir: str,
    count: int,
    results: list[dict],
    records: list[PersonRecord],
    spec: KeypointSpec,
    ground_truth: list[PersonRecord] | None = None,
    threshold: float = 0.2,
) -> list[str]:
    """Draws the first `count` images of `results` (COCO results format) as PNGs in
    `out_dir` (a folder or a URL); returns their paths."""
    paths_by_image = {r.image_id: r.image_path for r in records}
    predicted = defaultdict(list)
    for result in results:
        predicted[result["image_id"]].append(np.reshape(result["keypoints"], (-1, 3)))
    truth = defaultdict(list)
    for record in ground_truth or []:
        kpts = np.concatenate([record.joints, record.visibility[:, None]], axis=1)
        truth[record.image_id].append(kpts)
    folder = epath.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image_id in list(dict.fromkeys(r.image_id for r in records))[:count]:
        image = cv2.cvtColor(read_image(paths_by_image[image_id], image_id), cv2.COLOR_RGB2BGR)
        for kpts in truth[image_id]:
            draw_pose(image, kpts, spec.skeleton, threshold=0.5, color=GT_COLOR, thickness=1)
        for kpts in predicted[image_id]:
            draw_pose(image, kpts, spec.skeleton, threshold=threshold)
        path = str(folder / f"{image_id}.png")
        write_png(path, image)
        written.append(path)
    return written
