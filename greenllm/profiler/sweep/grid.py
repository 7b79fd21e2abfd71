"""What a sweep measures: cells of configurations x workloads (application, size, QPS).

A :class:`SweepGrid` is the full grid; :meth:`SweepGrid.cells` (or :func:`sample_cells`) picks a
deterministic fraction of it that still covers every row (workload) and every column
(configuration), which is what the planner's collaborative filtering needs to fill the rest
(paper, Section 4.3). :func:`parse_configurations` reads the command line's configuration
grammar (``standalone,spec:llama-1b,dpd:T4,dsd:T4:llama-1b@H100`` or ``paper``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from greenllm.config import ConfigKind, Configuration, Workload
from greenllm.errors import ConfigError
from greenllm.profiler.store.records import cell_id, qps_key, size_label

__all__ = [
    "DEFAULT_NEW_GPU",
    "DEFAULT_TARGET",
    "Cell",
    "SweepGrid",
    "legacy_configuration_id",
    "paper_configurations",
    "parse_configurations",
    "sample_cells",
]

DEFAULT_NEW_GPU = "A100"
DEFAULT_TARGET = "llama-2-7b"
PAPER_DRAFTS = ("llama-1b", "llama-300m")
PAPER_OLD_GPUS = ("T4", "V100")
# The fields of a configuration in greenllm 0.1.0 (see legacy_configuration_id).
_RELEASE_0_1_FIELDS = frozenset(
    {
        *("kind", "new_gpu", "old_gpu", "target_model", "draft_model", "link_gbps"),
        "num_speculative_tokens",
    }
)
_GRAMMAR = (
    "standalone | spec:DRAFT | dpd:OLD_GPU | dsd:OLD_GPU:DRAFT, each optionally @NEW_GPU, "
    "or 'paper' for the nine configurations of Section 7.1"
)


def paper_configurations(
    link_gbps: float = 16.0, new_gpu: str = DEFAULT_NEW_GPU, target_model: str = DEFAULT_TARGET
) -> list[Configuration]:
    """The nine configurations of Section 7.1 (Standalone first: the paper's baseline).

    Standalone; SpecDecode with a 1B or 300M draft; DPD with decode on a T4 or V100; DSD with
    a 1B or 300M draft on a T4 or V100 (the target and the new GPU shared by all).
    """
    base = {"new_gpu": new_gpu, "target_model": target_model}
    configs = [Configuration(kind="standalone", **base)]
    configs += [Configuration(kind="spec_decode", draft_model=d, **base) for d in PAPER_DRAFTS]
    configs += [
        Configuration(kind="dpd", old_gpu=o, link_gbps=link_gbps, **base) for o in PAPER_OLD_GPUS
    ]
    configs += [
        Configuration(kind="dsd", old_gpu=o, draft_model=d, link_gbps=link_gbps, **base)
        for o in PAPER_OLD_GPUS
        for d in PAPER_DRAFTS
    ]
    return configs


@dataclass(frozen=True)
class Cell:
    """One (workload, configuration) measurement to make."""

    workload: Workload
    configuration: Configuration

    def cell_id(self, backend: str, run_id: str) -> str:
        """The store's key of this cell measured by ``backend`` in run ``run_id``."""
        w = self.workload
        return cell_id(w.application, w.request_size, w.qps, self.configuration.id, backend, run_id)

    @property
    def row(self) -> tuple[str, str, str]:
        """The planner's row key: (application, request size label, QPS to 6 digits)."""
        w = self.workload
        return (w.application, size_label(w.request_size), qps_key(w.qps))

    @property
    def label(self) -> str:
        w = self.workload
        return f"{w.application} {size_label(w.request_size)} qps={w.qps:g} | " + (
            self.configuration.label
        )


def legacy_configuration_id(configuration: Configuration) -> str:
    """The id greenllm 0.1.0 gave ``configuration``: ``<kind>-`` and the first 12 hex digits
    of the SHA-1 of its JSON, restricted to the fields 0.1.0 had (so a new field changes nothing).

    What that release wrote beside a store (infeasible sidecars) is keyed by it, and sampling
    ranks cells by it (:func:`sample_cells`), so that a sampled sweep started with 0.1.0 keeps
    its sample. Never change it; the store's key is :attr:`Configuration.id`.
    """
    text = configuration.model_dump_json(include=set(_RELEASE_0_1_FIELDS))
    return f"{configuration.kind.value}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _score(seed: int, cell: Cell) -> tuple[int, str]:
    """A pseudo-random rank of ``cell`` for ``seed``: independent of the order of the grid
    (and the same as greenllm 0.1.0's, which hashed its configuration id)."""
    key = "\x1f".join((str(seed), *cell.row, legacy_configuration_id(cell.configuration)))
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big"), cell.configuration.id


def sample_cells(cells: Sequence[Cell], fraction: float, seed: int = 0) -> list[Cell]:
    """A deterministic sample of about ``fraction`` of ``cells`` covering every row and column.

    Every cell gets a rank from a hash of (seed, row, configuration id), so the choice does not
    depend on the order of ``cells`` and a grown grid keeps most earlier choices. The sample is:
    the lowest-ranked cell of each row (workload), then the lowest-ranked cell of each column
    (configuration) not yet covered, then the lowest-ranked others up to
    ``ceil(fraction x len(cells))``. The result may therefore hold more than that when the grid
    has more rows or columns than the fraction allows. Order of ``cells`` is kept.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ConfigError(f"fraction = {fraction!r}: must be in (0, 1] (1 measures every cell)")
    unique = list({(c.row, c.configuration.id): c for c in cells}.values())
    if fraction >= 1 or not unique:
        return unique
    ranked = sorted(unique, key=lambda c: _score(seed, c))
    chosen: set[int] = set()
    rows_done: set[tuple[str, str, str]] = set()
    for c in ranked:
        if c.row not in rows_done:
            rows_done.add(c.row)
            chosen.add(id(c))
    cols_done = {c.configuration.id for c in ranked if id(c) in chosen}
    for c in ranked:
        if c.configuration.id not in cols_done:
            cols_done.add(c.configuration.id)
            chosen.add(id(c))
    target = math.ceil(fraction * len(unique) - 1e-9)
    for c in ranked:
        if len(chosen) >= target:
            break
        chosen.add(id(c))
    return [c for c in unique if id(c) in chosen]


@dataclass(frozen=True)
class SweepGrid:
    """Configurations (columns) x workloads (rows: application, request size, QPS)."""

    configurations: tuple[Configuration, ...]
    workloads: tuple[Workload, ...]

    @classmethod
    def build(
        cls,
        configurations: Iterable[Configuration],
        applications: Iterable[str] = ("sharegpt", "humaneval", "longbench"),
        sizes: Iterable[str] = ("p50",),
        qps: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    ) -> SweepGrid:
        """Rows for every application x size x QPS, each with its application's SLO (Table 2).

        ``qps`` is one list for all applications, ``{app: list}``, or None for
        :func:`greenllm.workloads.paper_qps_range` of each application.
        """
        from greenllm.workloads import get_application, paper_qps_range, workload

        configs = tuple({c.id: c for c in configurations}.values())
        if not configs:
            raise ConfigError("no configurations: give at least one (e.g. 'standalone')")
        apps = [get_application(a).name for a in applications]
        sizes = list(sizes)
        if not apps or not sizes:
            raise ConfigError("no applications or no request sizes: give at least one of each")
        rows: dict[tuple[str, str, str], Workload] = {}
        for app in apps:
            levels = (
                paper_qps_range(app)
                if qps is None
                else (qps[app] if isinstance(qps, Mapping) else qps)
            )
            if not levels:
                raise ConfigError(f"no QPS values for {app}: give at least one, e.g. 0.5:8:0.5")
            for size in sizes:
                for q in levels:
                    if not (isinstance(q, (int, float)) and 0 < q < math.inf):
                        raise ConfigError(f"QPS {q!r} for {app}: must be a number > 0")
                    w = workload(app, float(q), size=size)
                    rows.setdefault(Cell(w, configs[0]).row, w)
        return cls(configs, tuple(rows.values()))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns): workloads x configurations."""
        return len(self.workloads), len(self.configurations)

    def cells(self, fraction: float = 1.0, seed: int = 0) -> list[Cell]:
        """All cells, row by row, or a covering sample of ``fraction`` (:func:`sample_cells`)."""
        cells = [Cell(w, c) for w in self.workloads for c in self.configurations]
        return sample_cells(cells, fraction, seed)


def parse_configurations(
    text: str,
    *,
    new_gpu: str = DEFAULT_NEW_GPU,
    target_model: str = DEFAULT_TARGET,
    link_gbps: float = 16.0,
) -> list[Configuration]:
    """Configurations from a comma list in the grammar of ``docs/sweeps.md``.

    ``standalone``, ``spec:DRAFT``, ``dpd:OLD_GPU``, ``dsd:OLD_GPU:DRAFT``, each with an optional
    ``@NEW_GPU`` (default ``new_gpu``); the target is ``target_model``, the link ``link_gbps``
    for DPD/DSD. ``paper`` expands to the nine configurations of Section 7.1. GPU names are
    checked against the catalog; duplicates are dropped (first kept).
    """
    from greenllm.carbon import get_gpu

    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--configs {text!r}: empty; expected {_GRAMMAR}")
    out: list[Configuration] = []
    for item in items:
        if item.lower() == "paper":
            out += paper_configurations(link_gbps, get_gpu(new_gpu).name, target_model)
            continue
        body, at, new = item.partition("@")
        kind_name, *parts = [p.strip() for p in body.split(":")]
        try:
            kind = ConfigKind(kind_name)
        except ValueError:
            raise ConfigError(
                f"configuration {item!r}: unknown kind {kind_name!r}; expected {_GRAMMAR}"
            ) from None
        arity = {
            ConfigKind.STANDALONE: 0,
            ConfigKind.SPEC_DECODE: 1,
            ConfigKind.DPD: 1,
            ConfigKind.DSD: 2,
        }[kind]
        if at and not new.strip():
            raise ConfigError(f"configuration {item!r}: no GPU after '@'; e.g. {body}@H100")
        if len(parts) != arity or not all(parts):
            raise ConfigError(
                f"configuration {item!r}: {kind.label} takes {arity} ':' "
                f"argument(s); expected {_GRAMMAR}"
            )
        fields: dict[str, object] = {
            "kind": kind,
            "new_gpu": get_gpu(new.strip() or new_gpu).name,
            "target_model": target_model,
        }
        if kind in (ConfigKind.DPD, ConfigKind.DSD):
            fields.update(old_gpu=get_gpu(parts[0]).name, link_gbps=link_gbps)
        if kind is ConfigKind.SPEC_DECODE:
            fields["draft_model"] = parts[0]
        elif kind is ConfigKind.DSD:
            fields["draft_model"] = parts[1]
        out.append(Configuration(**fields))
    return list({c.id: c for c in out}.values())
