"""Two processes on localhost (jax.distributed, gloo CPU collectives) train like one."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
from conftest import REPO

from efafnet_jax.data.synthetic import generate
from efafnet_jax.weights import latest_checkpoint, restore_variables


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_args(root, paths, workdir):
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        "--workdir",
        str(workdir),
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        "--config.data.val_ann=",
        "--config.train.batch_size=8",
        # One epoch: within an epoch any number of processes reads the same samples
        # (records are interleaved over processes; epoch boundaries fall where the
        # record count divides, which differs by process count).
        "--config.train.epochs=1",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
    ]


def _env(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        **extra,
    )
    return env


def test_two_processes_on_localhost_match_one_process(tmp_path):
    root = tmp_path / "data"
    paths = generate(str(root), train=12, val=2, seed=3)
    single = subprocess.run(
        _train_args(root, paths, tmp_path / "one"),
        cwd=REPO,
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            _train_args(root, paths, tmp_path / "two"),
            cwd=REPO,
            env=_env(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(rank),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for rank, proc in enumerate(procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"process {rank}:\n{err[-3000:]}"
        assert f"process {rank} of 2, 2 of 4 devices" in err

    one = restore_variables(latest_checkpoint(str(tmp_path / "one")))
    two = restore_variables(latest_checkpoint(str(tmp_path / "two")))
    steps = os.path.basename(latest_checkpoint(str(tmp_path / "one")))
    assert int(steps) >= 2
    assert os.path.basename(latest_checkpoint(str(tmp_path / "two"))) == steps
    leaves_one, leaves_two = jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)
    assert len(leaves_one) == len(leaves_two)
    for a, b in zip(leaves_one, leaves_two, strict=True):
        scale = max(float(np.max(np.abs(a))), 1e-2)  # floor: near-zero tensors (biases)
        # Adam divides by sqrt(v): reduction-order differences in near-zero gradients grow.
        assert float(np.max(np.abs(a - b))) / scale < 1e-3
