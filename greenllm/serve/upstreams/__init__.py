"""Upstream implementations, imported lazily by name: ``sim`` (the simulator's virtual GPUs,
:mod:`~greenllm.serve.upstreams.sim`), ``torch`` (greenllm's own engine) and ``vllm`` (vLLM
servers). ``upstream_class("sim")`` imports only the module it names, so a missing optional
extra (torch, vLLM) matters only to the upstream that needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from greenllm.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.serve.upstream import Upstream

__all__ = ["UPSTREAMS", "upstream_class"]

#: Upstream name -> ``"module:Class"``, imported on first use.
UPSTREAMS: dict[str, str] = {
    "sim": "greenllm.serve.upstreams.sim:SimUpstream",
    "torch": "greenllm.serve.upstreams.torch:TorchUpstream",
    "vllm": "greenllm.serve.upstreams.vllm:VLLMUpstream",
}


def upstream_class(name: str) -> type[Upstream]:
    """The :class:`~greenllm.serve.upstream.Upstream` subclass registered as ``name``
    (imported now); :class:`ConfigError` listing the names for an unknown one."""
    if not isinstance(name, str) or name.strip().lower() not in UPSTREAMS:
        raise ConfigError(f"unknown upstream {name!r:.60}; known: {', '.join(sorted(UPSTREAMS))}")
    module, _, attr = UPSTREAMS[name.strip().lower()].partition(":")
    cls: type[Upstream] = getattr(importlib.import_module(module), attr)
    return cls
