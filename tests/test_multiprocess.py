"""Two processes on localhost (jax.distributed, gloo CPU collectives) train and evaluate
like one."""

import json
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


def _train_args(root, paths, workdir, *extra: str):
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        "--workdir",
        str(workdir),
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        "--config.train.batch_size=8",
        # One epoch: within an epoch any number of processes reads the same samples
        # (records are interleaved over processes; epoch boundaries fall where the
        # record count divides, which differs by process count).
        "--config.train.epochs=1",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
        *extra,
    ]


def _env(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        **extra,
    )
    return env


def _run_one_and_two(tmp_path, root, paths, *extra: str) -> None:
    """Trains in one process (4 devices) into <tmp>/one and in two (2 each) into <tmp>/two."""
    single = subprocess.run(
        _train_args(root, paths, tmp_path / "one", *extra),
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
            _train_args(root, paths, tmp_path / "two", *extra),
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


def _assert_same_final_parameters(tmp_path) -> None:
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


def test_two_processes_on_localhost_match_one_process(tmp_path):
    root = tmp_path / "data"
    paths = generate(str(root), train=12, val=2, seed=3)
    _run_one_and_two(tmp_path, root, paths, "--config.data.val_ann=")
    _assert_same_final_parameters(tmp_path)


def test_validation_in_two_processes_saves_the_same_best_state(tmp_path):
    """Validation after each of 2 epochs: every process reaches the collective save of
    the best state (process 0 alone would hang there), and both runs pick one step."""
    root = tmp_path / "data"
    # 20 persons: an even count, so one and two processes read the same samples in
    # every epoch (with an odd count they part at the first epoch boundary).
    paths = generate(str(root), train=9, val=2, seed=3)
    _run_one_and_two(
        tmp_path,
        root,
        paths,
        f"--config.data.val_ann={paths['val']}",
        f"--config.data.val_images={root / 'images' / 'val'}",
        "--config.data.val_detections=",
        "--config.train.epochs=2",
        "--config.train.eval_every_epochs=1",
        "--config.eval.batch_size=4",
        "--config.eval.workers=0",
    )
    best = [json.loads((tmp_path / run / "best.json").read_text()) for run in ("one", "two")]
    assert best[1]["step"] == best[0]["step"] and best[1]["AP"] == best[0]["AP"]
    for run in ("one", "two"):
        assert restore_variables(str(tmp_path / run / "best"))["params"]
    _assert_same_final_parameters(tmp_path)


def _eval_args(root, paths, out, batch_per_process: int) -> list[str]:
    return [
        sys.executable,
        "eval.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        f"--config.data.val_ann={paths['val']}",
        f"--config.data.val_images={root / 'images' / 'val'}",
        "--config.data.val_detections=",
        f"--config.eval.batch_size={batch_per_process}",
        "--config.eval.workers=0",
        # float64: the one- and two-process programs round alike, so random-weight
        # heatmaps (near-ties everywhere) decode to the same pixels.
        "--config.model.dtype=float64",
        "--config.model.param_dtype=float64",
        "--out",
        str(out),
        "--json",
    ]


def test_eval_in_two_processes_writes_what_one_process_writes(tmp_path):
    root = tmp_path / "data"
    # 11 persons: a multiple of neither the process count (2) nor the global batch (4),
    # so the hosts decode different numbers of real rows.
    paths = generate(str(root), train=1, val=5, seed=3)
    # The same global batch of 4 and one crop per device in both runs.
    single = subprocess.run(
        _eval_args(root, paths, tmp_path / "one", 4),
        cwd=REPO,
        env=_env(4, JAX_ENABLE_X64="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert ": 11 persons" in single.stdout
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            _eval_args(root, paths, tmp_path / "two", 2),
            cwd=REPO,
            env=_env(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(rank),
                JAX_ENABLE_X64="1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for rank, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {rank}:\n{err[-3000:]}"
    metrics_two = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert metrics_two == json.loads(single.stdout.strip().splitlines()[-1])
    for name in ("val_keypoints.json", "val_metrics.json"):
        one = json.loads((tmp_path / "one" / "results" / name).read_text())
        two = json.loads((tmp_path / "two" / "results" / name).read_text())
        assert two == one, name
