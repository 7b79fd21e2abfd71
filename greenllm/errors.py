"""Typed errors: every failure greenllm raises on purpose derives from :class:`GreenLLMError`.

Messages name the bad value and say how to fix it. Vendor exceptions (NVML, vLLM, torch,
sqlite) are translated at the boundary with ``raise ... from err``.
"""

from __future__ import annotations

__all__ = [
    "BackendClosedError",
    "BackendUnavailableError",
    "ConfigError",
    "GreenLLMError",
    "InfeasibleError",
    "ProfileError",
    "WorkerError",
    "missing_extra",
]


class GreenLLMError(Exception):
    """Root of every error greenllm raises on purpose."""


class ConfigError(GreenLLMError, ValueError):
    """A value given by the user is invalid: a field out of range, an unknown name, a bad shape."""


class BackendUnavailableError(GreenLLMError, ImportError):
    """An optional dependency or a piece of hardware a backend needs is absent.

    The message names the extra to install, e.g. ``pip install 'greenllm[torch]'``.
    """


class InfeasibleError(GreenLLMError):
    """No configuration can serve the request: a model that does not fit, an overloaded system."""


class ProfileError(GreenLLMError):
    """Profiling or the profile store failed: no samples, an unreadable store, an empty matrix."""


class WorkerError(GreenLLMError):
    """A serving worker (process or Ray actor) failed or vanished."""


class BackendClosedError(GreenLLMError, RuntimeError):
    """A backend was used after :meth:`close`; create a new one."""


def missing_extra(module: str, extra: str) -> BackendUnavailableError:
    """The error for an optional ``module`` (from ``greenllm[extra]``) that cannot be imported."""
    return BackendUnavailableError(
        f"{module!r} is not installed; install it with: pip install 'greenllm[{extra}]'"
    )
