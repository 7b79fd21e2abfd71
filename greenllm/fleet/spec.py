"""The fleet file: the GPUs you have, the workloads you serve and the models, in TOML.

```toml
region = "CISO"                 # or intensity_g_per_kwh = 261, or a live reading:
# intensity_provider = "electricitymaps"   (static | trace | electricitymaps | watttime)
# zone = "US-CAL-CISO"                      (default: region); trace_year = 2022 for "trace"
pue = 1.0

[models]
target = "llama-2-7b"
drafts = ["llama-1b", "llama-300m"]

[[gpus]]
type = "T4"                     # a catalog name (`greenllm gpus`)
count = 4
host = "old-rack"
lifetime_years = 10             # optional (default 7); embodied_kg = 120 overrides C_e
price_per_hour = 0.526          # optional (a default for catalog GPUs, docs/fleet.md)

[[links]]                       # between hosts (default: the paper's 16 Gbit/s)
hosts = ["old-rack", "new-node"]
gbps = 25

[[workloads]]
name = "chat"
qps = 3.0
application = "sharegpt"        # a Table 2 application, or `sizes` below
ttft_s = 0.2                    # optional: the application's SLO otherwise
tpot_s = 0.08
attainment = 0.9                # the SLO attainment target (default 0.9)
# sizes = { p25 = [700, 40], p50 = [1500, 90], p75 = [2600, 180] }   # (input, output) tokens
```

Validated by pydantic; an error names the file, the line and the field
(``fleet.toml:14: workloads[1].qps: Input should be greater than 0``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from greenllm.errors import ConfigError

__all__ = ["CustomModel", "FleetSpec", "GPUEntry", "GPUSpecEntry", "LinkEntry", "ModelsEntry",
           "WorkloadEntry", "load_fleet", "parse_fleet"]

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]
DEFAULT_LINK_GBPS = 16.0


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class GPUSpecEntry(_Model):
    """A GPU the catalog does not know (its data sheet); ``embodied_kg`` by ACT if omitted."""

    vram_gb: Annotated[float, Field(gt=0, le=4096)]
    mem_bw_gbs: Annotated[float, Field(gt=0, le=100_000)]
    die_area_mm2: Annotated[float, Field(gt=0, le=10_000)]
    max_power_w: Annotated[float, Field(gt=0, le=10_000)]
    node_nm: Annotated[float, Field(gt=0, le=1000)]
    fp16_tflops: Annotated[float, Field(gt=0, le=100_000)]
    year: Annotated[int, Field(ge=1990, le=2100)]
    idle_power_w: Annotated[float, Field(ge=0, le=10_000)]
    memory_type: Annotated[str, Field(min_length=1, max_length=32)] = "HBM2"
    embodied_kg: Annotated[float, Field(gt=0, le=100_000)] | None = None


class GPUEntry(_Model):
    """GPUs of one type on one host (``spec`` for a type the catalog does not know)."""

    type: Name
    count: Annotated[int, Field(ge=1, le=100_000)]
    host: Name = "local"
    lifetime_years: Annotated[float, Field(gt=0, le=30)] = 7.0
    embodied_kg: Annotated[float, Field(gt=0, le=100_000)] | None = None
    """Overrides the catalog's embodied carbon (C_e of Eq. 1) for this type."""
    price_per_hour: Annotated[float, Field(ge=0, le=1000)] | None = None
    """US$ per GPU-hour (the cost objective); default: docs/fleet.md's table."""
    spec: GPUSpecEntry | None = None


class LinkEntry(_Model):
    """The link between two hosts."""

    hosts: Annotated[list[Name], Field(min_length=2, max_length=2)]
    gbps: Annotated[float, Field(gt=0, le=3200)]


class CustomModel(_Model):
    """A model the simulator does not know, from its Hugging Face ``config.json``."""

    name: Name
    config_json: Annotated[str, Field(min_length=1, max_length=4096)]
    """A path, relative to the fleet file's folder."""


