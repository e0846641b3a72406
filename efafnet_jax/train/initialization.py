"""Initial weights from `config.init`: an ImageNet backbone or a pose checkpoint."""

from __future__ import annotations

import logging

import jax
import ml_collections

from efafnet_jax.models import create_model
from efafnet_jax.weights import initial_variables, restore_variables

HEAD_MODULES = ("final_layer", "duc", "deconv", "aux_conv2")


def initial_variables_from_config(config: ml_collections.ConfigDict) -> dict | None:
    """None (the loop initialises) unless config.init names weights to start from."""
    init = config.init
    if not init.torch_backbone and not init.checkpoint:
        return None
    model = create_model(config.model)
    variables = initial_variables(model, config, config.seed)
    if init.torch_backbone:
        from efafnet_jax.interop.convert import load_torch_checkpoint, state_dict_to_flax

        variables, report = state_dict_to_flax(
            load_torch_checkpoint(init.torch_backbone),
            variables,
            backbone_only=True,
            partial=init.partial,
        )
        logging.info("backbone from %s:\n%s", init.torch_backbone, report.table())
    if init.checkpoint:
        restored = restore_variables(init.checkpoint)
        for collection in ("params", "batch_stats"):
            for name, tree in restored[collection].items():
                if init.reinit_head and name in HEAD_MODULES:
                    continue  # a new keypoint set: the head starts afresh
                fresh = variables[collection].get(name)
                shapes = jax.tree_util.tree_map(lambda x: x.shape, tree)
                if fresh is not None and shapes != jax.tree_util.tree_map(lambda x: x.shape, fresh):
                    raise ValueError(
                        f"init.checkpoint: {collection}/{name} does not fit this "
                        "model (set init.reinit_head for a new keypoint set)"
                    )
                variables[collection][name] = tree
    return variables
