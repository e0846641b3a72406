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
        """The best validation score so far (<workdir>/best.json), -1 if none.

        Every process reads it (the workdir is shared), so all agree on improvements.
        """
        path = os.path.join(self.workdir, "best.json")
        if not os.path.isfile(path):
            return -1.0
        with open(path) as f:
            return float(json.load(f)["AP"])

    def validation(self, step: int, metrics: dict, improved: bool) -> None:
        """Logs val metrics; records the step in best.json when it improved the score."""
        if not self.enabled:
            return
        self._write(step, {f"val/{k}": v for k, v in metrics.items()})
        print(
            f"step {step}  validation: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            file=sys.stderr,
            flush=True,
        )
        if improved:
            with open(os.path.join(self.workdir, "best.json"), "w") as f:
                json.dump({"step": step, "AP": validation_score(metrics)}, f)

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()


def validation_score(metrics: dict) -> float:
    """The number that picks the best checkpoint: AP (COCO, CrowdPose) or mean PCKh (MPII)."""
    return float(metrics.get("AP", metrics.get("Mean", -1.0)))
