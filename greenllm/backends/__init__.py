"""Backends: the :class:`Backend` protocol, what a run returns, and the registry of backends.

Modelled on vLLM's KV-connector factory: entries are strings, imported on first use, so listing
backends never imports torch, vLLM or Ray. Built-in: ``sim`` (the GPU simulator), ``torch``
(greenllm's own engine, :mod:`greenllm.engine`) and ``vllm`` (real vLLM engines). Out-of-tree
backends register through the entry-point group ``greenllm.backends``::

    # the plugin's pyproject.toml
    [project.entry-points."greenllm.backends"]
    mybackend = "my_package.backend:MyBackend"

or at run time with :func:`register_backend`. Names are unique: an entry point that reuses a
name already registered is skipped with a warning; :func:`register_backend` raises instead.

>>> from greenllm.backends import get_backend
>>> backend = get_backend("sim")            # doctest: +SKIP
"""

from __future__ import annotations

from greenllm.backends.base import (
    ROLES,
    Backend,
    BackendBase,
    Capabilities,
    GPUTrace,
    RunExtra,
    RunResult,
)
from greenllm.backends.registry import (
    BUILTIN_BACKENDS,
    ENTRY_POINT_GROUP,
    backend_class,
    get_backend,
    list_backends,
    register_backend,
    unregister_backend,
)

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "ROLES",
    "Backend",
    "BackendBase",
    "Capabilities",
    "GPUTrace",
    "RunExtra",
    "RunResult",
    "backend_class",
    "get_backend",
    "list_backends",
    "register_backend",
    "unregister_backend",
]
