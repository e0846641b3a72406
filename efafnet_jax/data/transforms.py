"""SimpleBaseline/HRNet geometry as pure functions: every random draw is an argument.

Sources: HRNet lib/utils/transforms.py (affine, flip), lib/dataset/coco.py
(`_xywh2cs`), lib/dataset/JointsDataset.py (augmentation, half body). Sizes are
(height, width), as everywhere in this package; cv2 gets its (width, height) dsize
at the call.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence

import cv2
import numpy as np

PIXEL_STD = 200.0  # HRNet coco.py: scale is box size / 200 px


def box_to_center_scale(
    box: Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """x, y, w, h -> centre, scale (HRNet `_xywh2cs`).

    The short side is enlarged to `aspect_ratio` = width / height of the crop, the
    size divided by 200 and multiplied by `padding`, except when the centre's x is
    -1 (the reference's marker for "no box").
    """
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], np.float32)
    if center[0] != -1:
        scale = scale * padding
    return center, scale


def extend_box(box: Sequence[float], factor: float) -> np.ndarray:
    """Enlarges x, y, w, h by `factor` of its width and height about its centre.

    The paper (IV.C) extends CrowdPose detections by 30% (factor 0.3).
    """
    x, y, w, h = (float(v) for v in box[:4])
    return np.array(
        [x - 0.5 * factor * w, y - 0.5 * factor * h, w * (1 + factor), h * (1 + factor)], np.float64
    )


def _rotate(point: Sequence[float], angle_rad: float) -> list[float]:
    sn, cs = math.sin(angle_rad), math.cos(angle_rad)
    return [point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs]


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]], np.float32)


def affine_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    rotation: float,
    output_hw: tuple[int, int],
    inverse: bool = False,
    udp: bool = False,
) -> np.ndarray:
    """The 2x3 image -> crop matrix (crop -> image with `inverse`), HRNet's 3-point form.

    Source points: the centre, the centre plus (0, -0.5 * scale_w * 200) rotated by
    `rotation` degrees, and a third point perpendicular to them; destination: the
    crop centre, the top-centre, and its perpendicular. Only scale's width counts.
    With `udp`, UDP's unit-length form instead (`udp_matrix`).
    """
    scale = np.asarray(scale)
    if scale.ndim == 0:
        scale = np.array([scale, scale])
    if udp:
        return udp_matrix(center, scale, rotation, output_hw, inverse)
    src_w = scale[0] * PIXEL_STD
    dst_h, dst_w = output_hw
    src_dir = _rotate([0, src_w * -0.5], np.pi * rotation / 180)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = np.asarray(center) + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inverse:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def udp_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    rotation: float,
    output_hw: tuple[int, int],
    inverse: bool = False,
) -> np.ndarray:
    """UDP's image -> output matrix (Huang et al., CVPR 2020, Sec. 3.2; mmpose
    mmpose/structures/bbox/transforms.py `get_udp_warp_matrix`): lengths are measured in
    unit lengths, so the box's [centre - size/2, centre + size/2] maps onto
    [0, output size - 1] in each direction, rotated by `rotation` degrees about the
    centre. The box size is scale * 200 in both directions (the aspect is fixed by
    `box_to_center_scale`). A flip of the output, x -> (width - 1) - x, is then the flip
    of the box about its centre: no half-pixel shift.

    The rotation is the reference's: image offsets from the centre are turned by
    +`rotation` (x toward y, in image axes) on their way to the output. HRNet's
    `affine_matrix` turns them by -`rotation`; rotations are drawn symmetrically, so the
    two senses train alike, but a crop at a given angle is the reference's."""
    size = np.asarray(scale, np.float64) * PIXEL_STD
    out_h, out_w = output_hw
    factor = np.array([(out_w - 1) / size[0], (out_h - 1) / size[1]])
    angle = np.pi * rotation / 180
    cs, sn = math.cos(angle), math.sin(angle)
    linear = factor[:, None] * np.array([[cs, -sn], [sn, cs]])
    offset = factor * size * 0.5 - linear @ np.asarray(center, np.float64)
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    if inverse:
        return cv2.invertAffineTransform(matrix)
    return matrix


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Applies a 2x3 matrix to [..., 2] points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


