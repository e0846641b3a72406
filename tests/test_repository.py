"""The README's commands are the contract; CI must run the same test command."""

from conftest import REPO


def _command_after(marker: str) -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return lines[fence + 1].strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert _command_after("Tests (") in ci_lines


def test_readme_test_command_pins_cpu_torch():
    assert "pip install torch==2.13.0 &&" in _command_after("Tests (")
