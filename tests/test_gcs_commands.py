"""gs:// end to end against a GCS API on localhost (fake-gcs-server, tests/gcs_emulator.py):
training, SIGTERM, resume and evaluation as commands, with the workdir, the data and eval's
output in a bucket, and nothing written under the folder the commands run in."""

import json
import os
import subprocess
import sys

import pytest
from etils import epath
from gcs_emulator import copy_tree, local_files

pytestmark = pytest.mark.slow


def _command(module: str, args: list[str], cwd, gcs_environment) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, **gcs_environment, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _bucket_files(folder: epath.Path) -> set[str]:
    found = set()
    for entry in folder.iterdir():
        if entry.is_dir():
            found |= {f"{entry.name}/{name}" for name in _bucket_files(entry)}
        else:
            found.add(entry.name)
    return found


def test_train_stop_resume_and_evaluate_with_everything_in_a_bucket(
    trained_tiny, gcs_environment, gs_tmp_path, tmp_path
):
    """The data, the workdir and eval's --out are gs:// URLs: train stops on SIGTERM after
    step 2 with its checkpoint in the bucket, resumes from it to step 3, and eval reads the
    run's config.json and checkpoint from the bucket and writes its results there."""
    data = gs_tmp_path / "data"
    copy_tree(trained_tiny.data_root, data)
    workdir, out = gs_tmp_path / "run", gs_tmp_path / "eval"
    here = tmp_path / "cwd"
    here.mkdir()
    train = [
        "--config", trained_tiny.spec, "--workdir", str(workdir),
        f"--config.data.train_ann={data / 'annotations' / 'person_keypoints_train.json'}",
        f"--config.data.train_images={data / 'images' / 'train'}",
        f"--config.data.val_ann={data / 'annotations' / 'person_keypoints_val.json'}",
        f"--config.data.val_images={data / 'images' / 'val'}",
        "--config.data.val_detections=", "--config.model.conv_impl=xla",
        "--config.train.batch_size=8", "--config.train.workers=0",
        "--config.train.log_every_steps=1", "--config.train.eval_every_epochs=0",
        "--config.eval.workers=0", "--config.eval.batch_size=8",
    ]  # fmt: skip
    stopped = _command(
        "efafnet_jax.commands.train",
        [*train, "--config.train.epochs=50", "--config.train.sigterm_self_at_step=2"],
        here,
        gcs_environment,
    )
    assert "SIGTERM: saved step 2" in stopped.stderr
    assert (workdir / "checkpoints" / "2").is_dir()
    # 2 steps an epoch (19 persons at batch 8): 1.5 epochs end at step 3.
    finished = _command(
        "efafnet_jax.commands.train", [*train, "--config.train.epochs=1.5"], here, gcs_environment
    )
    assert "resumed from step 2" in finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3
    in_bucket = _bucket_files(workdir)
    for name in ("config.json", "metrics.jsonl", "results/val_metrics.json"):
        assert name in in_bucket, sorted(in_bucket)
    assert any(name.startswith("checkpoints/3/") for name in in_bucket)
    assert any(name.startswith("tensorboard/") for name in in_bucket)

    evaluated = _command(
        "efafnet_jax.commands.evaluate",
        ["--workdir", str(workdir), "--out", str(out), "--json"],
        here,
        gcs_environment,
    )
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["step"] == 3 and metrics["checkpoint"] == str(workdir / "checkpoints" / "3")
    written = json.loads((out / "results" / "val_metrics.json").read_text())
    assert written["AP"] == metrics["AP"] == summary["AP"]
    assert local_files(here) == []


def test_tfds_split_built_to_a_bucket_trains_and_evaluates(
    gcs_environment, gs_tmp_path, tmp_path, monkeypatch
):
    """A TFDS split of the COCO sample in a bucket: a one-step training run reads it
    (data.source=tfds, its workdir in the bucket too) and the evaluator scores the val split
    from the bucket. The split is built locally and copied: array_record 0.8.6 cannot write
    gs:// (its writer fails with "open() failed ... Failed to create the file header"
    against the emulator), while it reads gs:// through its own client."""
    from conftest import load_test_config
    from test_tfds import _coco_layout

    from efafnet_jax.evaluation.evaluator import Evaluator
    from efafnet_jax.train.loop import train_and_evaluate

    manual = _coco_layout(tmp_path / "coco")
    here = tmp_path / "cwd"
    here.mkdir()
    built = _command(
        "efafnet_jax.data.tfds.build",
        ["--dataset", "coco_keypoints", "--manual_dir", str(manual),
         "--data_dir", str(tmp_path / "tfds"), "--json"],
        here,
        gcs_environment,
    )  # fmt: skip
    assert json.loads(built.stdout.strip().splitlines()[-1])["images"]["val"] > 0
    data_dir = gs_tmp_path / "tfds"
    copy_tree(tmp_path / "tfds", data_dir)
    monkeypatch.chdir(here)
    config = load_test_config("tiny:sbn,64x64")
    config.data.source, config.data.tfds_data_dir = "tfds", str(data_dir)
    config.data.val_detections = ""
    t = config.train
    t.batch_size, t.workers, t.eval_every_epochs, t.log_every_steps = 8, 0, 0, 1
    t.epochs = 1.0  # the sample's persons at batch 8: one step
    config.eval.batch_size, config.eval.workers = 8, 0
    workdir = gs_tmp_path / "run"
    result = train_and_evaluate(config, str(workdir))
    steps = result["steps"]
    assert steps >= 1 and (workdir / "checkpoints" / str(steps)).is_dir()
    metrics, _ = Evaluator(config).run(result["model"], result["state"].variables(), str(workdir))
    assert json.loads((workdir / "results" / "val_metrics.json").read_text()) == metrics
    assert local_files(here) == []
