"""The per-person record that readers produce and the pipeline, evaluation and
prediction consume, and the bad-input policy shared by all readers."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

import numpy as np
from etils import epath

BAD_RECORD_POLICIES = ("raise", "skip")


@dataclasses.dataclass
class PersonRecord:
    """One person to crop: where, how large, and (for GT) where the joints are.

    image_path: the image file. image_id: the dataset's image id (COCO id; for
    MPII the position of the image in the JSON's order of first appearance).
    center, scale: float32 [2] in SimpleBaseline's convention (scale = box size
    / 200 px, aspect-fixed and padded). joints: float32 [K, 2] in 0-based pixel
    coordinates; visibility: float32 [K] (0 = unlabelled, 1 = labelled).
    box_score: the detector's score (1 for GT). area: the annotation's area
    (COCO), else the box area. box: float32 [4] x, y, w, h as used for
    centre/scale. annotation_id: the annotation id, or -1 (detections, MPII).
    """

    image_path: str
    image_id: int
    center: np.ndarray
    scale: np.ndarray
    joints: np.ndarray
    visibility: np.ndarray
    box_score: float = 1.0
    area: float = 0.0
    box: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4, np.float32))
    annotation_id: int = -1
    # (height, width) that the annotation file gives the image, checked when it is decoded.
    image_hw: tuple[int, int] | None = None


class BadRecordError(ValueError):
    """Bad input, with the file and the record that carry it in the message."""


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (gs://bucket/...), not a local path."""
    return "://" in os.fspath(path)


def read_file(path: str, label: str) -> bytes:
    """The bytes of `path`: a local path or any URL that etils.epath opens (gs://...). A
    missing or unreadable file raises BadRecordError, its message starting with `label`
    (e.g. 'annotation file P')."""
    try:
        return epath.Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError) as err:
        raise BadRecordError(f"{label} does not exist") from err
    except OSError as err:
        raise BadRecordError(f"{label} cannot be read: {err}") from err


def image_label(path: str, image_id: int) -> str:
    """'image file P (image id N)' for messages; the file alone when there is no id."""
    return f"image file {path}" + (f" (image id {image_id})" if image_id >= 0 else "")


@dataclasses.dataclass
class ReadSummary:
    """Counts of what a reader kept, filtered as the reference does, and skipped."""

    source: str
    kept: int = 0
    filtered: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: list[str] = dataclasses.field(default_factory=list)
    # Positions in the file's list (annotations or detections) of the entries skipped
    # as bad: the metric scores against the GT without them, as the reader accepted
    # it, and a TFDS build leaves them out.
    skipped_annotations: list[int] = dataclasses.field(default_factory=list)
    # Positions in a COCO-format file's images list of the entries skipped as bad.
    skipped_images: list[int] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """One line for the log: kept, reference filtering by reason, bad records skipped."""
        parts = [f"{self.source}: {self.kept} persons"]
        if self.filtered:
            parts.append(
                "filtered as the reference does: "
                + ", ".join(f"{n} {reason}" for reason, n in sorted(self.filtered.items()))
            )
        if self.skipped:
            parts.append(f"{len(self.skipped)} bad records skipped (first: {self.skipped[0]})")
        return "; ".join(parts)


class BadRecordHandler:
    """Applies `data.on_bad_record`: 'raise' stops at the first bad record, 'skip'
    counts it in the summary and logs one line at the end."""

    def __init__(self, policy: str, summary: ReadSummary):
        if policy not in BAD_RECORD_POLICIES:
            raise ValueError(
                f"data.on_bad_record must be one of {BAD_RECORD_POLICIES}, got {policy!r}"
            )
        self.policy = policy
        self.summary = summary

    def bad(self, message: str) -> None:
        if self.policy == "raise":
            raise BadRecordError(message)
        self.summary.skipped.append(message)

    def finish(self) -> ReadSummary:
        """Logs the summary line (a warning when records were skipped)."""
        (logging.warning if self.summary.skipped else logging.info)(self.summary.line())
        return self.summary


def drop_missing_images(
    records: list[PersonRecord], handler: BadRecordHandler
) -> list[PersonRecord]:
    """Applies the bad-record policy to records whose image file does not exist.

    Each image folder is listed once: in a bucket (gs://) that is one request per
    thousand files, where a check per image would be two requests per image.
    """
    names_in: dict[epath.Path, set[str]] = {}
    exists: dict[str, bool] = {}
    kept = []
    for record in records:
        if record.image_path not in exists:
            path = epath.Path(record.image_path)
            if path.parent not in names_in:
                names_in[path.parent] = _names_in(path.parent)
            exists[record.image_path] = path.name in names_in[path.parent]
            if not exists[record.image_path]:
                handler.bad(f"{image_label(record.image_path, record.image_id)} does not exist")
        if exists[record.image_path]:
            kept.append(record)
    return kept


def _names_in(folder: epath.Path) -> set[str]:
    """The names in `folder`, none if it does not exist."""
    try:
        return {entry.name for entry in folder.iterdir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
