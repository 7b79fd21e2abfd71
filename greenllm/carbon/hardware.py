"""GPU catalog: Table 1 of the paper exactly, more GPUs from vendor data sheets, ACT estimates.

``T4``, ``V100`` and ``A100`` (the 40 GB part) carry Table 1's numbers unchanged, including its
embodied carbon ``C_e`` of Eq. 1. Every other GPU's specs come from NVIDIA data sheets and
whitepapers (cited in its ``source``) and its ``C_e`` from :func:`act_embodied_kg`, an ACT-style
estimate (Gupta et al., ISCA 2022). ``idle_power_w`` is the median nvidia-smi reading of an idle
GPU (no process) in published nvidia-smi outputs. docs/carbon.md lists every number's source.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import re
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from greenllm.errors import ConfigError

__all__ = [
    "ACT_FAB_INTENSITY_G_PER_KWH",
    "ACT_FAB_YIELD",
    "ACT_PACKAGE_G",
    "DRAM_G_PER_GB",
    "HBM_G_PER_GB",
    "MEMORY_TYPES",
    "GPUSpec",
    "act_embodied_breakdown_kg",
    "act_embodied_kg",
    "act_node_nm",
    "get_gpu",
    "list_gpus",
    "register_gpu",
    "unregister_gpu",
]

logger = logging.getLogger(__name__)

EmbodiedSource = Literal["paper-table1", "act-estimate", "user"]
EMBODIED_SOURCES = ("paper-table1", "act-estimate", "user")
MEMORY_TYPES = (
    "HBM2", "HBM2e", "HBM3", "HBM3e", "GDDR5", "GDDR5X", "GDDR6", "GDDR6X", "GDDR7", "LPDDR5",
)  # fmt: skip

# --- ACT parameters (facebookresearch/ACT, act/models/logic/*.yaml, act/core/common.py) -------
_ACT_EPA_KWH_PER_CM2 = {28: 0.90, 20: 1.20, 14: 1.20, 10: 1.475, 8: 1.52, 7: 2.15, 5: 2.75, 3: 3.25}
_ACT_GPA95_G_PER_CM2 = {28: 175, 20: 190, 14: 200, 10: 240, 8: 240, 7: 350, 5: 430, 3: 470}
_ACT_GPA99_G_PER_CM2 = {28: 100, 20: 110, 14: 125, 10: 150, 8: 150, 7: 200, 5: 225, 3: 275}
_ACT_MPA_G_PER_CM2 = 500.0  # raw materials, every node
ACT_FAB_INTENSITY_G_PER_KWH = 583.0  # ACT's "taiwan" fab grid (carbon_intensity/location.json)
ACT_FAB_YIELD = 0.875  # ACT DEFAULT_FAB_YIELD
ACT_PACKAGE_G = 150.0  # ACT CARBON_PER_IC_PACKAGE
DRAM_G_PER_GB = 65.0  # ACT dram_hynix "ddr4_10nm" (before yield); used for GDDR/LPDDR
# HBM: ACT has no HBM entry. Least-squares fit of Table 1's V100 and A100 (both HBM2) residuals
# after their logic die and package; reproduced by tests/carbon/test_hardware.py. ~2.9x DRAM.
HBM_G_PER_GB = 187.0
# Process families onto ACT's node rows: TSMC 16FF/12FFN -> 14, N6 -> 7, 4N/N4 -> 5.
_NODE_FAMILY = {16: 14, 12: 14, 6: 7, 4: 5}


def act_node_nm(node_nm: float) -> int:
    """The ACT table row used for ``node_nm``: its process family, else the nearest (log) row."""
    if not (isinstance(node_nm, (int, float)) and math.isfinite(node_nm) and node_nm > 0):
        raise ConfigError(f"node_nm = {node_nm!r}: must be a finite number > 0 (e.g. 7)")
    if node_nm in _NODE_FAMILY:
        return _NODE_FAMILY[int(node_nm)]
    rows = sorted(_ACT_EPA_KWH_PER_CM2)
    return min(rows, key=lambda r: (abs(math.log(node_nm / r)), -r))  # ties -> the older node


def act_embodied_breakdown_kg(
    die_area_mm2: float,
    node_nm: float,
    memory_gb: float,
    memory_type: str = "HBM2",
    *,
    fab_intensity_g_per_kwh: float = ACT_FAB_INTENSITY_G_PER_KWH,
    abatement: Literal[95, 97, 99] = 97,
    fab_yield: float = ACT_FAB_YIELD,
    package_g: float = ACT_PACKAGE_G,
) -> dict[str, float]:
    """ACT-style embodied carbon split into ``logic_kg``, ``memory_kg``, ``package_kg``.

    logic  = area_cm2 * (EPA[node] * fab_intensity + GPA[node] + MPA) / fab_yield
    memory = memory_gb * CPG[memory_type] / fab_yield
    EPA (kWh/cm2), GPA (g/cm2; 97 = mean of ACT's 95 % and 99 % abatement tables) and MPA
    (500 g/cm2) are ACT's per-node tables; CPG is :data:`DRAM_G_PER_GB` (ACT's DDR4 10 nm,
    for GDDR/LPDDR) or :data:`HBM_G_PER_GB`. Board, cooler and PCB are not counted (as in ACT's
    IC model).
    """
    for arg, val in (("die_area_mm2", die_area_mm2), ("memory_gb", memory_gb)):
        ok = isinstance(val, (int, float)) and not isinstance(val, bool)
        if not (ok and math.isfinite(val) and val >= 0):
            raise ConfigError(f"{arg} = {val!r}: must be a finite number >= 0")
    if abatement not in (95, 97, 99):
        raise ConfigError(f"abatement = {abatement!r}: must be 95, 97 or 99 (% gas abatement)")
    if not (math.isfinite(fab_yield) and 0 < fab_yield <= 1):
        raise ConfigError(f"fab_yield = {fab_yield!r}: must be in (0, 1] (ACT default 0.875)")
    if not (math.isfinite(fab_intensity_g_per_kwh) and fab_intensity_g_per_kwh >= 0):
        raise ConfigError(f"fab_intensity_g_per_kwh = {fab_intensity_g_per_kwh!r}: must be >= 0")
    if not (math.isfinite(package_g) and package_g >= 0):
        raise ConfigError(f"package_g = {package_g!r}: must be a finite number >= 0")
    row = act_node_nm(node_nm)
    g95, g99 = _ACT_GPA95_G_PER_CM2[row], _ACT_GPA99_G_PER_CM2[row]
    gpa = {95: g95, 99: g99, 97: (g95 + g99) / 2.0}[abatement]
    cpa_g_per_cm2 = _ACT_EPA_KWH_PER_CM2[row] * fab_intensity_g_per_kwh + gpa + _ACT_MPA_G_PER_CM2
    logic_g = die_area_mm2 / 100.0 * cpa_g_per_cm2 / fab_yield
    memory_g = memory_gb * _memory_g_per_gb(memory_type) / fab_yield
    return {"logic_kg": logic_g / 1e3, "memory_kg": memory_g / 1e3, "package_kg": package_g / 1e3}


def act_embodied_kg(
    die_area_mm2: float, node_nm: float, memory_gb: float, memory_type: str = "HBM2", **kw: Any
) -> float:
    """ACT-style embodied carbon of one GPU package, kg CO2e (sum of
    :func:`act_embodied_breakdown_kg`; keyword overrides pass through)."""
    parts = act_embodied_breakdown_kg(die_area_mm2, node_nm, memory_gb, memory_type, **kw)
    return math.fsum(parts.values())


def _memory_g_per_gb(memory_type: str) -> float:
    kind = _memory_type(memory_type)
    return HBM_G_PER_GB if kind.startswith("HBM") else DRAM_G_PER_GB


def _memory_type(memory_type: str) -> str:
    by_lower = {m.lower(): m for m in MEMORY_TYPES}
    if not isinstance(memory_type, str) or memory_type.lower() not in by_lower:
        raise ConfigError(
            f"memory_type = {memory_type!r}: unknown; allowed: {', '.join(MEMORY_TYPES)}"
        )
    return by_lower[memory_type.lower()]


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
    def create(cls, name: str, *, embodied_kg: float | None = None, **kw: Any) -> GPUSpec:
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
        _memory_type(self.memory_type)
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

    def embodied_g_per_s(self, lifetime_years: float = 7.0) -> float:
        """Embodied carbon amortised per second of allocation (Eq. 1 with t = 1 s), g/s."""
        from greenllm.carbon.accounting import embodied_carbon_g

        return float(embodied_carbon_g(1.0, self, lifetime_years))

    def to_dict(self) -> dict[str, Any]:
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


def _paper(name: str, *vals: float, **kw: Any) -> GPUSpec:
    """Table 1 row: vram, bw, area, power, node, fp16, year, embodied, idle."""
    keys = ("vram_gb", "mem_bw_gbs", "die_area_mm2", "max_power_w", "node_nm", "fp16_tflops",
            "year", "embodied_kg", "idle_power_w")  # fmt: skip
    return GPUSpec.create(
        name, embodied_source="paper-table1", **dict(zip(keys, vals, strict=True)), **kw
    )


def _sheet(name: str, *vals: float, **kw: Any) -> GPUSpec:
    """Data-sheet row: vram, bw, area, power, node, fp16, year, idle; C_e by ACT."""
    keys = ("vram_gb", "mem_bw_gbs", "die_area_mm2", "max_power_w", "node_nm", "fp16_tflops",
            "year", "idle_power_w")  # fmt: skip
    return GPUSpec.create(name, **dict(zip(keys, vals, strict=True)), **kw)


_IDLE = "idle: median nvidia-smi draw, no process, in published nvidia-smi outputs (docs/carbon.md)"
_CATALOG = (
    _paper("T4", 16, 320, 545, 70, 12, 65, 2018, 10.3, 9, memory_type="GDDR6",
           supports_bf16=False, aliases=("t4-16gb",),
           source="Paper Table 1. NVIDIA T4 data sheet: 16 GB GDDR6, 320 GB/s, 70 W, 65 TFLOPS "
           "FP16 tensor; TU104 545 mm2 TSMC 12 nm (Turing whitepaper). " + _IDLE),
    _paper("V100", 16, 900, 815, 300, 12, 28.26, 2017, 20.0, 43, memory_type="HBM2",
           supports_bf16=False, aliases=("v100-16gb", "v100-sxm2", "v100-sxm2-16gb"),
           source="Paper Table 1 (SXM2 16 GB: 900 GB/s, 300 W per NVIDIA V100 data sheet; "
           "28.26 TFLOPS is non-tensor FP16, data sheet tensor 125). GV100 815 mm2 TSMC 12 nm "
           "(Volta whitepaper). " + _IDLE),
    _paper("A100", 40, 1555, 826, 400, 7, 312, 2020, 26.34, 52, memory_type="HBM2",
           aliases=("a100-40gb", "a100-sxm4-40gb", "a100-pcie-40gb", "a100-40g"),
           source="Paper Table 1 (40 GB part). NVIDIA A100 data sheet: 40 GB HBM2 1,555 GB/s, "
           "400 W SXM4 (250 W PCIe), 312 TFLOPS FP16 tensor dense; GA100 826 mm2 TSMC 7 nm "
           "(Ampere whitepaper). " + _IDLE),
    _sheet("P100", 16, 732, 610, 250, 16, 18.7, 2016, 25, memory_type="HBM2",
           supports_bf16=False, aliases=("p100-pcie", "p100-pcie-16gb", "p100-16gb"),
           source="NVIDIA Tesla P100 data sheet, PCIe 16 GB variant: 16 GB HBM2, 732 GB/s, "
           "250 W, 18.7 TFLOPS FP16 (no tensor cores); GP100 610 mm2 TSMC 16 nm (Pascal "
           "whitepaper). " + _IDLE),
    _sheet("A40", 48, 696, 628.4, 300, 8, 149.7, 2020, 30.5, memory_type="GDDR6",
           aliases=("a40-48gb",),
           source="NVIDIA A40 data sheet: 48 GB GDDR6, 696 GB/s, 300 W, 149.7 TFLOPS FP16 "
           "tensor dense; GA102 628.4 mm2 Samsung 8 nm (GA102 whitepaper). " + _IDLE),
    _sheet("A100-80GB", 80, 2039, 826, 400, 7, 312, 2020, 60, memory_type="HBM2e",
           aliases=("a100-sxm4-80gb", "a100-80g", "a100-sxm-80gb"),
           source="NVIDIA A100 80GB data sheet, SXM4 variant: 80 GB HBM2e, 2,039 GB/s, 400 W, "
           "312 TFLOPS FP16 tensor dense; GA100 826 mm2 TSMC 7 nm. " + _IDLE),
    _sheet("A10G", 24, 600, 628.4, 300, 8, 70, 2021, 10.5, memory_type="GDDR6",
           aliases=("a10g-24gb",),
           source="AWS-only A10 variant, no NVIDIA data sheet: 24 GB GDDR6, 600 GB/s (AWS EC2 "
           "G5); 300 W = nvidia-smi power cap on g5; ~70 TFLOPS FP16 tensor dense (Baseten, "
           "'NVIDIA A10 vs A10G'; the A10 sheet's 125 does not apply); GA102 628.4 mm2 "
           "Samsung 8 nm. " + _IDLE),
    _sheet("H100", 80, 3350, 814, 700, 4, 989.4, 2022, 70, memory_type="HBM3",
           aliases=("h100-sxm", "h100-sxm5", "h100-80gb", "h100-sxm5-80gb", "h100-80gb-hbm3"),
           source="NVIDIA H100 data sheet, SXM5 variant: 80 GB HBM3, 3.35 TB/s, 700 W, 1,979 "
           "TFLOPS FP16 tensor with sparsity -> 989.4 dense; GH100 814 mm2 TSMC 4N (Hopper "
           "whitepaper). " + _IDLE),
    _sheet("RTX-6000-Ada", 48, 960, 608.5, 300, 4, 364.2, 2022, 23, memory_type="GDDR6",
           aliases=("rtx6000-ada", "rtx-6000-ada-generation", "rtx-6000-ada-gene"),
           source="NVIDIA RTX 6000 Ada Generation data sheet: 48 GB GDDR6, 960 GB/s, 300 W, "
           "1,457 TFLOPS FP8 tensor with sparsity -> 364.2 FP16 dense; AD102 608.5 mm2 TSMC "
           "4N (Ada whitepaper). " + _IDLE),
    _sheet("L4", 24, 300, 294.5, 72, 4, 121, 2023, 13, memory_type="GDDR6",
           aliases=("l4-24gb",),
           source="NVIDIA L4 data sheet: 24 GB GDDR6, 300 GB/s, 72 W, 242 TFLOPS FP16 tensor "
           "with sparsity -> 121 dense; AD104 294.5 mm2 TSMC 4N (Ada whitepaper). " + _IDLE),
    _sheet("L40S", 48, 864, 608.5, 350, 4, 362.05, 2023, 32, memory_type="GDDR6",
           aliases=("l40s-48gb",),
           source="NVIDIA L40S data sheet: 48 GB GDDR6, 864 GB/s, 350 W, 362.05 TFLOPS FP16 "
           "tensor dense; AD102 608.5 mm2 TSMC 4N (Ada whitepaper). " + _IDLE),
    _sheet("H200", 141, 4800, 814, 700, 4, 989.4, 2024, 75, memory_type="HBM3e",
           aliases=("h200-sxm", "h200-141gb"),
           source="NVIDIA H200 data sheet, SXM variant: 141 GB HBM3e, 4.8 TB/s, 700 W, 1,979 "
           "TFLOPS FP16 tensor with sparsity -> 989.4 dense; GH100 814 mm2 TSMC 4N. " + _IDLE),
)  # fmt: skip
for _spec in _CATALOG:
    register_gpu(_spec)
