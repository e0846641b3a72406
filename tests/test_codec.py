"""The codec's Gaussian targets: the reference's loop, its rounding quirks, off-map weights."""

import numpy as np
import pytest
from reference_loops import generate_target_loop

from efafnet_jax.data.codec import encode


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_reference_loop(sigma, seed):
    rng = np.random.default_rng(seed)
    # Joints inside, near and beyond every edge of a 192x256 crop.
    joints = rng.uniform([-60, -60], [252, 316], size=(17, 2))
    vis = (rng.random(17) > 0.2).astype(np.float32)
    target, weight = encode(joints, vis, (256, 192), (64, 48), sigma)
    ref_target, ref_weight = generate_target_loop(joints, vis, (192, 256), (48, 64), sigma)
    np.testing.assert_array_equal(weight, ref_weight)
    np.testing.assert_array_equal(target, ref_target.transpose(1, 2, 0))
    assert target.dtype == np.float32 and target.shape == (64, 48, 17)


def test_peak_at_truncated_rounding():
    # x/4 + 0.5 = 5.375 -> 5; y/4 + 0.5 = 9.75 -> 9 (truncation, not rounding).
    target, weight = encode(np.array([[19.5, 37.0]]), np.ones(1), (256, 192), (64, 48), 2.0)
    assert np.unravel_index(np.argmax(target[..., 0]), target.shape[:2]) == (9, 5)
    assert target[9, 5, 0] == 1.0 and weight[0] == 1.0


def test_negative_coordinates_truncate_toward_zero():
    # -3/4 + 0.5 = -0.25: Python int() gives 0 (floor would give -1), so the peak is at 0.
    target, weight = encode(np.array([[-3.0, 8.0]]), np.ones(1), (256, 192), (64, 48), 2.0)
    assert target[2, 0, 0] == 1.0 and weight[0] == 1.0


@pytest.mark.parametrize(
    "joint, expected_weight",
    [
        ((-40.0, 100.0), 0.0),  # window right edge: int(-9.5) + 7 = -2 < 0 -> off the map
        ((-20.0, 100.0), 1.0),  # window reaches column 0 -> pasted, clipped
        ((220.0, 100.0), 0.0),  # mu 55, ul 49 >= 48 -> off the map
        ((210.0, 100.0), 1.0),
    ],
)
def test_weight_zero_only_when_the_window_is_wholly_off_the_map(joint, expected_weight):
    target, weight = encode(np.array([joint]), np.ones(1), (256, 192), (64, 48), 2.0)
    assert weight[0] == expected_weight
    assert (target.max() > 0) == bool(expected_weight)


def test_unlabelled_joints_have_no_heatmap_and_joint_weights_multiply():
    joints = np.array([[50.0, 50.0], [80.0, 90.0]])
    weights = (1.5, 1.2)
    target, weight = encode(
        joints, np.array([0.0, 1.0]), (256, 192), (64, 48), 2.0, joint_weights=weights
    )
    assert target[..., 0].max() == 0 and weight[0] == 0
    assert target[..., 1].max() == 1.0 and weight[1] == np.float32(1.2)
