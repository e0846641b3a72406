"""Export for serving (jax.export) and trained weights out to PyTorch: both round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import CONFIG_DIR, run_json_command

from efafnet_jax.config import load_config
from efafnet_jax.data.keypoints import spec_from_config
from efafnet_jax.evaluation.inference import heatmap_function
from efafnet_jax.export import export_inference
from efafnet_jax.models import create_model
from efafnet_jax.serving import load_exported
from efafnet_jax.train.losses import heatmap_activation

SPEC = "efafnet,64x64"


def _variables(config, seed=0):
    """Random parameters and non-trivial BatchNorm statistics."""
    model = create_model(config.model)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3), jnp.uint8))
    leaves, tree = jax.tree_util.tree_flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    stats = [
        jax.random.uniform(k, x.shape, x.dtype, 0.5, 1.5) for k, x in zip(keys, leaves, strict=True)
    ]
    return model, {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, stats)}


@pytest.mark.parametrize("loss", ["mse", "spatial_softmax"])
def test_exported_function_equals_the_live_one(tmp_path, loss):
    config = load_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    config.train.loss = loss
    model, variables = _variables(config)
    path = tmp_path / "model.jaxexport"
    path.write_bytes(export_inference(config, variables, platforms=("cpu",)).serialize())
    served = load_exported(str(path))
    live = jax.jit(
        heatmap_function(
            model, spec_from_config(config.data).flip_pairs, True, True, heatmap_activation(config)
        )
    )
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # one file, any batch size
        crops = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
        np.testing.assert_allclose(served(crops), live(variables, crops), rtol=1e-6, atol=1e-6)


def _checkpoint(tmp_path, config):
    _, variables = _variables(config, seed=3)
    path = tmp_path / "checkpoints" / "7"
    ocp.StandardCheckpointer().save(path / "state", {**variables, "step": 7})
    ocp.StandardCheckpointer().wait_until_finished()
    return path, variables


def _command(module: str, checkpoint, out) -> dict:
    return run_json_command(
        module,
        "--config",
        f"configs/tiny.py:{SPEC}",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
    )


def test_export_command(tmp_path):
    config = load_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    checkpoint, variables = _checkpoint(tmp_path, config)
    out = tmp_path / "model.jaxexport"
    summary = _command("efafnet_jax.export", checkpoint, out)
    assert summary["platforms"] == ["cpu", "cuda", "tpu"] and out.stat().st_size == summary["bytes"]
    crops = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    model = create_model(config.model)
    live = heatmap_function(model, spec_from_config(config.data).flip_pairs, True, True)
    np.testing.assert_allclose(
        load_exported(str(out))(crops), live(variables, crops), rtol=1e-5, atol=1e-6
    )


def test_to_torch_round_trip_is_exact(tmp_path):
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    from efafnet_jax.interop.convert import state_dict_to_flax
    from efafnet_jax.interop.torch_reference import TorchPoseNet

    config = load_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    checkpoint, variables = _checkpoint(tmp_path, config)
    out = tmp_path / "model.pth"
    summary = _command("efafnet_jax.interop.to_torch", checkpoint, out)
    state = torch.load(out, weights_only=True)
    assert summary["tensors"] == len(state)
    TorchPoseNet(config.model).load_state_dict(state, strict=True)
    back, _ = state_dict_to_flax({k: v.numpy() for k, v in state.items()}, variables)
    for a, b in zip(
        jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
