"""Serialise the inference function with jax.export: uint8 crops in, heatmaps out.

    python -m efafnet_jax.inference.export --config coco:efafnet,r50,256x192 \
        (--workdir W | --checkpoint DIR | --torch-checkpoint FILE) --out model.jaxexport \
        [--noflip_test]

The weights are baked in and the batch size is symbolic, so the file runs with
`efafnet_jax.inference.serving.load_exported` (jax alone, no model code) on any batch of
[B, H, W, 3] uint8 RGB crops made with the training crop convention.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags
from etils import epath
from jax import export

from efafnet_jax.cli import define_common_flags, define_weight_flags, run, weights_from_flags
from efafnet_jax.data.codec import dark_kernel_size, flip_test_shift
from efafnet_jax.data.keypoints import spec_from_config
from efafnet_jax.evaluation.heatmaps import heatmap_function
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine
from efafnet_jax.weights import load_variables

# Lowered for every platform a server may run it on (CPU tests, GPU and TPU serving).
PLATFORMS = ("cpu", "cuda", "tpu")


def export_inference(
    config: ml_collections.ConfigDict,
    variables: dict,
    flip_test: bool = True,
    platforms: tuple[str, ...] = PLATFORMS,
) -> export.Exported:
    """The jax.export of crops [b, H, W, 3] uint8 -> heatmaps [b, h, w, K] float32.

    The stock convolutions ("xla") whatever `config.model.conv_impl` says: one
    module serves every platform in `platforms`, and on GPU and TPU the CPU forms
    (GEMM + col2im) would replace the native transposed convolution.
    """
    model_config = config.model.copy_and_resolve_references()
    model_config.conv_impl = "xla"
    model = create_model(model_config)
    spec = spec_from_config(config.data)
    shift = flip_test_shift(config.eval.shift_heatmap, config.data.udp)
    heatmaps = heatmap_function(model, spec, config.data.sigma, flip_test, shift)
    height, width = config.data.crop_hw
    (batch,) = export.symbolic_shape("b")
    crops = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8)
    return export.export(jax.jit(lambda images: heatmaps(variables, images)), platforms=platforms)(
        crops
    )


def main(argv):
    del argv
    f = flags.FLAGS
    choice = weights_from_flags()  # bad flags are refused before a backend starts
    config = for_this_machine(f.config)
    weights = load_variables(create_model(config.model), config, choice)
    exported = export_inference(config, weights.variables, f.flip_test)
    blob = exported.serialize()
    epath.Path(f.out).write_bytes(blob)
    summary = {
        "out": f.out,
        "checkpoint": weights.source,
        "step": weights.step,
        "bytes": len(blob),
        "input": str(exported.in_avals[0]),
        "output": str(exported.out_avals[0]),
        "platforms": list(exported.platforms),
        # What a caller must match: the crop geometry and decoding the model expects.
        "codec": {
            "udp": bool(config.data.udp),
            "decoder": config.eval.decoder,
            "sigma": config.data.sigma,
            "dark_kernel": dark_kernel_size(config.data.sigma, config.eval.dark_kernel),
            "flip_shift": flip_test_shift(config.eval.shift_heatmap, config.data.udp),
        },
    }
    print(f"exported {summary['input']} -> {summary['output']} to {f.out} ({len(blob)} bytes)")
    if f.json:
        print(json.dumps(summary))


def cli() -> None:
    """The efafnet-export console script."""
    define_common_flags()
    define_weight_flags()
    flags.DEFINE_string("out", None, "The file to write (a path or gs:// URL).")
    flags.DEFINE_bool("flip_test", True, "Include the flip test in the exported function.")
    flags.mark_flag_as_required("out")
    run(main, config_from_workdir=True)


if __name__ == "__main__":
    cli()
