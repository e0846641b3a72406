"""Running the project's absl commands: flag parsing (dashed names, packaged configs by
name), `--help` that lists the command's own flags, and bad input as one line with exit
status 2 instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from efafnet_jax.config import ConfigNotFoundError, config_file, load_config
from efafnet_jax.data.records import BadRecordError
from efafnet_jax.errors import UsageError
from efafnet_jax.weights import WeightsChoice, choose_weights

# Exit status of every command for input it refuses (absl's own flag errors included),
# as argparse and most Unix tools use it.
USAGE_EXIT_STATUS = 2


def _flag_name(arg: str) -> str:
    return arg[2:].partition("=")[0]


def _absl_spelling(arg: str, known: flags.FlagValues = flags.FLAGS) -> str:
    """'--torch-checkpoint=x' -> '--torch_checkpoint=x', '--no-flip-test' -> '--noflip_test';
    values, single-dash arguments and --config.* overrides untouched."""
    if not arg.startswith("--") or arg.startswith("--config."):
        return arg
    name, sep, value = arg[2:].partition("=")
    name = name.replace("-", "_")
    # absl negates a boolean flag as --noNAME; the dashed spelling of that is --no-NAME.
    if name not in known and name.startswith("no_") and name[3:] in known:
        name = "no" + name[3:]
    return "--" + name + sep + value


def _with_packaged_configs(args: list[str]) -> list[str]:
    """--config NAME[:spec] (a config shipped in efafnet_jax/configs) -> its file's path."""
    out = []
    for i, arg in enumerate(args):
        if arg.startswith("--config=") and "config" in flags.FLAGS:
            arg = "--config=" + config_file(arg.partition("=")[2])
        elif i > 0 and args[i - 1] == "--config" and "config" in flags.FLAGS:
            arg = config_file(arg)
        out.append(arg)
    return out


def parse_flags(argv: Sequence[str], config_from_workdir: bool = False) -> list[str]:
    """absl flag parsing with dashed names and packaged config names; a flag error (an
    unknown flag, a bad value, an unknown --config.* key, a config file that fails to
    load) ends the command with absl's message on one line and exit status 2.

    config_from_workdir: without --config, `--workdir W` loads W/config.json as the config
    (--config.KEY=VALUE overrides on top).
    """
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)  # after a bare '--': positional
    program, flag_args = args[:1], [_absl_spelling(a) for a in args[1:cut]]
    try:
        if config_from_workdir:
            flag_args = _workdir_config_unless_given(flag_args)
        positional = flags.FLAGS(program + _with_packaged_configs(flag_args) + args[cut:])
    except (flags.UnrecognizedFlagError, AttributeError, KeyError) as err:
        # config_flags reports an override of a key the config lacks as either.
        if not any(arg.startswith("--config.") for arg in flag_args):
            _exit_with_usage_error(_first_and_last_line(str(err)))
        _exit_with_usage_error(_missing_config_key(flag_args) or str(err))
    except (flags.Error, ConfigNotFoundError, UsageError) as err:
        _exit_with_usage_error(_first_and_last_line(str(err)))
    if "config" in flags.FLAGS:
        try:  # config_flags defers a config file's error to the first access
            flags.FLAGS.config  # noqa: B018
        except Exception as err:  # whatever the config file raised, with its traceback
            _exit_with_usage_error(f"--config: {_first_and_last_line(str(err))}")
    return positional


