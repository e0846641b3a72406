"""The loop: exact resume, SIGTERM, the non-finite stop.

The runs here continue the session's `trained_tiny` run (its data, its config, so its
compiled train step): its checkpoint is the straight run that interrupted runs must equal.
"""

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64_SAME_RUN, REPO, largest_relative_difference

from efafnet_jax.train import loop
from efafnet_jax.train.loop import NonFiniteError, train_and_evaluate
from efafnet_jax.weights import latest_checkpoint, restore_variables


def _config(trained_tiny, epochs: float):
    """A copy of trained_tiny's config, with `epochs` of training."""
    config = trained_tiny.config.copy_and_resolve_references()
    config.train.epochs = epochs
    return config


def _epoch_steps(config):
    from efafnet_jax.data.splits import read_split

    return len(read_split(config.data, "train")[0]) // config.train.batch_size


def _assert_same_float32_run(a, b) -> None:
    """Two variable trees equal to float32 rounding."""
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_interrupted_and_resumed_run_equals_a_straight_run(trained_tiny, tmp_path, monkeypatch):
    config = _config(trained_tiny, 1.0)
    epoch = _epoch_steps(config)
    total = int(trained_tiny.config.train.epochs * epoch)  # trained_tiny's straight run
    assert os.path.basename(trained_tiny.checkpoint) == str(total)
    first = total - 1
    assert first % epoch, "the interruption falls mid-epoch"
    config.train.epochs = first / epoch
    assert train_and_evaluate(config, str(tmp_path / "resumed"))["steps"] == first
    shutil.copytree(tmp_path / "resumed", tmp_path / "replayed")
    config.train.epochs = total / epoch
    assert train_and_evaluate(config, str(tmp_path / "resumed"))["steps"] == total
    straight = restore_variables(trained_tiny.checkpoint)
    _assert_same_float32_run(straight, restore_variables(latest_checkpoint(tmp_path / "resumed")))
    # The control resumes one batch early (it trains the last batch again): the comparison
    # must see a data position that is off by one.
    build_pipeline = loop.build_pipeline
    monkeypatch.setattr(
        loop,
        "build_pipeline",
        lambda *args, start_batch, **kwargs: build_pipeline(
            *args, start_batch=start_batch - 1, **kwargs
        ),
    )
    assert train_and_evaluate(config, str(tmp_path / "replayed"))["steps"] == total
    replayed = restore_variables(latest_checkpoint(tmp_path / "replayed"))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        _assert_same_float32_run(straight, replayed)
    assert (trained_tiny.workdir / "metrics.jsonl").is_file()
    assert any(
        p.name.startswith("events") for p in (trained_tiny.workdir / "tensorboard").iterdir()
    )


def test_too_many_non_finite_updates_stop_with_a_message(trained_tiny, tmp_path):
    config = _config(trained_tiny, 2.0)
    config.train.max_nonfinite, config.train.log_every_steps = 2, 1
    variables = restore_variables(trained_tiny.checkpoint)
    # NaN weights make every loss non-finite (a learning rate that blows the loss up would
    # do the same at the price of compiling another train step).
    nan_params = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), variables["params"])
    with pytest.raises(NonFiniteError, match="2 non-finite losses in a row"):
        train_and_evaluate(config, str(tmp_path), {**variables, "params": nan_params})


def _train_py_args(trained_tiny, workdir, epochs: float, *extra: str) -> list[str]:
    """`python train.py` on trained_tiny's data with its model (validation at the end)."""
    return [
        sys.executable,
        "train.py",
        "--config",
        trained_tiny.spec,
        "--workdir",
        str(workdir),
        *trained_tiny.data_flags(),
        # The train step that trained_tiny compiled (the XLA cache has it); the CPU
        # convolution forms would be another program, and resuming does not depend on them.
        "--config.model.conv_impl=xla",
        "--config.train.batch_size=8",
        f"--config.train.epochs={epochs!r}",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
        "--config.eval.workers=0",
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
    """The steps that the run's progress lines report (one per step at log_every_steps=1;
    stderr is no terminal, so efafnet_jax.progress writes plain lines 'train: N/TOTAL',
    the first of them the step the run starts from)."""
    return [int(m) for m in re.findall(r"^train: (\d+)/", stderr, flags=re.MULTILINE)][1:]


def _checkpoint_files(workdir) -> dict[str, str]:
    """Every file under <workdir>/checkpoints with a digest of its bytes."""
    root = workdir / "checkpoints"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes_and_a_finished_run_trains_nothing_again(
    trained_tiny, tmp_path
):
    epoch = _epoch_steps(trained_tiny.config)
    stopped = _run_train_py(
        _train_py_args(trained_tiny, tmp_path, 50.0, "--config.train.sigterm_self_at_step=3")
    )
    assert "SIGTERM: saved step 3" in stopped.stderr
    assert _trained_steps(stopped.stderr) == [1, 2, 3]
    assert os.path.basename(latest_checkpoint(str(tmp_path))) == "3"
    # A schedule one step longer than the saved step trains exactly that step.
    args = _train_py_args(trained_tiny, tmp_path, 4 / epoch)
    finished = _run_train_py(args)
    assert "resumed from step 3" in finished.stderr
    assert _trained_steps(finished.stderr) == [4]
    assert os.path.basename(latest_checkpoint(str(tmp_path))) == "4"
    saved = _checkpoint_files(tmp_path)
    # Run again, the finished run resumes at its schedule's last step: nothing to train or
    # save, and the end-of-run work is done again on the same weights: the same metrics.
    again = _run_train_py(args)
    assert "resumed from step 4" in again.stderr
    assert _trained_steps(again.stderr) == []
    assert _checkpoint_files(tmp_path) == saved
    summary_finished = json.loads(finished.stdout.splitlines()[-1])
    summary_again = json.loads(again.stdout.splitlines()[-1])
    for summary in (summary_finished, summary_again):
        summary.pop("wall_s")
    assert summary_again == summary_finished
    assert summary_again["steps"] == 4 and "AP" in summary_again


@pytest.mark.slow
def test_checkpoint_restores_on_a_different_number_of_devices(trained_tiny, tmp_path, monkeypatch):
    """One step on 8 devices, the next on 2, against both on 8 (float64: the device counts
    reduce in different orders)."""
    from efafnet_jax.sharding import data_mesh
    from efafnet_jax.train import checkpoint

    config = _config(trained_tiny, 1.0)
    config.train.compute_dtype = config.model.param_dtype = "float64"
    epoch = _epoch_steps(config)
    with jax.enable_x64(True):
        # trained_tiny's weights as the start: nothing to initialise (or compile for it).
        # A copy for each run: a run donates its state's buffers.
        def start():
            variables = restore_variables(trained_tiny.checkpoint)
            return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), variables)

        straight = train_and_evaluate(config, str(tmp_path / "straight"), start())  # 8 devices
        config.train.epochs = 1 / epoch
        train_and_evaluate(config, str(tmp_path / "moved"), start())  # 8 devices, then 2
        shutil.copytree(tmp_path / "moved", tmp_path / "control")
        monkeypatch.setattr(loop, "data_mesh", lambda: data_mesh(jax.devices()[:2]))
        config.train.epochs = 1.0
        moved = train_and_evaluate(config, str(tmp_path / "moved"))
        # The control resumes with the optimiser state reset: the comparison must see it.
        restore = checkpoint.restore_latest

        def restore_without_optimiser_state(ckpt, abstract_state):
            state = restore(ckpt, abstract_state)
            return state.replace(opt_state=state.tx.init(state.params))

        monkeypatch.setattr(loop.checkpoint, "restore_latest", restore_without_optimiser_state)
        train_and_evaluate(config, str(tmp_path / "control"))
        a, b, c = (
            restore_variables(latest_checkpoint(str(tmp_path / run)))
            for run in ("straight", "moved", "control")
        )
    assert straight["steps"] == moved["steps"] == epoch >= 2
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