class ModelsEntry(_Model):
    """The target model and the drafts speculative configurations may use."""

    target: Name = "llama-2-7b"
    drafts: list[Name] = Field(default_factory=lambda: ["llama-1b", "llama-300m"])
    acceptance: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=dict)
    """Declared acceptance rate per draft (else the simulator's table)."""
    custom: list[CustomModel] = Field(default_factory=list)


class WorkloadEntry(_Model):
    """One workload: its load, its requests and its SLO."""

    name: Name
    qps: Annotated[float, Field(gt=0, le=100_000)]
    application: Name | None = None
    sizes: dict[str, Annotated[list[Annotated[int, Field(ge=1, le=1_048_576)]],
                               Field(min_length=2, max_length=2)]] | None = None  # fmt: skip
    ttft_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    tpot_s: Annotated[float, Field(gt=0, le=60)] | None = None
    attainment: Annotated[float, Field(gt=0, le=1)] = 0.9

    @model_validator(mode="after")
    def _requests(self) -> WorkloadEntry:
        if (self.application is None) == (self.sizes is None):
            raise ValueError("give exactly one of application (a Table 2 name) or sizes")
        if self.sizes is not None:
            if set(self.sizes) != {"p25", "p50", "p75"}:
                raise ValueError("sizes needs p25, p50 and p75, each [input, output] tokens")
            if self.ttft_s is None or self.tpot_s is None:
                raise ValueError("a workload with its own sizes needs ttft_s and tpot_s")
        return self


