"""Shared test helpers: repository paths and config loading."""

from __future__ import annotations

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO
