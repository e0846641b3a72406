"""Quickstart: a small EFAFNet (all four modules) on the generated dataset.

`efafnet-train` generates the dataset under <workdir>/data on first use, trains in
minutes on a few CPU cores, and reports keypoint AP on the generated val split with GT
boxes. Departures from the paper's recipe, each measured (benchmarks/RESULTS.md):
the spatial-softmax loss (MSE reached AP 0.27 in the same time: it first learns
all-zero maps), narrower augmentation (HRNet's rotation factor 20 for COCO's 40,
scale factor 0.25 for 0.3: a short run on a val split drawn like train), a 3x3 final
layer over the fused maps, and a higher learning rate.
"""

import ml_collections

from efafnet_jax.config import build_config


def get_config(spec=None):
    config = build_config("coco", num_joints=17, spec=spec or "efafnet", default_size=(128, 96))
    config.name = "quickstart"
    m = config.model
    m.stage_blocks = (1, 1, 1, 1)
    m.stem_width = 8
    m.width = 16
    m.fsm.reduction = 4
    m.duc.kernel = 1
    m.final_kernel = 3
    d = config.data
    d.generated = True
    d.generated_spec = ml_collections.ConfigDict(dict(train=2000, val=200, seed=0))
    d.sigma = 2.0
    d.augment.rotation_factor = 20.0
    d.augment.scale_factor = 0.25
    t = config.train
    t.batch_size = 64
    t.epochs = 15.0
    t.learning_rate = 3e-3
    t.decay_epochs = (12, 14)
    t.loss = "spatial_softmax"  # the quickstart's alternative to the paper's MSE/OHKM
    m.heatmap_activation = "spatial_softmax"  # what that loss trains the outputs to be
    t.log_every_steps = 20
    t.checkpoint_every_steps = 200
    t.eval_every_epochs = 0  # the final evaluation only
    t.workers = 1
    config.eval.batch_size = 64
    config.eval.workers = 0
    return config
