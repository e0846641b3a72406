"""The JAX train step against the PyTorch reference's, same run, same device.

    python benchmarks/train_step.py --config coco:sbn,r50,256x192 \
        --batch 8 --dtype float32 [--peak-tflops X] [--torch-compile] [--json]

Same config, weights, batch, dtype and device on both sides; the steps are
timed in alternating rounds after a warm-up, and the figures are medians.
PyTorch runs eager with channels_last (AMP autocast for bfloat16), Adam, and the
config's loss; JAX runs `efafnet_jax.train.step` (normalisation on device, Adam,
donated state). MFU = img/s x 3 x forward FLOPs (true count) / peak.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
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
from efafnet_jax.interop.torch_reference import torch_model  # noqa: E402
from efafnet_jax.models import create_model  # noqa: E402
from efafnet_jax.platform import for_this_machine  # noqa: E402
from efafnet_jax.sharding import data_mesh, global_batch, replicated  # noqa: E402
from efafnet_jax.train.optim import learning_rate_schedule, make_optimizer  # noqa: E402
from efafnet_jax.train.state import TrainState  # noqa: E402
from efafnet_jax.train.step import BATCH_KEYS, make_train_step  # noqa: E402
from efafnet_jax.weights import initial_variables  # noqa: E402


def jax_runner(config, batch: dict, variables: dict):
    """A no-argument function that runs one JAX train step and waits for it."""
    model = create_model(config.model)
    schedule = learning_rate_schedule(config.train, 1000, config.train.batch_size)
    mesh = data_mesh()
    state_sharding = replicated(mesh)
    state = jax.device_put(
        TrainState.create(variables, make_optimizer(config.train, schedule)), state_sharding
    )
    step = make_train_step(
        model,
        config.train,
        schedule,
        mesh,
        jax.tree_util.tree_map(lambda _: state_sharding, state),
    )
    arrays = {k: global_batch(mesh, batch[k]) for k in BATCH_KEYS}
    holder = {"state": state}

    def run_once():
        holder["state"], metrics = step(holder["state"], arrays)
        jax.block_until_ready(metrics["loss"])

    return run_once


def torch_loss(pred, target, weight, kind: str, top_k: int):
    """SimpleBaseline's JointsMSELoss / OHKM on NCHW maps, as efafnet_jax.train.losses."""
    diff = (pred - target) * weight[:, :, None, None]
    per_joint = 0.5 * diff.pow(2).mean(dim=(2, 3))  # [B, K]
    if kind == "ohkm":
        return per_joint.topk(top_k, dim=1).values.mean()
    return per_joint.mean()


def torch_runner(config, batch: dict, variables: dict, dtype: str, compile_model: bool):
    """A no-argument function that runs one PyTorch train step and waits for it."""
    device = torch_device(torch)
    model = torch_model(variables, config.model)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    forward = torch.compile(model) if compile_model else model
    mean = torch.tensor(config.model.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.model.std, device=device).view(1, 3, 1, 1) * 255.0
    images = torch.from_numpy(batch["image"]).to(device).permute(0, 3, 1, 2)
    target = torch.from_numpy(batch["target"]).to(device).permute(0, 3, 1, 2).contiguous()
    weight = torch.from_numpy(batch["target_weight"]).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    train = config.train

    def run_once():
        x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with autocast:
            out = forward(x)
        loss = torch_loss(out.float(), target, weight, train.loss, train.ohkm_top_k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch_synchronize(torch)

    return run_once


def benchmark(
    config,
    batch_size: int,
    dtype: str,
    steps: int,
    rounds: int,
    warmup: int,
    compile_model: bool = False,
    peak: float | None = None,
) -> dict:
    """img/s of both train steps, their time ratio, and MFU."""
    config = for_this_machine(config)
    config.train.batch_size = batch_size
    config.model.dtype = dtype
    variables = initial_variables(create_model(config.model), config)
    batch = random_batch(config, batch_size)
    runners = {
        "jax": jax_runner(config, batch, variables),
        "torch": torch_runner(config, batch, variables, dtype, compile_model),
    }
    for run_once in runners.values():
        for _ in range(warmup):
            run_once()
    seconds = alternate(runners, steps, rounds)
    flops_per_image = 3.0 * forward_flops(config)  # forward + backward (2x)
    peak_value, peak_source = peak_tflops(dtype, peak)
    result = {
        "config": config.name,
        "batch": batch_size,
        "dtype": dtype,
        "jax_img_s": batch_size / seconds["jax"],
        "torch_img_s": batch_size / seconds["torch"],
        "jax_step_ms": 1e3 * seconds["jax"],
        "torch_step_ms": 1e3 * seconds["torch"],
        "time_ratio_jax_over_torch": seconds["jax"] / seconds["torch"],
        "train_flops_per_image": flops_per_image,
        "peak_tflops": peak_value,
        "peak_source": peak_source,
        "torch_compile": compile_model,
        **run_facts(),
    }
    result["mfu"] = result["jax_img_s"] * flops_per_image / (peak_value * 1e12)
    result["torch_mfu"] = result["torch_img_s"] * flops_per_image / (peak_value * 1e12)
    return result


def print_table(result: dict, unit: str) -> None:
    print(f"{result['config']}  batch {result['batch']}  {result['dtype']}  on {result['device']}")
    print(f"{'':8}{unit:>12}{'ms/step':>10}{'MFU':>8}")
    for side in ("jax", "torch"):
        print(
            f"{side:8}{result[f'{side}_img_s']:12.1f}{result[f'{side}_step_ms']:10.1f}"
            f"{100 * result['mfu' if side == 'jax' else 'torch_mfu']:7.2f}%"
        )
    print(
        f"time ratio JAX / PyTorch: {result['time_ratio_jax_over_torch']:.3f}"
        f"  (peak {result['peak_tflops']:.1f} TFLOP/s: {result['peak_source']})"
    )


def main(argv):
    del argv
    f = flags.FLAGS
    result = benchmark(
        f.config, f.batch, f.dtype, f.steps, f.rounds, f.warmup, f.torch_compile, f.peak_tflops
    )
    print_table(result, "img/s")
    if f.json:
        print(json.dumps(result))


if __name__ == "__main__":
    define_common_flags(default_config="coco:sbn,r50,256x192")
    define_benchmark_flags(default_batch=8, unit="Images")
    run(main)
