"""The heatmap codec: keypoints <-> heatmaps, as plain functions.

- `encode` (host, NumPy) and `encode_on_device` (JAX, inside the jitted step): the
  training targets, HRNet's unnormalised Gaussians (JointsDataset `generate_target`),
  centred at the nearest heatmap pixel ("msra") or at the exact sub-pixel location
  ("unbiased": DARK's targets, or UDP's under `udp`).
- `activate`: the model's outputs -> heatmaps, by the model's `heatmap_activation`.
- `flip_back`: heatmaps of mirrored crops -> heatmaps of the crops (flip test).
- `decode`: heatmaps -> image keypoints and scores (HRNet lib/core/inference.py
  `get_final_preds`: argmax, quarter offset, inverse affine), or DARK's refinement of
  the argmax (UDP's own variant of it under `udp`) in place of the quarter offset.

Heatmaps are channels-last [..., h, w, K] everywhere. Sizes are (height, width).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from efafnet_jax.data.transforms import affine_matrix, affine_points

TARGET_ENCODINGS = ("msra", "unbiased")
DECODERS = ("quarter_offset", "dark")
# DARK's blur kernel at every sigma, the references' choice: DarkPose's TEST.BLUR_KERNEL in
# all its COCO configs (sigma 2 and 3), and mmpose 1.x's `blur_kernel_size` default, which
# its UDP and DARK configs keep at sigma 3 (mmpose/codecs/udp_heatmap.py, msra_heatmap.py).
DARK_KERNEL = 11


def target_encoding_for(encoding: str, udp: bool) -> str:
    """`data.target_encoding` resolved: "" is the geometry's own encoding, HRNet's rounded
    "msra" for the standard transform and the sub-pixel "unbiased" Gaussian under UDP
    (UDP's unbiased keypoint format, Huang et al. CVPR 2020 section 3.3; mmpose's
    UDPHeatmap codec encodes the same way)."""
    if encoding == "":
        return "unbiased" if udp else "msra"
    if encoding not in TARGET_ENCODINGS:
        raise ValueError(
            f"data.target_encoding must be '' or one of {TARGET_ENCODINGS}, got {encoding!r}"
        )
    return encoding


def _truncate(x: np.ndarray) -> np.ndarray:
    """Python int(): toward zero, as the reference rounds."""
    return np.trunc(x).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _window(sigma: float) -> np.ndarray:
    """The reference's window g: size = 2 * 3 sigma + 1, centred at size // 2."""
    size = 2 * sigma * 3 + 1
    grid = np.arange(0, size, 1, np.float32)
    center = size // 2
    window = np.exp(-((grid - center) ** 2 + (grid[:, None] - center) ** 2) / (2 * sigma**2))
    window.flags.writeable = False
    return window


