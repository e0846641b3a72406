"""uint8 crops are normalised on device with ImageNet statistics."""

import jax.numpy as jnp
import numpy as np
import pytest

from efafnet_jax.config import IMAGENET_MEAN, IMAGENET_STD
from efafnet_jax.models.preprocess import normalize_images


def _reference(images, order):
    x = images.astype(np.float64) / 255.0
    if order == "bgr":
        x = x[..., ::-1]
    return (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_matches_float64_reference(order):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    out = normalize_images(jnp.asarray(images), IMAGENET_MEAN, IMAGENET_STD, order)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), _reference(images, order), atol=2e-6)


def test_a_float64_model_normalises_in_float64():
    """Training parity in float64 (compare_training) starts from uint8 crops: a float32
    normalisation would put a 1e-7 error into the first layer."""
    import jax

    images = np.random.default_rng(1).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    with jax.enable_x64(True):
        out = normalize_images(jnp.asarray(images), IMAGENET_MEAN, IMAGENET_STD, dtype="float64")
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out), _reference(images, "rgb"), rtol=0, atol=1e-14)


def test_bgr_reverses_channels_before_applying_the_same_statistics():
    # A pure-red RGB pixel read as BGR puts 255 in the last channel, which is then
    # normalised with the third (blue) mean/std entry, as SimpleBaseline did.
    red = np.zeros((1, 1, 1, 3), np.uint8)
    red[..., 0] = 255
    out = np.asarray(normalize_images(jnp.asarray(red), IMAGENET_MEAN, IMAGENET_STD, "bgr"))
    expected = [
        (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
        (1 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
    ]
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


def test_bfloat16_output_dtype():
    images = jnp.zeros((1, 4, 4, 3), jnp.uint8)
    assert (
        normalize_images(images, IMAGENET_MEAN, IMAGENET_STD, dtype=jnp.bfloat16).dtype
        == jnp.bfloat16
    )


def test_rejects_float_input_and_unknown_order():
    with pytest.raises(TypeError, match="uint8"):
        normalize_images(jnp.zeros((1, 4, 4, 3)), IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ValueError, match="color_order"):
        normalize_images(jnp.zeros((1, 4, 4, 3), jnp.uint8), IMAGENET_MEAN, IMAGENET_STD, "hsv")
