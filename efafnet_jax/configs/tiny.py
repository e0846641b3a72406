"""Tiny widths for tests: `tiny:VARIANT,HxW` (COCO's 17 joints).

Same graph as the full configs (every module, every switch), with one block per
stage and narrow layers so that a forward and backward pass take milliseconds.
Default: efafnet,128x96.
"""

from efafnet_jax.config import build_config


def get_config(spec=None):
    config = build_config("coco", num_joints=17, spec=spec, default_size=(128, 96))
    model = config.model
    model.stage_blocks = (1, 1, 1, 1)
    model.stem_width = 8
    model.width = 8
    model.deconv.channels = 16
    model.fsm.reduction = 4
    config.name = "tiny_" + config.name
    return config