def encode(
    joints: np.ndarray,
    visibility: np.ndarray,
    crop_hw: tuple[int, int],
    heatmap_hw: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
    encoding: str = "msra",
    udp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [h, w, K] float32 and weights [K] float32 for crop-pixel joints [K, 2].
    `udp`: crop pixels map to heatmap pixels by UDP's unit lengths (`heatmap_stride`).

    "msra": the peak of joint k sits at mu = int(joint / stride + 0.5) (int truncating
    toward zero); an unnormalised Gaussian of `sigma` is pasted in the window
    [int(mu - 3 sigma), int(mu + 3 sigma + 1)), clipped to the map. The weight is
    the visibility, set to 0 when the window lies wholly off the map; weights then
    multiply by `joint_weights` if given. Vectorised over joints (no Python loop),
    with the reference's window values. "unbiased" under `udp`: UDP's targets
    (mmpose mmpose/codecs/udp_heatmap.py `UDPHeatmap`, gaussian), the same window and
    weight as "msra", filled with the Gaussian centred at the exact joint / stride.
    "unbiased" otherwise: DARK's, see `_unbiased_targets`.
    """
    stride = heatmap_stride(crop_hw, heatmap_hw, udp)
    if encoding == "unbiased" and not udp:
        return _unbiased_targets(joints, visibility, stride, heatmap_hw, sigma, joint_weights)
    if encoding not in TARGET_ENCODINGS:
        raise ValueError(
            f"data.target_encoding must be one of {TARGET_ENCODINGS}, got {encoding!r}"
        )
    joints = np.asarray(joints, np.float64)
    num_joints = len(joints)
    height, width = heatmap_hw
    weight = np.asarray(visibility, np.float32).reshape(num_joints).copy()
    radius = sigma * 3
    scaled = joints[:, :2] / stride
    mu = _truncate(scaled + 0.5)
    ul = _truncate(mu - radius)
    br = _truncate(mu + radius + 1)
    # UDP tests the same window around the rounded centre (mmpose
    # mmpose/codecs/utils/gaussian_heatmap.py `generate_udp_gaussian_heatmaps`), so a
    # joint whose window only touches the map's edge (br = 0) keeps its weight with an
    # empty map. The reference skips visibility < 0.5 before this test and HRNet after
    # it; visibilities are 0 or 1 here, which the two treat alike.
    off_map = (ul[:, 0] >= width) | (ul[:, 1] >= height) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight[off_map] = 0

    window = _window(float(sigma))

    # Scatter each joint's window (n x n values) instead of evaluating the whole map.
    offsets = np.arange(window.shape[0])
    ys = ul[:, 1:2] + offsets  # [K, n]: map row of each window row
    xs = ul[:, 0:1] + offsets
    valid_y = (ys >= 0) & (ys < np.minimum(br[:, 1:2], height))
    valid_x = (xs >= 0) & (xs < np.minimum(br[:, 0:1], width))
    valid = (weight > 0.5)[:, None, None] & valid_y[:, :, None] & valid_x[:, None, :]
    k, iy, ix = np.nonzero(valid)
    target = np.zeros((height, width, num_joints), np.float32)  # channels last, as batched
    flat_index = (ys[k, iy] * width + xs[k, ix]) * num_joints + k
    if encoding == "msra":
        target.reshape(-1)[flat_index] = window[iy, ix]
    else:
        # UDP: the window's centre, size // 2, moves by the joint's sub-pixel remainder.
        centre = (2 * radius + 1) // 2 + (scaled - mu)  # [K, 2], in window offsets
        squared = (ix - centre[k, 0]) ** 2 + (iy - centre[k, 1]) ** 2
        target.reshape(-1)[flat_index] = np.exp(-squared / (2 * sigma**2))
    if joint_weights is not None:
        weight = weight * np.asarray(joint_weights, np.float32)
    return target, weight


def heatmap_stride(
    crop_hw: tuple[int, int], heatmap_hw: tuple[int, int], udp: bool = False
) -> np.ndarray:
    """Crop pixels per heatmap pixel, (x, y): size ratio (HRNet), or with `udp` the ratio
    of unit lengths (size - 1), which maps the last pixel onto the last (UDP Sec. 3.2)."""
    crop_wh = np.asarray(crop_hw[::-1], np.float64)
    heatmap_wh = np.asarray(heatmap_hw[::-1], np.float64)
    return (crop_wh - 1) / (heatmap_wh - 1) if udp else crop_wh / heatmap_wh


def _unbiased_targets(joints, visibility, stride, heatmap_hw, sigma, joint_weights):
    """DARK's targets (Zhang et al., CVPR 2020, Sec. 3.2; DarkPose JointsDataset
    `generate_target`): the Gaussian is centred at the exact sub-pixel location
    mu = joint / stride and evaluated over the whole map. A joint's weight is 0 when
    the square [mu - 3 sigma, mu + 3 sigma + 1] lies wholly off the map."""
    joints = np.asarray(joints, np.float64)
    height, width = heatmap_hw
    weight = np.asarray(visibility, np.float32).reshape(len(joints)).copy()
    mu = joints[:, :2] / stride
    ul, br = mu - sigma * 3, mu + sigma * 3 + 1
    off_map = (ul[:, 0] >= width) | (ul[:, 1] >= height) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight[off_map] = 0
    dx2 = (np.arange(width)[None, :] - mu[:, :1]) ** 2  # [K, w]
    dy2 = (np.arange(height)[None, :] - mu[:, 1:]) ** 2  # [K, h]
    target = np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma**2))
    target *= (weight > 0.5)[:, None, None]
    if joint_weights is not None:
        weight = weight * np.asarray(joint_weights, np.float32)
    return np.moveaxis(target, 0, -1).astype(np.float32), weight


def encode_on_device(
    joints: jnp.ndarray,
    visibility: jnp.ndarray,
    crop_hw: tuple[int, int],
    heatmap_hw: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
    encoding: str = "msra",
    udp: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`encode` for a batch, in JAX: joints [B, K, 2] -> heatmaps [B, h, w, K], weights [B, K].

    The same window placement, truncations and (under `udp`) centre shift as `encode`,
    evaluated densely (a mask over the map) instead of scattered, in float32.
    """
    height, width = heatmap_hw
    stride = jnp.asarray(heatmap_stride(crop_hw, heatmap_hw, udp), jnp.float32)
    radius = sigma * 3
    if encoding == "unbiased" and not udp:
        mu = joints.astype(jnp.float32) / stride
        ul, br = mu - radius, mu + radius + 1
        off_map = (ul[..., 0] >= width) | (ul[..., 1] >= height)
        off_map |= (br[..., 0] < 0) | (br[..., 1] < 0)
        weight = jnp.where(off_map, 0.0, visibility.astype(jnp.float32))
        dx2 = (jnp.arange(width, dtype=jnp.float32) - mu[..., :1]) ** 2  # [B, K, w]
        dy2 = (jnp.arange(height, dtype=jnp.float32) - mu[..., 1:]) ** 2
        values = jnp.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2))
        target = jnp.where((weight > 0.5)[..., None, None], values, 0.0).transpose(0, 2, 3, 1)
        if joint_weights is not None:
            weight = weight * jnp.asarray(joint_weights, jnp.float32)
        return target, weight
    if encoding not in TARGET_ENCODINGS:
        raise ValueError(
            f"data.target_encoding must be one of {TARGET_ENCODINGS}, got {encoding!r}"
        )
    size = 2 * sigma * 3 + 1
    center = size // 2
    scaled = joints.astype(jnp.float32) / stride
    mu = jnp.trunc(scaled + 0.5)
    ul = jnp.trunc(mu - radius)
    br = jnp.trunc(mu + radius + 1)
    off_map = (ul[..., 0] >= width) | (ul[..., 1] >= height) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = jnp.where(off_map, 0.0, visibility.astype(jnp.float32))

    def window_offsets(coords, low, high):  # [n] map coords -> [B, K, n] offsets, mask
        offset = coords - low[..., None]
        return offset, (offset >= 0) & (offset < size) & (coords < high[..., None])

    off_x, in_x = window_offsets(jnp.arange(width, dtype=jnp.float32), ul[..., 0], br[..., 0])
    off_y, in_y = window_offsets(jnp.arange(height, dtype=jnp.float32), ul[..., 1], br[..., 1])
    if encoding == "unbiased":  # UDP: the window's centre moves by the sub-pixel remainder
        remainder = scaled - mu
        off_x, off_y = off_x - remainder[..., :1], off_y - remainder[..., 1:]
    # One float32 exp of the summed squares, as the host window is computed.
    exponent = (off_y[..., :, None] - center) ** 2 + (off_x[..., None, :] - center) ** 2
    values = jnp.exp(-exponent / (2 * sigma**2))  # [B, K, h, w]
    mask = in_y[..., :, None] & in_x[..., None, :] & (weight > 0.5)[..., None, None]
    target = jnp.where(mask, values, 0.0).transpose(0, 2, 3, 1)
    if joint_weights is not None:
        weight = weight * jnp.asarray(joint_weights, jnp.float32)
    return target, weight


