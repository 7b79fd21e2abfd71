"""The built-in GPU catalog's rows: Table 1 of the paper, then vendor data-sheet GPUs.

Data only: each row is the keyword arguments of
:meth:`GPUSpec.create <greenllm.carbon.catalog.registry.GPUSpec.create>`, which
:mod:`greenllm.carbon.catalog.registry` registers, in this order, on import. Table 1 rows carry the
paper's embodied carbon ``C_e``; data-sheet rows omit it, so ``create`` estimates it by ACT.
Every row cites its sources in ``source``; docs/carbon.md lists them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from greenllm.carbon.catalog.registry import GPURow

__all__ = ["GPU_ROWS"]


class _Extras(TypedDict, total=False):
    memory_type: str
    supports_bf16: bool
    aliases: tuple[str, ...]
    source: str


def _paper(
    name: str, vram_gb: float, mem_bw_gbs: float, die_area_mm2: float, max_power_w: float,
    node_nm: float, fp16_tflops: float, year: int, embodied_kg: float, idle_power_w: float,
    **kw: Unpack[_Extras],
) -> GPURow:  # fmt: skip
    """Table 1 row: vram, bw, area, power, node, fp16, year, embodied, idle."""
    return {
        "name": name,
        "embodied_source": "paper-table1",
        "vram_gb": vram_gb, "mem_bw_gbs": mem_bw_gbs, "die_area_mm2": die_area_mm2,
        "max_power_w": max_power_w, "node_nm": node_nm, "fp16_tflops": fp16_tflops, "year": year,
        "embodied_kg": embodied_kg, "idle_power_w": idle_power_w,
        **kw,
    }  # fmt: skip


def _sheet(
    name: str, vram_gb: float, mem_bw_gbs: float, die_area_mm2: float, max_power_w: float,
    node_nm: float, fp16_tflops: float, year: int, idle_power_w: float, **kw: Unpack[_Extras],
) -> GPURow:  # fmt: skip
    """Data-sheet row: vram, bw, area, power, node, fp16, year, idle; C_e by ACT."""
    return {
        "name": name,
        "vram_gb": vram_gb, "mem_bw_gbs": mem_bw_gbs, "die_area_mm2": die_area_mm2,
        "max_power_w": max_power_w, "node_nm": node_nm, "fp16_tflops": fp16_tflops, "year": year,
        "idle_power_w": idle_power_w,
        **kw,
    }  # fmt: skip


_IDLE = "idle: median nvidia-smi draw, no process, in published nvidia-smi outputs (docs/carbon.md)"
GPU_ROWS: tuple[GPURow, ...] = (
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