class FleetSpec(_Model):
    """A whole fleet file."""

    region: Name | None = None
    intensity_g_per_kwh: Annotated[float, Field(ge=0, le=5000)] | None = None
    intensity_provider: Literal["static", "trace", "electricitymaps", "watttime"] | None = None
    """Read the intensity now from this provider (docs/operate.md) for ``zone``."""
    zone: Name | None = None
    trace_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    pue: Annotated[float, Field(ge=1, le=10)] = 1.0
    models: ModelsEntry = Field(default_factory=ModelsEntry)
    gpus: Annotated[list[GPUEntry], Field(min_length=1)]
    links: list[LinkEntry] = Field(default_factory=list)
    workloads: Annotated[list[WorkloadEntry], Field(min_length=1)]
    _base_dir: Path = PrivateAttr(default_factory=lambda: Path())
    _intensity: tuple[float, str] | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path:
        """The fleet file's folder (relative paths in it are read from there)."""
        return self._base_dir

    @property
    def gpu_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.type for g in self.gpus))

    def intensity(self) -> tuple[float, str]:
        """(g/kWh, where it came from): ``intensity_g_per_kwh``, else the provider's reading
        now (``intensity_provider`` for ``zone``, default the region), else the region's
        annual figure (CISO when none is given)."""
        from greenllm.carbon import carbon_intensity, make_provider

        if self._intensity is None:
            region = self.region or "CISO"
            if self.intensity_g_per_kwh is not None:
                value = (self.intensity_g_per_kwh,
                         f"{self.intensity_g_per_kwh:g} g/kWh (fleet file)")  # fmt: skip
            elif self.intensity_provider is not None:  # read once: a plan uses one value
                reading = make_provider(self.intensity_provider, zone=self.zone or region,
                                        year=self.trace_year).read()  # fmt: skip
                value = (reading.g_per_kwh, reading.source)
            else:
                value = (carbon_intensity(region), f"{region} (annual)")
            self._intensity = value
        return self._intensity

    def inventory(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.gpus:
            out[g.type] = out.get(g.type, 0) + g.count
        return out

    def link_gbps(self, gpu_a: str, gpu_b: str) -> float:
        """The link a pair of ``gpu_a`` and ``gpu_b`` would use: the paper's 16 Gbit/s within a
        host that has both, else the fastest [[links]] entry joining a host of each (the
        default when none does)."""
        hosts_a = {g.host for g in self.gpus if g.type == gpu_a}
        hosts_b = {g.host for g in self.gpus if g.type == gpu_b}
        if hosts_a & hosts_b:
            return DEFAULT_LINK_GBPS
        best = [link.gbps for link in self.links
                if (link.hosts[0] in hosts_a and link.hosts[1] in hosts_b)
                or (link.hosts[1] in hosts_a and link.hosts[0] in hosts_b)]  # fmt: skip
        return max(best, default=DEFAULT_LINK_GBPS)


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and validate a fleet file; :class:`ConfigError` names its line and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--fleet {str(p)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--fleet {str(p)!r}: cannot read it ({err})") from None
    return parse_fleet(text, source=str(p), base_dir=p.parent)


def parse_fleet(text: str, source: str = "fleet.toml", base_dir: str | Path = ".") -> FleetSpec:
    """A fleet from TOML text (see :func:`load_fleet`); ``base_dir``: where relative paths
    (a custom model's ``config_json``) are read from."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise _error(text, source, tuple(first["loc"]), first["msg"] + more) from None
    problems = _inconsistencies(spec)
    if problems:
        loc, msg = problems[0]
        raise _error(text, source, loc, msg)
    spec._base_dir = Path(base_dir)
    return spec


def _error(text: str, source: str, loc: tuple[Any, ...], msg: str) -> ConfigError:
    line = _line_of(text, loc)
    at = f"{source}:{line}" if line else source
    return ConfigError(f"{at}: {_dotted(loc) or '(top level)'}: {msg}")


def _inconsistencies(spec: FleetSpec) -> list[tuple[tuple[Any, ...], str]]:
    """What the fields say against each other, each with the field to blame."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if spec.region is not None and spec.intensity_g_per_kwh is not None:
        out.append((("intensity_g_per_kwh",), "give region or intensity_g_per_kwh, not both"))
    if spec.intensity_provider is not None and spec.intensity_g_per_kwh is not None:
        out.append((("intensity_provider",), "give intensity_provider or intensity_g_per_kwh, "
                    "not both"))  # fmt: skip
    seen: set[str] = set()
    for i, w in enumerate(spec.workloads):
        if w.name in seen:
            out.append((("workloads", i, "name"), f"workload names must be distinct: {w.name!r} "
                        "is used twice"))  # fmt: skip
        seen.add(w.name)
    hosts = {g.host for g in spec.gpus}
    for i, link in enumerate(spec.links):
        unknown = [h for h in link.hosts if h not in hosts]
        if unknown:
            out.append((("links", i, "hosts"), f"no GPUs on host {unknown[0]!r} (hosts: "
                        f"{', '.join(sorted(hosts))})"))  # fmt: skip
    return out


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of ``loc``'s key in ``text`` (best effort: the n-th ``[[table]]``
    header, then the first ``key =`` line after it), None if not found."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    while i < len(loc):
        part = loc[i]
        if isinstance(part, str) and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            header = re.compile(rf"^\s*\[\[\s*{re.escape(part)}\s*\]\]")
            hits = [k for k in range(start, end) if header.match(lines[k])]
            if len(hits) > loc[i + 1]:
                start = hits[loc[i + 1]]
                later = [k for k in hits if k > start]
                nxt = [k for k in range(start + 1, end) if lines[k].lstrip().startswith("[")]
                end = min([*later, *nxt, end])
                i += 2
                continue
            key = re.compile(rf"^\s*{re.escape(part)}\s*=")
            found = [k for k in range(start, end) if key.match(lines[k])]
            return found[0] + 1 if found else None
        if isinstance(part, str):
            key = re.compile(rf"^\s*{re.escape(part)}\s*=")
            found = [k for k in range(start, end) if key.match(lines[k])]
            if found:
                return found[0] + 1
            table = re.compile(rf"^\s*\[\s*{re.escape(part)}\s*\]")
            found = [k for k in range(start, end) if table.match(lines[k])]
            if not found:
                return start + 1 if start else None
            start = found[0]
        i += 1
    return start + 1 if start else None
