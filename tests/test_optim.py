"""Adam as torch.optim.Adam computes it: accurate in float32 (NumPy float64 reference),
PyTorch's own bias corrections in float64 (torch.optim.Adam itself)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from efafnet_jax.train.optim import scale_by_adam

B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


def _numpy_adam(params: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """torch.optim.Adam's update loop (no weight decay) in float64."""
    p, m, v = params.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - B2**t) + EPS
        p = p - LR / (1 - B1**t) * m / denom
    return p


def _run(tx: optax.GradientTransformation, params: np.ndarray, grads) -> np.ndarray:
    p = jnp.asarray(params)
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
    return np.asarray(p, np.float64)


@pytest.mark.optimized  # float32 against NumPy float64
@pytest.mark.parametrize("steps", [1, 3])
def test_float32_updates_match_float64_adam_to_rounding(steps):
    rng = np.random.default_rng(0)
    params = rng.normal(size=4096).astype(np.float32) * 1e-3  # a std-0.001 head
    grads = [rng.normal(size=4096).astype(np.float32) * 1e-2 for _ in range(steps)]
    expected = _numpy_adam(params, grads)
    moved = np.abs(expected - params).max()

    def error(tx) -> float:
        return np.abs(_run(tx, params, grads) - expected).max() / moved

    ours = optax.chain(scale_by_adam(B1, B2, EPS), optax.scale_by_learning_rate(LR))
    assert error(ours) <= 5e-7
    # optax.adam's 1 - b2**t cancels in float32: its first updates are 6e-6 too large.
    assert error(optax.adam(LR, B1, B2, EPS)) > 3e-6


def test_float64_updates_are_torch_adams_with_no_difference_common_to_all_weights():
    """In float64 the bias corrections are PyTorch's own `1 - b**t` (train/optim.py), so
    each update is torch.optim.Adam's up to rounding, which is as often up as down. The
    exact -expm1(t log b2) differs from PyTorch's cancelled value by 1.4e-14 at t = 2 and
    1.0e-14 at t = 4 and would scale every update of those steps alike: a median relative
    difference of 7e-15 and 5e-15, carried by every weight of a float64 parity run."""
    rng = np.random.default_rng(0)
    params = rng.normal(size=4096) * 1e-2
    # Gradients from 1e-9 (below eps) to 1e-2: Adam's two regimes.
    grads = [rng.normal(size=4096) * 10.0 ** rng.uniform(-9, -2, 4096) for _ in range(4)]
    weights = torch.tensor(params, requires_grad=True)
    reference = torch.optim.Adam([weights], lr=LR, betas=(B1, B2), eps=EPS)
    tx = optax.chain(scale_by_adam(B1, B2, EPS), optax.scale_by_learning_rate(LR))
    with jax.enable_x64(True):
        p = jnp.asarray(params)
        state, update = tx.init(p), jax.jit(tx.update)
        for t, g in enumerate(grads, start=1):
            before = weights.detach().clone()
            weights.grad = torch.from_numpy(g)
            reference.step()
            expected = (weights.detach() - before).numpy()
            updates, state = update(jnp.asarray(g), state, p)
            p = optax.apply_updates(p, updates)
            ours = np.asarray(updates)
            assert ours.dtype == np.float64
            assert np.abs(ours - expected).max() <= 1e-14 * LR, t  # rounding: a few ulps
            assert abs(np.median((ours - expected) / expected)) <= 1e-15, t  # nothing common
