"""Adam with SimpleBaseline's step schedule (x0.1 at given epochs), optional warm-up."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(
    train: ml_collections.ConfigDict, steps_per_epoch: int, global_batch: int
) -> optax.Schedule:
    """lr(step): base lr (scaled by global_batch / reference_batch if set), x decay_factor
    at each epoch in `decay_epochs`, linear warm-up over `warmup_epochs`."""
    base = train.learning_rate
    if train.get("lr_reference_batch"):
        base = base * global_batch / train.lr_reference_batch
    warmup = int(train.get("warmup_epochs", 0) * steps_per_epoch)
    # join_schedules restarts the count after the warm-up: boundaries are relative to it.
    boundaries = {int(e * steps_per_epoch) - warmup: train.decay_factor for e in train.decay_epochs}
    schedule = optax.piecewise_constant_schedule(base, boundaries)
    if warmup:
        ramp = optax.linear_schedule(0.0, base, warmup)
        schedule = optax.join_schedules([ramp, schedule], [warmup])
    return schedule


def _bias_correction(decay: float, count: jnp.ndarray, dtype) -> jnp.ndarray:
    """Adam's bias correction 1 - decay**count, computed per dtype.

    torch.optim.Adam computes `1 - beta2**step` in Python doubles whatever the parameters'
    dtype (torch/optim/adam.py, `_single_tensor_adam`, its default on CPU).
    - float64: that same expression (XLA's pow and C's agree on counts 1..20000), so the
      correction is PyTorch's to the bit. It cancels: for b2 = 0.999 it is 1.4e-14
      relative off the exact value at count 2, 1.0e-14 at count 4. That is harmless in
      float64, but the exact -expm1 would scale every update of those steps by the same
      ~1e-14, a difference from PyTorch common to all weights of a float64 parity run
      (interop/compare_training), for an accuracy nobody needs there.
    - float32 and narrower: -expm1(count log decay), off by rounding only: PyTorch's
      double value, rounded. The float32 `1 - decay**count` (optax's) cancels to 1.3e-5
      off at count 1 for b2 = 0.999, which made every first update 6e-6 too large.
    """
    if jnp.dtype(dtype) == jnp.float64:
        return 1 - decay ** count.astype(dtype)
    return -jnp.expm1(count.astype(dtype) * math.log(decay))


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam's direction as torch.optim.Adam computes it, m_hat / (sqrt(v_hat) + eps), with
    the bias corrections of `_bias_correction` (PyTorch's own in float64, accurate in
    float32); the state is optax's ScaleByAdamState (same checkpoints)."""

    def init(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros((), jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * jnp.square(g) + b2 * v, updates, state.nu)
        count = optax.safe_increment(state.count)

        def direction(m, v):
            m_hat = m / _bias_correction(b1, count, m.dtype)
            v_hat = v / _bias_correction(b2, count, v.dtype)
            return m_hat / (jnp.sqrt(v_hat) + eps)

        return jax.tree.map(direction, mu, nu), optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    train: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Adam (PyTorch's defaults: b1 0.9, b2 0.999, eps 1e-8, no weight decay) at
    `schedule`."""
    return optax.chain(scale_by_adam(0.9, 0.999, 1e-8), optax.scale_by_learning_rate(schedule))
