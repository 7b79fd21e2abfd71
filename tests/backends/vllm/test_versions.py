"""Version pin and feature checks: errors name what is missing and how to fix it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from greenllm.backends.vllm import TESTED_RANGE
from greenllm.backends.vllm.process import WorkerProcess
from greenllm.backends.vllm.versions import (
    FEATURES,
    check,
    check_version,
    missing_features,
    needed_features,
    parse_version,
)
from greenllm.errors import BackendUnavailableError, ConfigError, WorkerError

ALL = dict.fromkeys(FEATURES, True)


def test_parse_version() -> None:
    assert parse_version("0.32.0") == (0, 32, 0)
    assert parse_version("0.32.1+cpu") == (0, 32, 1)
    assert parse_version("v1.2") == (1, 2, 0)
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR"):
        parse_version("dev")


def test_the_tested_range_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENLLM_VLLM_ALLOW_UNTESTED", raising=False)
    check_version(TESTED_RANGE[0])
    check_version("0.32.9")
    for bad in ("0.31.2", "0.33.0", "1.0.0"):
        with pytest.raises(BackendUnavailableError, match=r">=0\.32\.0,<0\.33\.0") as err:
            check_version(bad)
        assert "GREENLLM_VLLM_ALLOW_UNTESTED=1" in str(err.value)
    monkeypatch.setenv("GREENLLM_VLLM_ALLOW_UNTESTED", "1")
    check_version("0.40.0")


def test_each_kind_needs_its_features() -> None:
    assert "custom_class" in needed_features("dsd")
    assert "draft_model" in needed_features("spec_decode")
    assert "example_connector" in needed_features("dpd")
    assert "nixl_connector" in needed_features("dpd", device="cuda")
    assert "kv_cache_memory_bytes" not in needed_features("standalone", device="cuda")
    assert missing_features({"llm": True}, ["llm", "custom_class"]) == ["custom_class"]
    with pytest.raises(ConfigError, match="kind"):
        needed_features("pipeline")


def test_a_missing_feature_is_named_with_the_fix() -> None:
    check("0.32.0", ALL, "dsd")
    with pytest.raises(BackendUnavailableError) as err:
        check("0.32.0", {**ALL, "custom_class": False}, "dsd")
    msg = str(err.value)
    assert "custom_class" in msg and "custom_class_proposer" in msg and "greenllm[vllm" in msg
    check("0.32.0", {**ALL, "custom_class": False}, "standalone")  # not needed there


def test_worker_without_vllm_reports_unavailable(tmp_path: Path) -> None:
    """A real worker process on a Python without vLLM: BackendUnavailableError, not a hang."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this Python has vLLM")
    w = WorkerProcess("nov", Path(sys.executable), "greenllm.backends.vllm.worker",
                      log_path=tmp_path / "w.log")  # fmt: skip
    try:
        w.send({"type": "start", "kind": "standalone", "device": "cpu", "engine": {}})
        with pytest.raises(BackendUnavailableError, match="vLLM is not importable"):
            w.wait_for("ready", 60)
    finally:
        w.close()
    w2 = WorkerProcess("bad", Path(sys.executable), "greenllm.backends.vllm.worker",
                       log_path=tmp_path / "w2.log")  # fmt: skip
    try:
        w2.send({"type": "generate"})
        with pytest.raises(WorkerError, match="first command must be 'start'"):
            w2.wait_for("ready", 60)
    finally:
        w2.close()
    assert not w.alive() and not w2.alive()
