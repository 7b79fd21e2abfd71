"""The carbon and SLO-attainment matrices of Section 4.3 (Figure 8), built from profiles.

Rows are workloads (application x request size x QPS), columns are configurations. Each
observed cell keeps what was *measured* (per-GPU allocated time and energy, tokens served, SLO
attainment), not carbon: carbon per token is recomputed at build time for any intensity and any
GPU lifetimes (Eq. 1-3), so one profile serves every region::

    embodied_g_per_token[r, c]  = sum_gpu seconds_gpu / LT_gpu * C_e,gpu / tokens     (Eq. 1)
    operational_g_per_token     = alpha * sum_gpu energy_gpu / tokens                 (Eq. 2)

Each observed cell also knows its energy source (``"measured"``, ``"modelled"`` or
``"unmeasured"``: 0 J, so its carbon is embodied only), so a plan can say what its figures
rest on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

import numpy as np
import numpy.typing as npt

from greenllm.carbon import embodied_carbon_g, lifetime_for, operational_carbon_g
from greenllm.config import ConfigKind, Configuration, RequestSizeDistribution, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.units import J_PER_KWH

__all__ = [
    "GPUUsageLike",
    "ProfileCell",
    "ProfileMatrices",
    "ProfileRecordLike",
    "ProfileSource",
    "RowKey",
    "cells_from_records",
    "matrices_from_store",
]


#: The energy sources of a profiled cell, weakest first (a mean takes its weakest part's).
_ENERGY_SOURCES = ("unmeasured", "modelled", "measured")


@dataclass(frozen=True, order=True)
class RowKey:
    """One matrix row: an application at a fixed request size and QPS."""

    application: str
    input_tokens: int
    output_tokens: int
    qps: float

    @property
    def label(self) -> str:
        return f"{self.application} ({self.input_tokens},{self.output_tokens}) @{self.qps:g} QPS"


class _CellSource(TypedDict, total=False):
    energy_source: str  # "measured", "modelled" (the default) or "unmeasured"


class ProfileCell(_CellSource):
    """One measured cell, as :meth:`ProfileMatrices.from_cells` takes it."""

    row: RowKey
    config: Configuration
    seconds: Sequence[float]  # allocated seconds per GPU of the configuration, new first
    energy_j: Sequence[float]  # per GPU, new first
    tokens: float  # output tokens served
    attainment: float  # fraction of requests meeting the SLO


class GPUUsageLike(Protocol):
    """What :func:`cells_from_records` reads of one GPU of a profile record."""

    @property
    def allocated_s(self) -> float: ...
    @property
    def energy_j(self) -> float: ...


class ProfileRecordLike(Protocol):
    """What :func:`cells_from_records` reads of a profile record
    (:class:`~greenllm.profiler.store.records.ProfileRecord`); its ``energy_source`` too,
    when it has one ("modelled" otherwise)."""

    @property
    def workload(self) -> Workload: ...
    @property
    def configuration(self) -> Configuration: ...
    @property
    def gpus(self) -> Sequence[GPUUsageLike]: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def slo_attainment(self) -> float: ...


class ProfileSource(Protocol):
    """Where :func:`matrices_from_store` reads profiles
    (:class:`~greenllm.profiler.store.store.ProfileStore`)."""

    def query(
        self, *, backend: str | None = ..., application: str | None = ...
    ) -> Sequence[ProfileRecordLike]: ...


@dataclass(frozen=True)
class ProfileMatrices:
    """Measured quantities per (row, configuration, GPU slot); NaN where not profiled.

    GPU slot 0 is the configuration's new GPU, slot 1 its old GPU (0 s and 0 J when absent).
    ``energy_source`` (R, C) holds each observed cell's energy source ("measured", "modelled" or
    "unmeasured"; "" where not profiled); when not given, every observed cell is "modelled".
    """

    rows: tuple[RowKey, ...]
    configs: tuple[Configuration, ...]
    seconds: np.ndarray  # (R, C, 2)
    energy_j: np.ndarray  # (R, C, 2)
    tokens: np.ndarray  # (R, C) output tokens served
    attainment: np.ndarray  # (R, C) fraction of requests meeting the SLO
    energy_source: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    observed: np.ndarray = field(init=False)  # (R, C) bool: profiled
    carbon_observed: np.ndarray = field(init=False)  # (R, C) bool: profiled and served tokens

    def __post_init__(self) -> None:
        n_rows, n_cfg = len(self.rows), len(self.configs)
        for name, shape in (
            ("seconds", (n_rows, n_cfg, 2)),
            ("energy_j", (n_rows, n_cfg, 2)),
            ("tokens", (n_rows, n_cfg)),
            ("attainment", (n_rows, n_cfg)),
        ):
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ConfigError(f"{name} has shape {arr.shape}; expected {shape}")
        observed = ~np.isnan(self.attainment)
        object.__setattr__(self, "observed", observed)
        source = np.full((n_rows, n_cfg), "modelled", dtype=object)
        given = np.asarray(self.energy_source, dtype=object)
        if given.size:
            if given.shape != (n_rows, n_cfg):
                raise ConfigError(
                    f"energy_source has shape {given.shape}; expected {(n_rows, n_cfg)}"
                )
            bad = observed & ~np.isin(given, _ENERGY_SOURCES)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ConfigError(
                    f"energy_source of row {r}, column {c} = {given[r, c]!r}: "
                    f"must be one of {_ENERGY_SOURCES}"
                )
            source = given.copy()
        source[~observed] = ""
        object.__setattr__(self, "energy_source", source)
        # A configuration that served no token at all (e.g. no request fits its KV cache) has a
        # measured attainment of 0 but no carbon per token: that cell is left to completion.
        with np.errstate(invalid="ignore"):
            object.__setattr__(self, "carbon_observed", observed & (self.tokens > 0))
        if n_rows == 0 or n_cfg == 0:
            raise ProfileError("no profiles: the matrices are empty; run `greenllm profile` first")
        _check_observed(self)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), len(self.configs))

    def select_columns(self, columns: Sequence[int] | npt.NDArray[np.integer]) -> ProfileMatrices:
        """The same matrices restricted to ``columns`` (configuration indices)."""
        idx = list(columns)
        return ProfileMatrices(
            rows=self.rows,
            configs=tuple(self.configs[i] for i in idx),
            seconds=self.seconds[:, idx],
            energy_j=self.energy_j[:, idx],
            tokens=self.tokens[:, idx],
            attainment=self.attainment[:, idx],
            energy_source=self.energy_source[:, idx],
        )

    def where(self, keep: np.ndarray, other: ProfileMatrices | None = None) -> ProfileMatrices:
        """These cells where ``keep`` (an (R, C) bool mask) is true, elsewhere ``other``'s (same
        rows and configurations) or unprofiled (NaN) when ``other`` is None."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.shape:
            raise ConfigError(f"where: mask shape {keep.shape} != matrices shape {self.shape}")
        if other is not None and (other.rows != self.rows or other.configs != self.configs):
            raise ConfigError("where: both matrices must have the same rows and configurations")

        def pick(mine: np.ndarray, theirs: np.ndarray | None) -> np.ndarray:
            mask = keep[..., None] if mine.ndim == 3 else keep
            return np.where(mask, mine, np.nan if theirs is None else theirs)

        return ProfileMatrices(
            rows=self.rows, configs=self.configs,
            seconds=pick(self.seconds, other.seconds if other else None),
            energy_j=pick(self.energy_j, other.energy_j if other else None),
            tokens=pick(self.tokens, other.tokens if other else None),
            attainment=pick(self.attainment, other.attainment if other else None),
            energy_source=np.where(keep, self.energy_source,
                                   other.energy_source if other else ""),
        )  # fmt: skip

    def column(self, config: Configuration | str | int) -> int:
        """Index of a configuration given as object, id, label or index."""
        if isinstance(config, int):
            if not 0 <= config < len(self.configs):
                raise ConfigError(
                    f"configuration index {config} out of range 0..{len(self.configs) - 1}"
                )
            return config
        for i, c in enumerate(self.configs):
            if config in (c, getattr(c, "id", None), c.label):
                return i
        labels = ", ".join(c.label for c in self.configs)
        raise ConfigError(f"configuration {config!r} is not profiled; profiled: {labels}")

    def default_column(self) -> int:
        """The Standalone configuration (the paper's baseline), else column 0."""
        for i, c in enumerate(self.configs):
            if c.kind is ConfigKind.STANDALONE:
                return i
        return 0

    def embodied_g_per_token(
        self, lifetimes_years: float | Mapping[str, float] = 7.0
    ) -> np.ndarray:
        """Eq. 1 summed over the configuration's GPUs, divided by tokens; NaN where unobserved."""
        total = np.zeros(self.shape)
        for c, cfg in enumerate(self.configs):
            for slot, gpu in enumerate(cfg.gpus):
                life = lifetime_for(gpu, lifetimes_years)
                total[:, c] += embodied_carbon_g(np.nan_to_num(self.seconds[:, c, slot]), gpu, life)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.carbon_observed, total / self.tokens, np.nan)

    def energy_kwh_per_token(self, pue: float = 1.0) -> np.ndarray:
        """Facility energy per token (kWh); multiply by intensity for Eq. 2."""
        if not np.isfinite(pue) or pue < 1:
            raise ConfigError(f"pue = {pue!r}: must be >= 1")
        with np.errstate(invalid="ignore", divide="ignore"):
            per_token = pue * self.energy_j.sum(axis=2) / self.tokens / J_PER_KWH
        return np.where(self.carbon_observed, per_token, np.nan)

    def carbon_g_per_token(
        self, intensity_g_per_kwh: float, lifetimes_years: float | Mapping[str, float] = 7.0
    ) -> np.ndarray:
        """The paper's carbon matrix C (Eq. 3 per token) at one intensity."""
        if not np.isfinite(intensity_g_per_kwh) or intensity_g_per_kwh < 0:
            raise ConfigError(f"intensity = {intensity_g_per_kwh!r}: must be a finite number >= 0")
        observed = self.carbon_observed
        with np.errstate(invalid="ignore", divide="ignore"):
            energy_j = np.where(observed, self.energy_j.sum(axis=2) / self.tokens, 0.0)
        operational = operational_carbon_g(energy_j, intensity_g_per_kwh)  # Eq. 2
        return np.where(observed, self.embodied_g_per_token(lifetimes_years) + operational, np.nan)

    @classmethod
    def from_cells(
        cls, cells: Iterable[ProfileCell], configs: Sequence[Configuration] | None = None
    ) -> ProfileMatrices:
        """Build from cell dicts with keys ``row`` (RowKey), ``config`` (Configuration),
        ``seconds`` and ``energy_j`` (per GPU of the configuration, new first), ``tokens``,
        ``attainment`` and optionally ``energy_source`` (default "modelled"). A repeated
        (row, config) cell is averaged (e.g. several run ids); its energy source is the
        weakest of its parts (unmeasured, then modelled, then measured). With ``configs``,
        cells of other configurations are left out."""
        cells = list(cells)
        if not cells:
            raise ProfileError("no profiles to build matrices from; run `greenllm profile` first")
        cfgs = list(configs) if configs is not None else _unique_configs(c["config"] for c in cells)
        wanted = {cfg.id for cfg in cfgs}
        cells = [c for c in cells if c["config"].id in wanted]
        rows = sorted({c["row"] for c in cells})
        r_of = {r: i for i, r in enumerate(rows)}
        c_of = {cfg.id: i for i, cfg in enumerate(cfgs)}
        shape = (len(rows), len(cfgs))
        sums = {
            k: np.zeros(shape + ((2,) if k in ("seconds", "energy_j") else ()))
            for k in ("seconds", "energy_j", "tokens", "attainment")
        }
        count = np.zeros(shape)
        rank = np.full(shape, len(_ENERGY_SOURCES))  # index into _ENERGY_SOURCES (weakest 0)
        for cell in cells:
            r, c = r_of[cell["row"]], c_of[cell["config"].id]
            for k in ("seconds", "energy_j"):
                vals = list(cell[k]) + [0.0] * (2 - len(cell[k]))
                sums[k][r, c] += vals[:2]
            sums["tokens"][r, c] += cell["tokens"]
            sums["attainment"][r, c] += cell["attainment"]
            count[r, c] += 1
            src = cell.get("energy_source", "modelled")
            if src not in _ENERGY_SOURCES:
                raise ConfigError(
                    f"energy_source = {src!r} of a {cell['config'].label} cell: "
                    f"must be one of {_ENERGY_SOURCES}"
                )
            rank[r, c] = min(rank[r, c], _ENERGY_SOURCES.index(src))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = {k: v / (count[..., None] if v.ndim == 3 else count) for k, v in sums.items()}
        source = np.array([*_ENERGY_SOURCES, ""], dtype=object)[rank]
        return cls(rows=tuple(rows), configs=tuple(cfgs), **mean, energy_source=source)


