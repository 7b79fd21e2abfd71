"""Fixtures of the CLI tests: a small profile store, made once per session on the simulator."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from greenllm.cli import main


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """Three configurations x ShareGPT at 1 and 2 QPS, 30 requests a cell (about a second)."""
    path = tmp_path_factory.mktemp("store") / "profiles.sqlite"
    configs = "standalone,dpd:T4,dsd:T4:llama-300m"
    argv = ["profile", "--configs", configs, "--apps", "sharegpt", "--qps", "1,2",
            "--requests", "30", "--store", str(path), "--quiet", "--json"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return path
