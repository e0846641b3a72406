"""The training loop: sharded steps, checkpoints that resume exactly, logs, validation.

Built for many hosts: every process calls every collective (saves, validation,
the preemption agreement) at the same steps, and the host reads the device only
at log, checkpoint and validation steps, so the device is never idle waiting
for the host in between (the next batches are already on it).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from efafnet_jax.data.device_warp import device_batch
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.pipeline import HostShard, build_pipeline, steps_per_epoch
from efafnet_jax.data.splits import (
    check_split_paths,
    has_split,
    read_split,
    sample_config,
    split_images,
)
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables
from efafnet_jax.sharding import data_mesh, global_batch, prefetched, replicated
from efafnet_jax.train import checkpoint
from efafnet_jax.train.metrics_log import MetricsLog, validation_score
from efafnet_jax.train.optim import learning_rate_schedule, make_optimizer
from efafnet_jax.train.state import TrainState
from efafnet_jax.train.step import BATCH_KEYS, DEVICE_BATCH_KEYS, make_train_step
from efafnet_jax.weights import initial_variables


class NonFiniteError(RuntimeError):
    """Too many non-finite updates in a row."""


@dataclasses.dataclass
class _Stop:
    """Set by SIGTERM: save at the next agreed step boundary and leave."""

    requested: bool = False

    def __call__(self, signum, frame):
        del signum, frame
        self.requested = True


def agreed_stop(stop: _Stop, check_every: int) -> Callable[[int], bool]:
    """Step -> whether every process stops after it.

    One process: its own flag, at every step (no device read). Several: a SIGTERM
    reaches hosts at different steps, so the flags are all-gathered every
    `check_every` steps, the same steps on every process, and all stop together if
    any was signalled. The gather is a collective that every process reaches.
    """
    if jax.process_count() == 1:
        return lambda step: stop.requested

    def any_process_stopped(step: int) -> bool:
        if step % check_every:
            return False
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.int32(stop.requested))))

    return any_process_stopped


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """At which steps the loop logs, saves and validates (steps count global batches)."""

    total_steps: int
    log_every: int
    checkpoint_every: int
    validate_every: int = 0  # 0: never
    max_nonfinite: int = 10
    sigterm_self_at_step: int = 0

    def reads_device_at(self, step: int) -> bool:
        """Whether the host reads device values after `step` (all other steps run ahead)."""
        return (
            step % self.log_every == 0
            or step % self.checkpoint_every == 0
            or (self.validate_every > 0 and step % self.validate_every == 0)
            or step == self.total_steps
        )


# The longest run of non-finite updates since the host last looked, kept on device.
_longest_run = jax.jit(jnp.maximum)


def run_steps(
    state: TrainState,
    start_step: int,
    host_batches: Iterator[dict],
    put: Callable[[dict], dict],
    step_fn: Callable,
    plan: LoopPlan,
    *,
    on_log: Callable[[int, dict], None],
    save: Callable[[TrainState], None] = lambda state: None,
    validate: Callable[[int, TrainState], None] = lambda step, state: None,
    stop_after: Callable[[int], bool] = lambda step: False,
) -> tuple[TrainState, int, bool]:
    """Steps start_step+1 .. plan.total_steps; returns (state, last step, stopped).

    `put` places a host batch on the device; it runs two batches ahead. Between
    the steps where `plan` reads the device, nothing is read back, so the host
    dispatches steps while the device runs the earlier ones. The non-finite guard
    is checked at every step that reads the device, against the longest run of
    skipped updates since the last check: it lags by less than `plan.log_every`
    steps, and always precedes a save.
    """
    batches = prefetched(host_batches, put)
    step, longest = start_step, None
    while step < plan.total_steps:
        step += 1
        state, metrics = step_fn(state, next(batches))
        run = metrics["nonfinite_in_a_row"]
        longest = run if longest is None else _longest_run(longest, run)
        if step == plan.sigterm_self_at_step:
            # Tests stop the run at a chosen step through the real signal path.
            signal.raise_signal(signal.SIGTERM)
        if plan.reads_device_at(step):
            longest, metrics = int(longest), jax.device_get(metrics)
            if longest >= plan.max_nonfinite:
                raise NonFiniteError(
                    f"{longest} non-finite losses in a row by step {step} "
                    f"(train.max_nonfinite={plan.max_nonfinite}); the last checkpoint holds "
                    "the last finite state"
                )
            longest = None
            if step % plan.log_every == 0 or step == plan.total_steps:
                on_log(step, metrics)
            if step % plan.checkpoint_every == 0:
                save(state)
            if plan.validate_every and step % plan.validate_every == 0:
                validate(step, state)
        if stop_after(step):
            save(state)
            logging.warning("SIGTERM: saved step %d; exiting", step)
            return state, step, True
    return state, step, False


def training_program(
    config: ml_collections.ConfigDict,
    model,
    mesh: Mesh,
    spec: KeypointSpec,
    epoch_steps: int,
    variables: dict,
) -> tuple[TrainState, Callable, tuple[str, ...]]:
    """(initial state on `mesh`, jitted step, the batch keys the step takes) for `config`.

    `variables` may be abstract (jax.ShapeDtypeStruct leaves, for a run that restores a
    checkpoint into it): the state is then abstract too, with the mesh's sharding.
    """
    train, samples = config.train, sample_config(config.data)
    schedule = learning_rate_schedule(train, epoch_steps, train.batch_size)
    state_sharding = replicated(mesh)
    optimizer = make_optimizer(train, schedule)
    if all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(variables)):
        state = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=state_sharding),
            jax.eval_shape(lambda v: TrainState.create(v, optimizer), variables),
        )
    else:
        state = jax.device_put(TrainState.create(variables, optimizer), state_sharding)
    prepare, keys = None, BATCH_KEYS
    if samples.device_buffer_hw is not None:
        weights = spec.joint_weights if samples.use_joint_weights else None
        prepare = functools.partial(
            device_batch,
            crop_hw=samples.crop_hw,
            heatmap_hw=samples.heatmap_hw,
            sigma=samples.sigma,
            joint_weights=weights,
            target_encoding=samples.target_encoding,
            udp=samples.udp,
        )
        keys = DEVICE_BATCH_KEYS
    step_fn = make_train_step(
        model,
        train,
        schedule,
        mesh,
        jax.tree_util.tree_map(lambda _: state_sharding, state),
        prepare,
    )
    return state, step_fn, keys


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, initial: dict | None = None
) -> dict:
    """Trains per `config`, resuming from <workdir>/checkpoints (the workdir a folder or a
    URL, gs://bucket/run); returns the final summary.

    `initial` (variables) overrides the model's initialisation (the caller loads
    config.init.* there).
    """
    maybe_initialize()
    logging.info(
        "process %d of %d, %d of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    train = config.train
    model_config = config.model.copy_and_resolve_references()
    if train.compute_dtype == "auto":
        raise ValueError(
            "train.compute_dtype='auto' is resolved by the entry points "
            "(efafnet_jax.platform.for_this_machine), not here"
        )
    model_config.dtype = train.compute_dtype
    model = create_model(model_config)
    mesh = data_mesh()
    if train.batch_size % mesh.size:
        raise ValueError(
            f"train.batch_size {train.batch_size} is not a multiple of the {mesh.size} devices"
        )
    validating = has_split(config.data, "val")
    if validating:  # the final validation must not fail after the training
        check_split_paths(config.data, "val")
    records, summary, spec = read_split(config.data, "train")
    logging.info(summary.line())
    epoch_steps = steps_per_epoch(len(records), train.batch_size)
    if epoch_steps == 0:
        raise ValueError(f"{len(records)} training persons are fewer than one batch")
    total_steps = int(train.epochs * epoch_steps)
    ckpt = checkpoint.manager(workdir, train.keep_checkpoints)
    resuming = ckpt.latest_step() is not None
    if resuming:  # the checkpoint replaces every variable: shapes suffice, nothing is initialised
        variables = abstract_variables(model, tuple(config.data.crop_hw))
    else:
        variables = initial or initial_variables(model, config, config.seed)
    state, step_fn, keys = training_program(config, model, mesh, spec, epoch_steps, variables)
    if resuming:
        state = checkpoint.restore_latest(ckpt, state)
        logging.info("resumed from step %d", int(state.step))
    start_step = int(state.step)
    samples = sample_config(config.data)
    host_batches = iter(
        build_pipeline(
            records,
            spec,
            samples,
            split_images(config.data, "train"),
            batch_size=train.batch_size // jax.process_count(),
            seed=config.seed,
            train=True,
            num_epochs=int(np.ceil(train.epochs)),
            workers=train.workers,
            shard=HostShard(jax.process_index(), jax.process_count()),
            on_bad_record=config.data.on_bad_record,
            start_batch=start_step,  # the data position is the step, for any host count
        )
    )
    stop = _Stop()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    evaluator = Evaluator(config) if validating and train.eval_every_epochs else None
    best_ap = log.best_ap()
    start_time = time.time()
    plan = LoopPlan(
        total_steps=total_steps,
        log_every=train.log_every_steps,
        checkpoint_every=train.checkpoint_every_steps,
        validate_every=int(epoch_steps * train.eval_every_epochs) if evaluator else 0,
        max_nonfinite=train.max_nonfinite,
        sigterm_self_at_step=train.sigterm_self_at_step,
    )
    if start_step >= total_steps:
        logging.info(
            "step %d is at or past the schedule's last step %d: nothing to train",
            start_step,
            total_steps,
        )

    log.start_progress(start_step, total_steps)

    def on_log(step: int, metrics: dict) -> None:
        seconds = time.time() - start_time
        log.progress(step, metrics, (step - start_step) * train.batch_size / seconds)

    def validate(step: int, state: TrainState) -> None:
        nonlocal best_ap
        metrics, _ = evaluator.run(model, state.variables(), progress=False)
        # Every process holds the same metrics, so all agree on an improvement and
        # all reach the collective save.
        improved = validation_score(metrics) > best_ap
        if improved:
            checkpoint.save_best(workdir, state)
            best_ap = validation_score(metrics)
        log.validation(step, metrics, improved)

    try:
        state, step, stopped = run_steps(
            state,
            start_step,
            host_batches,
            lambda batch: {k: global_batch(mesh, batch[k]) for k in keys},
            step_fn,
            plan,
            on_log=on_log,
            save=lambda state: checkpoint.save(ckpt, state, force=True),
            validate=validate,
            stop_after=agreed_stop(stop, train.stop_check_every_steps),
        )
        if stopped:
            return {"steps": step, "stopped": True}
        checkpoint.save(ckpt, state, force=True)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        log.close()
    return {
        "steps": step,
        "stopped": False,
        "model": model,
        "state": state,
        "evaluator": evaluator,  # the periodic one, if any: the final validation reuses it
    }