def matrices_from_store(
    store: ProfileSource,
    *,
    backend: str | None = None,
    application: str | None = None,
    run_id: str | None = None,
) -> ProfileMatrices:
    """Matrices from a :class:`~greenllm.profiler.store.store.ProfileStore` (the records of
    ``run_id``, or all run ids averaged).

    Time per GPU is its *allocated* time (an allocated GPU serves nobody else), tokens are the
    output tokens served. A distribution-sized workload is keyed by its P50 size.
    """
    by_run = {} if run_id is None else {"run_id": run_id}  # a ProfileStore's filter
    records = store.query(backend=backend, application=application, **by_run)
    if not records:
        where = f" for backend {backend!r}" if backend else ""
        where += f" in run {run_id!r}" if run_id else ""
        raise ProfileError(
            f"the profile store {getattr(store, 'path', '')} has no profiles{where}; "
            "run `greenllm profile` first"
        )
    return ProfileMatrices.from_cells(cells_from_records(records))


def cells_from_records(records: Iterable[ProfileRecordLike]) -> list[ProfileCell]:
    """Profile records -> the cell dicts of :meth:`ProfileMatrices.from_cells`."""
    cells: list[ProfileCell] = []
    for rec in records:
        w = rec.workload
        size = w.request_size
        if isinstance(size, RequestSizeDistribution):
            size = size.p50
        cells.append(
            {
                "row": RowKey(w.application, size.input_tokens, size.output_tokens, float(w.qps)),
                "config": rec.configuration,
                "seconds": [g.allocated_s for g in rec.gpus],
                "energy_j": [g.energy_j for g in rec.gpus],
                "tokens": rec.output_tokens,
                "attainment": rec.slo_attainment,
                "energy_source": getattr(rec, "energy_source", "modelled"),
            }
        )
    return cells


