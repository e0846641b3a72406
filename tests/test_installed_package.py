"""The package as a user installs it: the wheel, installed (not editable) into a fresh venv,
runs its console scripts from an empty folder, with the configs it ships."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from conftest import REPO

SCRIPTS = (
    "efafnet-train", "efafnet-eval", "efafnet-predict", "efafnet-export", "efafnet-to-torch",
    "efafnet-compare", "efafnet-compare-training", "efafnet-build-tfds", "efafnet-summary",
    "efafnet-generate-data", "efafnet-pack-images",
)  # fmt: skip
# The quickstart, shrunk to a few steps: 16 generated images at batch 8, one epoch.
FEW_STEPS = (
    "--config.data.generated_spec.train=16",
    "--config.data.generated_spec.val=4",
    "--config.train.batch_size=8",
    "--config.train.epochs=1",
    "--config.train.log_every_steps=1",
    "--config.eval.batch_size=8",
)


def _run(*args, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's environment, its python) with the project's wheel installed. The
    dependencies are this test environment's, seen through a .pth path line (so nothing is
    downloaded); pip still resolves the wheel's requirements against them (--no-index)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # a copy: building writes build/ and *.egg-info in the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "efafnet_jax", source / "efafnet_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    wheels = root / "wheels"
    build = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", str(wheels), str(source), cwd=root, env=os.environ,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = wheels.glob("efafnet_jax-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                cwd=root, env=os.environ).stdout.strip()  # fmt: skip
    # A plain path line: the test environment's packages, after the venv's own, without
    # running that environment's .pth files (its editable install of this repository).
    (venv / site.removeprefix(str(venv) + "/")).joinpath("dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    install = _run(python, "-m", "pip", "install", "--no-index", str(wheel), cwd=root,
                   env=os.environ)  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    return env, python


def test_every_console_script_loads_the_installed_package(installed, tmp_path):
    env, python = installed
    probe = (
        "import importlib.metadata as m, json, efafnet_jax;"
        "scripts = {e.name: e.load() for e in m.entry_points(group='console_scripts')"
        " if e.name.startswith('efafnet-')};"
        "print(json.dumps([efafnet_jax.__file__, sorted(scripts),"
        " all(map(callable, scripts.values()))]))"
    )
    loaded = _run(python, "-c", probe, cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    package, scripts, callables = json.loads(loaded.stdout)
    assert package.startswith(str(python.parents[1])), package  # the wheel's copy, not the repo's
    assert scripts == sorted(SCRIPTS) and callables


def test_train_and_eval_from_an_empty_folder(installed, tmp_path):
    """`efafnet-train --config quickstart` (a few steps) then `efafnet-eval --workdir W` with
    no other flag, from an empty folder: the run lands in ./runs/quickstart and nowhere else.
    A workdir without checkpoints and a mistyped flag are one-line errors (exit 2); --help
    lists the command's flags."""
    env, _ = installed
    train = _run("efafnet-train", "--config", "quickstart", *FEW_STEPS, cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads(train.stdout.strip().splitlines()[-1])
    assert trained["steps"] >= 2 and "AP" in trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    workdir = tmp_path / "runs" / "quickstart"
    assert (workdir / "config.json").is_file() and (workdir / "data").is_dir()

    evaluated = _run(
        "efafnet-eval", "--workdir", "runs/quickstart", "--json", cwd=tmp_path, env=env
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["step"] == trained["steps"] and metrics["AP"] == trained["AP"]

    (tmp_path / "empty_run").mkdir()
    shutil.copy(workdir / "config.json", tmp_path / "empty_run" / "config.json")
    refused = _run("efafnet-eval", "--workdir", "empty_run", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "no checkpoints" in refused.stderr
    mistyped = _run("efafnet-train", "--workdirr=x", cwd=tmp_path, env=env)
    assert mistyped.returncode == 2 and "Traceback" not in mistyped.stderr, mistyped.stderr
    assert "Unknown command line flag 'workdirr'" in mistyped.stderr
    helped = _run("efafnet-train", "--help", cwd=tmp_path, env=env)
    assert "--config:" in helped.stdout and "--workdir:" in helped.stdout, helped.stdout
