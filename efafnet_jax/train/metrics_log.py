"""Progress lines, TensorBoard events (tensorboardX, no TensorFlow) and metrics.jsonl.

The workdir may be a URL (gs://bucket/run). Object stores have no append, so there the
two append-style logs are held in memory and rewritten whole (`_RewrittenFile`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time

from etils import epath

from efafnet_jax.data.records import is_url

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
        path = epath.Path(self.workdir) / "best.json"
        if not path.is_file():
            return -1.0
        return float(json.loads(path.read_text())["AP"])

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
            (epath.Path(self.workdir) / "best.json").write_text(
                json.dumps({"step": step, "AP": validation_score(metrics)})
            )

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()


def validation_score(metrics: dict) -> float:
    """The number that picks the best checkpoint: AP (COCO, CrowdPose) or mean PCKh (MPII)."""
    return float(metrics.get("AP", metrics.get("Mean", -1.0)))
