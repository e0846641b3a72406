"""Model variables from an orbax checkpoint, a training workdir, a PyTorch state_dict,
or a fresh initialisation."""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from efafnet_jax.errors import UsageError
from efafnet_jax.train.checkpoint import BEST_DIR, CHECKPOINT_DIR, orbax_path


def initial_variables(model, config: ml_collections.ConfigDict, seed: int = 0) -> dict:
    """Freshly initialised variables of `model` for the config's crop size.

    model.init runs as one jitted program: eagerly it dispatches several hundred small
    op programs (about 2.5x the time on CPU for the tiny model). XLA may fuse the
    initialisers' arithmetic, so the bits differ from eager init by float32 rounding
    (the distributions are the same; tests/test_models.py compares them).
    """
    height, width = config.data.crop_hw
    images = jnp.zeros((1, height, width, 3), jnp.uint8)
    return jax.jit(model.init)(jax.random.key(seed), images)


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps saved under <workdir>/checkpoints, ascending."""
    folder = epath.Path(workdir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(entry.name) for entry in folder.iterdir() if entry.name.isdigit())


def latest_checkpoint(workdir: str) -> str | None:
    """<workdir>/checkpoints/<largest step>, or None."""
    steps = checkpoint_steps(workdir)
    return str(epath.Path(workdir) / CHECKPOINT_DIR / str(steps[-1])) if steps else None


def workdir_checkpoint(workdir: str, which: str = "best") -> str:
    """The checkpoint of a training workdir that `which` names: "best" (<workdir>/best, else
    the latest), "latest", or a step number. UsageError when there is none such."""
    root = epath.Path(workdir)
    best = root / BEST_DIR
    steps = checkpoint_steps(workdir)
    if which == "best" and best.is_dir():
        return str(best)
    if which in ("best", "latest"):
        if not steps:
            raise UsageError(
                f"--workdir {workdir}: no checkpoints (no {BEST_DIR}/ and nothing in "
                f"{CHECKPOINT_DIR}/); train first, or give --random_init to run random weights"
            )
        return str(root / CHECKPOINT_DIR / str(steps[-1]))
    if not which.isdigit():
        raise UsageError(f"--checkpoint_step={which!r}: give best, latest or a step number")
    if int(which) not in steps:
        raise UsageError(
            f"--workdir {workdir}: no checkpoint of step {which} (saved steps: {steps or 'none'})"
        )
    return str(root / CHECKPOINT_DIR / which)


def restore_variables(path: str) -> dict:
    """{'params', 'batch_stats'} from an orbax checkpoint (a step folder or its 'state', or
    a workdir's best/)."""
    variables, _ = restore_variables_and_step(path)
    return variables


def restore_variables_and_step(path: str) -> tuple[dict, int | None]:
    """`restore_variables` and the checkpoint's training step (None if it holds none)."""
    import orbax.checkpoint as ocp

    path = orbax_path(path)
    if not path.is_dir():
        raise UsageError(f"checkpoint {path} does not exist")
    if (path / "state").is_dir():
        path = path / "state"
    checkpointer = ocp.StandardCheckpointer()
    # Restore onto this process's first device whatever mesh wrote it (another device
    # or process count included): a target built from the metadata, not its shardings.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    tree = checkpointer.restore(path, target)
    if "params" not in tree:
        raise UsageError(f"checkpoint {path} holds no 'params' (keys: {sorted(tree)})")
    step = int(tree["step"]) if "step" in tree else None
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}, step


@dataclasses.dataclass(frozen=True)
class WeightsChoice:
    """Where a command's weights come from: "checkpoint" (an orbax checkpoint's path),
    "torch" (a PyTorch state_dict's path) or "random"."""

    kind: str
    path: str | None = None


def choose_weights(
    *,
    workdir: str | None = None,
    checkpoint_step: str = "best",
    checkpoint: str | None = None,
    torch_checkpoint: str | None = None,
    random_init: bool = False,
) -> WeightsChoice:
    """Exactly one source: a training workdir's checkpoint (`workdir_checkpoint` with
    `checkpoint_step`), an orbax `checkpoint`, a PyTorch `torch_checkpoint`, or
    `random_init`; UsageError for none or several. Touches no device, so a command refuses
    bad flags before it starts a backend."""
    given = {
        "--workdir": workdir,
        "--checkpoint": checkpoint,
        "--torch_checkpoint": torch_checkpoint,
        "--random_init": random_init,
    }
    named = [flag for flag, value in given.items() if value]
    if len(named) != 1:
        raise UsageError(
            f"give exactly one of {', '.join(given)} (got {' and '.join(named) or 'none'})"
        )
    if workdir:
        return WeightsChoice("checkpoint", workdir_checkpoint(workdir, checkpoint_step))
    if checkpoint:
        if not epath.Path(checkpoint).is_dir():
            raise UsageError(f"--checkpoint {checkpoint}: no such checkpoint folder")
        return WeightsChoice("checkpoint", checkpoint)
    if torch_checkpoint:
        if not epath.Path(torch_checkpoint).is_file():
            raise UsageError(f"--torch_checkpoint {torch_checkpoint}: no such file")
        return WeightsChoice("torch", torch_checkpoint)
    return WeightsChoice("random")


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """A command's model variables and where they came from (for its log and --json)."""

    variables: dict
    source: str  # a checkpoint's path, a state_dict's path, or "random_init"
    step: int | None  # the training step of an orbax checkpoint


def load_variables(
    model, config: ml_collections.ConfigDict, choice: WeightsChoice
) -> LoadedWeights:
    """The variables `choice` names, for `model` at the config's crop size."""
    if choice.kind == "checkpoint":
        variables, step = restore_variables_and_step(choice.path)
        logging.info("weights: %s (step %s)", choice.path, step)
        return LoadedWeights(variables, choice.path, step)
    if choice.kind == "torch":
        from efafnet_jax.interop.convert import load_torch_checkpoint, state_dict_to_flax
        from efafnet_jax.models.summary import abstract_variables

        # Every variable comes from the state_dict (the conversion is strict), so the
        # template needs shapes and dtypes only: nothing is initialised.
        template = abstract_variables(model, tuple(config.data.crop_hw))
        variables, _ = state_dict_to_flax(load_torch_checkpoint(choice.path), template)
        return LoadedWeights(variables, choice.path, None)
    logging.warning("--random_init: running randomly initialised weights")
    return LoadedWeights(initial_variables(model, config), "random_init", None)
