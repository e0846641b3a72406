"""On-device augmentation (Speed 2/2) against the host cv2 path on real COCO crops."""

import cv2
import jax
import numpy as np
import pytest
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.codec import encode, encode_on_device
from efafnet_jax.data.device_warp import device_batch, warp_crops
from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.region import region_sample
from efafnet_jax.data.sample import SampleConfig, make_sample
from efafnet_jax.data.transforms import draw_augmentation

CONFIG = SampleConfig(crop_hw=(256, 192), heatmap_hw=(64, 48), sigma=2.0)


@pytest.fixture(scope="module")
def people():
    records, _ = read_coco_keypoints(
        str(DATA_DIR / "coco" / "test_coco.json"), str(DATA_DIR / "coco"), COCO, 0.75
    )
    images = {r.image_path: read_image(r.image_path, r.image_id, rgb=False) for r in records}
    return records, images


def _both_paths(records, images, buffer, seeds=range(6)):
    host, device = [], []
    for seed in seeds:
        for index, record in enumerate(records):
            draws = draw_augmentation(np.random.default_rng([seed, index]))
            bgr = images[record.image_path]
            host.append(make_sample(record, bgr, COCO, CONFIG, draws, swap_red_blue=True))
            device.append(region_sample(record, bgr, COCO, CONFIG, draws, buffer))
    batch = {k: np.stack([d[k] for d in device]) for k in device[0]}
    out = jax.jit(lambda b: device_batch(b, CONFIG.crop_hw, CONFIG.heatmap_hw, CONFIG.sigma))(
        {k: batch[k] for k in ("source", "to_source", "joints", "visibility")}
    )
    return host, {k: np.asarray(v) for k, v in out.items()}


def test_device_crops_and_targets_match_the_host_path(people):
    records, images = people
    host, device = _both_paths(records, images, buffer=(640, 640))
    assert len(host) >= 30 and any(s.flipped for s in host) and any(s.rotation for s in host)
    for i, sample in enumerate(host):
        diff = np.abs(device["image"][i].astype(int) - sample.image.astype(int))
        assert diff.mean() < 1.0, (i, diff.mean())
        # Within interpolation error: cv2 rounds positions to 1/32 pixel.
        assert np.percentile(diff, 99) <= 8
        np.testing.assert_allclose(device["target"][i], sample.target, atol=1e-6)
        np.testing.assert_array_equal(device["target_weight"][i], sample.target_weight)
        for k in np.flatnonzero(sample.target_weight):
            assert device["target"][i][..., k].argmax() == sample.target[..., k].argmax()


def test_regions_larger_than_the_buffer_are_shrunk_in_place(people):
    records, images = people
    host, device = _both_paths(records, images, buffer=(128, 96), seeds=range(2))
    for i, sample in enumerate(host):
        crop, reference = device["image"][i].astype(float), sample.image.astype(float)
        # A 2-4x smaller source blurs the crop (about as much as a sigma-1.5 blur)...
        blurred = cv2.GaussianBlur(reference, (0, 0), 1.5)
        assert np.abs(crop - reference).mean() < 1.5 * np.abs(blurred - reference).mean() + 1
        # ...but leaves it in place: no shift of a pixel or more fits better.
        errors = {
            (dy, dx): np.abs(np.roll(crop, (dy, dx), (0, 1)) - reference)[8:-8, 8:-8].mean()
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        }
        best = min(errors, key=errors.get)
        assert max(abs(best[0]), abs(best[1])) <= 1 and errors[best] > 0.9 * errors[(0, 0)]


def test_device_targets_equal_the_host_targets_at_the_edges():
    rng = np.random.default_rng(0)
    joints = np.concatenate(
        [rng.uniform(-30, 230, (40, 2)), [[-25.0, 10.0], [191.9, 255.9], [1.99, 2.0], [-2.0, -2.0]]]
    )
    visibility = (rng.uniform(size=len(joints)) > 0.2).astype(np.float32)
    for sigma in (2.0, 1.5, 3.0):
        expected, expected_weight = encode(joints, visibility, (256, 192), (64, 48), sigma)
        target, weight = encode_on_device(
            joints[None].astype(np.float32), visibility[None], (256, 192), (64, 48), sigma
        )
        np.testing.assert_allclose(np.asarray(target)[0], expected, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(weight)[0], expected_weight)


def test_warp_with_an_identity_matrix_copies_and_zero_pads():
    source = np.random.default_rng(1).integers(0, 256, (1, 6, 5, 3), dtype=np.uint8)
    shift = np.array([[[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]], np.float32)  # crop (x, y) <- (x+2, y+1)
    crops = np.asarray(warp_crops(source, shift, (6, 4)))
    np.testing.assert_array_equal(crops[0, :5, :3], source[0, 1:, 2:])
    assert not crops[0, 5:].any() and not crops[0, :, 3:].any()


@pytest.mark.slow
def test_training_with_device_augmentation_follows_the_host_path(tmp_path, trained_tiny):
    """trained_tiny's run again, logging every step, on the host path and on the device:
    the host path's programs are trained_tiny's, so only the device path's step compiles
    here (one XLA compilation cache per test process)."""
    import json

    from efafnet_jax.train.loop import train_and_evaluate

    losses = {}
    for on_device in (False, True):
        config = trained_tiny.config.copy_and_resolve_references()
        config.data.device_augment, config.data.device_buffer_hw = on_device, (320, 320)
        config.train.log_every_steps = 1
        workdir = tmp_path / f"run_{on_device}"
        train_and_evaluate(config, str(workdir))
        lines = [json.loads(x) for x in open(workdir / "metrics.jsonl")]
        losses[on_device] = [x["train/loss"] for x in lines if "train/loss" in x]
    assert len(losses[True]) == len(losses[False]) >= 2
    np.testing.assert_allclose(losses[True], losses[False], rtol=2e-3)
