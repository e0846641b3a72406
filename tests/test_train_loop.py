"""The loop: exact resume, SIGTERM, the non-finite stop."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import CONFIG_DIR, REPO

from efafnet_jax.config import load_config
from efafnet_jax.data.synthetic import generate
from efafnet_jax.train.loop import NonFiniteError, train_and_evaluate
from efafnet_jax.weights import latest_checkpoint, restore_variables


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, generate(str(root), train=8, val=2, seed=2)


def _config(generated, steps_per_run_epochs):
    root, paths = generated
    config = load_config(f"{CONFIG_DIR / 'tiny.py'}:efafnet,64x64")
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


def test_sigterm_saves_a_checkpoint_that_resumes(generated, tmp_path):
    root, paths = generated
    args = [
        sys.executable,
        "train.py",
        "--config",
        "configs/tiny.py:efafnet,64x64",
        "--workdir",
        str(tmp_path),
        f"--config.data.train_ann={paths['train']}",
        f"--config.data.train_images={root / 'images' / 'train'}",
        "--config.data.val_ann=",
        "--config.train.batch_size=8",
        "--config.train.epochs=50",
        "--config.train.workers=0",
        "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=0",
    ]
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    deadline = time.time() + 240
    for line in proc.stderr:
        if line.startswith("step 3/") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    assert proc.wait(timeout=120) == 0
    checkpoint = latest_checkpoint(str(tmp_path))
    assert checkpoint is not None and int(os.path.basename(checkpoint)) >= 3
    # Resumed with a schedule that ends soon after the saved step.
    kept = [a for a in args if not a.startswith("--config.train.epochs=")]
    resumed = subprocess.run(
        kept + ["--config.train.epochs=4"], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr


def test_checkpoint_restores_on_a_different_number_of_devices(generated, tmp_path, monkeypatch):
    import efafnet_jax.train.loop as loop
    from efafnet_jax.evaluation.inference import data_mesh

    config = _config(generated, 1.0)
    epoch = _epoch_steps(config)
    config.train.epochs = 2.0
    straight = train_and_evaluate(config, str(tmp_path / "straight"))  # 8 devices
    config.train.epochs = 1.0
    train_and_evaluate(config, str(tmp_path / "moved"))  # 8 devices, then 2
    monkeypatch.setattr(loop, "data_mesh", lambda: data_mesh(jax.devices()[:2]))
    config.train.epochs = 2.0
    moved = train_and_evaluate(config, str(tmp_path / "moved"))
    assert straight["steps"] == moved["steps"] == 2 * epoch
    a = restore_variables(latest_checkpoint(str(tmp_path / "straight")))
    b = restore_variables(latest_checkpoint(str(tmp_path / "moved")))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        # Reductions over 8 and over 2 devices round differently and Adam carries it
        # along; a lost optimiser state or data position moves parameters by ~lr (5e-4).
        scale = max(float(np.max(np.abs(x))), 1e-2)
        assert float(np.max(np.abs(x - y))) / scale < 1e-3
