"""`data.udp=True` against the UDP reference (mmpose 1.x, from the UDP authors' code):
targets and weights (mmpose/codecs/utils/gaussian_heatmap.py
`generate_udp_gaussian_heatmaps`), the decoder's refinement (mmpose/codecs/utils/
refinement.py `refine_keypoints_dark_udp`) and the rotation sense of the warp
(mmpose/structures/bbox/transforms.py `get_udp_warp_matrix`).

Each expectation is derived here in NumPy float64 from the reference's rules, never by
calling the code under test.
"""

import math

import numpy as np
import pytest

from efafnet_jax.data.codec import decode, encode, encode_on_device
from efafnet_jax.data.transforms import affine_matrix, affine_points

CROP_HW, HEATMAP_HW, SIGMA = (256, 192), (64, 48), 2.0
# UDP's crop pixels per heatmap pixel, (x, y): unit lengths (size - 1).
STRIDE = np.array([(CROP_HW[1] - 1) / (HEATMAP_HW[1] - 1), (CROP_HW[0] - 1) / (HEATMAP_HW[0] - 1)])
EPS32 = float(np.finfo(np.float32).eps)


def udp_target_loop(point: np.ndarray, sigma: float = SIGMA) -> tuple[np.ndarray, float]:
    """The reference's rule for one visible joint at heatmap point `point` (x, y): a
    window of radius 3 sigma around the rounded centre mu = int(point + 0.5), weight 0
    when it lies wholly off the map (left >= w, top >= h, right < 0 or bottom < 0),
    filled with the Gaussian centred at the window's middle moved by point - mu."""
    height, width = HEATMAP_HW
    radius = 3 * sigma
    size = 2 * radius + 1
    target = np.zeros(HEATMAP_HW)
    mu = [int(v + 0.5) for v in point]
    left, top = int(mu[0] - radius), int(mu[1] - radius)
    right, bottom = int(mu[0] + radius + 1), int(mu[1] + radius + 1)
    if left >= width or top >= height or right < 0 or bottom < 0:
        return target, 0.0
    x0 = size // 2 + point[0] - mu[0]
    y0 = size // 2 + point[1] - mu[1]
    for y in range(max(0, top), min(height, bottom)):
        for x in range(max(0, left), min(width, right)):
            gx, gy = x - left, y - top
            target[y, x] = math.exp(-((gx - x0) ** 2 + (gy - y0) ** 2) / (2 * sigma**2))
    return target, 1.0


