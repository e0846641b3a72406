"""Inference crops/s, with and without the flip test: JAX against the PyTorch reference.

    python benchmarks/inference.py --config coco:efafnet,r50,256x192 \
        --batch 64 --dtype bfloat16 [--peak-tflops X] [--torch-compile] [--json]

Both sides take uint8 NHWC crops on the device and return heatmaps: JAX through
the evaluator's jitted heatmap function (normalisation, flip test and flip-back
on device), PyTorch in eval mode under `torch.inference_mode`, channels_last,
autocast for bfloat16. Alternating rounds after a warm-up; medians.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.common import (  # noqa: E402
    alternate,
    define_benchmark_flags,
    forward_flops,
    peak_tflops,
    random_batch,
    run_facts,
    torch_device,
    torch_synchronize,
)
from efafnet_jax.cli import define_common_flags, run  # noqa: E402
from efafnet_jax.data.keypoints import spec_from_config  # noqa: E402
from efafnet_jax.evaluation.heatmaps import make_heatmap_fn  # noqa: E402
from efafnet_jax.interop.torch_reference import torch_model  # noqa: E402
from efafnet_jax.models import create_model  # noqa: E402
from efafnet_jax.platform import for_this_machine  # noqa: E402
from efafnet_jax.sharding import data_mesh, global_batch  # noqa: E402
from efafnet_jax.weights import initial_variables  # noqa: E402


def jax_runner(config, images: np.ndarray, variables: dict, flip_test: bool):
    model = create_model(config.model)
    mesh = data_mesh()
    spec = spec_from_config(config.data)
    heatmaps = make_heatmap_fn(model, spec, config.data.sigma, flip_test, True, mesh)
    crops = global_batch(mesh, images)
    variables = jax.device_put(variables)

    def run_once():
        jax.block_until_ready(heatmaps(variables, crops))

    return run_once


def torch_runner(
    config, images: np.ndarray, variables: dict, dtype: str, flip_test: bool, compile_model: bool
):
    device = torch_device(torch)
    model = torch_model(variables, config.model)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    forward = torch.compile(model) if compile_model else model
    mean = torch.tensor(config.model.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.model.std, device=device).view(1, 3, 1, 1) * 255.0
    crops = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
    perm = torch.from_numpy(spec_from_config(config.data).flip_permutation()).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def run_once():
        with torch.inference_mode(), autocast:
            x = ((crops.float() - mean) / std).contiguous(memory_format=torch.channels_last)
            out = forward(x)
            if flip_test:  # HRNet: mirrored input, flip back, swap pairs, shift one pixel
                flipped = forward(x.flip(3)).flip(3)[:, perm]
                flipped[..., 1:] = flipped[..., :-1].clone()
                out = (out + flipped) * 0.5
            out.float()
        torch_synchronize(torch)

    return run_once


def benchmark(
    config,
    batch: int,
    dtype: str,
    steps: int,
    rounds: int,
    warmup: int,
    compile_model: bool = False,
    peak: float | None = None,
) -> dict:
    """crops/s of both sides, with and without the flip test."""
    config = for_this_machine(config)
    config.model.dtype = dtype
    variables = initial_variables(create_model(config.model), config)
    images = random_batch(config, batch)["image"]
    runners = {}
    for flip in (False, True):
        tag = "flip" if flip else "noflip"
        runners[f"jax_{tag}"] = jax_runner(config, images, variables, flip)
        runners[f"torch_{tag}"] = torch_runner(
            config, images, variables, dtype, flip, compile_model
        )
    for run_once in runners.values():
        for _ in range(warmup):
            run_once()
    seconds = alternate(runners, steps, rounds)
    peak_value, peak_source = peak_tflops(dtype, peak)
    flops = forward_flops(config)
    result = {
        "config": config.name,
        "batch": batch,
        "dtype": dtype,
        **run_facts(),
        "peak_tflops": peak_value,
        "peak_source": peak_source,
        "torch_compile": compile_model,
    }
    for name, value in seconds.items():
        result[f"{name}_crops_s"] = batch / value
    result["jax_crops_s"] = result["jax_flip_crops_s"]
    result["torch_crops_s"] = result["torch_flip_crops_s"]
    result["time_ratio_jax_over_torch"] = seconds["jax_flip"] / seconds["torch_flip"]
    result["mfu"] = result["jax_flip_crops_s"] * 2 * flops / (peak_value * 1e12)
    return result


def main(argv):
    del argv
    f = flags.FLAGS
    result = benchmark(
        f.config, f.batch, f.dtype, f.steps, f.rounds, f.warmup, f.torch_compile, f.peak_tflops
    )
    print(f"{result['config']}  batch {result['batch']}  {result['dtype']}  on {result['device']}")
    print(f"{'crops/s':10}{'no flip':>12}{'flip test':>12}")
    for side in ("jax", "torch"):
        print(
            f"{side:10}{result[f'{side}_noflip_crops_s']:12.1f}"
            f"{result[f'{side}_flip_crops_s']:12.1f}"
        )
    print(f"time ratio JAX / PyTorch (flip test): {result['time_ratio_jax_over_torch']:.3f}")
    if f.json:
        print(json.dumps(result))


if __name__ == "__main__":
    define_common_flags(default_config="coco:sbn,r50,256x192")
    define_benchmark_flags(default_batch=32, unit="Crops")
    run(main)
