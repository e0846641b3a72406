"""Model variables from an orbax checkpoint, a training workdir, a PyTorch state_dict,
or a fresh initialisation."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections

from efafnet_jax.train.checkpoint import CHECKPOINT_DIR


def initial_variables(model, config: ml_collections.ConfigDict, seed: int = 0) -> dict:
    """Freshly initialised variables of `model` for the config's crop size.

    model.init runs as one jitted program: eagerly it dispatches several hundred small
    op programs (about 2.5x the time on CPU for the tiny model). XLA may fuse the
    initialisers' arithmetic, so the bits differ from eager init by float32 rounding
    (the distributions are the same; tests/test_models.py compares them).
    """
    height, width = config.data.crop_hw
    images = jnp.zeros((1, height, width, 3), jnp.uint8)
    return jax.jit(model.init)(jax.random.key(seed), images)


def latest_checkpoint(workdir: str) -> str | None:
    """<workdir>/checkpoints/<largest step>, or None."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    return os.path.join(folder, str(max(steps))) if steps else None


def restore_variables(path: str) -> dict:
    """{'params', 'batch_stats'} from an orbax checkpoint (a step folder or its 'state')."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        path = os.path.join(path, "state")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpointer = ocp.StandardCheckpointer()
    # Restore onto this process's first device whatever mesh wrote it (another device
    # or process count included): a target built from the metadata, not its shardings.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    tree = checkpointer.restore(path, target)
    if "params" not in tree:
        raise ValueError(f"checkpoint {path} holds no 'params' (keys: {sorted(tree)})")
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}


def load_variables(
    model,
    config: ml_collections.ConfigDict,
    *,
    checkpoint: str | None = None,
    workdir: str | None = None,
    torch_checkpoint: str | None = None,
) -> dict:
    """The first given of: checkpoint, workdir's latest, torch_checkpoint; else random init."""
    if checkpoint:
        return restore_variables(checkpoint)
    if workdir and latest_checkpoint(workdir):
        return restore_variables(latest_checkpoint(workdir))
    if torch_checkpoint:
        from efafnet_jax.interop.convert import load_torch_checkpoint, state_dict_to_flax
        from efafnet_jax.models.summary import abstract_variables

        # Every variable comes from the state_dict (the conversion is strict), so the
        # template needs shapes and dtypes only: nothing is initialised.
        template = abstract_variables(model, tuple(config.data.crop_hw))
        variables, _ = state_dict_to_flax(load_torch_checkpoint(torch_checkpoint), template)
        return variables
    logging.warning("no checkpoint given: evaluating randomly initialised weights")
    return initial_variables(model, config)
