"""Train EFAFNet.

    python train.py [--config configs/quickstart.py] [--workdir runs/<config name>] \
        [--config.train.batch_size=64 ...]

Resumes from <workdir>/checkpoints when there are any. The resolved config is
saved as <workdir>/config.json. SIGTERM saves at the next step boundary and
exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
from absl import flags

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.platform import for_this_machine
from efafnet_jax.train.initialization import initial_variables_from_config
from efafnet_jax.train.loop import train_and_evaluate
from efafnet_jax.train.quickstart import (
    final_evaluation,
    prepare_generated_data,
    write_quickstart_report,
)


def main(argv):
    del argv
    start = time.time()
    maybe_initialize()  # before anything touches a device
    config = for_this_machine(flags.FLAGS.config)
    workdir = flags.FLAGS.workdir or os.path.join("runs", config.name)
    os.makedirs(workdir, exist_ok=True)
    logging.getLogger().setLevel(logging.INFO)
    config = prepare_generated_data(config, workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
    result = train_and_evaluate(config, workdir, initial_variables_from_config(config))
    if result["stopped"]:
        return
    summary, evaluator = final_evaluation(config, workdir, result, time.time() - start)
    if jax.process_index() == 0:
        if config.name == "quickstart" and evaluator is not None:
            write_quickstart_report(workdir, summary, evaluator)
        print(json.dumps(summary))


if __name__ == "__main__":
    define_common_flags(default_config="configs/quickstart.py")
    flags.DEFINE_string("workdir", None, "Where checkpoints and logs go (default runs/<name>).")
    run(main)
