"""Train EFAFNet.

    efafnet-train [--config quickstart] [--workdir runs/<config name>] \
        [--config.train.batch_size=64 ...]

The workdir may be a folder or a URL (gs://bucket/run): checkpoints, config.json,
metrics, TensorBoard logs and the final results go there. Resumes from
<workdir>/checkpoints when there are any. The config as given (before the machine's
"auto" settings are resolved) is saved as <workdir>/config.json, which `efafnet-eval
--workdir` reads. SIGTERM saves at the next step boundary and exits 0.
"""

from __future__ import annotations

import json
import logging
import time

import jax
from absl import flags
from etils import epath

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.configs.workdir import config_json_path
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.platform import for_this_machine
from efafnet_jax.train.initialization import initial_variables_from_config
from efafnet_jax.train.loop import train_and_evaluate
from efafnet_jax.train.quickstart import (
    final_evaluation,
    prepare_generated_data,
    write_quickstart_report,
)


def main(argv: list[str]) -> None:
    del argv
    start = time.time()
    maybe_initialize()  # before anything touches a device
    config = flags.FLAGS.config
    # Relative to the folder the command runs in (epath leaves gs:// URLs as they are).
    workdir = flags.FLAGS.workdir or f"runs/{config.name}"
    logging.getLogger().setLevel(logging.INFO)
    if jax.process_index() == 0:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        config_json_path(workdir).write_text(config.to_json_best_effort(indent=1))
    config = for_this_machine(prepare_generated_data(config, workdir))
    result = train_and_evaluate(config, workdir, initial_variables_from_config(config))
    if result["stopped"]:
        return
    summary, evaluator = final_evaluation(config, workdir, result, time.time() - start)
    if jax.process_index() == 0:
        if config.name == "quickstart" and evaluator is not None:
            write_quickstart_report(workdir, summary, evaluator)
        print(json.dumps(summary))


def cli() -> None:
    """The efafnet-train console script."""
    define_common_flags(default_config="quickstart")
    flags.DEFINE_string(
        "workdir", None, "Checkpoints, logs and results: a folder or gs:// URL (runs/<name>)."
    )
    run(main)


if __name__ == "__main__":
    cli()
