"""The CPU-fast convolution forms equal the stock lax ops, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from efafnet_jax.models.kernels import conv2d, conv_transpose2d

# SimpleBaseline's deconvolution configurations: kernel -> padding of the dilated input.
DECONV_PADDING = {4: ((2, 2), (2, 2)), 3: ((1, 2), (1, 2)), 2: ((1, 1), (1, 1))}


def _both(fn_fast, fn_stock, *args):
    """Values and gradients (w.r.t. every argument) of the two forms, on a random cotangent."""
    with jax.enable_x64(True):
        return _vjps(fn_fast, fn_stock, *args)


def _vjps(fn_fast, fn_stock, *args):
    out_fast, vjp_fast = jax.vjp(fn_fast, *args)
    out_stock, vjp_stock = jax.vjp(fn_stock, *args)
    cotangent = np.random.default_rng(9).normal(size=out_stock.shape).astype(out_stock.dtype)
    return (out_fast, *vjp_fast(cotangent)), (out_stock, *vjp_stock(cotangent))


@pytest.mark.parametrize(
    "dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5), (jnp.bfloat16, 3e-2)]
)
@pytest.mark.parametrize("size", sorted(DECONV_PADDING))
def test_gemm_col2im_transposed_conv_equals_lax(size, dtype, tol):
    rng = np.random.default_rng(size)
    x = rng.normal(size=(2, 5, 4, 6)).astype(dtype)
    kernel = rng.normal(size=(size, size, 3, 6)).astype(dtype)  # [k, k, out, in]
    pad = DECONV_PADDING[size]
    fast, stock = _both(
        lambda a, k: conv_transpose2d(a, k, 2, pad, fast=True),
        lambda a, k: lax.conv_transpose(
            a, k, (2, 2), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True
        ),
        x,
        kernel,
    )
    assert fast[0].shape == (2, 10, 8, 3)
    for a, b in zip(fast, stock, strict=True):
        assert a.dtype == b.dtype == dtype
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_as_matmul_equals_lax(stride):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 6, 5, 7))
    kernel = rng.normal(size=(1, 1, 7, 4))
    fast, stock = _both(
        lambda a, k: conv2d(a, k, stride, ((0, 0), (0, 0)), fast=True),
        lambda a, k: lax.conv_general_dilated(
            a, k, (stride, stride), ((0, 0), (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        x,
        kernel,
    )
    for a, b in zip(fast, stock, strict=True):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_other_convolutions_take_the_stock_path():
    x = jnp.ones((1, 4, 4, 2))
    kernel = jnp.ones((3, 3, 2, 1))
    expected = lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_array_equal(conv2d(x, kernel, 1, ((1, 1), (1, 1)), fast=True), expected)


def test_model_with_the_cpu_forms_equals_the_stock_model(monkeypatch):
    """Whole-network check of the forms the single-device CPU step uses."""
    from conftest import CONFIG_DIR

    import efafnet_jax.models.kernels as kernels
    from efafnet_jax.config import load_config
    from efafnet_jax.models import create_model

    config = load_config(f"{CONFIG_DIR / 'tiny.py'}:sbn,64x64")
    model = create_model(config.model)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    variables = model.init(jax.random.key(0), images)

    def outputs_and_grads():
        def loss(params):
            out, _ = model.apply(
                {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(out**2), out

        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return [out, *jax.tree_util.tree_leaves(grads)]

    results = {}
    for fast in (True, False):
        monkeypatch.setattr(kernels, "fast_kernels", lambda fast=fast: fast)
        results[fast] = outputs_and_grads()
    for a, b in zip(results[True], results[False], strict=True):  # float32 rounding
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
