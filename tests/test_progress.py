"""Progress output: a live tqdm bar in a terminal, a few plain lines in a log file."""

import io

from efafnet_jax.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, total: int, lines: int, initial: int = 0) -> str:
    bar = progress_bar(total, "eval", "crop", lines=lines, initial=initial, stream=stream)
    for _ in range(total - initial):
        bar.update(1)
    bar.close()
    return stream.getvalue()


def test_without_a_terminal_progress_is_a_few_plain_lines():
    text = _run(io.StringIO(), total=100, lines=10)
    assert "\r" not in text and "|" not in text  # no redraws, no bar
    lines = text.splitlines()
    assert lines[0].startswith("eval: 0/100 crop") and lines[-1].startswith("eval: 100/100 crop")
    # The start, one line every 10 crops, and no repeat of the last one at close.
    assert len(lines) == 11 and len(set(lines)) == len(lines)


def test_a_resumed_run_logs_from_where_it_starts_and_each_refresh_when_lines_is_0():
    lines = _run(io.StringIO(), total=8, lines=0, initial=5).splitlines()
    assert [line.split()[1] for line in lines] == ["5/8", "6/8", "7/8", "8/8"]


def test_in_a_terminal_progress_is_a_live_bar():
    text = _run(_Terminal(), total=100, lines=10)
    assert "\r" in text and "|" in text and "100/100" in text