def activate(outputs: jnp.ndarray, activation: str, sigma: float) -> jnp.ndarray:
    """Model outputs [B, h, w, K] -> heatmaps on the scale `decode` and rescoring expect.

    "identity": the outputs are heatmaps (MSE/OHKM training). "spatial_softmax": the
    outputs are per-joint logits over pixels; their softmax is scaled by the mass
    of a unit-peak Gaussian (2 pi sigma^2), so a perfect prediction peaks at 1 and
    the 0.2 keypoint-score threshold keeps its meaning. `activation` is the model's
    `heatmap_activation`, a property of its outputs, never of a training setting.
    """
    if activation == "identity":
        return outputs
    if activation != "spatial_softmax":
        raise ValueError(
            f"heatmap activation must be 'identity' or 'spatial_softmax', got {activation!r}"
        )
    b, h, w, k = outputs.shape
    prob = jax.nn.softmax(outputs.reshape(b, h * w, k).astype(jnp.float32), axis=1)
    return prob.reshape(b, h, w, k) * (2.0 * jnp.pi * sigma**2)


def flip_back(heatmaps: jnp.ndarray, flip_permutation: np.ndarray, shift: bool = True):
    """Heatmaps of mirrored crops -> heatmaps of the original crops (HRNet `flip_back`).

    Mirror the width, swap left/right channels (`KeypointSpec.flip_permutation`),
    then (`shift`, the reference's SHIFT_HEATMAP) move everything one pixel right:
    out[..., 1:, :] = out[..., :-1, :], column 0 keeping its own value.
    """
    out = heatmaps[:, :, ::-1, :][..., np.asarray(flip_permutation)]
    if shift:
        out = jnp.concatenate([out[:, :, :1, :], out[:, :, :-1, :]], axis=2)
    return out


