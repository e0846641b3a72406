"""The commands' command line: dashed flag names, packaged configs by name, --help with the
command's own flags, and refused input as one line with exit status 2 (no traceback), before
any backend starts."""

import json
import shutil
import subprocess
import sys

import pytest
from absl import flags
from conftest import REPO

from efafnet_jax.cli import _absl_spelling
from efafnet_jax.config import ConfigNotFoundError, config_file, load_config


def _flag_values() -> flags.FlagValues:
    known = flags.FlagValues()
    flags.DEFINE_string("torch_checkpoint", None, "", flag_values=known)
    flags.DEFINE_bool("flip_test", True, "", flag_values=known)
    return known


def test_dashed_flag_names_become_absl_names():
    known = _flag_values()
    assert _absl_spelling("--torch-checkpoint=/a-b/c.pth", known) == "--torch_checkpoint=/a-b/c.pth"
    assert _absl_spelling("--torch-checkpoint", known) == "--torch_checkpoint"
    assert _absl_spelling("--flip-test", known) == "--flip_test"
    # absl negates a boolean as --noNAME; --no-NAME is its dashed spelling.
    assert _absl_spelling("--no-flip-test", known) == "--noflip_test"
    assert _absl_spelling("--noflip_test", known) == "--noflip_test"


def test_values_positionals_and_config_overrides_are_untouched():
    known = _flag_values()
    assert _absl_spelling("/path/with-dash.pth", known) == "/path/with-dash.pth"
    assert _absl_spelling("-v", known) == "-v"
    assert _absl_spelling("--config.model.duc.kernel=1", known) == "--config.model.duc.kernel=1"
    assert _absl_spelling("--config=coco:sbn_fasm,r50", known) == "--config=coco:sbn_fasm,r50"


def test_packaged_configs_are_found_by_name_and_files_still_work(tmp_path, monkeypatch):
    by_name = load_config("tiny:sbn,64x64")
    by_path = load_config(f"{REPO / 'efafnet_jax' / 'configs' / 'tiny.py'}:sbn,64x64")
    assert by_name == by_path and by_name.data.crop_hw == (64, 64)
    # A file of one's own wins over the packaged config of the same name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("def get_config(spec=None):\n    return None\n")
    assert config_file("tiny:sbn") == "tiny:sbn"
    with pytest.raises(ConfigNotFoundError, match="neither a file nor a packaged config"):
        config_file("tinyy")


def _command(module: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True
    )


def _refused(proc: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints (exit status 2, nothing else on stderr)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_flags_are_one_line_errors_with_exit_status_2(tmp_path):
    """A mistyped flag, an unknown config name or key, a bad value and conflicting weight
    sources: each one line naming what is wrong, before any device is touched."""
    evaluate = "efafnet_jax.commands.evaluate"
    assert "Unknown command line flag 'workdirr'" in _refused(_command(evaluate, "--workdirr=x"))
    assert "'tinyy' is neither a file nor a packaged config" in _refused(
        _command(evaluate, "--config", "tinyy")
    )
    assert "--config.train.bogus: train has no key 'bogus'" in _refused(
        _command(evaluate, "--config", "tiny", "--config.train.bogus=1", "--random_init")
    )
    assert "config spec 'r49'" in _refused(_command(evaluate, "--config=tiny:r49"))
    assert "invalid literal for int()" in _refused(
        _command(evaluate, "--config=tiny", "--config.eval.batch_size=many")
    )
    (tmp_path / "config.json").write_text(load_config("tiny").to_json_best_effort())
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"")
    line = _refused(_command(evaluate, "--workdir", str(tmp_path), "--torch-checkpoint", str(pth)))
    assert "exactly one of --workdir, --checkpoint, --torch_checkpoint, --random_init" in line
    assert "got --workdir and --torch_checkpoint" in line
    line = _refused(_command("efafnet_jax.inference.export", "--config=tiny", "--out", "x"))
    assert "(got none)" in line


def test_eval_refuses_a_workdir_without_a_run_or_without_checkpoints(tmp_path):
    """No random weights by accident: a mistyped workdir and one without checkpoints are
    errors; predict and export follow the same rules."""
    evaluate = "efafnet_jax.commands.evaluate"
    missing = tmp_path / "no-such-run"
    assert f"--workdir {missing}: no config.json there" in _refused(
        _command(evaluate, "--workdir", str(missing))
    )
    (tmp_path / "config.json").write_text(load_config("tiny").to_json_best_effort())
    no_checkpoints = f"--workdir {tmp_path}: no checkpoints"
    assert no_checkpoints in _refused(_command(evaluate, "--workdir", str(tmp_path)))
    predict = ("--images", str(tmp_path), "--whole-image", "--out", str(tmp_path / "p"))
    assert no_checkpoints in _refused(
        _command("efafnet_jax.inference.predict", "--workdir", str(tmp_path), *predict)
    )
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    assert "no checkpoint of step 7 (saved steps: [3])" in _refused(
        _command(evaluate, "--workdir", str(tmp_path), "--checkpoint_step=7")
    )


def test_help_lists_the_commands_own_flags_and_not_the_libraries():
    proc = _command("efafnet_jax.commands.train", "--help")
    for flag in ("--config:", "--workdir:", "--[no]json:"):
        assert flag in proc.stdout, proc.stdout
    assert "Train EFAFNet" in proc.stdout  # the command's own description
    for library_flag in ("grain", "orbax", "array_record", "jax_"):
        assert library_flag not in proc.stdout, library_flag


def test_eval_of_a_workdir_takes_its_config_and_best_or_chosen_checkpoint(trained_tiny, tmp_path):
    """`efafnet-eval --workdir W` with no other flag: W's config.json and its best state
    (here: none saved, so the latest checkpoint); --checkpoint_step picks another; the
    --json line says which step was evaluated."""
    evaluate = "efafnet_jax.commands.evaluate"
    latest = _command(
        evaluate, "--workdir", str(trained_tiny.workdir), "--out", str(tmp_path / "a"), "--json"
    )
    assert latest.returncode == 0, latest.stderr[-3000:]
    summary = json.loads(latest.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["checkpoint"].endswith("checkpoints/4")
    assert "AP" in summary
    # The same run as an older version saved it: its config.json without eval.dark_kernel
    # (added by #29) is completed with today's default, named in a warning.
    older = tmp_path / "older_run"
    shutil.copytree(trained_tiny.workdir, older)
    saved = json.loads((older / "config.json").read_text())
    del saved["eval"]["dark_kernel"]
    (older / "config.json").write_text(json.dumps(saved))
    chosen = _command(
        evaluate, "--workdir", str(older), "--checkpoint-step=2",
        "--out", str(tmp_path / "b"), "--json", "--config.eval.flip_test=false",
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert "config.json lacks eval.dark_kernel=" in chosen.stderr
    summary = json.loads(chosen.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and "flip test False" in chosen.stdout
