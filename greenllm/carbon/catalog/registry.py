"""GPU catalog: Table 1 of the paper exactly, more GPUs from vendor data sheets, ACT estimates.

``T4``, ``V100`` and ``A100`` (the 40 GB part) carry Table 1's numbers unchanged, including its
embodied carbon ``C_e`` of Eq. 1. Every other GPU's specs come from NVIDIA data sheets and
whitepapers (cited in its ``source``) and its ``C_e`` from :func:`act_embodied_kg`, an ACT-style
estimate (Gupta et al., ISCA 2022; :mod:`greenllm.carbon.catalog.act`, re-exported here).
``idle_power_w`` is the median nvidia-smi reading of an idle GPU (no process) in published
nvidia-smi outputs. The rows are in :mod:`greenllm.carbon.catalog.rows`; docs/carbon.md lists every
number's source.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import re
import threading
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Literal, TypedDict

from greenllm.carbon.catalog.act import (
    act_embodied_kg,
    canonical_memory_type,
)
from greenllm.carbon.catalog.rows import GPU_ROWS
from greenllm.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "EMBODIED_SOURCES",
    "EmbodiedSource",
    "GPURow",
    "GPUSpec",
    "GPUSpecFields",
    "get_gpu",
    "list_gpus",
    "register_gpu",
    "unregister_gpu",
]

logger = logging.getLogger(__name__)

EmbodiedSource = Literal["paper-table1", "act-estimate", "user"]
EMBODIED_SOURCES = ("paper-table1", "act-estimate", "user")


class GPUSpecFields(TypedDict, total=False):
    """The keyword arguments of :meth:`GPUSpec.create`: every field but ``name`` and
    ``embodied_kg`` (the ones without a default in :class:`GPUSpec` must be given)."""

    vram_gb: float
    mem_bw_gbs: float
    die_area_mm2: float
    max_power_w: float
    node_nm: float
    fp16_tflops: float
    year: int
    idle_power_w: float
    memory_type: str
    supports_bf16: bool
    aliases: tuple[str, ...]
    embodied_source: EmbodiedSource
    source: str


class _Named(TypedDict):
    name: str


class GPURow(_Named, GPUSpecFields, total=False):
    """One row of the built-in catalog (:mod:`greenllm.carbon.catalog.rows`): ``name`` and the
    keyword arguments of :meth:`GPUSpec.create`, ``embodied_kg`` included when published."""

    embodied_kg: float


@dataclass(frozen=True)
class GPUSpec:
    """One GPU model. Build with :meth:`create` (validates, estimates ``embodied_kg`` by ACT
    when omitted) and add it to the catalog with :func:`register_gpu`."""

    name: str
    vram_gb: float
    mem_bw_gbs: float  # memory bandwidth, GB/s
    die_area_mm2: float
    max_power_w: float  # board power limit (TDP)
    node_nm: float
    fp16_tflops: float  # dense FP16 (tensor where the data sheet gives it), TFLOP/s
    year: int
    embodied_kg: float  # C_e of Eq. 1, kg CO2e
    idle_power_w: float  # typical idle draw (nvidia-smi, no process)
    memory_type: str = "HBM2"
    supports_bf16: bool = True
    aliases: tuple[str, ...] = ()
    embodied_source: EmbodiedSource = "user"
    source: str = ""  # where the numbers come from

    @classmethod
    def create(
        cls, name: str, *, embodied_kg: float | None = None, **kw: Unpack[GPUSpecFields]
    ) -> GPUSpec:
        """A validated spec; ``embodied_kg=None`` -> :func:`act_embodied_kg` (``act-estimate``)."""
        if embodied_kg is None:
            try:
                embodied_kg = act_embodied_kg(
                    kw["die_area_mm2"], kw["node_nm"], kw["vram_gb"], kw.get("memory_type", "HBM2")
                )
            except KeyError as err:
                raise ConfigError(f"GPUSpec.create({name!r}): missing {err.args[0]}") from err
            kw["embodied_source"] = "act-estimate"
        kw.setdefault("embodied_source", "user")
        try:
            spec = cls(name=name, embodied_kg=embodied_kg, **kw)
        except TypeError as err:
            allowed = ", ".join(f.name for f in fields(cls))
            raise ConfigError(f"GPUSpec.create({name!r}): {err}; fields: {allowed}") from err
        return spec.validated()

    def validated(self) -> GPUSpec:
        """Return ``self`` if every field is plausible, else raise :class:`ConfigError`."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"GPUSpec.name = {self.name!r}: must be a non-empty string")
        where = f"GPUSpec({self.name!r})"
        for f in ("vram_gb", "mem_bw_gbs", "die_area_mm2", "max_power_w", "node_nm",
                  "fp16_tflops", "embodied_kg", "idle_power_w"):  # fmt: skip
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}.{f} = {v!r}: must be a finite number")
            if v < 0 or (v == 0 and f != "idle_power_w"):
                op = ">=" if f == "idle_power_w" else ">"
                raise ConfigError(f"{where}.{f} = {v!r}: must be {op} 0")
        if self.idle_power_w >= self.max_power_w:
            raise ConfigError(
                f"{where}.idle_power_w = {self.idle_power_w}: must be < max_power_w "
                f"({self.max_power_w})"
            )
        if (
            isinstance(self.year, bool)
            or not isinstance(self.year, numbers.Integral)
            or not (1990 <= self.year <= 2100)
        ):
            raise ConfigError(f"{where}.year = {self.year!r}: must be an integer in 1990..2100")
        canonical_memory_type(self.memory_type)
        if self.embodied_source not in EMBODIED_SOURCES:
            raise ConfigError(
                f"{where}.embodied_source = {self.embodied_source!r}: allowed "
                f"{', '.join(EMBODIED_SOURCES)}"
            )
        if not isinstance(self.aliases, tuple) or not all(
            isinstance(a, str) and _key(a) for a in self.aliases
        ):
            raise ConfigError(f"{where}.aliases = {self.aliases!r}: must be a tuple of names")
        return self

    def to_dict(self) -> dict[str, str | int | float | bool | list[str]]:
        """Plain JSON-ready dict (aliases as a list)."""
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


