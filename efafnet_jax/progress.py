"""Progress of long work (training, evaluation, TFDS builds) through tqdm: a live bar in a
terminal; in a log file (stderr not a terminal), plain lines, a few per run."""

from __future__ import annotations

import io
import sys
from typing import TextIO

import tqdm

# Without a terminal: no bar, no carriage returns; tqdm's counts, rate and time left.
LOG_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"


class _LogLines(io.TextIOBase):
    """What tqdm writes, as one newline-ended line per refresh."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogTqdm(tqdm.tqdm):
    # tqdm's monitor thread would lower `miniters` on slow work: a log file keeps the
    # line count it was given.
    monitor_interval = 0

    def close(self) -> None:
        if self.last_print_n == self.n:
            self.leave = False  # the last line written already says where it ended
        super().close()


def progress_bar(
    total: int,
    desc: str,
    unit: str,
    lines: int = 10,
    initial: int = 0,
    unit_scale: int = 1,
    stream: TextIO | None = None,
) -> tqdm.tqdm:
    """A tqdm bar over `total` steps on `stream` (stderr), shown as `unit_scale` units a
    step: live in a terminal; otherwise about `lines` plain lines (every refresh when
    `lines` is 0: the caller refreshes sparingly itself) and a last one at close."""
    stream = stream or sys.stderr
    # tqdm reads unit_scale=1 as True (SI prefixes): 1 means no scaling here.
    scale = unit_scale if unit_scale != 1 else False
    shared = dict(total=total, desc=desc, unit=unit, initial=initial, unit_scale=scale)
    if stream.isatty():
        return tqdm.tqdm(**shared, file=stream, dynamic_ncols=True)
    every = max(1, (total - initial) // lines) if lines else 1
    return _LogTqdm(
        **shared,
        file=_LogLines(stream),
        bar_format=LOG_LINE_FORMAT,
        mininterval=0,
        miniters=every,
        ascii=True,
    )
