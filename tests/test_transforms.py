"""Box -> centre/scale, the 3-point affine, flips and augmentation draws."""

import cv2
import numpy as np
import pytest
from reference_loops import half_body_loop

from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.transforms import (
    AugmentConfig,
    AugmentDraws,
    affine_matrix,
    affine_points,
    augment_center_scale,
    box_to_center_scale,
    draw_augmentation,
    extend_box,
    flip_joints,
    half_body_center_scale,
    warp_crop,
)


def test_box_to_center_scale_widens_a_tall_box():
    center, scale = box_to_center_scale([10, 20, 30, 100], aspect_ratio=0.75)
    np.testing.assert_allclose(center, [25, 70])
    # w = 30 < 0.75 * 100 -> w = 75; scale = (75, 100) / 200 * 1.25.
    np.testing.assert_allclose(scale, [75 / 200 * 1.25, 100 / 200 * 1.25], rtol=1e-6)
    assert center.dtype == np.float32 and scale.dtype == np.float32


def test_box_to_center_scale_heightens_a_wide_box_and_honours_the_marker():
    _, scale = box_to_center_scale([0, 0, 150, 100], aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [150 / 200 * 1.25, 200 / 200 * 1.25], rtol=1e-6)
    # centre x == -1 (x = -1 - w/2): the reference skips the 1.25 padding.
    _, unpadded = box_to_center_scale([-16, 0, 30, 40], aspect_ratio=0.75)
    np.testing.assert_allclose(unpadded, [30 / 200, 40 / 200], rtol=1e-6)


def test_extend_box_about_its_centre():
    np.testing.assert_allclose(extend_box([10, 20, 100, 50], 0.3), [-5, 12.5, 130, 65])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_box_centre_maps_to_crop_centre(rotation):
    center = np.array([320.5, 211.25], np.float32)
    scale = np.array([1.2, 1.6], np.float32)
    matrix = affine_matrix(center, scale, rotation, (256, 192))
    np.testing.assert_allclose(affine_points(center, matrix), [96, 128], atol=1e-4)


def test_affine_scales_by_crop_width_over_box_width_and_rotates():
    matrix = affine_matrix(np.array([100.0, 100.0]), np.array([0.96, 1.28]), 90.0, (256, 192))
    # 0.96 * 200 = 192 px of image per 192 px of crop: unit scale; rotation by 90 degrees.
    np.testing.assert_allclose(matrix[:, :2], [[0, 1], [-1, 0]], atol=1e-6)


@pytest.mark.parametrize("rotation", [0.0, 17.0, -63.0])
def test_image_to_crop_to_image_round_trip(rotation):
    rng = np.random.default_rng(0)
    center, scale = np.array([250.0, 180.0]), np.array([1.1, 1.4667])
    points = rng.uniform(0, 500, size=(50, 2))
    forward = affine_matrix(center, scale, rotation, (256, 192))
    inverse = affine_matrix(center, scale, rotation, (256, 192), inverse=True)
    back = affine_points(affine_points(points, forward), inverse)
    np.testing.assert_allclose(back, points, atol=1e-3)


def test_warp_samples_bilinear_with_zero_border():
    image = np.full((40, 60, 3), 200, np.uint8)
    # A box far outside the image: the crop is all border.
    matrix = affine_matrix(np.array([500.0, 500.0]), np.array([0.2, 0.2]), 0.0, (32, 24))
    assert warp_crop(image, matrix, (32, 24)).max() == 0
    inside = affine_matrix(np.array([30.0, 20.0]), np.array([0.1, 0.1333]), 0.0, (32, 24))
    crop = warp_crop(image, inside, (32, 24))
    assert crop.shape == (32, 24, 3) and crop.dtype == np.uint8 and (crop == 200).all()


def test_flip_twice_is_the_identity():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cv2.flip(cv2.flip(image, 1), 1), image)
    np.testing.assert_array_equal(cv2.flip(image, 1), image[:, ::-1])
    joints = rng.uniform(0, 40, size=(17, 2))
    vis = np.ones(17)
    once_j, once_v = flip_joints(joints, vis, 41, COCO.flip_permutation())
    twice_j, twice_v = flip_joints(once_j, once_v, 41, COCO.flip_permutation())
    np.testing.assert_allclose(twice_j, joints)
    np.testing.assert_array_equal(twice_v, vis)
    # Once: x -> 41 - x - 1 and left/right swapped.
    np.testing.assert_allclose(once_j[1], [40 - joints[2, 0], joints[2, 1]])


