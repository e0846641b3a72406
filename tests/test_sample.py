"""Training and evaluation samples from the real COCO sample."""

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.sample import SampleConfig, make_sample
from efafnet_jax.data.transforms import AugmentDraws, affine_matrix, affine_points

CONFIG = SampleConfig(crop_hw=(256, 192), heatmap_hw=(64, 48), sigma=2.0)


@pytest.fixture(scope="module")
def person():
    records, _ = read_coco_keypoints(
        str(DATA_DIR / "coco" / "test_coco.json"), str(DATA_DIR / "coco"), COCO, 0.75
    )
    record = records[0]
    return record, read_image(record.image_path, record.image_id)


def test_eval_sample_is_the_box_crop_with_targets_at_the_joints(person):
    record, image = person
    sample = make_sample(record, image, COCO, CONFIG, draws=None)
    assert sample.image.shape == (256, 192, 3) and sample.image.dtype == np.uint8
    assert sample.target.shape == (64, 48, 17) and sample.target_weight.shape == (17,)
    matrix = affine_matrix(record.center, record.scale, 0.0, (256, 192))
    np.testing.assert_array_equal(sample.image, cv2.warpAffine(image, matrix, (192, 256)))
    crop_joints = affine_points(record.joints, matrix)
    for k in np.flatnonzero(record.visibility):
        mu = (crop_joints[k] / 4 + 0.5).astype(int)
        assert sample.target[mu[1], mu[0], k] == 1.0
    np.testing.assert_array_equal(sample.target_weight, record.visibility)


def test_flipped_sample_follows_the_reference_order(person):
    record, image = person
    draws = AugmentDraws(
        half_body_u=0.9, half_body_n=0.0, scale_n=0.4, rotation_n=0.5, rotation_u=0.1, flip_u=0.2
    )
    sample = make_sample(record, image, COCO, CONFIG, draws)
    assert sample.flipped and sample.rotation == pytest.approx(20.0)
    width = image.shape[1]
    # The reference: mirror the image array, the centre (W - x - 1) and the joints.
    center = record.center.copy()  # float32, modified in place as the reference does
    center[0] = width - center[0] - 1
    np.testing.assert_array_equal(sample.center, center)
    scale = record.scale * np.clip(0.4 * 0.3 + 1, 0.7, 1.3)
    matrix = affine_matrix(center, scale, 20.0, (256, 192))
    mirrored = np.ascontiguousarray(image[:, ::-1])
    np.testing.assert_array_equal(sample.image, cv2.warpAffine(mirrored, matrix, (192, 256)))
    # Left and right swap: the left shoulder's heatmap sits where the right one's
    # mirrored position lands.
    right_shoulder = np.array([width - record.joints[6, 0] - 1, record.joints[6, 1]])
    mu = (affine_points(right_shoulder, matrix) / 4 + 0.5).astype(int)
    assert sample.target[mu[1], mu[0], 5] == 1.0


def test_every_real_person_gives_a_finite_sample(person):
    records, _ = read_coco_keypoints(
        str(DATA_DIR / "coco" / "test_coco.json"), str(DATA_DIR / "coco"), COCO, 0.75
    )
    rng = np.random.default_rng(0)
    from efafnet_jax.data.transforms import draw_augmentation

    for record in records:
        image = read_image(record.image_path, record.image_id)
        sample = make_sample(record, image, COCO, CONFIG, draw_augmentation(rng))
        assert np.isfinite(sample.target).all() and sample.target.max() <= 1.0
        assert sample.target_weight.sum() <= record.visibility.sum()
