"""Where the float32 gradient gap between convolution forms and device counts comes from.

    python benchmarks/float32_relu_flip.py [--json]

Train-mode gradients of the tiny `sbn` network (64x64, batch 16) in four float32
setups (model.conv_impl "cpu_gemm" or "xla", on 1 or 8 CPU devices) against the same
network in float64. For each setup it prints the worst relative gradient error and the
number of ReLU inputs after the head's last BatchNorm whose sign differs from float64's.
A setup off by ~7e-3 is one whose float32 rounding put a near-zero ReLU input on the
other side of zero (benchmarks/RESULTS.md, "The 7e-3 gradient gap"); the convolution
forms themselves agree with float64 under sharding (tests/test_kernels.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from efafnet_jax.cli import run  # noqa: E402
from efafnet_jax.config import load_config  # noqa: E402
from efafnet_jax.models import create_model  # noqa: E402
from efafnet_jax.sharding import batch_sharded, data_mesh  # noqa: E402

LAST_NORM = "deconv_layers_7"  # the head's last BatchNorm: its output goes through a ReLU


def tiny_model_config(conv_impl: str, dtype: str):
    model = load_config("tiny:sbn,64x64").model
    model.conv_impl = conv_impl
    model.dtype = model.param_dtype = dtype
    return model


def gradients_and_last_norm(conv_impl: str, dtype: str, devices: int, images, variables32):
    """(gradient leaves, the last BatchNorm's output) of mean(out^2) in train mode."""
    model = create_model(tiny_model_config(conv_impl, dtype))
    variables = jax.tree_util.tree_map(lambda v: np.asarray(v).astype(dtype), variables32)

    def loss(params, batch):
        (out, updates) = model.apply(
            {**variables, "params": params},
            batch,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda module, _: module.name == LAST_NORM,
        )
        (normed,) = jax.tree_util.tree_leaves(updates["intermediates"])
        return jnp.mean(out**2), normed

    mesh = data_mesh(jax.devices()[:devices])
    batch = jax.device_put(images, batch_sharded(mesh))
    grads, normed = jax.jit(jax.grad(loss, has_aux=True))(variables["params"], batch)
    leaves = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(grads)]
    return leaves, np.asarray(normed, np.float64)


def main(argv) -> None:
    del argv
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    variables = create_model(tiny_model_config("xla", "float32")).init(
        jax.random.key(0), jnp.asarray(images[:1])
    )
    with jax.enable_x64(True):
        truth, truth_normed = gradients_and_last_norm("xla", "float64", 1, images, variables)
        rows = []
        for conv_impl in ("cpu_gemm", "xla"):
            for devices in (1, 8):
                grads, normed = gradients_and_last_norm(
                    conv_impl, "float32", devices, images, variables
                )
                error = max(
                    float(np.abs(g - t).max() / max(np.abs(t).max(), 1e-300))
                    for g, t in zip(grads, truth, strict=True)
                )
                flips = int(((normed > 0) != (truth_normed > 0)).sum())
                rows.append(
                    {
                        "conv_impl": conv_impl,
                        "devices": devices,
                        "grad_rel_err_vs_float64": error,
                        "relu_sign_flips_vs_float64": flips,
                    }
                )
    print(f"{'conv_impl':<10}{'devices':>8}{'grad err vs f64':>18}{'ReLU flips':>12}")
    for row in rows:
        print(
            f"{row['conv_impl']:<10}{row['devices']:>8}"
            f"{row['grad_rel_err_vs_float64']:>18.2e}{row['relu_sign_flips_vs_float64']:>12}"
        )
    if flags.FLAGS.json:
        print(json.dumps({"setups": rows}))


if __name__ == "__main__":
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    run(main)
