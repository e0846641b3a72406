"""The loop: exact resume, SIGTERM, the non-finite stop."""

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    CONFIG_DIR,
    FLOAT64_SAME_RUN,
    REPO,
    largest_relative_difference,
    load_test_config,
)

from efafnet_jax.data.synthetic import generate
from efafnet_jax.train import loop
from efafnet_jax.train.loop import NonFiniteError, train_and_evaluate
from efafnet_jax.weights import latest_checkpoint, restore_variables


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, generate(str(root), train=8, val=2, seed=2)


def _config(generated, steps_per_run_epochs):
    root, paths = generated
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:efafnet,64x64")
    d, t = config.data, config.train
    d.train_ann, d.train_images = paths["train"], str(root / "images" / "train")
    d.val_ann = ""
    t.batch_size, t.epochs, t.workers = 8, steps_per_run_epochs, 0
    t.log_every_steps, t.checkpoint_every_steps, t.eval_every_epochs = 1, 1000, 0
    return config


def _epoch_steps(config):
    from efafnet_jax.data.splits import read_split

    return len(read_split(config.data, "train")[0]) // config.train.batch_size


def test_interrupted_and_resumed_run_equals_a_straight_run(generated, tmp_path):
    config = _config(generated, 1.0)
    epoch = _epoch_steps(config)
    total, first = 2 * epoch + 1, epoch + 1  # the interruption falls mid-epoch
    config.train.epochs = total / epoch
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    assert straight["steps"] == total
    config.train.epochs = first / epoch
    assert train_and_evaluate(config, str(tmp_path / "resumed"))["steps"] == first
    config.train.epochs = total / epoch
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["steps"] == total
    a = restore_variables(latest_checkpoint(str(tmp_path / "straight")))
    b = restore_variables(latest_checkpoint(str(tmp_path / "resumed")))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "straight" / "metrics.jsonl").is_file()
    assert any(
        p.name.startswith("events") for p in (tmp_path / "straight" / "tensorboard").iterdir()
    )


def test_too_many_non_finite_updates_stop_with_a_message(generated, tmp_path):
    config = _config(generated, 3.0)
    config.train.learning_rate = 1e30  # the first update blows the loss up
    config.train.max_nonfinite = 2
    with pytest.raises(NonFiniteError, match="2 non-finite losses in a row"):
        train_and_evaluate(config, str(tmp_path))


def _train_py_args(generated, workdir, epochs: float, *extra: str) -> list[str]:
    """`python train.py` on the generated split with the tiny model (validation at the end)."""
    root, paths = generated
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        "--workdir",
        str(workdir),
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        f"--config.data.val_ann={paths['val']}",
        f"--config.data.val_images={root / 'images' / 'val'}",
        "--config.data.val_detections=",
        "--config.train.batch_size=8",
        f"--config.train.epochs={epochs!r}",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
        *extra,
    ]


