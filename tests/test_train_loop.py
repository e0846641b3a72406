"""The loop: exact resume, SIGTERM, the non-finite stop."""

import hashlib
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import CONFIG_DIR, REPO, load_test_config

from efafnet_jax.data.synthetic import generate
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