def _key(name: str) -> str:
    """Lookup key: lower case, separators dropped, 'nvidia'/'tesla' prefixes dropped."""
    k = re.sub(r"[^0-9a-z]+", "", name.lower())
    changed = True
    while changed:
        changed = False
        for prefix in ("nvidia", "tesla"):
            if k.startswith(prefix) and len(k) > len(prefix):
                k, changed = k[len(prefix) :], True
    return k


_LOCK = threading.RLock()
_REGISTRY: dict[str, GPUSpec] = {}  # canonical name -> spec, in registration order
_INDEX: dict[str, str] = {}  # lookup key (name or alias) -> canonical name


def register_gpu(spec: GPUSpec, *, replace: bool = False) -> None:
    """Add ``spec`` to the catalog. A name or alias already taken raises :class:`ConfigError`
    unless ``replace=True`` and it belongs to the GPU of the same name being replaced."""
    if not isinstance(spec, GPUSpec):
        raise ConfigError(f"register_gpu expects a GPUSpec (see GPUSpec.create), got {spec!r}")
    spec.validated()
    keys = [_key(spec.name), *(_key(a) for a in spec.aliases)]
    with _LOCK:
        old = _INDEX.get(keys[0])
        if old is not None and not replace:
            raise ConfigError(
                f"GPU {spec.name!r} clashes with catalog entry {old!r}; pass replace=True to "
                f"overwrite it, or choose another name"
            )
        for alias, k in zip((spec.name, *spec.aliases), keys, strict=True):
            owner = _INDEX.get(k)
            if owner is not None and _key(owner) != keys[0]:
                raise ConfigError(
                    f"alias {alias!r} of GPU {spec.name!r} already names {owner!r}; "
                    f"drop it from aliases or unregister_gpu({owner!r}) first"
                )
        if old is not None:
            _drop(old)
        _REGISTRY[spec.name] = spec
        for k in keys:
            _INDEX[k] = spec.name
    logger.debug("registered GPU %s (embodied %.2f kg, %s)", spec.name, spec.embodied_kg,
                 spec.embodied_source)  # fmt: skip


def unregister_gpu(name: str) -> None:
    """Remove a GPU (by name or alias) from the catalog."""
    with _LOCK:
        _drop(get_gpu(name).name)


def _drop(canonical: str) -> None:
    _REGISTRY.pop(canonical, None)
    for k in [k for k, v in _INDEX.items() if v == canonical]:
        del _INDEX[k]


def list_gpus() -> list[str]:
    """Canonical names in the catalog, in registration order (Table 1 first)."""
    with _LOCK:
        return list(_REGISTRY)


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The catalog entry for ``name`` (case-insensitive; aliases such as ``a100-40gb``,
    ``Tesla T4``, ``h100-sxm``); a :class:`GPUSpec` is validated and returned as is."""
    if isinstance(name, GPUSpec):
        return name.validated()
    if not isinstance(name, str):
        raise ConfigError(f"gpu = {name!r}: expected a GPU name (str) or a GPUSpec")
    with _LOCK:
        canonical = _INDEX.get(_key(name))
        if canonical is not None:
            return _REGISTRY[canonical]
        known = list(_REGISTRY)
    close = difflib.get_close_matches(name.upper(), [k.upper() for k in known], n=1)
    hint = f" Did you mean {known[[k.upper() for k in known].index(close[0])]!r}?" if close else ""
    raise ConfigError(
        f"unknown GPU {name!r}.{hint} Known GPUs: {', '.join(known)} (case-insensitive; "
        f"aliases such as 'a100-40gb' or 'Tesla T4' work). To add one: "
        f"greenllm.carbon.register_gpu(GPUSpec.create({name!r}, vram_gb=..., ...))"
    )


# The built-in catalog (rows and their sources: greenllm.carbon.catalog.rows), Table 1 first.
_CATALOG = tuple(GPUSpec.create(**row) for row in GPU_ROWS)
for _spec in _CATALOG:
    register_gpu(_spec)
