"""FSM, FAM and DUC against hand-derived NumPy float64 computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efafnet_jax.models.bottleneck import Bottleneck, fam_split_width
from efafnet_jax.models.fsm import FeatureSelection
from efafnet_jax.models.heads import DUCHead, depth_to_space
from efafnet_jax.models.layers import LayerSettings, batch_norm


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _fsm_numpy(x, p, arrangement, relu_before_sigmoid):
    def cs(f):
        pooled = f.mean(axis=(1, 2)) + f.max(axis=(1, 2))
        hidden = np.maximum(pooled @ p["cs_fc1"]["kernel"] + p["cs_fc1"]["bias"], 0)
        alpha = _sigmoid(hidden @ p["cs_fc2"]["kernel"] + p["cs_fc2"]["bias"])
        return f + alpha[:, None, None, :] * f

    def lss(f):
        w1, b1 = p["lss_conv1"]["kernel"][0, 0], p["lss_conv1"]["bias"]
        w2, b2 = p["lss_conv2"]["kernel"][0, 0], p["lss_conv2"]["bias"]
        logits = np.maximum(f @ w1 + b1, 0) @ w2 + b2
        if relu_before_sigmoid:
            logits = np.maximum(logits, 0)
        return f + _sigmoid(logits) * f

    return {
        "parallel": lambda f: cs(f) + lss(f),
        "cs_lss": lambda f: lss(cs(f)),
        "lss_cs": lambda f: cs(lss(f)),
    }[arrangement](x)


@pytest.mark.optimized  # float32 against NumPy float64
@pytest.mark.parametrize("arrangement", ["parallel", "cs_lss", "lss_cs"])
@pytest.mark.parametrize("relu_before_sigmoid", [True, False])
@pytest.mark.parametrize("lss_hidden", [1, 3])
def test_fsm_matches_equations(arrangement, relu_before_sigmoid, lss_hidden):
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 32))
    module = FeatureSelection(
        reduction=4,
        lss_hidden=lss_hidden,
        arrangement=arrangement,
        lss_relu_before_sigmoid=relu_before_sigmoid,
    )
    params = module.init(jax.random.key(0), jnp.asarray(x, jnp.float32))["params"]
    # Random biases, so that a dropped bias or a missing ReLU would show.
    params = jax.tree_util.tree_map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(a.size), a.shape), params
    )
    out = module.apply({"params": params}, jnp.asarray(x, jnp.float32))
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    assert params["cs_fc1"]["kernel"].shape == (32, 8)
    assert params["lss_conv1"]["kernel"].shape == (1, 1, 32, lss_hidden)
    assert params["lss_conv2"]["kernel"].shape == (1, 1, lss_hidden, 1)
    np.testing.assert_allclose(
        np.asarray(out), _fsm_numpy(x, p64, arrangement, relu_before_sigmoid), rtol=1e-5, atol=1e-5
    )


def _conv3x3_numpy(x, w, stride):
    """Cross-correlation with zero padding 1, NHWC x HWIO, as torch.nn.Conv2d."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, wd, _ = x.shape
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = np.zeros((n, oh, ow, w.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = padded[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def _avgpool3x3_numpy(x, stride):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, wd, c = x.shape
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = (
                padded[:, i * stride : i * stride + 3, j * stride : j * stride + 3].sum(axis=(1, 2))
                / 9.0
            )
    return out


@pytest.mark.optimized  # float32 against NumPy float64
@pytest.mark.parametrize("first_of_stage, stride", [(False, 1), (True, 1), (True, 2)])
def test_fam_hierarchy_matches_res2net_equation(first_of_stage, stride):
    """With BN at identity statistics, the FAM path is Eq. (1) with 1x1 convs around it."""
    planes, scale = 16, 4
    width = fam_split_width(planes, 26)
    assert width == 6
    in_channels = planes * 4 if not first_of_stage else 32
    x = np.random.default_rng(1).normal(size=(1, 6, 6, in_channels))
    block = Bottleneck(
        planes=planes, stride=stride, first_of_stage=first_of_stage, use_fam=True, fam_scale=scale
    )
    variables = block.init(jax.random.key(0), jnp.asarray(x, jnp.float32), train=False)
    out = block.apply(variables, jnp.asarray(x, jnp.float32), train=False)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])

    def bn(v, name):  # eval mode, running stats 0/1, eps 1e-5
        return v * p[name]["scale"] / np.sqrt(1 + 1e-5) + p[name]["bias"]

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    hidden = relu(bn(x @ p["conv1"]["kernel"][0, 0], "bn1"))
    splits = np.split(hidden, scale, axis=-1)
    outs, y = [], None
    for i in range(scale - 1):
        inp = splits[i] if (i == 0 or first_of_stage) else splits[i] + y
        y = relu(bn(_conv3x3_numpy(inp, p[f"convs_{i}"]["kernel"], stride), f"bns_{i}"))
        outs.append(y)
    outs.append(_avgpool3x3_numpy(splits[-1], stride) if first_of_stage else splits[-1])
    branch = bn(np.concatenate(outs, -1) @ p["conv3"]["kernel"][0, 0], "bn3")
    identity = x
    if "downsample_0" in p:
        identity = bn(_conv1x1_numpy(x, p["downsample_0"]["kernel"], stride), "downsample_1")
    np.testing.assert_allclose(np.asarray(out), relu(branch + identity), rtol=1e-4, atol=1e-4)


def _conv1x1_numpy(x, w, stride):
    return x[:, ::stride, ::stride, :] @ w[0, 0]


def test_depth_to_space_uses_pixel_shuffle_channel_order():
    r, channels, h, w = 2, 3, 2, 3
    x = np.zeros((1, h, w, channels * r * r))
    # Encode (c, sy, sx, row, col) in each input value, then read it back.
    for c in range(channels):
        for sy in range(r):
            for sx in range(r):
                for i in range(h):
                    for j in range(w):
                        x[0, i, j, c * r * r + sy * r + sx] = (
                            c * 10000 + sy * 1000 + sx * 100 + i * 10 + j
                        )
    out = np.asarray(depth_to_space(jnp.asarray(x), r))
    assert out.shape == (1, h * r, w * r, channels)
    for c in range(channels):
        for y in range(h * r):
            for xx in range(w * r):
                i, sy, j, sx = y // r, y % r, xx // r, xx % r
                assert out[0, y, xx, c] == c * 10000 + sy * 1000 + sx * 100 + i * 10 + j


def test_depth_to_space_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible"):
        depth_to_space(jnp.zeros((1, 2, 2, 6)), 2)


@pytest.mark.optimized  # a float32 tolerance
def test_duc_is_a_conv_followed_by_depth_to_space():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 3, 2, 8)), jnp.float32)
    head = DUCHead(out_channels=5, upscale=4, kernel=1)
    variables = head.init(jax.random.key(0), x)
    kernel = variables["params"]["conv"]["kernel"]
    bias = variables["params"]["conv"]["bias"]
    assert kernel.shape == (1, 1, 8, 5 * 16)
    expected = depth_to_space(jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0]) + bias, 4)
    np.testing.assert_allclose(head.apply(variables, x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.optimized  # float32 against NumPy float64
def test_batchnorm_matches_pytorch_semantics():
    """Direct (not E[x^2]-E[x]^2) batch variance; running var updated with the unbiased one."""
    x64 = 1000.0 + np.random.default_rng(3).normal(size=(16, 2, 2, 4))
    x = jnp.asarray(x64, jnp.float32)
    bn = batch_norm(True, layers=LayerSettings())
    variables = bn.init(jax.random.key(0), x)
    out, state = bn.apply(variables, x, mutable=["batch_stats"])
    flat = x64.reshape(-1, 4)
    np.testing.assert_allclose(
        state["batch_stats"]["var"], 0.9 + 0.1 * flat.var(axis=0, ddof=1), rtol=1e-5
    )
    np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * flat.mean(axis=0), rtol=1e-5)
    expected = (x64 - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    eval_bn = batch_norm(False, layers=LayerSettings())
    np.testing.assert_allclose(
        eval_bn.apply(variables, x), (x64 - 0.0) / np.sqrt(1 + 1e-5), rtol=1e-6
    )