_scratch = threading.local()


def _rgba_scratch(rows: int, cols: int) -> np.ndarray:
    """A per-thread [rows, cols, 4] uint8 view, reused across calls (no page faults)."""
    buffer = getattr(_scratch, "rgba", None)
    if buffer is None or buffer.shape[0] < rows or buffer.shape[1] < cols:
        shape = (
            max(rows, 0 if buffer is None else buffer.shape[0]),
            max(cols, 0 if buffer is None else buffer.shape[1]),
            4,
        )
        buffer = _scratch.rgba = np.empty(shape, np.uint8)
    return buffer[:rows, :cols]


def sampled_region(
    image: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int], mirror: bool = False
) -> tuple[np.ndarray | None, int, int]:
    """(pixels a crop of `output_hw` through `matrix` can read, x0, y0), or (None, 0, 0).

    The footprint of the crop in the (mirrored, if `mirror`) image, widened by two
    pixels because bilinear taps reach floor(x) + 1, clipped to the image; the
    region is mirrored like the image it is cut from.
    """
    height, width = output_hw
    rows, cols = image.shape[:2]
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float)
    src = corners @ cv2.invertAffineTransform(matrix).T
    x0, y0 = (max(0, int(np.floor(src[:, i].min())) - 2) for i in (0, 1))
    x1 = min(cols, int(np.ceil(src[:, 0].max())) + 3)
    y1 = min(rows, int(np.ceil(src[:, 1].max())) + 3)
    if x0 >= x1 or y0 >= y1:
        return None, 0, 0
    if mirror:  # columns [x0, x1) of the mirrored image are [cols - x1, cols - x0) here
        return cv2.flip(image[y0:y1, cols - x1 : cols - x0], 1), x0, y0
    return image[y0:y1, x0:x1], x0, y0


def warp_crop(
    image: np.ndarray,
    matrix: np.ndarray,
    output_hw: tuple[int, int],
    mirror: bool = False,
    swap_red_blue: bool = False,
) -> np.ndarray:
    """cv2.warpAffine(INTER_LINEAR, zero border) of the image, as the reference crops.

    Equals `cv2.warpAffine(image[:, ::-1] if mirror else image, matrix, output_hw[::-1])`
    (with red and blue swapped if `swap_red_blue`), computed faster: only the
    source region the crop samples is mirrored and widened to 4 channels (cv2's
    vectorised path, 2.5x faster than 3 channels on one core) inside an
    image-sized scratch buffer, which is then warped with the same matrix, so
    the sampling positions are cv2's own. tests/test_transforms.py checks equality.
    """
    height, width = int(output_hw[0]), int(output_hw[1])
    if image.ndim != 3 or image.shape[2] != 3:
        source = image[:, ::-1] if mirror else image
        return cv2.warpAffine(
            np.ascontiguousarray(source), matrix, (width, height), flags=cv2.INTER_LINEAR
        )
    region, x0, y0 = sampled_region(image, matrix, (height, width), mirror)
    if region is None:
        return np.zeros((height, width, 3), image.dtype)
    rows, cols = image.shape[:2]
    y1, x1 = y0 + region.shape[0], x0 + region.shape[1]
    scratch = _rgba_scratch(rows, cols)
    # Pixels outside the region are never sampled, so they may hold anything.
    code = cv2.COLOR_BGR2RGBA if swap_red_blue else cv2.COLOR_RGB2RGBA
    cv2.cvtColor(region, code, dst=scratch[y0:y1, x0:x1])
    crop = cv2.warpAffine(scratch, matrix, (width, height), flags=cv2.INTER_LINEAR)
    return cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB)


