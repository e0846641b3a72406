"""Drawing poses on images."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def limb_colors(count: int) -> list[tuple[int, int, int]]:
    """One distinct BGR colour per limb (hues around the circle)."""
    hues = np.linspace(0, 179, max(count, 1), endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], -1)[None]
    return [tuple(int(c) for c in bgr) for bgr in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]]


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    threshold: float = 0.2,
    color: tuple[int, int, int] | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """Draws [K, 3] (x, y, score) keypoints on a BGR image in place; limbs whose two
    ends score above `threshold`. `color` None gives a colour per limb."""
    colors = limb_colors(len(skeleton)) if color is None else [color] * len(skeleton)
    points = [tuple(int(round(v)) for v in p[:2]) for p in keypoints]
    for (a, b), c in zip(skeleton, colors, strict=True):
        if keypoints[a, 2] > threshold and keypoints[b, 2] > threshold:
            cv2.line(image, points[a], points[b], c, thickness, cv2.LINE_AA)
    for p, score in zip(points, keypoints[:, 2], strict=True):
        if score > threshold:
            cv2.circle(image, p, thickness + 1, color or (255, 255, 255), -1, cv2.LINE_AA)
    return image
