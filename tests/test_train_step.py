"""Losses, schedule, and one step sharded over 8 devices against 1 device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIG_DIR, load_test_config

from efafnet_jax.data.codec import activate
from efafnet_jax.models import create_model
from efafnet_jax.sharding import data_mesh
from efafnet_jax.train.losses import joints_mse, ohkm_mse, spatial_softmax_ce
from efafnet_jax.train.optim import learning_rate_schedule, make_optimizer
from efafnet_jax.train.state import TrainState
from efafnet_jax.train.step import loss_and_gradients, train_step
from efafnet_jax.weights import initial_variables


def test_losses_against_numpy():
    rng = np.random.default_rng(0)
    pred, gt = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    weight = rng.uniform(0, 2, size=(2, 5))
    per = 0.5 * (((pred - gt) * weight[:, None, None, :]) ** 2).mean(axis=(1, 2))  # [B, K]
    np.testing.assert_allclose(joints_mse(pred, gt, weight), per.mean(), rtol=1e-6)
    top2 = np.sort(per, axis=1)[:, ::-1][:, :2]
    np.testing.assert_allclose(ohkm_mse(pred, gt, weight, top_k=2), top2.mean(), rtol=1e-6)


def test_spatial_softmax_loss_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 5, 3))
    target = rng.uniform(0, 1, size=(2, 6, 5, 3))
    target[1, ..., 2] = 0.0  # a joint outside the crop: zero map, zero weight
    weight = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    flat = logits.reshape(2, 30, 3)
    log_prob = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
    mass = target.reshape(2, 30, 3)
    mass = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)
    ce = -(mass * log_prob).sum(axis=1)
    expected = (ce * weight).sum() / weight.sum()
    got = spatial_softmax_ce(jnp.asarray(logits, jnp.float32), target, weight)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_spatial_softmax_heatmaps_peak_at_one_for_a_perfect_prediction():
    from efafnet_jax.data.codec import encode

    sigma = 2.0
    joints = np.array([[21.0, 30.0]])  # one joint in a 64x48 (h x w) input
    target, _ = encode(joints, np.ones(1), (64, 48), (16, 12), sigma)
    logits = np.log(np.maximum(target, 1e-30))[None]
    maps = np.asarray(activate(jnp.asarray(logits), "spatial_softmax", sigma))
    assert np.unravel_index(maps.argmax(), maps.shape) == np.unravel_index(
        target.argmax(), (1, *target.shape)
    )
    np.testing.assert_allclose(maps.max(), 1.0, rtol=0.02)
    assert activate(logits, "identity", sigma) is logits


def test_step_schedule_and_warmup():
    config = load_test_config(f"{CONFIG_DIR / 'coco.py'}")
    train = config.train
    schedule = learning_rate_schedule(train, steps_per_epoch=10, global_batch=64)
    assert schedule(0) == pytest.approx(5e-4) and schedule(899) == pytest.approx(5e-4)
    assert schedule(900) == pytest.approx(5e-5) and schedule(1200) == pytest.approx(5e-6)
    train.warmup_epochs = 1
    train.lr_reference_batch = 32
    schedule = learning_rate_schedule(train, steps_per_epoch=10, global_batch=64)
    assert schedule(5) == pytest.approx(5e-4) and schedule(10) == pytest.approx(1e-3)
    assert schedule(900) == pytest.approx(1e-4)


@functools.cache
def _setup(variant):
    """config, model, jitted initial variables and a batch of 16; EFAFNet with the aux head."""
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{variant},64x64")
    config.model.fusion.aux_supervision = variant == "efafnet"
    model = create_model(config.model)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
        "target": rng.uniform(0, 1, (16, 16, 16, 17)).astype(np.float32),
        "target_weight": (rng.random((16, 17)) > 0.2).astype(np.float32),
    }
    return config, model, initial_variables(model, config), batch


@pytest.mark.slow  # two gradient programs per variant
@pytest.mark.optimized  # a float32 tolerance (the optimised programs' reduction orders)
@pytest.mark.parametrize("variant", ["efafnet", "sbn"])
def test_eight_devices_equal_one_device(variant):
    config, model, variables, batch = _setup(variant)
    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = data_mesh(devices)
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        fn = jax.jit(lambda p, s, b: loss_and_gradients(p, s, b, model=model, train=config.train))
        sharded = {k: jax.device_put(v, rows) for k, v in batch.items()}
        results.append(jax.device_get(fn(variables["params"], variables["batch_stats"], sharded)))
    (loss8, stats8, grads8), (loss1, stats1, grads1) = results
    assert abs(loss8 - loss1) <= 1e-4 * abs(loss1)
    for a, b in zip(
        jax.tree_util.tree_leaves(grads8), jax.tree_util.tree_leaves(grads1), strict=True
    ):
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-30)
    for a, b in zip(
        jax.tree_util.tree_leaves(stats8), jax.tree_util.tree_leaves(stats1), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_loss_skips_the_update_and_is_counted():
    config, model, variables, batch = _setup("sbn")
    schedule = learning_rate_schedule(config.train, 10, 16)
    state = TrainState.create(variables, make_optimizer(config.train, schedule))
    step = jax.jit(
        lambda s, b: train_step(s, b, model=model, train=config.train, schedule=schedule)
    )
    good, metrics = step(state, batch)
    assert bool(metrics["finite"]) and int(good.nonfinite_total) == 0
    assert not np.allclose(good.params["final_layer"]["bias"], state.params["final_layer"]["bias"])
    poisoned = dict(batch, target=np.full_like(batch["target"], np.nan))
    bad, metrics = step(good, poisoned)
    assert not bool(metrics["finite"])
    assert int(bad.step) == 2 and int(bad.nonfinite_in_a_row) == 1
    assert int(bad.nonfinite_total) == 1
    for a, b in zip(
        jax.tree_util.tree_leaves(bad.params), jax.tree_util.tree_leaves(good.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    again, _ = step(bad, batch)
    assert int(again.nonfinite_in_a_row) == 0 and int(again.nonfinite_total) == 1
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(again.params))
    # The update after the skipped one is applied, and Adam counts two updates, not three.
    assert not np.allclose(again.params["final_layer"]["bias"], bad.params["final_layer"]["bias"])
    # Adam's and the schedule's counters: the skipped update counts in neither.
    assert [int(part.count) for part in bad.opt_state] == [1, 1]
    assert [int(part.count) for part in again.opt_state] == [2, 2]