def max_positions(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per joint (first maximum wins) -> coords [N, K, 2] (x, y) and scores [N, K].

    Where the maximum is <= 0 the coordinate is (0, 0), as the reference masks it.
    """
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, -1, 1).reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    coords *= (scores > 0)[..., None]
    return coords, scores


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Moves each peak 0.25 px toward its higher neighbour, where 1 < px < w-1, 1 < py < h-1."""
    n, h, w, k = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc, pyc = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    batch = np.arange(n)[:, None]
    joint = np.arange(k)[None, :]
    dx = heatmaps[batch, pyc, pxc + 1, joint] - heatmaps[batch, pyc, pxc - 1, joint]
    dy = heatmaps[batch, pyc + 1, pxc, joint] - heatmaps[batch, pyc - 1, pxc, joint]
    offset = np.stack([np.sign(dx), np.sign(dy)], axis=-1) * 0.25
    return coords + offset * inside[..., None]


def dark_kernel_size(sigma: float, kernel_size: int = DARK_KERNEL) -> int:
    """DARK's blur kernel (`eval.dark_kernel`): `kernel_size` when it is set (> 0, odd),
    else, with 0, derived from the training sigma as 6 sigma - 1 made odd (11 at sigma 2,
    17 at sigma 3, mmpose 0.x's `modulate_kernel` at 384x288). cv2 derives the blur's own
    sigma from the kernel (0.3 ((k - 1) / 2 - 1) + 0.8 = 2.0 at k = 11)."""
    if kernel_size < 0 or (kernel_size and kernel_size % 2 == 0):
        raise ValueError(f"eval.dark_kernel must be 0 or odd and positive, got {kernel_size}")
    if kernel_size:
        return int(kernel_size)
    size = int(round(6 * sigma - 1))
    return size if size % 2 else size + 1


def blur_maps(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """Each map of [N, h, w, K] blurred with cv2's Gaussian kernel of `kernel_size` over a
    zero border; float32.

    DarkPose `gaussian_blur` pads `border` zeros and blurs with cv2's default
    reflection; the kernel's radius is the border, so that equals a blur with a
    constant 0 border. One cv2 call per person filters its K maps as channels, in the
    layout they arrive in.
    """
    kernel = cv2.getGaussianKernel(kernel_size, 0).astype(np.float32)
    maps = np.ascontiguousarray(heatmaps, np.float32)
    blurred = np.empty_like(maps)
    for person, out in zip(maps, blurred, strict=True):
        cv2.sepFilter2D(person, cv2.CV_32F, kernel, kernel, dst=out, borderType=cv2.BORDER_CONSTANT)
    return blurred


def dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel_size: int) -> np.ndarray:
    """DARK's sub-pixel step (Zhang et al., CVPR 2020, Eq. 5; DarkPose `get_final_preds`
    and `taylor`). Each map is blurred (`blur_maps`, kernel `kernel_size`), rescaled so
    that its maximum is the original's, floored at 1e-10 and logged; then one Newton
    step x - H^-1 g from the argmax, with central differences, where 1 < x < w - 2 and
    1 < y < h - 2 and H is invertible. Only the 13 values the step reads are rescaled,
    floored and logged."""
    n, h, w, k = heatmaps.shape
    blurred = blur_maps(heatmaps, kernel_size)
    batch, joint = np.arange(n)[:, None], np.arange(k)[None, :]
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    peak = heatmaps[batch, py, px, joint]  # the maximum, where the step is taken
    top = blurred.reshape(n, h * w, k).max(axis=1)
    rescale = np.divide(peak, top, out=np.zeros_like(top), where=top != 0)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    px, py = np.clip(px, 2, w - 3), np.clip(py, 2, h - 3)

    def at(dy: int, dx: int) -> np.ndarray:
        value = blurred[batch, py + dy, px + dx, joint] * rescale
        return np.log(np.maximum(value, 1e-10))

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    det = dxx * dyy - dxy**2
    usable = inside & (det != 0)
    safe = np.where(usable, det, 1.0)
    offset_x = -(dyy * dx - dxy * dy) / safe
    offset_y = -(dxx * dy - dxy * dx) / safe
    offset = np.stack([offset_x, offset_y], axis=-1) * usable[..., None]
    return coords + offset


def udp_dark_refine(
    heatmaps: np.ndarray, coords: np.ndarray, scores: np.ndarray, kernel_size: int
) -> np.ndarray:
    """UDP's sub-pixel step (mmpose mmpose/codecs/utils/refinement.py
    `refine_keypoints_dark_udp`, from the UDP authors' `post_dark_udp`), float32 coords.

    Each map is blurred and rescaled to its maximum as DARK's (`blur_maps`), clipped to
    [1e-3, 50] and logged. Then one Newton step x - (H + eps I)^-1 g from the argmax,
    with eps float32's epsilon and differences over one pixel: g = central differences,
    H's diagonal the second differences (no 1/4), its cross term 1/2 the sum of the two
    one-sided mixed differences at (x, y), toward (+1, +1) and (-1, -1). There is no
    border guard: a neighbour off the map reads the nearest edge pixel (the reference's
    edge padding). Departures, where the reference has no usable answer: joints whose
    maximum is <= 0 stay at `max_positions`' (0, 0) (from its -1 marker the reference
    reads part of the neighbourhood out of another map), and a singular H + eps I (the
    reference raises) leaves the argmax.
    """
    n, h, w, k = heatmaps.shape
    blurred = blur_maps(heatmaps, kernel_size)
    batch, joint = np.arange(n)[:, None], np.arange(k)[None, :]
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    top = blurred.reshape(n, h * w, k).max(axis=1)
    positive = scores > 0
    rescale = np.divide(scores, top, out=np.zeros_like(top), where=positive & (top != 0))

    def at(dy: int, dx: int) -> np.ndarray:
        row, col = np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)
        return np.log(np.clip(blurred[batch, row, col, joint] * rescale, 1e-3, 50.0))

    centre, right, left, below, above = at(0, 0), at(0, 1), at(0, -1), at(1, 0), at(-1, 0)
    # float32 differences, in the reference's order of terms.
    dx = 0.5 * (right - left)
    dy = 0.5 * (below - above)
    dxx = right - 2 * centre + left
    dyy = below - 2 * centre + above
    dxy = 0.5 * (at(1, 1) - right - below + centre + centre - left - above + at(-1, -1))
    # (H + eps I)^-1 g in float64, as the reference's float64 identity promotes it.
    eps = float(np.finfo(np.float32).eps)
    a, b, d = dxx.astype(np.float64) + eps, dxy.astype(np.float64), dyy.astype(np.float64) + eps
    det = a * d - b * b
    usable = positive & (det != 0)
    safe = np.where(usable, det, 1.0)
    offset_x = (d * dx - b * dy) / safe
    offset_y = (a * dy - b * dx) / safe
    offset = np.stack([offset_x, offset_y], axis=-1) * usable[..., None]
    return (coords.astype(np.float64) - offset).astype(np.float32)