def _first_and_last_line(message: str) -> str:
    """A library's message without the traceback it embeds (config_flags puts the config
    file's traceback between what failed and why)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} {lines[-1]}"


def _missing_config_key(flag_args: list[str]) -> str | None:
    """Names the first --config.KEY=VALUE override whose key the config lacks."""
    given = _flag_value(flag_args, "config")
    config = load_config(given or flags.FLAGS["config"].config_filename)
    for arg in flag_args:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].partition("=")[0].split(".")
        node = config
        for depth, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                where = ".".join(path[:depth]) or "the config"
                keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
                return f"--config.{'.'.join(path)}: {where} has no key {key!r} (keys: {keys})"
            node = node[key]
    return None


def _flag_value(flag_args: list[str], name: str) -> str | None:
    """The value of --NAME (--NAME=V or --NAME V) in absl-spelled arguments, or None."""
    for i, arg in enumerate(flag_args):
        if arg.startswith(f"--{name}="):
            return arg.partition("=")[2]
        if arg == f"--{name}" and i + 1 < len(flag_args):
            return flag_args[i + 1]
    return None


def _workdir_config_unless_given(flag_args: list[str]) -> list[str]:
    """Without --config: `--config=<the workdir config module>:W` in front when --workdir W."""
    workdir = _flag_value(flag_args, "workdir")
    if workdir is None or _flag_value(flag_args, "config") is not None:
        return flag_args
    from efafnet_jax.configs.workdir import CONFIG_JSON, config_json_path

    if not config_json_path(workdir).exists():
        raise UsageError(
            f"--workdir {workdir}: no {CONFIG_JSON} there (a training workdir has one); "
            "check the path, or give --config"
        )
    # config_flags parsed the default config when --config was defined and, seeing no
    # --config in sys.argv, defined its --config.KEY override flags on it; parsing the
    # workdir's config defines them again.
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
        delattr(flags.FLAGS, name)
    return [f"--config={config_file('workdir')}:{workdir}", *flag_args]


def _exit_with_usage_error(message: str) -> None:
    message = " ".join(message.split())  # one line, whatever the library's layout
    print(f"{_program_name()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_STATUS)


def _program_name() -> str:
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "efafnet"


def _own_help(main: Callable) -> None:
    """absl's --help shows __main__'s docstring and the key flags of the module named by
    sys.argv[0]; a console script's docstring and flags are in its library module, and
    shared flags in this one (and benchmarks/common.py)."""
    program = sys.argv[0]
    if main.__module__ != "__main__":  # absl's usage text is __main__'s docstring
        sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__
    main_module = program if main.__module__ == "__main__" else main.__module__
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        # This project's modules define flags only when a command runs (its own, these
        # common ones, the benchmarks' shared ones); the libraries define theirs on import.
        if module == main_module or module.startswith(("efafnet_jax.", "benchmarks.")):
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(program, flag)


def run(main: Callable[[list[str]], None], config_from_workdir: bool = False) -> None:
    """absl.app.run with `parse_flags`; bad input (UsageError, or a BadRecordError naming the
    file, record and field) ends the command with its message and exit status 2.

    config_from_workdir: see `parse_flags`.
    """

    def main_without_traceback_for_bad_input(argv: list[str]) -> None:
        try:
            main(argv)
        except (BadRecordError, UsageError) as err:
            _exit_with_usage_error(str(err))

    _own_help(main)
    app.run(
        main_without_traceback_for_bad_input,
        flags_parser=functools.partial(parse_flags, config_from_workdir=config_from_workdir),
    )


def define_common_flags(default_config: str = "coco") -> None:
    """--config (a packaged config's name or a config file, with its :spec; absl
    config_flags, so --config.KEY=VALUE overrides) and --json.

    Commands define their flags in their `cli()` entry point, so that importing a
    command's library functions defines none.
    """
    config_flags.DEFINE_config_file(
        "config",
        config_file(default_config),
        "A packaged config's name (coco, crowdpose, mpii, quickstart, tiny) or a config "
        "file, with its spec: coco:sbn,r50,256x192. --config.KEY=VALUE overrides a key.",
    )
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")


def define_weight_flags() -> None:
    """The weights a command runs: exactly one of --workdir (its config.json and best/ or
    latest checkpoint), --checkpoint, --torch_checkpoint and --random_init."""
    flags.DEFINE_string(
        "workdir",
        None,
        "A training workdir (a folder or gs:// URL): its config.json (--config.KEY=VALUE on "
        "top) and the checkpoint --checkpoint_step names.",
    )
    flags.DEFINE_string(
        "checkpoint_step",
        "best",
        "With --workdir: 'best' (<workdir>/best, else the latest checkpoint), 'latest', or a "
        "step number.",
    )
    flags.DEFINE_string("checkpoint", None, "An orbax checkpoint (a step folder).")
    flags.DEFINE_string("torch_checkpoint", None, "A PyTorch state_dict (.pth), converted.")
    flags.DEFINE_bool(
        "random_init", False, "Randomly initialised weights (timing and plumbing checks only)."
    )


def weights_from_flags() -> WeightsChoice:
    """`efafnet_jax.weights.choose_weights` with the flags of `define_weight_flags`."""
    f = flags.FLAGS
    return choose_weights(
        workdir=f.workdir,
        checkpoint_step=f.checkpoint_step,
        checkpoint=f.checkpoint,
        torch_checkpoint=f.torch_checkpoint,
        random_init=f.random_init,
    )