@pytest.mark.slow
def test_steps_between_log_steps_read_nothing_from_the_device(trained_tiny, monkeypatch):
    """Steady-state steps 2-6, logs and stop-flag gathers every 3: the host reads device
    values at steps 3 and 6 only; in between it dispatches steps without waiting for any.
    Then reads of every counted kind, planted at step 7, are all seen there."""
    from jax._src.array import ArrayImpl
    from jax.experimental import multihost_utils

    from efafnet_jax.data.image_store import image_store
    from efafnet_jax.data.pipeline import build_pipeline
    from efafnet_jax.data.splits import read_split, sample_config
    from efafnet_jax.models import create_model
    from efafnet_jax.sharding import data_mesh, global_batch

    config = _config(trained_tiny, 1.0)
    records, _, spec = read_split(config.data, "train")
    model, mesh = create_model(config.model), data_mesh()
    variables = restore_variables(trained_tiny.checkpoint)
    epoch = _epoch_steps(config)
    state, step_fn, keys = loop.training_program(config, model, mesh, spec, epoch, variables)
    pipeline = iter(
        build_pipeline(
            records,
            spec,
            sample_config(config.data),
            image_store(config.data.train_images),
            batch_size=config.train.batch_size,
            train=True,
        )
    )
    host_batches = itertools.cycle([next(pipeline), next(pipeline)])
    every = 3  # steps between logs and between stop-flag gathers
    # The stop flag as several processes agree on it (an all-gather every `every` steps);
    # the gather itself runs this one process's flag.
    with monkeypatch.context() as several_processes:
        several_processes.setattr(jax, "process_count", lambda: 2)
        stop_after = loop.agreed_stop(loop._Stop(), check_every=every)
    steps_dispatched, reads, planted = [0], [], {}

    def counted_step(state, batch):
        steps_dispatched[0] += 1
        state, metrics = step_fn(state, batch)
        if steps_dispatched[0] in planted:
            planted[steps_dispatched[0]](state, metrics)
        return state, metrics

    def run(start: int, end: int):
        nonlocal state
        plan = loop.LoopPlan(total_steps=end, log_every=every, checkpoint_every=1000)
        logged = []
        state, _, _ = loop.run_steps(
            state,
            start,
            host_batches,
            lambda batch: {k: global_batch(mesh, batch[k]) for k in keys},
            counted_step,
            plan,
            on_log=lambda step, metrics: logged.append(step),
            stop_after=stop_after,
        )
        return logged

    assert run(0, 1) == [1]  # compiles: not steady state
    # Every way Python reads a jax.Array into host memory (int(), float(), bool(), .item(),
    # tolist, device_get, __array__) goes through `value` or `array`, and waiting for one
    # through `block` or `block_all`; the gather is a collective every process waits at.
    # Each is counted, by kind, at the step last dispatched. (numpy's buffer protocol on
    # CPU arrays is not counted: the loop uses none of it.)
    readers = {
        "value": (ArrayImpl, "_value"),  # a property
        "array": (ArrayImpl, "__array__"),
        "block": (ArrayImpl, "block_until_ready"),
        "block_all": (jax, "block_until_ready"),
        "gather": (multihost_utils, "process_allgather"),
    }
    for kind, (owner, name) in readers.items():
        original = getattr(owner, name)
        is_property = isinstance(original, property)

        def counted_read(*args, kind=kind, read=original.fget if is_property else original, **kw):
            reads.append((steps_dispatched[0], kind))
            return read(*args, **kw)

        monkeypatch.setattr(owner, name, property(counted_read) if is_property else counted_read)
    assert run(1, 6) == [3, 6]
    assert steps_dispatched[0] == 6
    assert {step for step, _ in reads} == {3, 6}
    # The control: a read of every kind planted between log steps is seen at its step.
    planted[7] = lambda state, metrics: (
        float(metrics["loss"]),
        jax.device_get(metrics),
        jax.block_until_ready(state),
        state.step.block_until_ready(),
        stop_after(9),
    )
    reads.clear()
    assert run(6, 9) == [9]
    assert {step for step, _ in reads} == {7, 9}
    assert {kind for step, kind in reads if step == 7} == set(readers)
