"""One jitted training step, sharded over the mesh's data axis."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from efafnet_jax.train.losses import heatmap_loss
from efafnet_jax.train.state import TrainState

BATCH_KEYS = ("image", "target", "target_weight")
# With on-device augmentation (data.device_augment): what efafnet_jax.data.region sends.
DEVICE_BATCH_KEYS = ("source", "to_source", "joints", "visibility")


def _where(keep_new, new, old):
    return jax.tree_util.tree_map(lambda n, o: jnp.where(keep_new, n, o), new, old)


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
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=_where(finite, params, state.params),
        opt_state=_where(finite, opt_state, state.opt_state),
        batch_stats=_where(finite, batch_stats, state.batch_stats),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step), "finite": finite}
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
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    keys = BATCH_KEYS if prepare is None else DEVICE_BATCH_KEYS

    def step(state, batch):
        if prepare is not None:
            batch = prepare(batch)
        return train_step(state, batch, model=model, train=train, schedule=schedule)

    return jax.jit(
        step,
        in_shardings=(state_sharding, {k: batch_sharding for k in keys}),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
