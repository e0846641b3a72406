"""Parameter count and true multiply-adds / FLOPs of one config's network.

python -m efafnet_jax.models.summary --config coco:sbn,r50,256x192 [--json]
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.models.efafnet import create_model
from efafnet_jax.models.model_cost import count_macs, count_params


def abstract_variables(model, crop_hw: tuple[int, int]):
    """Variables of `model` as ShapeDtypeStructs (nothing is allocated)."""
    images = jax.ShapeDtypeStruct((1, *crop_hw, 3), jnp.uint8)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def summarize(config: ml_collections.ConfigDict) -> dict:
    """params (trainable), macs and flops (= 2 * macs) of one sample.

    Counted on the stock convolutions ("xla"): the definition's multiply-adds,
    whichever form `config.model.conv_impl` would run.
    """
    model_config = config.model.copy_and_resolve_references()
    model_config.conv_impl = "xla"
    model = create_model(model_config)
    height, width = config.data.crop_hw
    variables = abstract_variables(model, (height, width))
    images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.uint8)
    macs = count_macs(lambda v, x: model.apply(v, x, train=False), variables, images)
    parts = {name: count_params(tree) for name, tree in variables["params"].items()}
    return {
        "config": config.name,
        "params": count_params(variables["params"]),
        "macs": macs,
        "flops": 2 * macs,
        "params_by_part": parts,
        "input": [height, width],
    }


def main(argv):
    del argv
    result = summarize(flags.FLAGS.config)
    print(f"config      {result['config']}")
    print(f"input       {result['input'][0]}x{result['input'][1]}")
    for name, count in result["params_by_part"].items():
        print(f"  {name:<12}{count:>14,d}")
    print(f"params      {result['params']:>14,d}")
    print(f"multiply-adds {result['macs'] / 1e9:10.3f} G per sample")
    print(f"FLOPs       {result['flops'] / 1e9:12.3f} G per sample (2 x multiply-adds)")
    if flags.FLAGS.json:
        print(json.dumps({k: result[k] for k in ("config", "params", "macs", "flops")}))


def cli() -> None:
    """The efafnet-summary console script."""
    define_common_flags()
    run(main)


if __name__ == "__main__":
    cli()