def flip_joints(
    joints: np.ndarray,
    visibility: np.ndarray,
    image_width: int,
    flip_permutation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors joints in an image of `image_width` and swaps left/right (`fliplr_joints`).

    x -> width - x - 1. As the reference returns joints * joints_vis, unlabelled
    joints come back as (0, 0).
    """
    joints = np.array(joints, copy=True)
    visibility = np.array(visibility, copy=True)
    joints[:, 0] = image_width - joints[:, 0] - 1
    joints, visibility = joints[flip_permutation], visibility[flip_permutation]
    return joints * visibility[:, None], visibility


@dataclasses.dataclass(frozen=True)
class AugmentDraws:
    """The random numbers one training sample consumes, in the reference's roles.

    half_body_u, rotation_u, flip_u: uniform [0, 1); half_body_n, scale_n,
    rotation_n: standard normal.
    """

    half_body_u: float
    half_body_n: float
    scale_n: float
    rotation_n: float
    rotation_u: float
    flip_u: float


def draw_augmentation(rng: np.random.Generator) -> AugmentDraws:
    """Draws one sample's numbers from `rng` (a fixed order, so a seed replays it)."""
    u = rng.random(3)
    n = rng.standard_normal(3)
    return AugmentDraws(
        half_body_u=float(u[0]),
        half_body_n=float(n[0]),
        scale_n=float(n[1]),
        rotation_n=float(n[2]),
        rotation_u=float(u[1]),
        flip_u=float(u[2]),
    )


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """SimpleBaseline's training augmentation with the paper's ranges (IV.A)."""

    scale_factor: float = 0.3  # s * clip(randn * 0.3 + 1, 0.7, 1.3)
    rotation_factor: float = 40.0  # clip(randn * 40, -80, 80) ...
    rotation_prob: float = 0.6  # ... with probability 0.6
    flip: bool = True
    flip_prob: float = 0.5
    half_body: bool = False  # HRNet's option; the paper does not use it
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8


def half_body_center_scale(
    joints: np.ndarray,
    visibility: np.ndarray,
    upper_body_ids: Sequence[int],
    choice_n: float,
    aspect_ratio: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """HRNet `half_body_transform`: a box around the upper or the lower body.

    Upper if choice_n < 0.5 and more than 2 upper joints are labelled, else lower if
    more than 2 lower joints are, else upper; None when fewer than 2 are selected.
    Centre = mean of the selected joints; box from their extent, aspect-fixed, x1.5.
    """
    labelled = visibility > 0
    is_upper = np.isin(np.arange(len(joints)), upper_body_ids)
    upper = joints[labelled & is_upper]
    lower = joints[labelled & ~is_upper]
    if choice_n < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    selected = np.asarray(selected, np.float32)
    center = selected.mean(axis=0)[:2]
    left_top = selected.min(axis=0)
    right_bottom = selected.max(axis=0)
    w = right_bottom[0] - left_top[0]
    h = right_bottom[1] - left_top[1]
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], np.float32)
    return center, scale * 1.5


def augment_center_scale(
    center: np.ndarray,
    scale: np.ndarray,
    joints: np.ndarray,
    visibility: np.ndarray,
    draws: AugmentDraws,
    config: AugmentConfig,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Half body, scale and rotation as JointsDataset draws them: (c, s, degrees, flip).

    The flip itself (of image, joints and centre) is left to the caller, which
    knows the image width.
    """
    c, s = np.array(center, copy=True), np.array(scale, copy=True)
    if (
        config.half_body
        and np.sum(visibility) > config.half_body_min_joints
        and draws.half_body_u < config.half_body_prob
    ):
        half = half_body_center_scale(
            joints, visibility, upper_body_ids, draws.half_body_n, aspect_ratio
        )
        if half is not None:
            c, s = half
    sf, rf = config.scale_factor, config.rotation_factor
    s = s * np.clip(draws.scale_n * sf + 1, 1 - sf, 1 + sf)
    rotation = 0.0
    if draws.rotation_u <= config.rotation_prob:
        rotation = float(np.clip(draws.rotation_n * rf, -rf * 2, rf * 2))
    flip = config.flip and draws.flip_u <= config.flip_prob
    return c, s, rotation, flip
