"""Running the project's absl commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from efafnet_jax.data.records import BadRecordError


def _underscored(arg: str) -> str:
    """'--torch-checkpoint=x' -> '--torch_checkpoint=x'; values and --config.* untouched."""
    if not arg.startswith("--") or arg.startswith("--config."):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing that also accepts dashed flag names (--torch-checkpoint)."""
    args = list(argv)
    if "--" in args:  # everything after a bare '--' is positional
        cut = args.index("--")
        args = [_underscored(a) for a in args[:cut]] + args[cut:]
    else:
        args = [_underscored(a) for a in args]
    return flags.FLAGS(args)


def run(main: Callable[[list[str]], None]) -> None:
    """absl.app.run with `parse_flags`; bad input ends the command with its message
    (which names the file, record and field) and exit status 2, not a traceback."""

    def main_without_traceback_for_bad_input(argv: list[str]) -> None:
        try:
            main(argv)
        except BadRecordError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(main_without_traceback_for_bad_input, flags_parser=parse_flags)


def define_common_flags(default_config: str = "configs/coco.py") -> None:
    """--config (a config file with its :spec, absl config_flags) and --json.

    Commands define their flags when run as __main__, so that importing a
    command's library functions defines none.
    """
    config_flags.DEFINE_config_file(
        "config", default_config, "Config file and spec, e.g. configs/coco.py:sbn,r50,256x192."
    )
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
