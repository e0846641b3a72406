"""Several processes on localhost (jax.distributed, gloo CPU collectives) train, validate,
stop, resume and evaluate like one, in float64, to FLOAT64_SAME_RUN.

Each run starts once per module: a straight one-process run (the reference); a
two-process run that resumes its step-2 checkpoint, validates, saves the best state and is
stopped by a SIGTERM to one process, with its workdir in a bucket (gs://, a GCS API on
localhost); that run resumed in one process to the end (and,
beside it, the control without the optimiser state); eval.py in one and in two processes,
each process initialising the weights.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import uuid

import jax
import pytest
from conftest import FLOAT64_SAME_RUN, GCS_TEST_BUCKET, REPO, largest_relative_difference
from etils import epath
from gcs_emulator import copy_tree

from efafnet_jax.data.synthetic import generate
from efafnet_jax.weights import latest_checkpoint, restore_variables

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

SPEC = "tiny:efafnet,64x64"
# 19 training persons at a global batch of 8: 2 steps per epoch; 3 epochs.
FINAL_STEP = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_flags(tmp_path_factory) -> list[str]:
    """The --config.data.* flags of one generated dataset: 19 training persons (a multiple
    of neither 2 nor the global batch of 8) and 11 validation persons (a multiple of
    neither the process count nor any global eval batch, so the hosts decode different
    numbers of real rows)."""
    root = tmp_path_factory.mktemp("data")
    paths = generate(str(root), train=8, val=5, seed=3)
    return [
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        f"--config.data.val_ann={paths['val']}",
        f"--config.data.val_images={root / 'images' / 'val'}",
        "--config.data.val_detections=",
    ]


def _train_args(data_flags: list[str], workdir, *extra: str) -> list[str]:
    """train.py with validation after every epoch and a checkpoint every 2 steps (all 3
    kept), so that every run of the chain can be compared at the steps it shares."""
    return [
        "train.py",
        "--config",
        SPEC,
        "--workdir",
        str(workdir),
        *data_flags,
        "--config.train.batch_size=8",
        "--config.train.epochs=3",
        "--config.train.workers=0",
        "--config.train.log_every_steps=2",
        "--config.train.checkpoint_every_steps=2",
        "--config.train.eval_every_epochs=1",
        "--config.train.stop_check_every_steps=2",
        "--config.eval.batch_size=4",
        "--config.eval.workers=0",
        # float64 (with JAX_ENABLE_X64): one and two processes reduce in different
        # orders, which costs ~1e-15 here instead of float32's ~1e-7 that Adam amplifies.
        "--config.train.compute_dtype=float64",
        "--config.model.param_dtype=float64",
        *extra,
    ]


def _env(devices: int, **extra: str) -> dict:
    # The JAX_* variables of the test process are left out, its compilation cache with
    # them: processes of one run that read one cache start at different speeds, and gloo
    # gives up on a peer 30 s late.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_X64="1",
        # Like-for-like float64 comparisons: the optimisation passes would only cost
        # compile time (2-3x).
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        **extra,
    )
    return env


def _one_process(args: list[str], python_code: str | None = None) -> tuple[list[str], dict]:
    """(command, environment) of one process with 4 devices; `python_code` runs with `args`."""
    return [sys.executable, *(["-c", python_code] if python_code else []), *args], _env(4)


def _process_group(
    args_of_rank: list[list[str]], extra_env: dict[str, str]
) -> list[tuple[list[str], dict]]:
    """(command, environment) of one jax.distributed process per entry, 2 devices each."""
    count, address = len(args_of_rank), f"localhost:{_free_port()}"
    return [
        (
            [sys.executable, *args],
            _env(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(count),
                JAX_PROCESS_ID=str(rank),
                **extra_env,
            ),
        )
        for rank, args in enumerate(args_of_rank)
    ]


def _run_together(commands: list[tuple[list[str], dict]]) -> list[tuple[str, str]]:
    """Starts the commands at once in the repository; (stdout, stderr) of each, all exit 0.

    The output goes to files: a process blocked on a full pipe would stall its peers at
    the next collective.
    """
    with contextlib.ExitStack() as stack:
        logs = [
            [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in ("stdout", "stderr")]
            for _ in commands
        ]
        procs = [
            subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
            for (command, env), (out, err) in zip(commands, logs, strict=True)
        ]
        try:
            for proc in procs:
                proc.wait(timeout=600)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        for log in (f for pair in logs for f in pair):
            log.seek(0)
        outputs = [(out.read(), err.read()) for out, err in logs]
    for i, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {i}:\n{err[-3000:]}"
    return outputs


def _variables(path) -> dict:
    """The float64 variables of a checkpoint (a step folder or the best state)."""
    with jax.enable_x64(True):
        return restore_variables(str(path))


def _final_variables(workdir) -> tuple[int, dict]:
    """(step, variables) of the run's latest checkpoint."""
    path = latest_checkpoint(str(workdir))
    return int(os.path.basename(path)), _variables(path)