def _unique_configs(configs: Iterable[Configuration]) -> list[Configuration]:
    seen: dict[str, Configuration] = {}
    for cfg in configs:
        seen.setdefault(cfg.id, cfg)
    order = {k: i for i, k in enumerate(ConfigKind)}
    return sorted(seen.values(), key=lambda c: (order[c.kind], c.label))


def _check_observed(m: ProfileMatrices) -> None:
    obs = m.observed
    for name, arr in (("seconds", m.seconds), ("energy_j", m.energy_j)):
        vals = arr[obs]
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            r, c = np.argwhere(obs & ~np.all(np.isfinite(arr) & (arr >= 0), axis=2))[0]
            raise ProfileError(
                f"{name} of row {r} ({m.rows[r].label}), column {c} "
                f"({m.configs[c].label}) is negative or not finite"
            )
    tok = m.tokens[obs]
    if np.any(~np.isfinite(tok)) or np.any(tok < 0):
        r, c = np.argwhere(obs & ~(m.tokens >= 0))[0]
        raise ProfileError(f"tokens of row {r} ({m.rows[r].label}), column {c} must be >= 0")
    att = m.attainment[obs]
    if np.any((att < 0) | (att > 1)):
        r, c = np.argwhere(obs & ((m.attainment < 0) | (m.attainment > 1)))[0]
        raise ProfileError(
            f"SLO attainment of row {r} ({m.rows[r].label}), column {c} "
            f"is {float(m.attainment[r, c])!r}; must be in [0, 1]"
        )
    empty_rows = np.flatnonzero(~obs.any(axis=1))
    if empty_rows.size:
        raise ProfileError(
            f"row {empty_rows[0]} ({m.rows[empty_rows[0]].label}) has no profiled "
            "configuration; profile at least one cell per row"
        )
    empty_cols = np.flatnonzero(~obs.any(axis=0))
    if empty_cols.size:
        raise ProfileError(
            f"column {empty_cols[0]} ({m.configs[empty_cols[0]].label}) has no "
            "profiled workload; profile at least one cell per configuration"
        )