def _run_train_py(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _trained_steps(stderr: str) -> list[int]:
    """The steps that the run's progress lines report (one per step at log_every_steps=1)."""
    return [int(m) for m in re.findall(r"^step (\d+)/", stderr, flags=re.MULTILINE)]


def _checkpoint_files(workdir) -> dict[str, str]:
    """Every file under <workdir>/checkpoints with a digest of its bytes."""
    root = workdir / "checkpoints"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sigterm_saves_a_checkpoint_that_resumes(generated, tmp_path):
    epoch = _epoch_steps(_config(generated, 1.0))
    stopped = _run_train_py(
        _train_py_args(generated, tmp_path, 50.0, "--config.train.sigterm_self_at_step=3")
    )
    assert "SIGTERM: saved step 3" in stopped.stderr
    assert _trained_steps(stopped.stderr) == [1, 2, 3]
    assert os.path.basename(latest_checkpoint(str(tmp_path))) == "3"
    saved = _checkpoint_files(tmp_path)
    # The resumed schedule ends exactly at the saved step: nothing to train or save,
    # and the end-of-run evaluation still runs.
    at_end = _run_train_py(_train_py_args(generated, tmp_path, 3 / epoch))
    assert "resumed from step 3" in at_end.stderr
    assert _trained_steps(at_end.stderr) == []
    assert json.loads(at_end.stdout.splitlines()[-1])["steps"] == 3
    assert "AP" in json.loads(at_end.stdout.splitlines()[-1])
    assert _checkpoint_files(tmp_path) == saved
    # A schedule one step longer trains exactly that step.
    longer = _run_train_py(_train_py_args(generated, tmp_path, 4 / epoch))
    assert _trained_steps(longer.stderr) == [4]
    assert os.path.basename(latest_checkpoint(str(tmp_path))) == "4"


def test_running_a_finished_run_again_trains_nothing_and_keeps_its_checkpoints(generated, tmp_path):
    args = _train_py_args(generated, tmp_path, 2.0)
    first = _run_train_py(args)
    epoch = _epoch_steps(_config(generated, 1.0))
    assert _trained_steps(first.stderr) == list(range(1, 2 * epoch + 1))
    saved = _checkpoint_files(tmp_path)
    again = _run_train_py(args)
    assert f"resumed from step {2 * epoch}" in again.stderr
    assert _trained_steps(again.stderr) == []
    assert _checkpoint_files(tmp_path) == saved
    # The end-of-run work is done again on the same weights: the same metrics.
    summary_first = json.loads(first.stdout.splitlines()[-1])
    summary_again = json.loads(again.stdout.splitlines()[-1])
    for summary in (summary_first, summary_again):
        summary.pop("wall_s")
    assert summary_again == summary_first
    assert "AP" in summary_again


def test_checkpoint_restores_on_a_different_number_of_devices(generated, tmp_path, monkeypatch):
    import efafnet_jax.train.loop as loop
    from efafnet_jax.sharding import data_mesh
    from efafnet_jax.train import checkpoint

    config = _config(generated, 1.0)
    config.train.compute_dtype = config.model.param_dtype = "float64"
    epoch = _epoch_steps(config)
    with jax.enable_x64(True):
        config.train.epochs = 2.0
        straight = train_and_evaluate(config, str(tmp_path / "straight"))  # 8 devices
        config.train.epochs = 1.0
        train_and_evaluate(config, str(tmp_path / "moved"))  # 8 devices, then 2
        train_and_evaluate(config, str(tmp_path / "control"))
        monkeypatch.setattr(loop, "data_mesh", lambda: data_mesh(jax.devices()[:2]))
        config.train.epochs = 2.0
        moved = train_and_evaluate(config, str(tmp_path / "moved"))
        # The control resumes with the optimiser state reset: the comparison must see it.
        restore = checkpoint.restore_latest
        monkeypatch.setattr(
            loop.checkpoint,
            "restore_latest",
            lambda ckpt, fresh: restore(ckpt, fresh).replace(opt_state=fresh.opt_state),
        )
        train_and_evaluate(config, str(tmp_path / "control"))
        a, b, c = (
            restore_variables(latest_checkpoint(str(tmp_path / run)))
            for run in ("straight", "moved", "control")
        )
    assert straight["steps"] == moved["steps"] == 2 * epoch
    assert largest_relative_difference(a, b) < FLOAT64_SAME_RUN
    assert largest_relative_difference(a, c) > 1e3 * FLOAT64_SAME_RUN


def _scripted_steps(runs: list[int], max_nonfinite: int, log_every: int):
    """run_steps over a stand-in step whose non-finite run length follows `runs`."""
    plan = loop.LoopPlan(
        total_steps=len(runs),
        log_every=log_every,
        checkpoint_every=1000,
        max_nonfinite=max_nonfinite,
    )
    logged = []
    loop.run_steps(
        jnp.int32(0),
        0,
        iter([{"run": r} for r in runs]),
        lambda batch: {"run": jnp.int32(batch["run"])},
        lambda state, batch: (state + 1, {"nonfinite_in_a_row": batch["run"]}),
        plan,
        on_log=lambda step, metrics: logged.append(step),
    )
    return logged


def test_a_non_finite_run_between_log_steps_still_stops_the_run():
    # Three skipped updates in a row at steps 2-4, then finite ones: the counter reads 0
    # at the log step, but the longest run since the last read is 3.
    with pytest.raises(NonFiniteError, match="3 non-finite losses in a row by step 10"):
        _scripted_steps([0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0], max_nonfinite=3, log_every=10)
    assert _scripted_steps([0, 1, 2, 0, 1, 2, 0, 0, 0, 0], max_nonfinite=3, log_every=10) == [10]


def test_steps_between_log_steps_read_nothing_from_the_device(generated, monkeypatch):
    """20 steady-state steps, logs every 10: the host reads device values at steps 20 and
    30 only; in between it dispatches steps without waiting for any."""
    from jax._src.array import ArrayImpl

    from efafnet_jax.data.image_store import image_store
    from efafnet_jax.data.pipeline import build_pipeline
    from efafnet_jax.data.splits import read_split, sample_config
    from efafnet_jax.models import create_model
    from efafnet_jax.sharding import data_mesh, global_batch
    from efafnet_jax.weights import initial_variables

    config = _config(generated, 1.0)
    records, _, spec = read_split(config.data, "train")
    model, mesh = create_model(config.model), data_mesh()
    variables = initial_variables(model, config, 0)
    state, step_fn, keys = loop.training_program(config, model, mesh, spec, 10, variables)
    pipeline = iter(
        build_pipeline(
            records,
            spec,
            sample_config(config.data),
            image_store(config.data.train_images),
            batch_size=config.train.batch_size,
            train=True,
            num_epochs=2,
        )
    )
    host_batches = itertools.cycle([next(pipeline), next(pipeline)])
    steps_dispatched, reads = [0], []

    def counted_step(state, batch):
        steps_dispatched[0] += 1
        return step_fn(state, batch)

    def run(start: int, end: int):
        nonlocal state
        plan = loop.LoopPlan(total_steps=end, log_every=10, checkpoint_every=1000)
        logged = []
        state, _, _ = loop.run_steps(
            state,
            start,
            host_batches,
            lambda batch: {k: global_batch(mesh, batch[k]) for k in keys},
            counted_step,
            plan,
            on_log=lambda step, metrics: logged.append(step),
        )
        return logged

    assert run(0, 10) == [10]  # compiles: not steady state
    # Every way Python reads a jax.Array into host memory (int(), float(), bool(),
    # .item(), tolist, device_get, __array__) goes through these two, and is counted at
    # the step last dispatched. (numpy's buffer protocol on CPU arrays does not: the loop
    # uses none of it.)
    value, to_numpy = ArrayImpl._value, ArrayImpl.__array__

    def counted_value(array):
        reads.append(steps_dispatched[0])
        return value.fget(array)

    def counted_to_numpy(array, *args, **kwargs):
        reads.append(steps_dispatched[0])
        return to_numpy(array, *args, **kwargs)

    monkeypatch.setattr(ArrayImpl, "_value", property(counted_value))
    monkeypatch.setattr(ArrayImpl, "__array__", counted_to_numpy)
    assert run(10, 30) == [20, 30]
    assert steps_dispatched[0] == 30
    assert sorted(set(reads)) == [20, 30]