def _validations(workdir) -> dict[int, dict]:
    """Step -> the validation metrics that metrics.jsonl holds for it."""
    found = {}
    for line in epath.Path(workdir, "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        metrics = {k: v for k, v in entry.items() if k.startswith("val/")}
        if metrics:
            found[entry["step"]] = metrics
    return found


def _eval_args(data_flags: list[str], out, batch_per_process: int) -> list[str]:
    """eval.py on random weights: every process initialises them itself."""
    return [
        "eval.py",
        "--config",
        SPEC,
        "--random_init",
        *data_flags,
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
def one_process(tmp_path_factory, data_flags):
    """The references in one process (4 devices), started at once (neither waits on the
    other; each keeps a core busy): the straight training run, steps 1-6 without a
    break, and eval.py on random weights at a global batch of 4. (straight workdir,
    eval's output folder, eval's stdout)."""
    root = tmp_path_factory.mktemp("one_process")
    straight, evaluated = root / "straight", root / "eval"
    [(_, err), (printed, _)] = _run_together(
        [
            _one_process(_train_args(data_flags, straight)),
            _one_process(_eval_args(data_flags, evaluated, 4)),
        ]
    )
    assert "process 0 of 1, 4 of 4 devices" in err
    assert ": 11 persons" in printed
    return straight, evaluated, printed


@pytest.fixture(scope="module")
def straight(one_process):
    """The reference training run's workdir."""
    return one_process[0]


@pytest.fixture(scope="module")
def two_processes(gcs_environment, data_flags, straight):
    """Two processes resume the straight run's step-2 checkpoint (written by one process),
    validate at step 4 with no best score recorded, and stop: process 1 alone gets
    SIGTERM, after step 3. Their workdir is a gs:// URL (a GCS API on localhost): as on a
    pod, every process writes its part of each checkpoint to the bucket. (workdir, stderr
    by rank)."""
    workdir = epath.Path(f"gs://{GCS_TEST_BUCKET}/two_processes-{uuid.uuid4().hex[:8]}")
    copy_tree(straight / "checkpoints" / "2", workdir / "checkpoints" / "2")
    args = _train_args(data_flags, workdir)
    signalled = [*args, "--config.train.sigterm_self_at_step=3"]
    outputs = _run_together(_process_group([args, signalled], gcs_environment))
    return workdir, [err for _, err in outputs]


# Resumes train.py with the optimiser state of the checkpoint replaced by a fresh one
# (built like the restored state: replicated on the run's mesh).
RESUME_WITHOUT_OPTIMISER_STATE = """
import runpy, sys
import jax
from efafnet_jax.train import checkpoint
restore = checkpoint.restore_latest

def restore_without_optimiser_state(ckpt, abstract):
    state = restore(ckpt, abstract)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, abstract.opt_state)
    return state.replace(opt_state=jax.jit(state.tx.init, out_shardings=shardings)(state.params))

checkpoint.restore_latest = restore_without_optimiser_state
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, data_flags, two_processes):
    """The stopped two-process run resumed to the end in one process (4 devices), another
    process count, and at the same time (as in `one_process`) the control: the same resume
    with a fresh optimiser state. (resumed workdir, its stderr, control workdir)."""
    stopped, _ = two_processes
    root = tmp_path_factory.mktemp("resumed")
    workdir, control = root / "resumed", root / "control"
    for copy in (workdir, control):
        copy_tree(stopped, copy)  # from the bucket: what the two processes wrote there
    [(_, err), _] = _run_together(
        [
            _one_process(_train_args(data_flags, workdir)),
            # Without validation, which reads the state and never changes it: the control
            # differs from the resume in the optimiser state alone, and compiles less.
            _one_process(
                _train_args(data_flags, control, "--config.data.val_ann="),
                python_code=RESUME_WITHOUT_OPTIMISER_STATE,
            ),
        ]
    )
    return workdir, err, control


def test_sigterm_to_one_of_two_processes_stops_both_at_the_agreed_step(two_processes, straight):
    """Process 1, signalled after step 3, stops with process 0 at the agreed step 4 (one
    process would stop at once), and steps 3-4 in two processes train like one."""
    workdir, errors = two_processes
    for rank, err in enumerate(errors):
        assert f"process {rank} of 2, 2 of 4 devices" in err
        assert "resumed from step 2" in err
        assert "SIGTERM: saved step 4; exiting" in err
    step, variables = _final_variables(workdir)
    assert step == 4
    reference = _variables(straight / "checkpoints" / "4")
    assert largest_relative_difference(reference, variables) < FLOAT64_SAME_RUN


def test_validation_in_two_processes_scores_and_saves_the_best_state_like_one(
    two_processes, straight
):
    """The two-process validation at step 4 scores what the straight run scored there;
    with no score recorded it improves, so every process reaches the collective save of
    the best state (process 0 alone would hang there), which holds the step-4 weights."""
    workdir, _ = two_processes
    scores = _validations(straight)
    assert _validations(workdir) == {4: scores[4]}
    best = json.loads((workdir / "best.json").read_text())
    assert best == {"step": 4, "AP": scores[4]["val/AP"]}
    reference = _variables(straight / "checkpoints" / "4")
    assert largest_relative_difference(reference, _variables(workdir / "best")) < FLOAT64_SAME_RUN


def test_two_process_run_resumed_in_one_process_ends_like_the_straight_run(resumed, straight):
    """The resume on another process count ends with the straight run's variables and
    keeps the best state by the score the two processes recorded: step 6 replaces it only
    if it scores above step 4. (This tiny model scores AP 0 at every validation, so the
    best stays step 4; a resume that forgot the recorded score would save step 6.)"""
    workdir, err, _ = resumed
    assert "process 0 of 1, 4 of 4 devices" in err
    assert "resumed from step 4" in err
    step, variables = _final_variables(workdir)
    _, reference = _final_variables(straight)
    assert step == FINAL_STEP
    assert largest_relative_difference(reference, variables) < FLOAT64_SAME_RUN
    validations = _validations(straight)
    assert _validations(workdir) == {step: validations[step] for step in (4, FINAL_STEP)}
    scores = {step: metrics["val/AP"] for step, metrics in validations.items()}
    best_step = FINAL_STEP if scores[FINAL_STEP] > scores[4] else 4
    best = json.loads((workdir / "best.json").read_text())
    assert best == {"step": best_step, "AP": scores[best_step]}
    best_reference = _variables(straight / "checkpoints" / str(best_step))
    best_variables = _variables(workdir / "best")
    assert largest_relative_difference(best_reference, best_variables) < FLOAT64_SAME_RUN


def test_resume_without_the_optimiser_state_misses_the_straight_run(resumed, straight):
    """The control: the comparison above fails when the resume loses the optimiser state."""
    _, _, control = resumed
    step, variables = _final_variables(control)
    _, reference = _final_variables(straight)
    assert step == FINAL_STEP
    assert largest_relative_difference(reference, variables) > 1e3 * FLOAT64_SAME_RUN


def test_eval_in_two_processes_writes_what_one_process_writes(data_flags, one_process, tmp_path):
    """eval.py in two processes (2 per process: the same global batch of 4) writes the
    keypoints and metrics that one process does. Each process initialises the weights: the
    two-process training run resumes, so here two processes must initialise alike.

    With 11 persons, host 0 decodes 6 real rows and host 1 five and a padding row: the
    unequal shares that the gather must undo. Three processes (which the file ran once)
    prove nothing more: the shards are strided by the process count and gathered in
    process order whatever the count, and their shares are as unequal (4, 4, 3).
    """
    _, one, printed_by_one = one_process
    args = _eval_args(data_flags, tmp_path, 2)
    [(printed, _), _] = _run_together(_process_group([args, args], {}))
    assert ": 11 persons" in printed
    last_line = [json.loads(out.strip().splitlines()[-1]) for out in (printed, printed_by_one)]
    assert last_line[0] == last_line[1]
    for name in ("val_keypoints.json", "val_metrics.json"):
        many = json.loads((tmp_path / "results" / name).read_text())
        assert many == json.loads((one / "results" / name).read_text()), name
