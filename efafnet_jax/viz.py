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


def heatmap_panel(
    crops_rgb: np.ndarray, heatmaps: np.ndarray, names: Sequence[str], max_people: int = 8
) -> np.ndarray:
    """A BGR grid: per person a row of its crop, then each joint's heatmap over the crop.

    Heatmaps [N, h, w, K] are resized to the crop and drawn with the JET colour map,
    each clipped to [0, 1] (1 is a target's peak), with the joint's name on top.
    """
    rows = []
    for crop, maps in zip(crops_rgb[:max_people], heatmaps[:max_people], strict=True):
        height, width = crop.shape[:2]
        base = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
        tiles = [base]
        for k, name in enumerate(names):
            heat = cv2.resize(np.clip(maps[..., k], 0.0, 1.0), (width, height))
            colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
            tile = cv2.addWeighted(base, 0.5, colored, 0.5, 0.0)
            cv2.putText(tile, name[:12], (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def write_png(path, image_bgr: np.ndarray) -> None:
    """Writes a BGR (or grey) image as PNG to `path`, a local path or a URL (etils.epath)."""
    from etils import epath

    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError(f"{path}: cv2 could not encode a {image_bgr.shape} image as PNG")
    epath.Path(path).write_bytes(encoded.tobytes())
