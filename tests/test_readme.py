"""The README cannot drift from the code: every command in its code blocks exists and
takes each flag it is given there (its own --help lists them), and every config key it
names (`--config.KEY=...`, `data.KEY`, ...) resolves in a packaged config."""

import functools
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO

from efafnet_jax.config import load_config, packaged_config_names

README = REPO / "README.md"
CONFIG_SECTIONS = ("model", "data", "train", "eval")
# Flags of absl itself (every command has them); --config.KEY is checked against configs.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "flagfile", "logtostderr", "alsologtostderr"}


def console_scripts() -> dict[str, str]:
    """{console script: module} from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {name: target.split(":")[0] for name, target in project["scripts"].items()}


def shell_lines(markdown: str) -> list[str]:
    """The command lines of the markdown's bash code blocks, continuations joined."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", markdown, flags=re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def invocations(markdown: str) -> list[tuple[list[str], list[str]]]:
    """(how to run the command's --help, its arguments) for each command of this project
    in the markdown's code blocks: console scripts, `python -m efafnet_jax...`, `python
    train.py` / `eval.py` and `python benchmarks/NAME.py`."""
    scripts = console_scripts()
    found = []
    for line in shell_lines(markdown):
        for command in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(command)
            while words and ("=" in words[0] and not words[0].startswith("-")):
                words = words[1:]  # VAR=value before the command
            if not words:
                continue
            if words[0] in scripts:
                found.append(([sys.executable, "-m", scripts[words[0]]], words[1:]))
            elif words[0] in ("python", "python3") and len(words) > 1:
                if words[1] == "-m" and words[2].startswith(("efafnet_jax", "benchmarks")):
                    found.append(([sys.executable, "-m", words[2]], words[3:]))
                elif words[1] in ("train.py", "eval.py") or words[1].startswith("benchmarks/"):
                    found.append(([sys.executable, str(REPO / words[1])], words[2:]))
    return found


@functools.cache
def help_flags(runner: tuple[str, ...]) -> frozenset[str]:
    """The flags a command's --help defines (`--[no]NAME` counted as NAME)."""
    proc = subprocess.run(
        [*runner, "--help"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    text = proc.stdout + proc.stderr
    # absl's --help exits with status 1: the flag listing is what shows it worked.
    assert "\nflags:" in text and "Traceback" not in text, f"{runner} --help:\n{text[-2000:]}"
    definitions = text.split("\nflags:", 1)[1]
    return frozenset(re.findall(r"^\s+--(?:\[no\])?([A-Za-z0-9_]+):", definitions, flags=re.M))


def flag_names(arguments: list[str]) -> list[str]:
    """The flag names given in `arguments`, as absl spells them (dashes to underscores);
    --config.KEY overrides are left to the config check."""
    names = []
    for argument in arguments:
        if not argument.startswith("--") or argument.startswith("--config."):
            continue
        names.append(argument[2:].split("=", 1)[0].replace("-", "_"))
    return names


def defines(flags: frozenset[str], name: str) -> bool:
    """Whether `name` is a defined flag, or the negation (--noNAME, --no_NAME) of one."""
    if name in flags or name in ABSL_FLAGS:
        return True
    negated = name.removeprefix("no_") if name.startswith("no_") else name.removeprefix("no")
    return name.startswith("no") and negated in flags


def config_keys(markdown: str) -> set[str]:
    """Config keys named anywhere: `--config.KEY[=...]`, and `data.KEY`-style names in
    inline code."""
    keys = set(re.findall(r"--config\.([A-Za-z0-9_.]+)", markdown))
    for code in re.findall(r"`([^`\n]+)`", markdown):
        keys |= {
            match
            for match in re.findall(r"(?<![\w./-])((?:model|data|train|eval)\.[a-z0-9_.]+)", code)
            if not match.endswith(".")
        }
    return {key.rstrip(".") for key in keys}


@functools.cache
def packaged_configs() -> dict:
    return {name: load_config(name) for name in packaged_config_names()}


def resolves(key: str) -> bool:
    """Whether `key` names a value or a section of at least one packaged config."""
    for config in packaged_configs().values():
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                break
            node = node[part]
        else:
            return True
    return False


def test_every_command_in_the_readme_takes_the_flags_it_is_given_there():
    found = invocations(README.read_text())
    assert len(found) >= 10, "the README's commands were not found"
    runners = sorted({tuple(runner) for runner, _ in found})
    with ThreadPoolExecutor(max_workers=2) as pool:
        defined = dict(zip(runners, pool.map(help_flags, runners), strict=True))
    unknown = [
        f"{' '.join(runner[2:] if runner[1] == '-m' else runner[1:])} --{name}"
        for runner, arguments in found
        for name in flag_names(arguments)
        if not defines(defined[tuple(runner)], name)
    ]
    assert not unknown, f"flags the README gives that their command lacks: {unknown}"


def test_every_config_key_the_readme_names_exists():
    keys = config_keys(README.read_text())
    assert len(keys) >= 5, "the README's config keys were not found"
    missing = sorted(key for key in keys if not resolves(key))
    assert not missing, f"config keys in the README that no packaged config has: {missing}"


@pytest.mark.parametrize(
    "markdown, command, flag",
    [
        ("```bash\nefafnet-eval --workdir W --json\n```", "efafnet_jax.commands.evaluate", "json"),
        ("```bash\nX=1 python -m efafnet_jax.inference.predict \\\n  --no-flip-test\n```",
         "efafnet_jax.inference.predict", "no_flip_test"),
    ],
)  # fmt: skip
def test_the_parser_finds_commands_and_flags_as_written(markdown, command, flag):
    [(runner, arguments)] = invocations(markdown)
    assert runner[-1] == command and flag in flag_names(arguments)
