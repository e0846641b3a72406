"""One jitted training step, sharded over the mesh's data axis."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from efafnet_jax.sharding import batch_sharded, replicated
from efafnet_jax.train.losses import check_loss_fits_model, heatmap_loss
from efafnet_jax.train.state import TrainState

BATCH_KEYS = ("image", "target", "target_weight")
# With on-device augmentation (data.device_augment): what efafnet_jax.data.region sends.
DEVICE_BATCH_KEYS = ("source", "to_source", "joints", "visibility")


def loss_and_gradients(
    params, batch_stats, batch: dict, *, model, train: ml_collections.ConfigDict
):
    """(loss, updated BatchNorm statistics, gradients) of one batch in train mode.

    BatchNorm statistics are those of the global batch (the arrays are global).
    """

    def loss_fn(p):
        out, updates = model.apply(
            {"params": p, "batch_stats": batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats", "intermediates"],
        )
        loss = heatmap_loss(
            out, batch["target"], batch["target_weight"], train.loss, train.ohkm_top_k
        )
        if model.aux_supervision:
            aux_out = updates["intermediates"]["aux_heatmaps"][0]
            loss = loss + train.aux_loss_weight * heatmap_loss(
                aux_out, batch["target"], batch["target_weight"], train.loss, train.ohkm_top_k
            )
        return loss, updates["batch_stats"]

    (loss, new_batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, new_batch_stats, grads


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    train: ml_collections.ConfigDict,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict]:
    """Forward in train mode, heatmap loss (+ aux), Adam update.

    A non-finite loss or gradient skips the update (parameters, optimiser state
    and BatchNorm statistics stay as they were) and is counted.
    """
    loss, batch_stats, grads = loss_and_gradients(
        state.params, state.batch_stats, batch, model=model, train=train
    )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update(_):
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), opt_state, batch_stats

    def keep_state(_):
        return state.params, state.opt_state, state.batch_stats

    # A conditional, not a select over the whole state: the skipped branch costs nothing
    # and the taken one writes the state once (a select re-reads all of it, ~5% of a
    # ResNet-50 step on CPU).
    params, opt_state, new_batch_stats = jax.lax.cond(finite, apply_update, keep_state, None)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        batch_stats=new_batch_stats,
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": schedule(state.step),
        "finite": finite,
        "nonfinite_in_a_row": new_state.nonfinite_in_a_row,
    }
    return new_state, metrics


def make_train_step(
    model,
    train: ml_collections.ConfigDict,
    schedule: optax.Schedule,
    mesh: Mesh,
    state_sharding,
    prepare: Callable[[dict], dict] | None = None,
):
    """jit(train_step) with the state donated, the batch sharded over 'data'.

    `prepare` (on-device augmentation, `data.device_warp.device_batch`) turns the
    DEVICE_BATCH_KEYS batch into crops and targets inside the same jitted step.
    """
    check_loss_fits_model(train.loss, model.heatmap_activation)
    keys = BATCH_KEYS if prepare is None else DEVICE_BATCH_KEYS

    def step(state, batch):
        if prepare is not None:
            batch = prepare(batch)
        return train_step(state, batch, model=model, train=train, schedule=schedule)

    return jax.jit(
        step,
        in_shardings=(state_sharding, {k: batch_sharded(mesh) for k in keys}),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )
