"""Two processes on localhost (jax.distributed, gloo CPU collectives) train and evaluate
like one, in float64, to 1e-9."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import pytest
from conftest import FLOAT64_SAME_RUN, REPO, largest_relative_difference

from efafnet_jax.data.synthetic import generate
from efafnet_jax.weights import latest_checkpoint, restore_variables


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # 19 training persons: a multiple of neither 2 nor 3 (nor of the global batch of 8);
    # 11 validation persons.
    return root, generate(str(root), train=8, val=5, seed=3)


def _train_args(generated, workdir, *extra: str) -> list[str]:
    root, paths = generated
    return [
        "train.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        "--workdir",
        str(workdir),
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        "--config.data.val_ann=",
        "--config.train.batch_size=8",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
        # float64 (with JAX_ENABLE_X64): one and two processes reduce in different
        # orders, which costs ~1e-15 here instead of float32's ~1e-7 that Adam amplifies.
        "--config.train.compute_dtype=float64",
        "--config.model.param_dtype=float64",
        *extra,
    ]


def _env(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_X64="1",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        **extra,
    )
    return env


def _run_one(args: list[str], python_code: str | None = None) -> str:
    """One process with 4 devices; its stderr. `python_code` runs instead of train.py."""
    command = [sys.executable, *(["-c", python_code] if python_code else []), *args]
    proc = subprocess.run(
        command, cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _run_processes(args_of_rank: list[list[str]]) -> list[tuple[str, str]]:
    """One process per entry on localhost, 2 devices each; (stdout, stderr) by rank."""
    count, address = len(args_of_rank), f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=_env(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(count),
                JAX_PROCESS_ID=str(rank),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, args in enumerate(args_of_rank)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for rank, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {rank}:\n{err[-3000:]}"
    return outputs


def _run_two(args_of_rank: list[list[str]]) -> list[str]:
    """Two train.py processes; their stderr, by rank."""
    errors = [err for _, err in _run_processes(args_of_rank)]
    for rank, err in enumerate(errors):
        assert f"process {rank} of 2, 2 of 4 devices" in err
    return errors


def _final_variables(workdir) -> tuple[str, dict]:
    """(step, variables) of the run's latest checkpoint."""
    with jax.enable_x64(True):
        path = latest_checkpoint(str(workdir))
        return os.path.basename(path), restore_variables(path)


def test_validation_in_two_processes_trains_and_picks_the_best_like_one(generated, tmp_path):
    """Validation after each of 2 epochs: every process reaches the collective save of
    the best state (process 0 alone would hang there), and both runs pick one step."""
    root, paths = generated
    validation = [
        f"--config.data.val_ann={paths['val']}",
        f"--config.data.val_images={root / 'images' / 'val'}",
        "--config.data.val_detections=",
        "--config.train.epochs=2",
        "--config.train.eval_every_epochs=1",
        "--config.eval.batch_size=4",
        "--config.eval.workers=0",
    ]
    _run_one(_train_args(generated, tmp_path / "one", *validation))
    _run_two([_train_args(generated, tmp_path / "two", *validation)] * 2)
    best = [json.loads((tmp_path / run / "best.json").read_text()) for run in ("one", "two")]
    assert best[1] == best[0]
    for run in ("one", "two"):
        assert restore_variables(str(tmp_path / run / "best"))["params"]
    (step_one, one), (step_two, two) = (_final_variables(tmp_path / r) for r in ("one", "two"))
    assert step_one == step_two == "4"  # 2 epochs of 19 // 8 steps
    assert largest_relative_difference(one, two) < FLOAT64_SAME_RUN


# Resumes train.py with the optimiser state of the checkpoint replaced by a fresh one.
RESUME_WITHOUT_OPTIMISER_STATE = """
import runpy, sys
from efafnet_jax.train import checkpoint
restore = checkpoint.restore_latest
checkpoint.restore_latest = lambda ckpt, fresh: restore(ckpt, fresh).replace(
    opt_state=fresh.opt_state
)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(generated, tmp_path):
    schedule = ["--config.train.epochs=4", "--config.train.stop_check_every_steps=2"]
    _run_one(_train_args(generated, tmp_path / "straight", *schedule))
    # Only process 1 is signalled, after step 3; the processes agree at step 4.
    stopped = _run_two(
        [
            _train_args(generated, tmp_path / "two", *schedule),
            _train_args(
                generated, tmp_path / "two", *schedule, "--config.train.sigterm_self_at_step=3"
            ),
        ]
    )
    for err in stopped:
        assert "SIGTERM: saved step 4; exiting" in err
    assert _final_variables(tmp_path / "two")[0] == "4"
    shutil.copytree(tmp_path / "two", tmp_path / "control")
    _run_two([_train_args(generated, tmp_path / "two", *schedule)] * 2)
    (steps, straight), (steps_two, resumed) = (
        _final_variables(tmp_path / run) for run in ("straight", "two")
    )
    assert steps == steps_two == "8"
    assert largest_relative_difference(straight, resumed) < FLOAT64_SAME_RUN
    # The control: the same comparison fails when the resume loses the optimiser state.
    _run_one(
        _train_args(generated, tmp_path / "control", *schedule),
        python_code=RESUME_WITHOUT_OPTIMISER_STATE,
    )
    _, control = _final_variables(tmp_path / "control")
    assert largest_relative_difference(straight, control) > 1e3 * FLOAT64_SAME_RUN


def _eval_args(root, paths, out, batch_per_process: int) -> list[str]:
    return [
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


@pytest.fixture(scope="module")
def one_process_eval(tmp_path_factory):
    """eval.py in one process (4 devices) on 11 persons: (data root, paths, results dir, JSON)."""
    root = tmp_path_factory.mktemp("eval")
    # 11 persons: a multiple of neither the process count nor the global batch (4 or
    # 6), so the hosts decode different numbers of real rows.
    paths = generate(str(root / "data"), train=1, val=5, seed=3)
    single = subprocess.run(
        [sys.executable, *_eval_args(root / "data", paths, root / "one", 4)],
        cwd=REPO,
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert ": 11 persons" in single.stdout
    return root / "data", paths, root / "one", json.loads(single.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("processes", [2, 3])
def test_eval_in_several_processes_writes_what_one_process_writes(
    one_process_eval, tmp_path, processes
):
    root, paths, one_out, one_metrics = one_process_eval
    outputs = _run_processes([_eval_args(root, paths, tmp_path / "many", 2)] * processes)
    assert json.loads(outputs[0][0].strip().splitlines()[-1]) == one_metrics
    for name in ("val_keypoints.json", "val_metrics.json"):
        one = json.loads((one_out / "results" / name).read_text())
        many = json.loads((tmp_path / "many" / "results" / name).read_text())
        assert many == one, name
