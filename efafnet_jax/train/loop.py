"""The training loop: sharded steps, checkpoints that resume exactly, logs, validation."""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time

import jax
import ml_collections
import numpy as np

from efafnet_jax.data.device_warp import device_batch
from efafnet_jax.data.image_store import image_store
from efafnet_jax.data.pipeline import HostShard, build_pipeline, steps_per_epoch
from efafnet_jax.data.splits import read_split, sample_config
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.models import create_model
from efafnet_jax.sharding import data_mesh, global_batch, replicated
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
    """Set by SIGTERM: save at the next step boundary and leave."""

    requested: bool = False

    def __call__(self, signum, frame):
        del signum, frame
        self.requested = True


def compute_dtype(train: ml_collections.ConfigDict) -> str:
    """'auto': bfloat16 on GPU/TPU, float32 on CPU."""
    if train.compute_dtype != "auto":
        return train.compute_dtype
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, initial: dict | None = None
) -> dict:
    """Trains per `config`, resuming from <workdir>/checkpoints; returns the final summary.

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
    model_config.dtype = compute_dtype(train)
    model = create_model(model_config)
    mesh = data_mesh()
    shard = HostShard(jax.process_index(), jax.process_count())
    if train.batch_size % mesh.size:
        raise ValueError(
            f"train.batch_size {train.batch_size} is not a multiple of the {mesh.size} devices"
        )
    host_batch = train.batch_size // jax.process_count()
    records, summary, spec = read_split(config.data, "train")
    logging.info(summary.line())
    epoch_steps = steps_per_epoch(len(records), host_batch, shard)
    if epoch_steps == 0:
        raise ValueError(f"{len(records)} training persons are fewer than one batch")
    total_steps = int(train.epochs * epoch_steps)
    schedule = learning_rate_schedule(train, epoch_steps, train.batch_size)
    variables = initial or initial_variables(model, config, config.seed)
    state_sharding = replicated(mesh)
    state = jax.device_put(
        TrainState.create(variables, make_optimizer(train, schedule)), state_sharding
    )
    samples = sample_config(config.data)
    data_iter = iter(
        build_pipeline(
            records,
            spec,
            samples,
            image_store(config.data.train_images),
            batch_size=host_batch,
            seed=config.seed,
            train=True,
            num_epochs=int(np.ceil(train.epochs)),
            workers=train.workers,
            shard=shard,
            on_bad_record=config.data.on_bad_record,
        )
    )
    ckpt = checkpoint.manager(workdir, train.keep_checkpoints)
    if ckpt.latest_step() is not None:
        state = checkpoint.restore_latest(ckpt, state, data_iter)
        logging.info("resumed from step %d", int(state.step))
    prepare, keys = None, BATCH_KEYS
    if samples.device_buffer_hw is not None:
        weights = spec.joint_weights if samples.use_joint_weights else None
        prepare = functools.partial(
            device_batch,
            crop_hw=samples.crop_hw,
            heatmap_hw=samples.heatmap_hw,
            sigma=samples.sigma,
            joint_weights=weights,
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
    stop = _Stop()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    evaluator = Evaluator(config) if config.data.val_ann and train.eval_every_epochs else None
    best_ap = log.best_ap()
    start_step, start_time = int(state.step), time.time()
    if start_step >= total_steps:
        logging.info(
            "step %d is at or past the schedule's last step %d: nothing to train",
            start_step,
            total_steps,
        )
    try:
        while int(state.step) < total_steps:
            batch = next(data_iter)
            state, metrics = step_fn(state, {k: global_batch(mesh, batch[k]) for k in keys})
            step = int(state.step)
            if step % train.log_every_steps == 0 or step == total_steps:
                log.progress(
                    step,
                    total_steps,
                    jax.device_get(metrics),
                    (step - start_step) * train.batch_size / (time.time() - start_time),
                    (time.time() - start_time) / max(step - start_step, 1),
                )
            if int(state.nonfinite_in_a_row) >= train.max_nonfinite:
                raise NonFiniteError(
                    f"{int(state.nonfinite_in_a_row)} non-finite losses in a row at step "
                    f"{step} (train.max_nonfinite={train.max_nonfinite}); the last "
                    "checkpoint holds the last finite state"
                )
            if step % train.checkpoint_every_steps == 0:
                checkpoint.save(ckpt, state, data_iter)
            if evaluator and step % (epoch_steps * train.eval_every_epochs) == 0:
                metrics_val, _ = evaluator.run(model, state.variables(), progress=False)
                # Every process holds the same metrics, so all agree on an improvement
                # and all reach the collective save.
                improved = validation_score(metrics_val) > best_ap
                if improved:
                    checkpoint.save_best(workdir, state)
                    best_ap = validation_score(metrics_val)
                log.validation(step, metrics_val, improved)
            if step == train.sigterm_self_at_step:
                # Tests stop the run at a chosen step through the real signal path.
                signal.raise_signal(signal.SIGTERM)
            if stop.requested:
                checkpoint.save(ckpt, state, data_iter, force=True)
                logging.warning("SIGTERM: saved step %d; exiting", step)
                return {"steps": step, "stopped": True}
        checkpoint.save(ckpt, state, data_iter, force=True)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        log.close()
    return {
        "steps": int(state.step),
        "stopped": False,
        "model": model,
        "state": state,
        "evaluator": evaluator,  # the periodic one, if any: the final validation reuses it
    }
