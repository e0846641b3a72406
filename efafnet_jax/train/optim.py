"""Adam with SimpleBaseline's step schedule (x0.1 at given epochs), optional warm-up."""

from __future__ import annotations

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


def make_optimizer(
    train: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Adam (PyTorch's defaults: b1 0.9, b2 0.999, eps 1e-8) at `schedule`."""
    return optax.adam(learning_rate=schedule, b1=0.9, b2=0.999, eps=1e-8)
