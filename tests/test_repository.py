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


def test_readme_test_command_installs_cpu_torch_and_the_constraints():
    """The CPU build from PyTorch's CPU index (pip's default index serves a CUDA build on
    Linux), then the project with the versions the suite last passed with."""
    command = _command_after("Tests (")
    cpu_torch = (
        'pip install "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu'
    )
    assert cpu_torch in command
    assert "pip install -c constraints.txt -e " in command
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0" and pins["jax"], sorted(pins)


def test_the_test_command_runs_every_test():
    """The pytest runs of the test command select complementary halves of the suite (the
    xdist run and the multi-process run): no test is deselected, none skipped by -k."""
    import shlex

    runs = [
        shlex.split(part.strip())[3:]  # the arguments after `python -m pytest`
        for part in _command_after("Tests (").split("&&")
        if part.strip().startswith("python -m pytest")
    ]
    assert len(runs) == 2, runs
    selections = []
    for args in runs:
        assert not any(a.startswith(("-k", "--deselect", "--ignore", "-x")) for a in args), args
        assert "--durations=25" in args, args
        selections.append(args[args.index("-m") + 1])
    assert sorted(selections) == ["multiprocess", "not multiprocess"], selections
