"""DARK decoding and unbiased targets (README "Codecs") against hand-derived cases."""

import numpy as np
import pytest

from efafnet_jax.data.codec import (
    dark_refine,
    decode,
    encode,
    encode_on_device,
    max_positions,
    quarter_offset,
)

HEATMAP_HW, CROP_HW, SIGMA = (64, 48), (256, 192), 2.0
# Sub-pixel peaks (x, y) in heatmap pixels; (20.5, 30.5) is the quarter rule's worst case.
PEAKS = [(20.3, 15.6), (20.5, 30.5), (10.1, 40.9), (30.45, 12.2), (25.0, 25.0)]


def sampled_gaussian(x0: float, y0: float, sigma: float = SIGMA) -> np.ndarray:
    """exp(-|p - p0|^2 / 2 sigma^2) at every pixel centre p of a [1, h, w, 1] map."""
    y, x = np.mgrid[0 : HEATMAP_HW[0], 0 : HEATMAP_HW[1]]
    values = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    return values.astype(np.float32)[None, :, :, None]


@pytest.mark.parametrize("peak", PEAKS)
def test_dark_recovers_a_sub_pixel_peak_the_quarter_rule_misses(peak):
    heatmaps = sampled_gaussian(*peak)
    argmax, _ = max_positions(heatmaps)
    dark = dark_refine(heatmaps, argmax, SIGMA)[0, 0]
    quarter = quarter_offset(heatmaps, argmax)[0, 0]
    assert np.abs(dark - peak).max() < 0.02
    # The quarter rule moves 0.25 px toward the higher neighbour, whatever the offset.
    fraction = np.abs(np.asarray(peak) - np.round(peak))
    expected = np.where(fraction > 0, np.abs(0.25 - fraction), 0.0)
    np.testing.assert_allclose(np.abs(quarter - peak), expected, atol=1e-6)
    if peak == (20.5, 30.5):
        np.testing.assert_allclose(np.abs(quarter - peak), 0.25, atol=1e-6)


def test_dark_leaves_peaks_at_the_border_and_flat_maps_alone():
    border = sampled_gaussian(1.3, 30.2)
    argmax, _ = max_positions(border)
    np.testing.assert_array_equal(dark_refine(border, argmax, SIGMA), argmax)  # x = 1
    flat = np.zeros((1, *HEATMAP_HW, 1), np.float32)
    argmax, _ = max_positions(flat)
    np.testing.assert_array_equal(dark_refine(flat, argmax, SIGMA), argmax)


@pytest.mark.parametrize("joint", [(81.2, 62.4), (100.0, 150.0), (33.7, 201.3)])
def test_unbiased_targets_centre_the_gaussian_at_the_joint(joint):
    target, weight = encode(
        np.array([joint]), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased"
    )
    stride = CROP_HW[0] / HEATMAP_HW[0]  # 4 in both directions
    mu = np.asarray(joint) / stride
    np.testing.assert_allclose(target, sampled_gaussian(*mu)[0], atol=1e-7)
    assert weight[0] == 1
    msra, _ = encode(np.array([joint]), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA)
    # Decoded as predictions: unbiased + DARK lands on the joint; msra + quarter does not.
    center, scale = np.array([[96.0, 128.0]]), np.array([[192 / 200, 256 / 200]])
    exact, _ = decode(target[None], center, scale, decoder="dark", sigma=SIGMA)
    assert np.abs(exact[0, 0] - joint).max() < 0.02 * stride
    standard, _ = decode(msra[None], center, scale)
    if np.any(np.abs(mu - np.round(mu)) > 0.1):
        assert np.abs(standard[0, 0] - joint).max() > 0.1 * stride


def test_unbiased_targets_on_device_equal_the_host_ones():
    rng = np.random.default_rng(0)
    joints = rng.uniform(-20, 210, (2, 17, 2))
    visibility = (rng.uniform(size=(2, 17)) > 0.2).astype(np.float32)
    host = [
        encode(j, v, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased")
        for j, v in zip(joints, visibility, strict=True)
    ]
    device = encode_on_device(joints, visibility, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased")
    np.testing.assert_allclose(np.asarray(device[0]), np.stack([t for t, _ in host]), atol=2e-6)
    np.testing.assert_array_equal(np.asarray(device[1]), np.stack([w for _, w in host]))
    assert np.stack([w for _, w in host]).min() == 0  # some joints fell off the map


def test_unknown_codec_names_are_refused():
    with pytest.raises(ValueError, match="target_encoding"):
        encode(np.zeros((1, 2)), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA, encoding="udp")
    with pytest.raises(ValueError, match="eval.decoder"):
        decode(np.zeros((1, *HEATMAP_HW, 1)), np.zeros((1, 2)), np.ones((1, 2)), decoder="x")
