"""Progress lines, TensorBoard events (tensorboardX, no TensorFlow) and metrics.jsonl."""

from __future__ import annotations

import datetime
import json
import os
import sys


class MetricsLog:
    """Writes on host 0 only (`enabled`); the other hosts get a no-op."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.workdir = workdir
        self._writer = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def _write(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), step)
        self._jsonl.write(
            json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n"
        )
        self._jsonl.flush()

    def progress(
        self, step: int, total: int, metrics: dict, images_per_s: float, seconds_per_step: float
    ) -> None:
        """One line per call (fine in a terminal and in a log file) plus the scalars."""
        if not self.enabled:
            return
        eta = datetime.timedelta(seconds=int(seconds_per_step * (total - step)))
        print(
            f"step {step}/{total}  {images_per_s:7.1f} img/s  loss {float(metrics['loss']):.6f}"
            f"  lr {float(metrics['lr']):.2e}  grad {float(metrics['grad_norm']):.3e}  ETA {eta}",
            file=sys.stderr,
            flush=True,
        )
        self._write(
            step,
            {
                "train/loss": metrics["loss"],
                "train/lr": metrics["lr"],
                "train/grad_norm": metrics["grad_norm"],
                "train/images_per_s": images_per_s,
            },
        )

    def best_ap(self) -> float:
        path = os.path.join(self.workdir, "best.json")
        if not os.path.isfile(path):
            return -1.0
        with open(path) as f:
            return float(json.load(f)["AP"])

    def validation(self, step: int, metrics: dict, best_ap: float, state) -> float:
        """Logs val metrics; saves the state to <workdir>/best when AP improves."""
        if not self.enabled:
            return best_ap
        self._write(step, {f"val/{k}": v for k, v in metrics.items()})
        ap = metrics.get("AP", metrics.get("Mean", -1.0))
        print(
            f"step {step}  validation: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            file=sys.stderr,
            flush=True,
        )
        if ap > best_ap:
            import orbax.checkpoint as ocp

            from efafnet_jax.train.checkpoint import state_tree

            ocp.StandardCheckpointer().save(
                os.path.abspath(os.path.join(self.workdir, "best")), state_tree(state), force=True
            )
            with open(os.path.join(self.workdir, "best.json"), "w") as f:
                json.dump({"step": step, "AP": ap}, f)
            return ap
        return best_ap

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()