def test_flip_zeroes_unlabelled_joints_as_the_reference_does():
    joints = np.array([[5.0, 6.0]] * 17)
    vis = np.ones(17)
    vis[3] = 0
    flipped, flipped_vis = flip_joints(joints, vis, 20, COCO.flip_permutation())
    # Joint 3 (left ear) swaps with 4: the unlabelled one is now index 4, at (0, 0).
    assert flipped_vis[4] == 0 and (flipped[4] == 0).all()
    np.testing.assert_allclose(flipped[3], [14.0, 6.0])


def _draws(**kw):
    base = dict(
        half_body_u=0.9, half_body_n=0.0, scale_n=0.0, rotation_n=0.0, rotation_u=0.9, flip_u=0.9
    )
    return AugmentDraws(**{**base, **kw})


def test_scale_and_rotation_draws_follow_the_reference_formula():
    c, s = np.array([50.0, 60.0]), np.array([1.0, 1.3])
    joints, vis = np.zeros((17, 2)), np.zeros(17)
    config = AugmentConfig()
    args = (joints, vis)
    _, s1, r1, f1 = augment_center_scale(c, s, *args, _draws(scale_n=0.5), config, (), 0.75)
    np.testing.assert_allclose(s1, s * 1.15)
    assert r1 == 0.0 and not f1  # rotation_u 0.9 > 0.6; flip_u 0.9 > 0.5
    _, s2, _, _ = augment_center_scale(c, s, *args, _draws(scale_n=5.0), config, (), 0.75)
    np.testing.assert_allclose(s2, s * 1.3)  # clipped to 1 + 0.3
    _, _, r3, f3 = augment_center_scale(
        c, s, *args, _draws(rotation_u=0.6, rotation_n=-3.0, flip_u=0.5), config, (), 0.75
    )
    assert r3 == -80.0 and f3  # clip(-120, -80, 80); p <= 0.6 and p <= 0.5 inclusive


def test_half_body_matches_the_reference_loop():
    rng = np.random.default_rng(2)
    for _ in range(50):
        joints = rng.uniform(0, 300, size=(17, 2)).astype(np.float32)
        vis = (rng.random(17) > 0.4).astype(np.float32)
        n = rng.standard_normal()
        ours = half_body_center_scale(joints, vis, COCO.upper_body_ids, n, 0.75)
        ref = half_body_loop(joints, vis, COCO.upper_body_ids, n, 0.75)
        if ref is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
            np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6)


def test_half_body_applies_only_when_enabled_and_enough_joints_are_labelled():
    joints = np.random.default_rng(3).uniform(0, 300, size=(17, 2))
    vis = np.ones(17)
    c, s = np.array([150.0, 150.0]), np.array([2.0, 2.5])
    off = AugmentConfig(half_body=False)
    on = AugmentConfig(half_body=True)
    draws = _draws(half_body_u=0.1, half_body_n=0.0)
    c_off, _, _, _ = augment_center_scale(c, s, joints, vis, draws, off, COCO.upper_body_ids, 0.75)
    c_on, _, _, _ = augment_center_scale(c, s, joints, vis, draws, on, COCO.upper_body_ids, 0.75)
    np.testing.assert_allclose(c_off, c)
    np.testing.assert_allclose(c_on, joints[:11].mean(axis=0), rtol=1e-5)
    few = vis.copy()
    few[:10] = 0  # 7 labelled <= 8: no half body
    c_few, _, _, _ = augment_center_scale(c, s, joints, few, draws, on, COCO.upper_body_ids, 0.75)
    np.testing.assert_allclose(c_few, c)


def test_draws_replay_from_a_seed():
    a = draw_augmentation(np.random.default_rng(7))
    b = draw_augmentation(np.random.default_rng(7))
    assert a == b
    assert 0 <= a.flip_u < 1 and 0 <= a.rotation_u < 1


@pytest.mark.parametrize("mirror", [False, True])
def test_warp_crop_equals_plain_warp_affine(mirror):
    """The region-restricted 4-channel path gives cv2.warpAffine's pixels exactly."""
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8), (5, 5), 0)
    source = np.ascontiguousarray(image[:, ::-1]) if mirror else image
    for _ in range(300):
        center = rng.uniform([-60, -60], [360, 260])
        scale = rng.uniform(0.1, 3.0)
        matrix = affine_matrix(
            center, np.array([scale, scale * 4 / 3]), rng.uniform(-80, 80), (64, 48)
        )
        expected = cv2.warpAffine(source, matrix, (48, 64), flags=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(warp_crop(image, matrix, (64, 48), mirror=mirror), expected)
        np.testing.assert_array_equal(
            warp_crop(image, matrix, (64, 48), mirror=mirror, swap_red_blue=True),
            expected[:, :, ::-1],
        )
