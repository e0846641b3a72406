"""Keypoint specs are self-consistent."""

import numpy as np
import pytest

from efafnet_jax.data.keypoints import COCO, CROWDPOSE, MPII, KeypointSpec


@pytest.mark.parametrize("spec", [COCO, CROWDPOSE, MPII])
def test_flip_is_an_involution_that_pairs_left_with_right(spec):
    perm = spec.flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(spec.num_joints))
    for a, b in spec.flip_pairs:
        left, right = spec.names[a], spec.names[b]
        assert left.replace("left", "right") == right or left.replace("right", "left") == right


def test_joint_counts():
    assert (COCO.num_joints, CROWDPOSE.num_joints, MPII.num_joints) == (17, 14, 16)
    assert CROWDPOSE.names[-2:] == ("head", "neck")


def test_inconsistent_spec_is_rejected():
    with pytest.raises(ValueError, match="2 sigmas, 3 joints"):
        KeypointSpec("bad", ("a", "b", "c"), (), (0.1, 0.1), (), ())
