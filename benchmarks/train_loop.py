"""The training loop's own cost: the loop against its jitted step alone.

    python benchmarks/train_loop.py --config tiny:efafnet,64x64 [--steps 20] [--json]

`loop_img_s`: `efafnet_jax.train.loop.run_steps`, the code train.py runs, fed
from an in-memory iterator of pre-built host batches, with no checkpoint or
validation (one log step, the last). The input pipeline is thereby left out;
what remains is the loop's own cost: host-to-device copies, device reads,
Python. `step_img_s`: the same jitted step called back to back on batches
already on the device. Both are timed in alternating rounds after a warm-up;
the figures are medians. `loop_over_step` = loop_img_s / step_img_s.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.common import random_batch, run_facts  # noqa: E402
from efafnet_jax.cli import define_common_flags, run  # noqa: E402
from efafnet_jax.data.keypoints import spec_from_config  # noqa: E402
from efafnet_jax.models import create_model  # noqa: E402
from efafnet_jax.platform import for_this_machine  # noqa: E402
from efafnet_jax.sharding import data_mesh, global_batch  # noqa: E402
from efafnet_jax.train.loop import LoopPlan, run_steps, training_program  # noqa: E402
from efafnet_jax.weights import initial_variables  # noqa: E402


def benchmark(config, steps: int, rounds: int, distinct_batches: int = 4) -> dict:
    """Images per second of the loop and of its step, medians over `rounds`."""
    config = for_this_machine(config)
    config.model.dtype = config.train.compute_dtype
    model, mesh = create_model(config.model), data_mesh()
    batch_size = config.train.batch_size
    state, step_fn, keys = training_program(
        config,
        model,
        mesh,
        spec_from_config(config.data),
        epoch_steps=1000,
        variables=initial_variables(model, config, config.seed),
    )
    host = [random_batch(config, batch_size, seed) for seed in range(distinct_batches)]
    host_batches = itertools.cycle(host)

    def put(batch: dict) -> dict:
        return {k: global_batch(mesh, batch[k]) for k in keys}

    resident = [put(batch) for batch in host]
    step = 0

    def time_loop() -> float:
        nonlocal state, step
        plan = LoopPlan(total_steps=step + steps, log_every=steps, checkpoint_every=10**9)
        start = time.perf_counter()
        state, step, _ = run_steps(
            state, step, host_batches, put, step_fn, plan, on_log=lambda step, metrics: None
        )
        return time.perf_counter() - start

    def time_step() -> float:
        nonlocal state, step
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = step_fn(state, resident[i % len(resident)])
        jax.block_until_ready((state, metrics))
        step += steps
        return time.perf_counter() - start

    time_loop(), time_step()  # compile and warm up both
    loop_s, step_s = [], []
    for _ in range(rounds):
        loop_s.append(time_loop())
        step_s.append(time_step())
    loop_img_s = steps * batch_size / statistics.median(loop_s)
    step_img_s = steps * batch_size / statistics.median(step_s)
    return {
        "loop_img_s": loop_img_s,
        "step_img_s": step_img_s,
        "loop_over_step": loop_img_s / step_img_s,
        "batch": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "devices": jax.device_count(),
        "config": config.name,
        **run_facts(),
    }


def main(argv):
    del argv
    f = flags.FLAGS
    config = f.config
    if f.batch:
        config.train.batch_size = f.batch
    result = benchmark(config, f.steps, f.rounds)
    print(
        f"loop {result['loop_img_s']:.1f} img/s  step alone {result['step_img_s']:.1f} img/s"
        f"  loop/step {result['loop_over_step']:.3f}  (batch {result['batch']},"
        f" {result['devices']} devices, {result['device']})"
    )
    if f.json:
        print(json.dumps(result))


if __name__ == "__main__":
    define_common_flags(default_config="tiny:efafnet,64x64")
    flags.DEFINE_integer("batch", 0, "Global batch (default: the config's train.batch_size).")
    flags.DEFINE_integer("steps", 20, "Steps per timed round.")
    flags.DEFINE_integer("rounds", 5, "Alternating rounds; medians are reported.")
    run(main)