def to_image_coordinates(
    coords: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    heatmap_hw: tuple[int, int],
    udp: bool = False,
) -> np.ndarray:
    """Heatmap coords [N, K, 2] -> image coords via the inverse affine of (centre, scale, 0)
    (UDP's unit-length form with `udp`)."""
    out = np.zeros(coords.shape, np.float64)
    for i in range(len(coords)):  # one 2x3 matrix per person
        matrix = affine_matrix(centers[i], scales[i], 0.0, heatmap_hw, inverse=True, udp=udp)
        out[i] = affine_points(coords[i], matrix)
    return out


def decode(
    heatmaps: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    post_process: bool = True,
    decoder: str = "quarter_offset",
    sigma: float = 2.0,
    udp: bool = False,
    dark_kernel: int = DARK_KERNEL,
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet `get_final_preds`: (image coords [N, K, 2], scores [N, K]). With
    `post_process` the argmax is refined by `decoder`: HRNet's quarter offset, or DARK's
    Newton step (UDP's variant of it under `udp`) with the blur kernel
    `dark_kernel_size(sigma, dark_kernel)`. Scores are the maps' maxima. `udp`: heatmap
    pixels map back to the image by UDP's unit lengths."""
    if decoder not in DECODERS:
        raise ValueError(f"eval.decoder must be one of {DECODERS}, got {decoder!r}")
    heatmaps = np.asarray(heatmaps, np.float32)
    coords, scores = max_positions(heatmaps)
    if post_process and decoder == "dark" and udp:
        coords = udp_dark_refine(heatmaps, coords, scores, dark_kernel_size(sigma, dark_kernel))
    elif post_process and decoder == "dark":
        coords = dark_refine(heatmaps, coords, dark_kernel_size(sigma, dark_kernel))
    elif post_process:
        coords = quarter_offset(heatmaps, coords)
    return to_image_coordinates(coords, centers, scales, heatmaps.shape[1:3], udp), scores


def flip_test_shift(shift_heatmap: bool, udp: bool) -> bool:
    """Whether the flip test shifts the flipped heatmaps one pixel (HRNet's SHIFT_HEATMAP,
    `eval.shift_heatmap`): never under UDP, whose flip is exact (UDP Sec. 3.3)."""
    return bool(shift_heatmap) and not udp
