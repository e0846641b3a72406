"""Progress lines, TensorBoard events (tensorboardX, no TensorFlow) and metrics.jsonl.

The workdir may be a URL (gs://bucket/run). Object stores have no append, so there the
two append-style logs are held in memory and rewritten whole (`_RewrittenFile`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import tqdm
from etils import epath

from efafnet_jax.data.records import is_url
from efafnet_jax.progress import progress_bar

# GCS takes about one write per second to an object, and each write of a log sends it
# whole: a log in a bucket is rewritten at most this often (and when it is closed).
REWRITE_EVERY_S = 10.0


class _RewrittenFile:
    """A file at a URL opened for appending: holds the bytes it had and those written
    since, and writes the whole object again at `flush` (at most every REWRITE_EVERY_S,
    so a flush may be deferred to a later one) and at `close`."""

    def __init__(self, path: str | os.PathLike):
        self._path = epath.Path(path)
        self._content = bytearray(self._path.read_bytes() if self._path.exists() else b"")
        self._unwritten = False
        self._last_write = -math.inf

    def write(self, data: bytes | str) -> int:
        self._content += data.encode() if isinstance(data, str) else data
        self._unwritten = True
        return len(data)

    def flush(self) -> None:
        if self._unwritten and time.monotonic() - self._last_write >= REWRITE_EVERY_S:
            self._write_object()

    def close(self) -> None:
        if self._unwritten:
            self._write_object()

    def _write_object(self) -> None:
        self._path.write_bytes(bytes(self._content))
        self._unwritten = False
        self._last_write = time.monotonic()


class _RewrittenFileFactory:
    """tensorboardX's writer factory (`register_writer_factory`) for event files at URLs."""

    def open(self, path: str) -> _RewrittenFile:
        return _RewrittenFile(path)

    def directory_check(self, path: str) -> None:
        del path  # an object store has no folders to create


class MetricsLog:
    """Writes on host 0 only (`enabled`); the other hosts get a no-op. `workdir`: a
    folder or a URL."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.workdir = workdir
        self._writer = None
        self._bar = None
        if enabled:
            folder = epath.Path(workdir)
            folder.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter
            from tensorboardX.record_writer import register_writer_factory

            if is_url(workdir):
                # tensorboardX picks the event-file writer by the path's scheme. Its own
                # for gs:// uses another GCS client than epath's and uploads the file
                # again from __del__, after close; it has none for az://.
                register_writer_factory(os.fspath(workdir).split("://")[0], _RewrittenFileFactory())
                self._jsonl = _RewrittenFile(folder / "metrics.jsonl")
            else:
                self._jsonl = (folder / "metrics.jsonl").open("a")
            self._writer = SummaryWriter(str(folder / "tensorboard"))

    def _write(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), step)
        self._jsonl.write(
            json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n"
        )
        self._jsonl.flush()

    def start_progress(self, start_step: int, total_steps: int) -> None:
        """The training's progress bar, from `start_step` (a resumed run) to `total_steps`."""
        if self.enabled:
            # lines=0: a log line for each progress() call, which comes every log_every_steps.
            self._bar = progress_bar(total_steps, "train", "step", lines=0, initial=start_step)

    def progress(self, step: int, metrics: dict, images_per_s: float) -> None:
        """Moves the bar to `step` with the step's loss, lr, gradient norm and throughput
        (a line each call in a log file), and writes the scalars."""
        if not self.enabled:
            return
        self._bar.set_postfix_str(
            f"loss {float(metrics['loss']):.6f}  lr {float(metrics['lr']):.2e}  "
            f"grad {float(metrics['grad_norm']):.3e}  {images_per_s:.1f} img/s",
            refresh=False,
        )
        self._bar.update(step - self._bar.n)
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
        path = epath.Path(self.workdir) / "best.json"
        if not path.is_file():
            return -1.0
        return float(json.loads(path.read_text())["AP"])

    def validation(self, step: int, metrics: dict, improved: bool) -> None:
        """Logs val metrics; records the step in best.json when it improved the score."""
        if not self.enabled:
            return
        self._write(step, {f"val/{k}": v for k, v in metrics.items()})
        # Through tqdm, so that a live bar is redrawn below the line.
        tqdm.tqdm.write(
            f"step {step}  validation: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            file=sys.stderr,
        )
        if improved:
            (epath.Path(self.workdir) / "best.json").write_text(
                json.dumps({"step": step, "AP": validation_score(metrics)})
            )

    def close(self) -> None:
        if self.enabled:
            if self._bar is not None:
                self._bar.close()
            self._writer.close()
            self._jsonl.close()


def validation_score(metrics: dict) -> float:
    """The number that picks the best checkpoint: AP (COCO, CrowdPose) or mean PCKh (MPII)."""
    return float(metrics.get("AP", metrics.get("Mean", -1.0)))
