"""Adam as torch.optim.Adam computes it, accurate in float32 (NumPy float64 reference)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