def encoded(points: np.ndarray, on_device: bool) -> tuple[np.ndarray, np.ndarray]:
    """UDP targets [h, w, K] and weights [K] of heatmap points [K, 2], through the crop."""
    joints = np.asarray(points, np.float64) * STRIDE
    visibility = np.ones(len(joints), np.float32)
    if on_device:
        target, weight = encode_on_device(
            joints[None], visibility[None], CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased",
            udp=True,
        )  # fmt: skip
        return np.asarray(target[0]), np.asarray(weight[0])
    return encode(joints, visibility, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased", udp=True)


DEVICE = pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
TOLERANCE = {False: 1e-7, True: 2e-6}  # float32 values on the host; float32 maths on device


@DEVICE
def test_a_window_touching_the_left_edge_keeps_weight_1_with_an_empty_map(on_device):
    """x = -7.6: mu = int(-7.1) = -7 (toward zero), right = int(-7 + 7) = 0, not < 0, so
    the weight stays 1; the window [-13, 0) holds no map column. A full-plane Gaussian
    would reach its tail (weight 0 there, by the sub-pixel window's -0.6 < 0)."""
    target, weight = encoded([[-7.6, 12.4]], on_device)
    assert weight[0] == 1.0
    np.testing.assert_array_equal(target, 0.0)


@DEVICE
def test_a_window_starting_past_the_right_edge_has_weight_0(on_device):
    """x = 53.6 on a 48-wide map: mu = 54, left = 48 >= 48: weight 0 and no map, where a
    full-plane Gaussian would leave exp(-6.6^2 / 8) = 0.0043 in the last column."""
    target, weight = encoded([[53.6, 35.3]], on_device)
    assert weight[0] == 0.0
    np.testing.assert_array_equal(target, 0.0)


@DEVICE
def test_the_gaussian_stops_at_the_window(on_device):
    """(20, 30): window x in [14, 27), y in [24, 37); 7 px from the centre the map is 0
    (a full-plane Gaussian leaves exp(-49 / 8) = 0.0022 there)."""
    target, weight = encoded([[20.0, 30.0]], on_device)
    ys, xs = np.mgrid[0 : HEATMAP_HW[0], 0 : HEATMAP_HW[1]]
    inside = (xs >= 14) & (xs < 27) & (ys >= 24) & (ys < 37)
    expected = np.exp(-((xs - 20.0) ** 2 + (ys - 30.0) ** 2) / 8) * inside
    np.testing.assert_allclose(target[..., 0], expected, atol=TOLERANCE[on_device], rtol=0)
    assert weight[0] == 1.0 and target[30, 27, 0] == 0 and target[30, 13, 0] == 0


@DEVICE
def test_sub_pixel_joints_and_clipped_windows_follow_the_reference_rule(on_device):
    """Centres off the pixel grid and windows clipped at every edge, against the loop.
    y = 69.45: mu = 69, top = 63, one row on the map, weight 1; y = 69.6: mu = 70,
    top = 64 >= 64, weight 0 (a full-plane Gaussian's 63.6 < 64 would keep it)."""
    points = np.array(
        [[20.3, 29.6], [2.4, 61.7], [47.2, 0.4], [-6.4, 30.0], [30.0, 69.45], [30.0, 69.6]]
    )
    target, weight = encoded(points, on_device)
    for k, point in enumerate(points):
        expected, expected_weight = udp_target_loop(point)
        assert weight[k] == expected_weight
        np.testing.assert_allclose(target[..., k], expected, atol=TOLERANCE[on_device], rtol=0)
    assert weight.tolist() == [1, 1, 1, 1, 1, 0]
    assert np.count_nonzero(target[..., 4].any(axis=1)) == 1  # row 63 alone


def test_random_joints_match_the_loop_on_host_and_device():
    rng = np.random.default_rng(0)
    points = rng.uniform([-12, -12], [HEATMAP_HW[1] + 12, HEATMAP_HW[0] + 12], (3, 17, 2))
    visibility = (rng.uniform(size=(3, 17)) > 0.2).astype(np.float32)
    joints = points * STRIDE
    device_target, device_weight = encode_on_device(
        joints, visibility, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased", udp=True
    )
    for b in range(3):
        target, weight = encode(
            joints[b], visibility[b], CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased", udp=True
        )
        for k in range(17):
            expected, expected_weight = udp_target_loop(joints[b, k] / STRIDE)
            expected_weight *= visibility[b, k]
            expected = expected * visibility[b, k]
            assert weight[k] == expected_weight == device_weight[b, k]
            np.testing.assert_allclose(target[..., k], expected, atol=1e-7, rtol=0)
            np.testing.assert_allclose(device_target[b, ..., k], expected, atol=2e-6, rtol=0)
    assert 0 < np.asarray(device_weight).sum() < visibility.sum()  # some fell off the map


def cv2_gaussian_kernel(size: int) -> np.ndarray:
    """cv2.getGaussianKernel(size, 0) for size > 7: sigma 0.3 ((size - 1) / 2 - 1) + 0.8,
    normalised samples."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def udp_refine_loop(heatmap: np.ndarray, kernel_size: int = 11) -> np.ndarray:
    """The reference's refinement of one [h, w] map's argmax, in float64: blur with a zero
    border, rescale to the original maximum, clip to [1e-3, 50], log, pad one edge pixel,
    then x - (H + eps I)^-1 g with unit-step differences."""
    height, width = heatmap.shape
    kernel = cv2_gaussian_kernel(kernel_size)
    border = kernel_size // 2
    padded = np.pad(heatmap.astype(np.float64), border)
    rows = sum(kernel[i] * padded[i : i + height] for i in range(kernel_size))
    blurred = sum(kernel[i] * rows[:, i : i + width] for i in range(kernel_size))
    blurred *= heatmap.max() / blurred.max()
    logged = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 1, mode="edge")
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    y, x = y + 1, x + 1  # in the padded map

    def at(dy, dx):
        return logged[y + dy, x + dx]

    gradient = np.array([0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))])
    dxx = at(0, 1) - 2 * at(0, 0) + at(0, -1)
    dyy = at(1, 0) - 2 * at(0, 0) + at(-1, 0)
    dxy = 0.5 * (at(1, 1) - at(0, 1) - at(1, 0) + 2 * at(0, 0) - at(0, -1) - at(-1, 0) + at(-1, -1))
    hessian = np.array([[dxx, dxy], [dxy, dyy]]) + EPS32 * np.eye(2)
    return np.array([x - 1, y - 1], np.float64) - np.linalg.solve(hessian, gradient)


# UDP's inverse maps heatmap [0, w - 1] onto [c - size / 2, c + size / 2]: with the box
# size (w - 1, h - 1) at centre ((w - 1) / 2, (h - 1) / 2), image = heatmap coordinates.
IDENTITY_CENTER = np.array([[(HEATMAP_HW[1] - 1) / 2, (HEATMAP_HW[0] - 1) / 2]])
IDENTITY_SCALE = np.array([[(HEATMAP_HW[1] - 1) / 200, (HEATMAP_HW[0] - 1) / 200]])


def gaussian_map(x0: float, y0: float, sigma: float = SIGMA) -> np.ndarray:
    ys, xs = np.mgrid[0 : HEATMAP_HW[0], 0 : HEATMAP_HW[1]]
    return np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))


def test_udp_decoding_refines_a_peak_at_the_left_edge():
    """Argmax (1, 43): DARK's border guard (1 < x < w - 2) leaves it; the reference has no
    guard and steps from it, reading the edge pixel for x - 1 = 0's left neighbour."""
    heatmap = gaussian_map(0.8, 43.4)
    assert np.unravel_index(np.argmax(heatmap), heatmap.shape) == (43, 1)
    expected = udp_refine_loop(heatmap)
    coords, scores = decode(
        heatmap[None, :, :, None].astype(np.float32), IDENTITY_CENTER, IDENTITY_SCALE, True,
        "dark", SIGMA, udp=True, dark_kernel=11,
    )  # fmt: skip
    np.testing.assert_allclose(coords[0, 0], expected, atol=1e-5)
    assert np.abs(expected - [1, 43]).max() > 0.2  # the step moved it
    assert scores[0, 0] == np.float32(heatmap.max())


@pytest.mark.parametrize("kernel_size", [11, 17])
def test_udp_decoding_matches_the_loop_on_noisy_maps(kernel_size):
    """Noisy, scaled, partly negative maps, peaks at corners and edges, one map whose
    clipped log is flat around its peak, one weak map that is above the clip only once
    rescaled to its maximum."""
    rng = np.random.default_rng(kernel_size)
    peaks = rng.uniform([0, 0], [HEATMAP_HW[1] - 1, HEATMAP_HW[0] - 1], (12, 2))
    peaks[:4] = [[0.2, 0.1], [47.0, 63.0], [23.4, 0.3], [46.6, 31.2]]
    maps = np.stack([gaussian_map(*p) for p in peaks], axis=-1)
    maps = maps * rng.uniform(0.2, 1, 12) + rng.normal(0, 0.02, maps.shape)
    maps[..., 5] = 0.0005 + rng.uniform(0, 1e-4, HEATMAP_HW)  # below the clip everywhere
    maps[..., 6] = 0.0015 * gaussian_map(30.4, 40.7)  # blurred, its peak is below 1e-3
    coords, _ = decode(
        maps[None].astype(np.float32), IDENTITY_CENTER, IDENTITY_SCALE, True, "dark", SIGMA,
        udp=True, dark_kernel=kernel_size,
    )  # fmt: skip
    expected = np.stack([udp_refine_loop(maps[..., k], kernel_size) for k in range(12)])
    np.testing.assert_allclose(coords[0], expected, atol=1e-5)


def test_udp_decoding_steps_where_only_eps_makes_the_hessian_invertible():
    """A ridge two rows high (rows 0 and 1 equal, the rest 0) blurs into equal rows 0 and
    1; the argmax is in row 0, whose upper neighbour is itself (edge padding), so
    dy = dyy = dxy = 0 and H is singular. The reference's eps I makes it invertible: the
    step is -dx / (dxx + eps) in x and 0 in y."""
    heatmap = np.zeros(HEATMAP_HW)
    heatmap[:2] = np.exp(-((np.arange(HEATMAP_HW[1]) - 20.3) ** 2) / (2 * SIGMA**2))
    expected = udp_refine_loop(heatmap)
    assert expected[1] == 0 and 20.05 < expected[0] < 20.5
    coords, _ = decode(
        heatmap[None, :, :, None].astype(np.float32), IDENTITY_CENTER, IDENTITY_SCALE, True,
        "dark", SIGMA, udp=True,
    )  # fmt: skip
    np.testing.assert_allclose(coords[0, 0], expected, atol=1e-5)


def test_udp_decoding_leaves_maps_without_a_positive_maximum_at_the_marker():
    """The project's departure: a map whose maximum is <= 0 keeps `max_positions`' (0, 0)
    unrefined (from its -1 marker the reference reads out of another map)."""
    maps = np.stack([-gaussian_map(20.3, 30.6), np.zeros(HEATMAP_HW)], axis=-1)
    coords, scores = decode(
        maps[None].astype(np.float32), IDENTITY_CENTER, IDENTITY_SCALE, True, "dark", SIGMA,
        udp=True,
    )  # fmt: skip
    np.testing.assert_allclose(coords[0], 0.0, atol=1e-12)
    assert (scores <= 0).all()


def reference_warp(center, box_size, degrees, output_wh):
    """The reference's 2x3 image -> output matrix, written out from its definition: offsets
    from the box centre turned by +degrees (x toward y), scaled by (output - 1) / box size,
    the centre landing on ((w - 1) / 2, (h - 1) / 2)."""
    angle = math.radians(degrees)
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = np.diag((np.asarray(output_wh) - 1) / np.asarray(box_size)) @ rotate
    offset = (np.asarray(output_wh) - 1) / 2 - linear @ np.asarray(center)
    return np.concatenate([linear, offset[:, None]], axis=1)


def test_udp_rotation_turns_the_way_the_reference_does():
    """A point 50 px right of the centre, rotated +30 degrees: it lands at
    ((w - 1) / 2 + sx 50 cos 30, (h - 1) / 2 + sy 50 sin 30), below the centre line."""
    center, scale, degrees = np.array([300.3, 200.7]), np.array([1.2, 1.6]), 30.0
    box = scale * 200
    sx, sy = (CROP_HW[1] - 1) / box[0], (CROP_HW[0] - 1) / box[1]
    point = center + [50.0, 0.0]
    expected = [(CROP_HW[1] - 1) / 2 + sx * 50 * math.cos(math.pi / 6),
                (CROP_HW[0] - 1) / 2 + sy * 50 * math.sin(math.pi / 6)]  # fmt: skip
    matrix = affine_matrix(center, scale, degrees, CROP_HW, udp=True)
    np.testing.assert_allclose(affine_points(point, matrix), expected, atol=1e-9)
    for angle in (-61.0, 0.0, 30.0, 145.5):
        reference = reference_warp(center, box, angle, CROP_HW[::-1])
        np.testing.assert_allclose(
            affine_matrix(center, scale, angle, CROP_HW, udp=True), reference, atol=1e-9
        )
        back = affine_matrix(center, scale, angle, CROP_HW, inverse=True, udp=True)
        np.testing.assert_allclose(affine_points(affine_points(point, reference), back), point)
